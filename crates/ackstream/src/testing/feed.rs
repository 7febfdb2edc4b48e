//! The in-memory broker's consumer side: partition feeds, the consumer, the offset store.

use std::collections::VecDeque;
use std::sync::Arc;

use ackstream_core::backend::{
    Consumer, ConsumerEvent, OffsetStore, PartitionFeed, PartitionOffset,
};
use ackstream_core::{BackendError, Record, TopicPartition};
use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, watch};

use super::group::{EventSender, Group, PartitionSlot};
use super::log::{PartitionLog, Topics};

/// Records fetched per lock of a partition log.
const FETCH_MAX: usize = 256;

/// One assigned partition of the in-memory broker, read from a position.
#[derive(Debug)]
pub struct MemoryFeed {
    log: Arc<PartitionLog>,
    position: i64,
    buffer: VecDeque<Record>,
    end: watch::Receiver<i64>,
    group: Option<Arc<str>>,
    /// Attempt counts the partition's previous owner handed over.
    carried: Vec<(i64, u32)>,
}

impl MemoryFeed {
    pub(super) fn new(log: Arc<PartitionLog>, from: i64, group: Option<Arc<str>>) -> Self {
        Self {
            end: log.watch_end(),
            log,
            position: from,
            buffer: VecDeque::new(),
            group,
            carried: Vec::new(),
        }
    }

    pub(super) fn with_carried(mut self, carried: Vec<(i64, u32)>) -> Self {
        self.carried = carried;
        self
    }

    pub(super) fn tp(&self) -> &TopicPartition {
        &self.log.tp
    }

    fn return_buffer(&mut self) {
        if !self.buffer.is_empty() {
            self.log
                .unfetch(self.buffer.drain(..).map(|r| r.offset), &self.group);
        }
    }
}

impl Drop for MemoryFeed {
    fn drop(&mut self) {
        self.return_buffer();
    }
}

impl PartitionFeed for MemoryFeed {
    fn topic_partition(&self) -> &TopicPartition {
        &self.log.tp
    }

    async fn next(&mut self) -> Option<Record> {
        loop {
            if let Some(r) = self.buffer.pop_front() {
                return Some(r);
            }
            let end = *self.end.borrow_and_update();
            if self.position < end {
                self.position =
                    self.log
                        .fetch(self.position, FETCH_MAX, &self.group, &mut self.buffer);
                continue;
            }
            if self.end.changed().await.is_err() {
                return None;
            }
        }
    }

    fn seek(&mut self, offset: i64) -> Result<(), BackendError> {
        if offset < 0 {
            return Err(BackendError::new(format!(
                "{}: cannot seek to negative offset {offset}",
                self.log.tp
            )));
        }
        self.return_buffer();
        self.position = offset;
        Ok(())
    }

    fn carried_attempts(&self) -> Vec<(i64, u32)> {
        self.carried.clone()
    }
}

/// A consumer of the in-memory broker: a group member, or a reader of all partitions.
#[derive(Debug)]
pub struct MemoryConsumer {
    events: mpsc::UnboundedReceiver<ConsumerEvent<MemoryFeed>>,
    offsets: Arc<dyn OffsetStore>,
    membership: Option<(Arc<Group>, u64, Arc<Topics>)>,
    /// Keeps the event channel open for a consumer without a group.
    _sender: Option<EventSender>,
}

impl MemoryConsumer {
    pub(super) fn new(
        events: mpsc::UnboundedReceiver<ConsumerEvent<MemoryFeed>>,
        offsets: Arc<dyn OffsetStore>,
        membership: Option<(Arc<Group>, u64, Arc<Topics>)>,
        sender: Option<EventSender>,
    ) -> Self {
        Self {
            events,
            offsets,
            membership,
            _sender: sender,
        }
    }
}

impl Consumer for MemoryConsumer {
    type Partition = MemoryFeed;

    async fn next_event(&mut self) -> Option<ConsumerEvent<MemoryFeed>> {
        self.events.recv().await
    }

    fn offset_store(&self) -> Arc<dyn OffsetStore> {
        self.offsets.clone()
    }

    async fn close(self) {
        let MemoryConsumer {
            events, membership, ..
        } = self;
        // Dropping the receiver first completes any revoke still queued for us, so a
        // rebalance in progress does not wait on a member that is leaving.
        drop(events);
        if let Some((group, id, topics)) = membership {
            group.leave(id, &topics).await;
        }
    }
}

/// Commits of one group member: applied at once, refused for partitions it does not own.
#[derive(Debug)]
pub(super) struct GroupOffsets {
    pub(super) group: Arc<Group>,
    pub(super) member: u64,
}

impl OffsetStore for GroupOffsets {
    fn partition(&self, tp: &TopicPartition) -> Arc<dyn PartitionOffset> {
        Arc::new(MemberPartition {
            slot: self.group.slot(tp),
            group: self.group.clone(),
            member: self.member,
            tp: tp.clone(),
        })
    }

    fn commit(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async { Ok(()) })
    }
}

/// One partition of a group member: every store is a commit, fenced by ownership.
#[derive(Debug)]
struct MemberPartition {
    slot: Arc<PartitionSlot>,
    group: Arc<Group>,
    member: u64,
    tp: TopicPartition,
}

impl PartitionOffset for MemberPartition {
    fn store(&self, offset: i64) {
        if !self.group.commit(&self.slot, self.member, offset) {
            let tp = &self.tp;
            tracing::warn!(%tp, offset, "commit refused: partition no longer owned by this member");
        }
    }

    fn carry_attempts(&self, offset: i64, attempts: &[(i64, u32)]) {
        if !self.group.carry(&self.slot, self.member, offset, attempts) {
            let tp = &self.tp;
            tracing::warn!(%tp, offset, "commit refused: partition no longer owned by this member");
        }
    }
}
