//! A broker that disappears mid-run and comes back: progress pauses, a record acked during the
//! outage is committed once the broker is back, fetching resumes, and nothing is lost or
//! committed early.
//!
//! It runs on its own librdkafka mock cluster (a real-protocol broker in this process, over
//! loopback TCP), because the mock can take its broker down and bring it back
//! (`broker_down` / `broker_up`), which tansu, shared by the other tests, cannot do to itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ackstream::Admin;
use ackstream::prelude::*;
use ackstream::{Disposition, TopicPartition};
use ackstream_kafka::KafkaBroker;
use ackstream_suite::Recorder;
use ackstream_suite::concurrency::check_commit_rule;
use rdkafka::mocking::MockCluster;
use tokio::sync::{Notify, Semaphore};

const BROKER_ID: i32 = 1;
const TOPIC: &str = "orders";
/// The handler of this id stops until the broker is down, so its ack lands in the outage.
const HELD: u64 = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_disappears_mid_run_pauses_progress_and_loses_nothing() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic(TOPIC, 2, 1).expect("topic");
    let broker = KafkaBroker::new(cluster.bootstrap_servers())
        .commit_interval(Duration::from_millis(100))
        // The mock delays a group's first join by 3 s: a shorter session never joins.
        .config("session.timeout.ms", "4000")
        .config("heartbeat.interval.ms", "1000")
        // So a publish during the outage fails within the test, and reconnects come quickly.
        .config("message.timeout.ms", "2000")
        .config("reconnect.backoff.max.ms", "500");
    let recorder = Recorder::attach(&broker);
    let mut ends: HashMap<i32, i64> = HashMap::new();
    // Publishes ids as records to `partition`, noting each partition's end.
    let publish = async |broker: &KafkaBroker,
                         ids: std::ops::Range<u64>,
                         partition: i32,
                         ends: &mut HashMap<i32, i64>| {
        for id in ids {
            let at = broker
                .publish(TOPIC, id.to_string())
                .partition(partition)
                .await
                .expect("publish while the broker is up");
            ends.insert(at.partition, at.offset + 1);
        }
    };
    publish(&broker, 0..50, 0, &mut ends).await;
    publish(&broker, 50..100, 1, &mut ends).await;

    let handled: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let held_at: Arc<OnceLock<(i32, i64)>> = Arc::default();
    let held_entered = Arc::new(Notify::new());
    let release_held = Arc::new(Semaphore::new(0));
    {
        let (handled, entered, release) =
            (handled.clone(), held_entered.clone(), release_held.clone());
        let held_at = held_at.clone();
        broker
            .subscriber(TOPIC)
            .group_id("broker-loss")
            .auto_offset_reset(OffsetReset::Earliest)
            .auto_commit(false)
            .handle(
                move |Partition(p): Partition, Offset(o): Offset, body: String| {
                    let (handled, entered, release) =
                        (handled.clone(), entered.clone(), release.clone());
                    let held_at = held_at.clone();
                    async move {
                        let id: u64 = body.parse().expect("an id");
                        if id == HELD && handled.lock().unwrap().get(&id).is_none() {
                            let _ = held_at.set((p, o));
                            entered.notify_one();
                            release.acquire().await.expect("open").forget();
                        }
                        *handled.lock().unwrap().entry(id).or_default() += 1;
                    }
                },
            );
    }
    let app = App::new(broker.clone()).spawn();

    // Mid-run: one handler is running, the other partition has moved on.
    held_entered.notified().await;
    cluster.broker_down(BROKER_ID).expect("broker down");
    let err = broker
        .publish(TOPIC, "during the outage")
        .await
        .expect_err("the broker is gone");
    assert!(
        format!("{err:#}").to_lowercase().contains("timed out"),
        "{err:#}"
    );

    // The held record finishes during the outage: acked, its commit cannot reach the broker.
    release_held.add_permits(1);
    let (partition, offset) = *held_at.get().expect("the held record's position");
    let held = TopicPartition::new(TOPIC, partition);
    recorder
        .wait_for("the held record acked during the outage", |r| {
            r.settles(&held, offset) == [Disposition::Ack]
        })
        .await;

    cluster.broker_up(BROKER_ID).expect("broker up");
    // Fetching resumes: records published after the outage are handled too. They go to the
    // other partition, so the held record's partition ends with the commit that failed during
    // the outage, and only its retry can bring that partition's commit to the end.
    publish(&broker, 100..160, 1 - partition, &mut ends).await;
    recorder
        .wait_for("every id handled after the outage", |_| {
            handled.lock().unwrap().len() == 160
        })
        .await;
    // The commit made during the outage reaches the broker while the app runs, not only
    // through the synchronous commit at shutdown (librdkafka holds it for the coordinator; one
    // that fails is sent again with the next commit: see `offsets.rs`' unit tests). No event
    // reports a broker's confirmation, so ask the broker.
    let committed_ends = async || {
        for (&partition, &end) in &ends {
            let committed = broker
                .committed_offset("broker-loss", TOPIC, partition)
                .await
                .ok()
                .flatten();
            if committed != Some(end) {
                return false;
            }
        }
        true
    };
    let deadline = tokio::time::Instant::now() + ackstream_suite::EVENT_TIMEOUT;
    while !committed_ends().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "commits did not reach the ends after the outage"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.shutdown().await.expect("clean shutdown");

    let handled = handled.lock().unwrap().clone();
    assert!((0..160).all(|id| handled.get(&id).copied().unwrap_or(0) >= 1));
    check_commit_rule(&recorder.events(), "broker loss");
    for (partition, end) in ends {
        let committed = broker
            .committed_offset("broker-loss", TOPIC, partition)
            .await
            .expect("committed offset");
        assert_eq!(
            committed,
            Some(end),
            "{}: committed to the end once the broker was back",
            TopicPartition::new(TOPIC, partition)
        );
    }
    drop(broker);
}

/// Shutting down while the broker is gone still ends: the synchronous commit waits at most
/// `commit_timeout` (librdkafka's would wait for a coordinator forever), and what it could not
/// commit stays uncommitted, to be delivered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_the_broker_gone_ends_within_the_commit_timeout() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic(TOPIC, 1, 1).expect("topic");
    let broker = KafkaBroker::new(cluster.bootstrap_servers())
        // Long enough that no asynchronous commit goes out before the broker is gone.
        .commit_interval(Duration::from_secs(600))
        .commit_timeout(Duration::from_secs(2))
        .config("session.timeout.ms", "4000")
        .config("heartbeat.interval.ms", "1000");
    let recorder = Recorder::attach(&broker);
    broker.publish(TOPIC, "0").await.expect("publish");
    broker
        .subscriber(TOPIC)
        .group_id("gone")
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .handle(|_: String| async {});
    let app = App::new(broker.clone()).spawn();
    let p = TopicPartition::new(TOPIC, 0);
    recorder
        .wait_for("record 0 acked", |r| r.settles(&p, 0) == [Disposition::Ack])
        .await;
    cluster.broker_down(BROKER_ID).expect("broker down");
    let outcome = tokio::time::timeout(Duration::from_secs(30), app.shutdown()).await;
    assert!(outcome.is_ok(), "shutdown did not end");
    cluster.broker_up(BROKER_ID).expect("broker up");
    let committed = broker
        .committed_offset("gone", TOPIC, 0)
        .await
        .expect("committed offset");
    assert_eq!(committed, None, "nothing reached the broker");
}
