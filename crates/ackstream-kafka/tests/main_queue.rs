//! librdkafka's main queue (logs, statistics, commit results, rebalance events) is drained
//! every turn of the poll thread, a bounded number of events at a time: a burst of events does
//! not hold back a rebalance behind it. Before, the poll thread served one event per turn and
//! slept up to 10 ms between idle turns: about 100 events a second, so a client emitting more
//! (here statistics every 5 ms, 200 a second) never reached its assignment, and the queue grew
//! without bound.
//!
//! On librdkafka's mock cluster.

use std::time::{Duration, Instant};

use ackstream::TopicPartition;
use ackstream::prelude::*;
use ackstream_kafka::KafkaBroker;
use ackstream_suite::Recorder;
use rdkafka::mocking::MockCluster;

const TOPIC: &str = "busy";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_main_queue_events_does_not_hold_back_the_assignment() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic(TOPIC, 1, 1).expect("topic");
    let broker = KafkaBroker::new(cluster.bootstrap_servers())
        .commit_interval(Duration::from_millis(100))
        // The mock delays a group's first join by 3 s: a shorter session never joins.
        .config("session.timeout.ms", "4000")
        .config("heartbeat.interval.ms", "1000");
    broker
        .publish(TOPIC, "0")
        .partition(0)
        .await
        .expect("publish");
    let recorder = Recorder::attach(&broker);
    broker
        .subscriber(TOPIC)
        .group_id("busy")
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        // 200 statistics events a second on the consumer's main queue.
        .config("statistics.interval.ms", "5")
        .handle(|_: String| async {});
    let started = Instant::now();
    let app = App::new(broker.clone()).spawn();
    let tp = TopicPartition::new(TOPIC, 0);
    // The join itself takes about 3 s on the mock; the limit leaves a margin of 12 s.
    let handled = recorder
        .came_within(Duration::from_secs(15), |r| r.stored(&tp).contains(&1))
        .await;
    assert!(
        handled,
        "the record was not handled within 15 s: the assignment waited behind the statistics \
         events ({:?} since start)",
        started.elapsed()
    );
    app.shutdown().await.expect("clean shutdown");
    drop(broker);
}
