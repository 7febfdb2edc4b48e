//! The hand-over between the poll thread and one partition's feed.
//!
//! The poll thread pops records from librdkafka and appends them, a run of one partition at a
//! time, to the partition's inbox; the partition's feed takes the whole inbox at once. What an
//! inbox and its feed hold counts against the consumer's [`Budget`]: a record the budget does
//! not admit is refused, and the poll thread gives it back to librdkafka (pause and seek).

use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};

use ackstream_core::{Record, TopicPartition};
use tokio::sync::Notify;

use crate::driver::budget::{Budget, Held};

#[derive(Debug, Default)]
pub(crate) struct InboxState {
    pub(crate) records: VecDeque<Record>,
    /// What `records` holds.
    queued: Held,
    /// What the feed took last and may still hold: released at its next take (by then it has
    /// returned all of it) or when the inbox closes.
    lent: Held,
    /// A seek the feed asked for and the poll thread has not done yet. Until it is done, the
    /// poll thread hands nothing over for this partition: what it would pop was fetched from
    /// before the seek.
    pub(crate) seek: Option<i64>,
    /// The partition was revoked (or the consumer closed): nothing more arrives.
    pub(crate) closed: bool,
}

impl InboxState {
    /// What the inbox and its feed hold.
    pub(crate) fn held(&self) -> Held {
        Held {
            bytes: self.queued.bytes + self.lent.bytes,
            records: self.queued.records + self.lent.records,
        }
    }
}

/// One assigned partition's inbox.
#[derive(Debug)]
pub(crate) struct Inbox {
    pub(crate) tp: TopicPartition,
    state: Mutex<InboxState>,
    /// Wakes the feed after records arrive (or the inbox closes).
    pub(crate) arrived: Notify,
    /// The consumer's budget, which this inbox's records count against.
    budget: Arc<Budget>,
    /// The poll thread paused the partition at the budget's limit: the feed wakes the poll
    /// thread when it takes records, so it can resume the partition.
    pub(crate) paused: AtomicBool,
}

impl Inbox {
    /// An inbox for a newly assigned partition, counted in `budget`'s shares until it closes.
    pub(crate) fn new(tp: TopicPartition, budget: Arc<Budget>) -> Self {
        budget.partition_assigned();
        Self {
            tp,
            state: Mutex::new(InboxState::default()),
            arrived: Notify::new(),
            budget,
            paused: AtomicBool::new(false),
        }
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, InboxState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends the records of `batch` the budget admits (all of them are dropped if a seek
    /// was asked for since, or the inbox closed); returns the first refused record's offset,
    /// the records from there on staying in `batch`.
    pub(crate) fn hand_over(&self, batch: &mut Vec<Record>) -> Option<i64> {
        self.append(batch, true)
    }

    /// Appends every record of `batch`, over the budget if need be (when a refused record
    /// cannot be given back to librdkafka, keeping it is the only way not to skip it).
    pub(crate) fn hand_over_all(&self, batch: &mut Vec<Record>) {
        self.append(batch, false);
    }

    /// Appends what the budget admits of `batch` (all of it unless `within_budget`); returns
    /// the first record left in `batch`'s offset.
    fn append(&self, batch: &mut Vec<Record>, within_budget: bool) -> Option<i64> {
        let mut state = self.state();
        if state.seek.is_some() || state.closed {
            batch.clear();
            return None;
        }
        let n = if within_budget {
            self.budget.admit(state.held(), batch)
        } else {
            batch.len()
        };
        let refused = batch.get(n).map(|r| r.offset);
        let mut taken = Held::default();
        for record in batch.drain(..n) {
            taken.bytes += Held::of(&record).bytes;
            taken.records += 1;
            state.records.push_back(record);
        }
        state.queued.bytes += taken.bytes;
        state.queued.records += taken.records;
        self.budget.hold(taken);
        drop(state);
        if n > 0 {
            self.arrived.notify_one();
        }
        refused
    }

    /// Hands the feed everything queued (into `into`, which must be empty: the feed has
    /// returned what it took the time before, which is released); `Err` once the inbox is
    /// closed and empty.
    pub(crate) fn take(&self, into: &mut VecDeque<Record>) -> Result<bool, ()> {
        let mut state = self.state();
        // The feed has returned everything it took before: that is no longer held.
        let returned = std::mem::take(&mut state.lent);
        if !state.closed {
            self.budget.release(returned);
        }
        if state.records.is_empty() {
            return if state.closed { Err(()) } else { Ok(false) };
        }
        state.lent = std::mem::take(&mut state.queued);
        std::mem::swap(&mut state.records, into);
        Ok(true)
    }

    /// Drops what the feed has not taken (for a seek: none of it may be delivered now).
    pub(crate) fn discard(&self) {
        let mut state = self.state();
        state.records.clear();
        let dropped = std::mem::take(&mut state.queued);
        if !state.closed {
            self.budget.release(dropped);
        }
    }

    /// Closes the inbox: what the feed has not taken is dropped (an ended assignment delivers
    /// nothing more), and the feed ends.
    pub(crate) fn close(&self) {
        let mut state = self.state();
        if !state.closed {
            state.closed = true;
            self.budget.release(state.held());
            self.budget.partition_released();
        }
        state.records = VecDeque::new();
        state.queued = Held::default();
        drop(state);
        self.arrived.notify_one();
    }

    /// How many records' room an emptied buffer of this partition may keep: its share of the
    /// budget (within 16 and 4,096), so the rooms kept add up to no more than the shares.
    pub(crate) fn kept_capacity(&self) -> usize {
        self.budget.share().records.clamp(16, 4096)
    }

    /// Whether the poll thread may fetch this paused partition again.
    pub(crate) fn resumable(&self) -> bool {
        let state = self.state();
        state.closed || self.budget.resumable(state.held())
    }
}
