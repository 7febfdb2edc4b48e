//! What one assigned partition's task is started with (`spawn_partition` in the runtime picks
//! the dispatch mode that runs it).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::SubscriberConfig;
use crate::settle::PartitionContext;
use crate::shutdown::Shutdown;

/// Everything a partition's task runs with.
pub(super) struct PartitionTask<F, S> {
    /// The partition's records.
    pub(super) feed: F,
    /// Its ledger: tracker, retries, offset store.
    pub(super) ctx: Arc<PartitionContext>,
    /// The subscriber's service (layers and handler).
    pub(super) service: S,
    /// Cancelled when the partition stops (revoke, shutdown).
    pub(super) stop: CancellationToken,
    /// The app's shutdown signal.
    pub(super) app: Shutdown,
    pub(super) config: Arc<SubscriberConfig>,
}
