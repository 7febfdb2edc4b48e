//! The in-memory broker's consumer: a group member (or a reader of every partition) and its
//! offset store, where every store is a commit fenced by ownership.

use std::sync::Arc;

use ackstream_core::backend::{Consumer, ConsumerEvent, OffsetStore, PartitionOffset};
use ackstream_core::{BackendError, TopicPartition};
use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

use super::feed::MemoryFeed;
use super::group::{EventSender, Group, PartitionSlot};
use super::log::Topics;

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
    /// The broker's logs, whose ends are the high watermarks.
    pub(super) topics: Arc<Topics>,
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

    fn high_watermark(&self, tp: &TopicPartition) -> Option<i64> {
        Some(self.topics.partition(&tp.topic, tp.partition)?.end_offset())
    }

    fn confirmed(&self, tp: &TopicPartition) -> Option<i64> {
        // Every store is a commit here.
        self.group.committed(tp)
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
