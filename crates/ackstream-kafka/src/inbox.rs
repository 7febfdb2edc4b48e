//! The hand-over between the poll thread and one partition's feed.
//!
//! The poll thread is the only reader of the librdkafka consumer: it pops every record and
//! appends it, in batches, to its partition's inbox; the partition's feed takes the whole inbox
//! at once. A slow partition only fills its own inbox, and a full inbox pauses the partition at
//! the consumer (librdkafka stops fetching it) until the feed takes the records.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use ackstream_core::{Record, TopicPartition};
use tokio::sync::Notify;

/// Records an inbox holds before its partition is paused.
pub(crate) const PAUSE_AT: usize = 16 * 1024;

#[derive(Debug, Default)]
pub(crate) struct InboxState {
    pub(crate) records: VecDeque<Record>,
    /// A seek the feed asked for and the poll thread has not done yet. Until it is done, every
    /// record the poll thread hands over for this partition was fetched before the seek and is
    /// dropped.
    pub(crate) seek: Option<i64>,
    /// Paused at the consumer because the inbox was full.
    pub(crate) paused: bool,
    /// The partition was revoked (or the consumer closed): nothing more arrives.
    pub(crate) closed: bool,
}

/// One assigned partition's inbox.
#[derive(Debug)]
pub(crate) struct Inbox {
    pub(crate) tp: TopicPartition,
    state: Mutex<InboxState>,
    /// Wakes the feed after records arrive (or the inbox closes).
    pub(crate) arrived: Notify,
}

/// What a hand-over asks of the poll thread.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Handover {
    /// Nothing.
    Done,
    /// The inbox is full: pause the partition.
    Pause,
}

impl Inbox {
    pub(crate) fn new(tp: TopicPartition) -> Self {
        Self {
            tp,
            state: Mutex::new(InboxState::default()),
            arrived: Notify::new(),
        }
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, InboxState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends records popped by the poll thread (dropping them if a seek is pending or the
    /// inbox is closed).
    pub(crate) fn hand_over(&self, batch: &mut Vec<Record>) -> Handover {
        let mut state = self.state();
        if state.seek.is_some() || state.closed {
            batch.clear();
            return Handover::Done;
        }
        state.records.extend(batch.drain(..));
        let full = !state.paused && state.records.len() >= PAUSE_AT;
        if full {
            state.paused = true;
        }
        drop(state);
        self.arrived.notify_one();
        if full {
            Handover::Pause
        } else {
            Handover::Done
        }
    }

    /// Closes the inbox: the feed ends once it has taken what is left.
    pub(crate) fn close(&self) {
        self.state().closed = true;
        self.arrived.notify_one();
    }
}
