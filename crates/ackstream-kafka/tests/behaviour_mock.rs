//! The behaviour suite against librdkafka's mock cluster: a second real-protocol target that
//! needs no external broker, so these tests run in a plain `cargo test`.
//!
//! The mock cluster (`rdkafka::mocking`) is a Kafka broker implemented inside librdkafka. It runs
//! on its own thread in this process and listens on a real loopback port, so every client the
//! suite makes (`KafkaBroker` consumers, producer, offset lookups) reaches it over TCP like any
//! broker. One cluster with one broker serves the whole test binary; tests keep apart through
//! unique topic and group names.
//!
//! Settings, and why (see `shared/design/brokers.md`, "librdkafka's mock cluster"):
//! - The cluster is owned by a client made with `test.mock.num.brokers=1`, kept in a `static`
//!   and never dropped, so the cluster outlives every test. A `MockCluster` value is not `Send`;
//!   the one used to create a topic is borrowed from that client for the duration of the call.
//! - Topics are created with the mock's own `create_topic`: the mock has no CreateTopics
//!   handler, so `KafkaBroker::create_topic` (admin API) does not work against it.
//! - The mock delays the first join of an empty group by 3000 ms
//!   (`group.initial.rebalance.delay.ms`) and evicts a member whose session expires meanwhile,
//!   so `session.timeout.ms` must exceed 3000 or no consumer ever joins. The delay can be set to 0
//!   only through `rdkafka_sys` (`rd_kafka_mock_group_initial_rebalance_delay_ms`), an `unsafe`
//!   call, and the workspace forbids `unsafe_code`. So every test that starts a group pays those
//!   3 s, and a rebalance of a non-empty group takes `session.timeout.ms` − 1 s. 4000 ms leaves a
//!   second of margin on a loaded machine; heartbeats every 1000 ms.
//!
//! Not run here (so the suite is listed below instead of `behaviour_suite!`):
//! `nack_redelivers_to_another_group_member`. The second member commits and shuts down right
//! after the first left the group; the mock then holds the group in its join phase for
//! `session.timeout.ms` − 1 s and answers every OffsetCommit with REBALANCE_IN_PROGRESS (Kafka
//! accepts commits of the current generation meanwhile), so the final commit is refused and the
//! committed-offset check fails. It passes on tansu (`tests/behaviour.rs`). Evaluating the mock
//! also found a real bug, fixed since: a revoke reaching a consumer during its shutdown was never
//! acknowledged, and `App::shutdown` hung.

use std::sync::OnceLock;

use ackstream::Broker;
use ackstream::SubscriberBuilder;
use ackstream_kafka::{KafkaBackend, KafkaBroker};
use ackstream_suite::Fixture;
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, Producer};

/// The client that owns the mock cluster, for the whole test process.
fn cluster_owner() -> &'static BaseProducer {
    static OWNER: OnceLock<BaseProducer> = OnceLock::new();
    OWNER.get_or_init(|| {
        ClientConfig::new()
            .set("test.mock.num.brokers", "1")
            .create()
            .expect("start the mock cluster")
    })
}

struct MockFixture {
    bootstrap: String,
}

impl MockFixture {
    fn new() -> Self {
        let cluster = cluster_owner()
            .client()
            .mock_cluster()
            .expect("mock cluster");
        Self {
            bootstrap: cluster.bootstrap_servers(),
        }
    }
}

impl Fixture for MockFixture {
    type Broker = KafkaBroker;

    fn name(&self) -> &'static str {
        "kafka-mock"
    }

    fn connect(&self) -> KafkaBroker {
        KafkaBroker::new(&self.bootstrap)
            // tests settle in milliseconds: commit as they happen
            .commit_interval(std::time::Duration::from_millis(100))
    }

    async fn create_topic(&self, topic: &str, partitions: i32) {
        let cluster = cluster_owner()
            .client()
            .mock_cluster()
            .expect("mock cluster");
        cluster
            .create_topic(topic, partitions, 1)
            .expect("create topic");
    }

    async fn committed(&self, group: &str, topic: &str, partition: i32) -> Option<i64> {
        self.connect()
            .committed_offset(group, topic, partition)
            .await
            .expect("read committed offset")
    }

    fn subscriber(&self, broker: &KafkaBroker, topic: &str) -> SubscriberBuilder<KafkaBackend> {
        broker
            .subscriber(topic)
            .config("session.timeout.ms", "4000")
            .config("heartbeat.interval.ms", "1000")
    }
}

// What `behaviour_suite!` expands to, minus the scenario above (keep in step with it).
ackstream_suite::__policy_tests!([] MockFixture::new(), ack_first, AckFirst);
ackstream_suite::__policy_tests!([] MockFixture::new(), ack, Ack);
ackstream_suite::__policy_tests!([] MockFixture::new(), reject_on_error, RejectOnError);
ackstream_suite::__policy_tests!([] MockFixture::new(), nack_on_error, NackOnError);
ackstream_suite::__policy_tests!([] MockFixture::new(), manual, Manual);
ackstream_suite::__scenario_tests!([] MockFixture::new(),
    ack_first_acks_before_the_handler_runs,
    members_of_one_group_split_the_partitions,
    nack_on_error_commits_after_success_and_redelivers_after_error,
    manual_unsettled_record_holds_back_the_commit,
    every_group_sees_every_record,
    restart_resumes_from_the_committed_offset,
    latest_offset_reset_skips_earlier_records,
    shutdown_drains_in_flight_handlers_and_commits,
    handler_cancelled_at_drain_deadline_is_not_committed,
    settle_after_revoke_changes_nothing,
    nack_after_delay_redelivers_later,
    max_attempts_turns_nack_into_reject,
);
