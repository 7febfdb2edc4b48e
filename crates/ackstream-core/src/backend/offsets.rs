//! Where the runtime leaves committable offsets: a backend's offset store, one handle per
//! assigned partition.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::error::BackendError;
use crate::record::TopicPartition;

/// Takes committable offsets and commits them.
pub trait OffsetStore: Send + Sync + 'static {
    /// The handle through which the runtime stores one assigned partition's committable
    /// offsets. Taken once per assignment, so the per-record path needs no lookup.
    fn partition(&self, tp: &TopicPartition) -> Arc<dyn PartitionOffset>;

    /// Commits everything stored so far and waits for the broker's confirmation.
    fn commit(&self) -> BoxFuture<'_, Result<(), BackendError>>;

    /// Forgets revoked partitions after their final commit, so no later (coalesced) commit can
    /// overwrite what their next owner commits.
    fn release(&self, _partitions: &[TopicPartition]) {}

    /// The partition's high watermark (the offset the next produced record gets) as last seen,
    /// without asking the broker: for consumer lag. `None` when the backend does not know it.
    fn high_watermark(&self, _tp: &TopicPartition) -> Option<i64> {
        None
    }

    /// The partition's offset the broker last confirmed as committed by this consumer, if the
    /// backend knows it (`None`: not confirmed yet, or not tracked).
    fn confirmed(&self, _tp: &TopicPartition) -> Option<i64> {
        None
    }

    /// How many commits the broker answered so far: confirmed, and failed (`None`: the
    /// backend does not commit in round trips, as the in-memory broker).
    fn commits(&self) -> Option<(u64, u64)> {
        None
    }
}

/// One partition's committable offset, as the runtime moves it.
pub trait PartitionOffset: Send + Sync + 'static {
    /// Notes that the partition may be committed up to `offset` (the next record to read).
    /// Called on the hot path each time the finished prefix moves, with increasing offsets:
    /// must be cheap; the backend coalesces the actual commits.
    fn store(&self, offset: i64);

    /// Hands the attempt counts of nacked records (offset, attempts so far) at or after
    /// `offset` (the committable offset) over to whoever owns the partition next: they go with
    /// the partition's commits from now on, and its next owner reads them at assignment
    /// (`PartitionFeed::carried_attempts`). Called on a nack. Backends that cannot carry them
    /// ignore it, and attempts are then counted per member.
    fn carry_attempts(&self, offset: i64, attempts: &[(i64, u32)]) {
        let _ = (offset, attempts);
    }
}

impl std::fmt::Debug for dyn PartitionOffset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PartitionOffset")
    }
}

/// An offset store that commits nothing: for consumers without a group.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoCommit;

impl OffsetStore for NoCommit {
    fn partition(&self, _: &TopicPartition) -> Arc<dyn PartitionOffset> {
        Arc::new(NoCommit)
    }
    fn commit(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async { Ok(()) })
    }
}

impl PartitionOffset for NoCommit {
    fn store(&self, _: i64) {}
}
