//! The in-memory broker: Kafka semantics without Kafka, for the embedded default, demos and
//! testing handlers.
//!
//! It has what an acknowledgement contract needs: topics with partitions; keyed records placed by
//! Kafka's murmur2 partitioner; consumer groups (every group sees every record, members of one
//! group split the partitions, a member joining or leaving rebalances); committed offsets per
//! group and partition; `auto_offset_reset` earliest and latest; seek, so a nack redelivers.
//! Commits are applied synchronously, so a test can read them as soon as a settle returns.
//!
//! ```
//! use ackstream::prelude::*;
//! use ackstream::memory::MemoryBroker;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), ackstream::BoxError> {
//! let broker = MemoryBroker::new();
//! broker.create_topic("orders", 3).await?;
//! broker.publish("orders", "hello").key("customer-1").await?;
//!
//! broker
//!     .subscriber("orders")
//!     .group_id("billing")
//!     .auto_offset_reset(OffsetReset::Earliest)
//!     .auto_commit(false) // NackOnError: at least once
//!     .handle(|body: String| async move {
//!         assert_eq!(body, "hello");
//!     });
//!
//! let app = App::new(broker.clone()).spawn();
//! broker.wait_committed("billing", "orders", 1).await;
//! app.shutdown().await?;
//! let partition = ackstream::memory::partition_for_key(b"customer-1", 3);
//! assert_eq!(broker.committed_now("billing", "orders", partition), Some(1));
//! assert_eq!(broker.delivery_count(Some("billing"), "orders", partition, 0), 1);
//! # Ok(())
//! # }
//! ```

mod consumer;
mod feed;
mod group;
mod log;
mod partitioner;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ackstream_core::backend::{Backend, ConsumerEvent, DeliveryCallback, NoCommit};
use ackstream_core::{
    Admin, BackendError, Broker, BrokerCore, OffsetReset, OutgoingRecord, Record, RecordPosition,
    SubscriberConfig, TopicPartition,
};
use tokio::sync::mpsc;

// The backend's consumer side: public because the backend's types name them, hidden because
// an application never uses them.
#[doc(hidden)]
pub use consumer::MemoryConsumer;
#[doc(hidden)]
pub use feed::MemoryFeed;
pub use partitioner::{murmur2, partition_for_key};

use self::consumer::GroupOffsets;
use self::group::Group;
use self::log::{Topics, lock};

/// The in-memory broker's state, shared by every clone of the broker.
#[derive(Debug)]
struct Cluster {
    topics: Arc<Topics>,
    groups: Mutex<HashMap<String, Arc<Group>>>,
}

impl Cluster {
    fn group(&self, name: &str) -> Arc<Group> {
        lock(&self.groups)
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(Group::new(name)))
            .clone()
    }

    fn existing_group(&self, name: &str) -> Option<Arc<Group>> {
        lock(&self.groups).get(name).cloned()
    }
}

/// The in-memory backend (what [`MemoryBroker`] runs on).
#[derive(Debug, Clone)]
pub struct MemoryBackend {
    cluster: Arc<Cluster>,
}

impl Backend for MemoryBackend {
    type Consumer = MemoryConsumer;

    async fn consumer(&self, config: &SubscriberConfig) -> Result<MemoryConsumer, BackendError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let topics = self.cluster.topics.clone();
        match &config.group_id {
            Some(name) => {
                let group = self.cluster.group(name);
                let member = group
                    .join(&topics, config.topics.clone(), config.offset_reset, tx)
                    .await?;
                let offsets = Arc::new(GroupOffsets {
                    group: group.clone(),
                    member,
                    topics: topics.clone(),
                });
                Ok(MemoryConsumer::new(
                    rx,
                    offsets,
                    Some((group, member, topics)),
                    None,
                ))
            }
            None => {
                let mut feeds = Vec::new();
                for name in &config.topics {
                    let topic = topics.get_or_create(name)?;
                    for log in &topic.partitions {
                        let from = match config.offset_reset {
                            OffsetReset::Earliest => 0,
                            OffsetReset::Latest => log.end_offset(),
                        };
                        feeds.push(MemoryFeed::new(log.clone(), from, None));
                    }
                }
                let _ = tx.send(ConsumerEvent::Assigned(feeds));
                Ok(MemoryConsumer::new(rx, Arc::new(NoCommit), None, Some(tx)))
            }
        }
    }

    async fn publish(&self, record: OutgoingRecord) -> Result<RecordPosition, BackendError> {
        self.append(&record)
    }

    /// Appends at once and answers at once: the in-memory log confirms as it stores.
    async fn publish_then(self: Arc<Self>, record: OutgoingRecord, done: DeliveryCallback) {
        done.call(self.append(&record));
    }

    /// The same, at once: the in-memory log never has to wait.
    fn try_publish_then(
        &self,
        record: OutgoingRecord,
        done: DeliveryCallback,
    ) -> Result<(), (OutgoingRecord, DeliveryCallback)> {
        done.call(self.append(&record));
        Ok(())
    }
}

impl MemoryBackend {
    fn append(&self, record: &OutgoingRecord) -> Result<RecordPosition, BackendError> {
        self.cluster
            .topics
            .get_or_create(&record.topic)?
            .append(record)
    }
}

