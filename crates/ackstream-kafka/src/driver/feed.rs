//! One assigned partition's records, as the runtime reads them: taken from the partition's
//! [`Inbox`](crate::driver::inbox::Inbox), a batch at a time.

use std::collections::VecDeque;
use std::sync::Arc;

use ackstream_core::backend::PartitionFeed;
use ackstream_core::{BackendError, Record, TopicPartition};

use crate::driver::inbox::Inbox;
use crate::driver::poller::Wakeup;

/// The records of one assigned partition.
pub struct KafkaFeed {
    tp: TopicPartition,
    inbox: Arc<Inbox>,
    wakeup: Arc<Wakeup>,
    /// Records taken from the inbox, not yet returned.
    taken: VecDeque<Record>,
    /// Attempt counts the partition's previous owner handed over.
    carried: Vec<(i64, u32)>,
}

impl std::fmt::Debug for KafkaFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaFeed")
            .field("tp", &self.tp)
            .finish_non_exhaustive()
    }
}

impl KafkaFeed {
    pub(crate) fn new(inbox: Arc<Inbox>, wakeup: Arc<Wakeup>) -> Self {
        Self {
            tp: inbox.tp.clone(),
            inbox,
            wakeup,
            taken: VecDeque::new(),
            carried: Vec::new(),
        }
    }

    pub(crate) fn with_carried(mut self, carried: Vec<(i64, u32)>) -> Self {
        self.carried = carried;
        self
    }

    /// Takes everything in the inbox; `false` if it is empty.
    fn take(&mut self) -> Result<bool, ()> {
        if self.taken.capacity() > self.inbox.kept_capacity() {
            // Grown by a large batch: not kept while the partition idles (with a thousand
            // partitions, such buffers added up to more than the records they held: 54 MB
            // against 36 MB at 4 partitions, with a 256-record room kept).
            self.taken = VecDeque::new();
        }
        let took = self.inbox.take(&mut self.taken)?;
        if self.inbox.paused.load(std::sync::atomic::Ordering::Acquire) {
            // The partition waits for room: tell the poll thread there may be some now.
            self.wakeup.wake();
        }
        Ok(took)
    }
}

impl PartitionFeed for KafkaFeed {
    fn topic_partition(&self) -> &TopicPartition {
        &self.tp
    }

    async fn next(&mut self) -> Option<Record> {
        loop {
            if let Some(record) = self.taken.pop_front() {
                return Some(record);
            }
            match self.take() {
                Ok(true) => {}
                // The poll thread notifies after every hand-over (a permit is kept if we are
                // not waiting yet), so no arrival is missed.
                Ok(false) => self.inbox.arrived.notified().await,
                Err(()) => return None,
            }
        }
    }

    /// Drops what was fetched and asks the poll thread to seek; until it has, records it hands
    /// over for this partition are dropped, so the next record returned is `offset`.
    fn seek(&mut self, offset: i64) -> Result<(), BackendError> {
        self.taken.clear();
        self.inbox.discard();
        self.inbox.state().seek = Some(offset);
        self.wakeup.seek(self.inbox.clone());
        Ok(())
    }

