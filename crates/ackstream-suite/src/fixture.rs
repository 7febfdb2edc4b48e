//! Fixtures: how the suite reaches a broker.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use ackstream::memory::MemoryBroker;
use ackstream::{Admin, Broker, SubscriberBuilder};

/// A broker under test.
pub trait Fixture: Send + Sync + 'static {
    /// The broker type.
    type Broker: Broker;

    /// Name for messages.
    fn name(&self) -> &'static str;

    /// A new client of the broker, with its own subscribers: two clients in one group are two
    /// members, as two processes would be.
    fn connect(&self) -> Self::Broker;

    /// Creates a topic.
    fn create_topic(&self, topic: &str, partitions: i32) -> impl Future<Output = ()> + Send;

    /// What `group` has committed for a partition, read from the broker.
    fn committed(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> impl Future<Output = Option<i64>> + Send;

    /// Whether the broker accepts a member's commit while the group is rebalancing (Kafka and
    /// the in-memory broker do; librdkafka's mock cluster answers REBALANCE_IN_PROGRESS for a
    /// while). Scenarios that commit right after a member left check the commit only if so.
    fn accepts_commits_while_rebalancing(&self) -> bool {
        true
    }

    /// Whether the broker refuses topic names Kafka does not allow (Kafka and the in-memory
    /// broker do; librdkafka's mock cluster accepts any name). The failing dead-letter scenario
    /// relies on it to make publishing fail.
    fn refuses_invalid_topic_names(&self) -> bool {
        true
    }

    /// Whether the broker keeps the metadata of committed offsets (Kafka, librdkafka's mock
    /// cluster and the in-memory broker do; tansu 0.6 accepts it and returns none). ackstream
    /// hands attempt counts over to a partition's next owner in it; without it they restart.
    fn keeps_commit_metadata(&self) -> bool {
        true
    }

    /// How long a rebalance of a group takes on this broker, about: nothing for the in-memory
    /// broker, seconds for librdkafka's mock cluster. The explorer paces its handlers by it, so
    /// that on a slow broker records are still in flight when a membership change arrives.
    fn rebalance_takes(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// Cases each property test runs against this broker: many where a case costs
    /// microseconds, a few where each joins a consumer group over the network.
    fn property_cases(&self) -> u64 {
        4
    }

    /// A subscriber with the settings this broker needs in tests (e.g. short session timeouts).
    fn subscriber(
        &self,
        broker: &Self::Broker,
        topic: &str,
    ) -> SubscriberBuilder<<Self::Broker as Broker>::Backend> {
        broker.subscriber(topic)
    }
}

/// A name no other test (or earlier run against the same broker) uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{prefix}-{}-{nanos}-{n}", std::process::id())
}

/// The in-memory broker: one cluster per fixture, so tests stay apart.
#[derive(Debug, Clone)]
pub struct MemoryFixture {
    cluster: MemoryBroker,
}

impl MemoryFixture {
    /// A fresh in-memory cluster.
    pub fn new() -> Self {
        Self {
            cluster: MemoryBroker::new(),
        }
    }
}

impl Default for MemoryFixture {
    fn default() -> Self {
        Self::new()
    }
}

impl Fixture for MemoryFixture {
    type Broker = MemoryBroker;

    fn name(&self) -> &'static str {
        "memory"
    }

    fn connect(&self) -> MemoryBroker {
        self.cluster.connect()
    }

    async fn create_topic(&self, topic: &str, partitions: i32) {
        self.cluster
            .create_topic(topic, partitions)
            .await
            .expect("create topic");
    }

    async fn committed(&self, group: &str, topic: &str, partition: i32) -> Option<i64> {
        self.cluster.committed_now(group, topic, partition)
    }

    fn property_cases(&self) -> u64 {
        1000
    }
}
