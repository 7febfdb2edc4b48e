//! The behaviour suite against a real Kafka-compatible broker (tansu, started by
//! `scripts/test`), reached at `ACKSTREAM_KAFKA_BOOTSTRAP` (default `127.0.0.1:9092`).
//!
//! Ignored by a plain `cargo test`, which has no broker; `scripts/test` starts one and runs
//! these with `--include-ignored`.

use std::time::Duration;

mod support;

use ackstream::Admin;
use ackstream::Broker;
use ackstream::SubscriberBuilder;
use ackstream_kafka::{KafkaBackend, KafkaBroker};
use ackstream_suite::Fixture;

struct KafkaFixture {
    bootstrap: String,
}

impl KafkaFixture {
    fn new() -> Self {
        Self {
            bootstrap: std::env::var("ACKSTREAM_KAFKA_BOOTSTRAP")
                .unwrap_or_else(|_| "127.0.0.1:9092".to_owned()),
        }
    }
}

impl Fixture for KafkaFixture {
    type Broker = KafkaBroker;

    fn name(&self) -> &'static str {
        "kafka"
    }

    fn connect(&self) -> KafkaBroker {
        support::test_broker(&self.bootstrap)
    }

    async fn create_topic(&self, topic: &str, partitions: i32) {
        self.connect()
            .create_topic(topic, partitions)
            .await
            .expect("create topic");
    }

    async fn committed(&self, group: &str, topic: &str, partition: i32) -> Option<i64> {
        support::committed(&self.bootstrap, group, topic, partition).await
    }

    fn keeps_commit_metadata(&self) -> bool {
        // tansu 0.6 stores the offset of an OffsetCommit but not its metadata.
        false
    }

    fn subscriber(&self, broker: &KafkaBroker, topic: &str) -> SubscriberBuilder<KafkaBackend> {
        // tansu takes about half the session timeout to complete a join
        broker
            .subscriber(topic)
            .session_timeout(Duration::from_millis(2000))
            .heartbeat_interval(Duration::from_millis(500))
    }
}

ackstream_suite::behaviour_suite!(
    KafkaFixture::new(),
    #[ignore = "needs a Kafka broker: run scripts/test"]
);
