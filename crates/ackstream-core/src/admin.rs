//! Administration every broker offers, with one signature, so code and tests written against
//! one broker run against the other.

use std::future::Future;

use crate::error::BackendError;

/// Topic and offset administration: implemented by the Kafka broker and the in-memory broker.
///
/// ```
/// use ackstream_core::{Admin, BackendError};
///
/// /// Works with `KafkaBroker` and `MemoryBroker` alike.
/// async fn committed_orders(broker: &impl Admin) -> Result<Option<i64>, BackendError> {
///     broker.create_topic("orders", 3).await?;
///     broker.committed_offset("billing", "orders", 0).await
/// }
/// ```
pub trait Admin {
    /// Creates `topic` with `partitions` partitions; succeeds if it exists with that many.
    fn create_topic(
        &self,
        topic: &str,
        partitions: i32,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// The offset `group` has committed for a partition (the next record it reads), as the
    /// broker reports it; `None` if it has committed none.
    fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> impl Future<Output = Result<Option<i64>, BackendError>> + Send;
}
