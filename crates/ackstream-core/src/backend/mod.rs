//! What a broker implementation provides to the runtime. Implemented by the in-memory broker
//! (`ackstream::testing`) and the Kafka backend (`ackstream-kafka`); users never call it.
//!
//! The split follows Kafka's consumer model: a [`Consumer`] joins a group and reports partition
//! assignments and revocations as [`ConsumerEvent`]s; each assigned partition is a
//! [`PartitionFeed`] of records that can be rewound with `seek`; an [`OffsetStore`] takes the
//! committable offsets the runtime computes and commits them, coalesced.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::oneshot;

pub(crate) mod offsets;

pub use crate::settle::output::{Answer, DeliveryCallback};
pub use offsets::{NoCommit, OffsetStore, PartitionOffset};

use crate::config::SubscriberConfig;
use crate::error::{BackendError, ConfigError};
use crate::record::{OutgoingRecord, Record, RecordPosition, TopicPartition};

/// A broker implementation: makes consumers and publishes records.
pub trait Backend: Send + Sync + 'static {
    /// The consumer this backend makes.
    type Consumer: Consumer;

    /// Creates a consumer for a subscriber (joining its group, if it has one).
    fn consumer(
        &self,
        config: &SubscriberConfig,
    ) -> impl Future<Output = Result<Self::Consumer, BackendError>> + Send;

    /// Checks a subscriber's settings against what this backend needs, when the subscriber is
    /// declared (before anything is consumed). By default every setting is accepted.
    fn check_subscriber(&self, config: &SubscriberConfig) -> Result<(), ConfigError> {
        let _ = config;
        Ok(())
    }

    /// Publishes one record and waits for the broker to confirm it.
    fn publish(
        &self,
        record: OutgoingRecord,
    ) -> impl Future<Output = Result<RecordPosition, BackendError>> + Send;

    /// Hands one record to the producer and returns once it is handed over (in call order:
    /// records handed over one after the other are sent in that order); `done` is called with
    /// the broker's answer, from whatever thread has it, or dropped uncalled if the answer can
    /// never come. What a handler's return values are published with, many in flight at once.
    ///
    /// By default a task awaits [`publish`](Self::publish); a backend with a delivery callback
    /// (Kafka) calls `done` from there, without a task or a timer per record.
    fn publish_then(
        self: Arc<Self>,
        record: OutgoingRecord,
        done: DeliveryCallback,
    ) -> impl Future<Output = ()> + Send {
        tokio::spawn(async move { done.call(self.publish(record).await) });
        std::future::ready(())
    }

    /// [`publish_then`](Self::publish_then) without a wait: hands `record` over and returns
    /// `Ok` if the producer takes it at once (`done` is then called as by `publish_then`), or
    /// gives both back, nothing sent and `done` not called, if handing it over would have to
    /// wait (a full queue, a producer not made yet); the caller then awaits `publish_then`
    /// before handing over anything else, so the call order holds either way. What most
    /// outputs are published with: no future per record. By default every record is given
    /// back.
    #[allow(clippy::result_large_err)] // given back only when the producer cannot take it
    fn try_publish_then(
        &self,
        record: OutgoingRecord,
        done: DeliveryCallback,
    ) -> Result<(), (OutgoingRecord, DeliveryCallback)> {
        Err((record, done))
    }
}

/// One subscriber's connection: assignment events and the offset store.
pub trait Consumer: Send + 'static {
    /// The per-partition record feed.
    type Partition: PartitionFeed;

    /// The next assignment change; `None` when the consumer is closed.
    fn next_event(&mut self)
    -> impl Future<Output = Option<ConsumerEvent<Self::Partition>>> + Send;

    /// Where the runtime stores committable offsets.
    fn offset_store(&self) -> Arc<dyn OffsetStore>;

    /// Leaves the group and releases the connection (after the runtime committed).
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// A change of the partitions assigned to a consumer.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConsumerEvent<P> {
    /// Partitions newly assigned, each with its feed.
    Assigned(Vec<P>),
    /// Partitions being taken away. The runtime stops them, drains, commits, then calls
    /// [`RevokeAck::done`]; the backend lets the rebalance proceed only after that (or after the
    /// ack is dropped).
    Revoked(Vec<TopicPartition>, RevokeAck),
    /// Partitions whose assignment was *lost* (the member's session expired, it exceeded the
    /// poll interval, or the group fenced it): another member may own them already. The
    /// runtime fences them at once (no drain wait, no commit, no seek; settles after that
    /// change nothing, and their next owner delivers their unfinished records again), forgets
    /// their stored offsets ([`OffsetStore::release`]), then calls [`RevokeAck::done`].
    Lost(Vec<TopicPartition>, RevokeAck),
    /// The consumer cannot go on (for Kafka: a fatal client error). The runtime fences every
    /// partition at once, closes the consumer, and the subscriber ends with this error.
    Failed(BackendError),
}