    fn carried_attempts(&self) -> Vec<(i64, u32)> {
        self.carried.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::budget::Budget;
    use ackstream_core::BufferBudget;
    use futures_util::FutureExt;

    fn record(offset: i64) -> Record {
        Record {
            topic: "t".into(),
            partition: 0,
            offset,
            key: None,
            headers: Default::default(),
            timestamp: None,
            payload: Default::default(),
        }
    }

    fn feed() -> (KafkaFeed, Arc<Inbox>, Arc<Wakeup>) {
        feed_with(BufferBudget::default())
    }

    fn feed_with(budget: BufferBudget) -> (KafkaFeed, Arc<Inbox>, Arc<Wakeup>) {
        let budget = Arc::new(Budget::new(budget));
        let inbox = Arc::new(Inbox::new(TopicPartition::new("t", 0), budget));
        let wakeup = Arc::new(Wakeup::default());
        (KafkaFeed::new(inbox.clone(), wakeup.clone()), inbox, wakeup)
    }

    fn next_now(feed: &mut KafkaFeed) -> Option<Option<i64>> {
        feed.next().now_or_never().map(|r| r.map(|r| r.offset))
    }

    #[test]
    fn records_handed_over_come_out_in_order() {
        let (mut feed, inbox, _) = feed();
        assert_eq!(next_now(&mut feed), None, "empty inbox: the feed waits");
        let mut batch = vec![record(0), record(1)];
        inbox.hand_over(&mut batch);
        assert!(batch.is_empty());
        assert_eq!(next_now(&mut feed), Some(Some(0)));
        assert_eq!(next_now(&mut feed), Some(Some(1)));
        assert_eq!(next_now(&mut feed), None);
    }

    #[test]
    fn records_beyond_the_budget_are_refused_until_the_feed_has_returned_what_it_took() {
        // One partition, 10 records: it may hold them all (its share is 5, 5 more are lent).
        let (mut feed, inbox, _) = feed_with(BufferBudget::new(usize::MAX, 10));
        let mut batch: Vec<Record> = (0..12).map(record).collect();
        assert_eq!(
            inbox.hand_over(&mut batch),
            Some(10),
            "the first refused record"
        );
        assert_eq!(
            batch.len(),
            2,
            "the refused records stay with the poll thread"
        );
        assert_eq!(next_now(&mut feed), Some(Some(0)));
        let mut more = vec![record(10)];
        assert_eq!(
            inbox.hand_over(&mut more),
            Some(10),
            "what the feed took still counts while it returns it"
        );
        for o in 1..10 {
            assert_eq!(next_now(&mut feed), Some(Some(o)));
        }
        assert_eq!(next_now(&mut feed), None, "all returned: released");
        assert_eq!(inbox.hand_over(&mut more), None);
        assert_eq!(next_now(&mut feed), Some(Some(10)));
    }

    #[test]
    fn seek_drops_fetched_records_until_the_poll_thread_has_sought() {
        let (mut feed, inbox, wakeup) = feed();
        let mut batch = vec![record(5), record(6), record(7)];
        inbox.hand_over(&mut batch);
        assert_eq!(next_now(&mut feed), Some(Some(5)));
        feed.seek(5).unwrap();
        assert_eq!(wakeup.take_seeks().len(), 1);
        // Popped before the seek was done: dropped.
        let mut stale = vec![record(8)];
        inbox.hand_over(&mut stale);
        assert_eq!(next_now(&mut feed), None);
        // The poll thread seeks and clears the request; what follows is from the new position.
        inbox.state().seek = None;
        let mut fresh = vec![record(5)];
        inbox.hand_over(&mut fresh);
        assert_eq!(next_now(&mut feed), Some(Some(5)));
    }

    #[test]
    fn a_closed_inbox_drops_what_the_feed_has_not_taken_and_ends_it() {
        let (mut feed, inbox, _) = feed();
        let mut batch = vec![record(0)];
        inbox.hand_over(&mut batch);
        inbox.close();
        assert_eq!(next_now(&mut feed), Some(None));
    }

    #[test]
    fn a_seek_releases_the_budget_of_what_it_drops() {
        // One partition may hold 10 records: a seek that drops 10 must leave room for 10.
        let (mut feed, inbox, _) = feed_with(BufferBudget::new(usize::MAX, 10));
        let mut batch: Vec<Record> = (0..10).map(record).collect();
        assert_eq!(inbox.hand_over(&mut batch), None);
        feed.seek(0).unwrap();
        inbox.state().seek = None; // the poll thread has sought
        let mut again: Vec<Record> = (0..10).map(record).collect();
        assert_eq!(
            inbox.hand_over(&mut again),
            None,
            "all of it admitted again"
        );
        assert_eq!(next_now(&mut feed), Some(Some(0)));
    }
}