/// The in-memory Kafka broker. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct MemoryBroker {
    core: Arc<BrokerCore<MemoryBackend>>,
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl Broker for MemoryBroker {
    type Backend = MemoryBackend;

    fn core(&self) -> &Arc<BrokerCore<MemoryBackend>> {
        &self.core
    }
}

impl MemoryBroker {
    /// An empty broker. Topics are created on first use with one partition, or explicitly with
    /// [`create_topic`](Self::create_topic).
    pub fn new() -> Self {
        let cluster = Arc::new(Cluster {
            topics: Arc::new(Topics::new()),
            groups: Mutex::new(HashMap::new()),
        });
        Self {
            core: Arc::new(BrokerCore::new(MemoryBackend { cluster })),
        }
    }

    /// Another client of the same in-memory cluster, with its own subscribers and state: what a
    /// second process connecting to the same Kafka would be (for group rebalances in tests).
    pub fn connect(&self) -> Self {
        let cluster = self.core.backend().cluster.clone();
        Self {
            core: Arc::new(BrokerCore::new(MemoryBackend { cluster })),
        }
    }

    fn cluster(&self) -> &Cluster {
        &self.core.backend().cluster
    }

    /// Partition count of topics created on first use (default 1).
    #[must_use]
    pub fn with_default_partitions(self, partitions: i32) -> Self {
        self.cluster()
            .topics
            .default_partitions
            .store(partitions.max(1), std::sync::atomic::Ordering::Relaxed);
        self
    }

    /// The offset `group` has committed for a partition (the next record it reads), read at
    /// once: commits are applied synchronously here. [`Admin::committed_offset`] is the same
    /// for code that runs against either broker.
    pub fn committed_now(&self, group: &str, topic: &str, partition: i32) -> Option<i64> {
        self.cluster()
            .existing_group(group)?
            .committed(&TopicPartition::new(topic, partition))
    }

    /// Sum of the committed offsets of `group` over every partition of `topic`.
    pub fn committed_total(&self, group: &str, topic: &str) -> i64 {
        let partitions = self
            .cluster()
            .topics
            .get(topic)
            .map_or(0, |t| t.partitions.len() as i32);
        (0..partitions)
            .filter_map(|p| self.committed_now(group, topic, p))
            .sum()
    }

    /// Waits until `group` has committed at least `total` offsets of `topic` (the committed
    /// offsets summed over its partitions). No timeout: wrap it in one.
    pub async fn wait_committed(&self, group: &str, topic: &str, total: i64) {
        let mut commits = self.cluster().group(group).watch_commits();
        while self.committed_total(group, topic) < total {
            if commits.changed().await.is_err() {
                return;
            }
        }
    }

    /// How many times the record at `offset` was handed to a consumer of `group` (`None`:
    /// consumers without a group).
    pub fn delivery_count(
        &self,
        group: Option<&str>,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> u32 {
        self.cluster()
            .topics
            .partition(topic, partition)
            .map_or(0, |p| p.delivery_count(group, offset))
    }

    /// The offset the next record of a partition will get (`None` if it does not exist).
    pub fn end_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        Some(
            self.cluster()
                .topics
                .partition(topic, partition)?
                .end_offset(),
        )
    }

    /// Number of partitions of a topic, if it exists.
    pub fn partition_count(&self, topic: &str) -> Option<i32> {
        Some(self.cluster().topics.get(topic)?.partitions.len() as i32)
    }

    /// Every record published to `topic`: partition 0 in offset order, then partition 1, and
    /// so on (empty if the topic does not exist). For tests that check what a service sent.
    pub fn published(&self, topic: &str) -> Vec<Record> {
        (0..self.partition_count(topic).unwrap_or(0))
            .flat_map(|p| self.records(topic, p))
            .collect()
    }

    /// Every record published to `topic` (as [`published`](Self::published)), decoded from
    /// JSON; the first record that does not decode is an error naming its position.
    #[cfg(feature = "json")]
    pub fn published_json<T: serde::de::DeserializeOwned>(
        &self,
        topic: &str,
    ) -> Result<Vec<T>, BackendError> {
        self.published(topic)
            .iter()
            .map(|r| {
                serde_json::from_slice(&r.payload).map_err(|e| {
                    BackendError::with_source(
                        format!(
                            "{}/{}@{} is not the JSON expected",
                            r.topic, r.partition, r.offset
                        ),
                        e,
                    )
                })
            })
            .collect()
    }

    /// Every record of a partition, in offset order.
    pub fn records(&self, topic: &str, partition: i32) -> Vec<Record> {
        self.cluster()
            .topics
            .partition(topic, partition)
            .map(|p| p.records())
            .unwrap_or_default()
    }

    /// Number of members currently in a group.
    pub async fn group_size(&self, group: &str) -> usize {
        match self.cluster().existing_group(group) {
            Some(g) => g.member_count().await,
            None => 0,
        }
    }
}

impl Admin for MemoryBroker {
    async fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), BackendError> {
        self.cluster().topics.create(topic, partitions).map(drop)
    }

    async fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> Result<Option<i64>, BackendError> {
        Ok(self.committed_now(group, topic, partition))
    }
}