/// Completion signal for a revocation; dropping it also completes it.
#[derive(Debug)]
pub struct RevokeAck(Option<oneshot::Sender<()>>);

impl RevokeAck {
    /// A revoke ack and the receiver the backend awaits.
    pub fn new() -> (Self, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (Self(Some(tx)), rx)
    }

    /// Reports that the revoked partitions were drained and committed.
    pub fn done(mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// The records of one assigned partition, in offset order.
pub trait PartitionFeed: Send + 'static {
    /// The partition this feed reads.
    fn topic_partition(&self) -> &TopicPartition;

    /// The next record; `None` once the partition is no longer readable (revoked or closed).
    /// Must be cancel-safe: dropping the future loses no record.
    fn next(&mut self) -> impl Future<Output = Option<Record>> + Send;

    /// Rewinds the feed so `offset` is the next record returned. Records already fetched past
    /// it are discarded.
    fn seek(&mut self, offset: i64) -> Result<(), BackendError>;

    /// Attempt counts of nacked records that the partition's previous owner handed over
    /// ([`PartitionOffset::carry_attempts`]), read when the partition was assigned, so a
    /// record's attempts survive a move to another member. Empty if the backend cannot carry
    /// them.
    fn carried_attempts(&self) -> Vec<(i64, u32)> {
        Vec::new()
    }
}

/// The text form of carried attempt counts, for backends that keep them in a string (Kafka's
/// commit metadata): `ackstream.attempts=OFFSET:COUNT,...`.
pub mod carried {
    const PREFIX: &str = "ackstream.attempts=";

    /// Encodes attempt counts.
    ///
    /// ```
    /// use ackstream_core::backend::carried;
    /// let text = carried::encode(&[(12, 2), (15, 1)]);
    /// assert_eq!(text, "ackstream.attempts=12:2,15:1");
    /// assert_eq!(carried::decode(&text), [(12, 2), (15, 1)]);
    /// ```
    pub fn encode(attempts: &[(i64, u32)]) -> String {
        let pairs: Vec<String> = attempts.iter().map(|(o, n)| format!("{o}:{n}")).collect();
        format!("{PREFIX}{}", pairs.join(","))
    }

    /// Decodes attempt counts; text that is not ours (another tool's commit metadata) or a
    /// malformed pair gives nothing for it, never an error: a count lost is only a count
    /// restarted.
    pub fn decode(text: &str) -> Vec<(i64, u32)> {
        let Some(pairs) = text.strip_prefix(PREFIX) else {
            return Vec::new();
        };
        pairs
            .split(',')
            .filter_map(|pair| {
                let (offset, count) = pair.split_once(':')?;
                Some((offset.parse().ok()?, count.parse().ok()?))
            })
            .collect()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn foreign_or_malformed_metadata_carries_nothing_and_never_fails() {
            assert_eq!(decode(""), []);
            assert_eq!(decode("some other tool"), []);
            assert_eq!(decode("ackstream.attempts=x:1,5:2,7:-1,9"), [(5, 2)]);
        }

        proptest::proptest! {
            #[test]
            fn what_is_encoded_decodes(attempts: Vec<(i64, u32)>) {
                proptest::prop_assert_eq!(decode(&encode(&attempts)), attempts);
            }

            #[test]
            fn any_text_decodes_without_panicking(text: String) {
                let _ = decode(&text);
            }
        }
    }
}
