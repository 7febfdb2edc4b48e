//! The hand-over between the poll thread and one partition's feed.
//!
//! The poll thread pops the partition's records from librdkafka and appends them, in batches,
//! to its inbox; the partition's feed takes the whole inbox at once. An inbox holds at most
//! [`INBOX_MAX`] records: while it is full the poll thread leaves the partition's records in
//! librdkafka's queue, whose own limits (`queued.min.messages`, `queued.max.messages.kbytes`)
//! then stop the fetching. So a slow partition holds a bounded number of records and never
//! holds up the others.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use ackstream_core::{Record, TopicPartition};
use tokio::sync::Notify;

/// Records an inbox holds at most.
pub(crate) const INBOX_MAX: usize = 4 * 1024;

#[derive(Debug, Default)]
pub(crate) struct InboxState {
    pub(crate) records: VecDeque<Record>,
    /// A seek the feed asked for and the poll thread has not done yet. Until it is done, the
    /// poll thread hands nothing over for this partition: what it would pop was fetched from
    /// before the seek.
    pub(crate) seek: Option<i64>,
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

    /// How many records the poll thread may pop for this inbox now.
    pub(crate) fn room(&self) -> usize {
        let state = self.state();
        if state.seek.is_some() || state.closed {
            0
        } else {
            INBOX_MAX.saturating_sub(state.records.len())
        }
    }

    /// Appends records popped by the poll thread (dropping them if a seek was asked for since,
    /// or the inbox closed).
    pub(crate) fn hand_over(&self, batch: &mut Vec<Record>) {
        let mut state = self.state();
        if state.seek.is_some() || state.closed {
            batch.clear();
            return;
        }
        state.records.extend(batch.drain(..));
        drop(state);
        self.arrived.notify_one();
    }

    /// Closes the inbox: the feed ends once it has taken what is left.
    pub(crate) fn close(&self) {
        self.state().closed = true;
        self.arrived.notify_one();
    }
}
