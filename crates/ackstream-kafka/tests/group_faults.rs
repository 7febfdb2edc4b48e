//! What the group coordinator can do to a member, on librdkafka's mock cluster, with errors the
//! mock returns to the member's heartbeats (`MockCluster::request_errors`), handled by
//! librdkafka's own group code:
//! - ILLEGAL_GENERATION: the member's assignment is *lost* (librdkafka's `assignment_lost()`):
//!   another member may own its partitions already, so they are fenced at once;
//! - FENCED_INSTANCE_ID (static membership: another process took this `group.instance.id`): a
//!   *fatal* error; the subscriber ends with it and the app returns it.
//!
//! Each test has a cluster of its own, since pushed errors apply to every client of a cluster.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use ackstream::Admin;
use ackstream::prelude::*;
use ackstream::{AppError, SettleStatus, TopicPartition};
use ackstream_kafka::KafkaBroker;
use ackstream_suite::Recorder;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use tokio::sync::{Notify, Semaphore};

fn broker(cluster: &MockCluster<'_, impl rdkafka::ClientContext>) -> KafkaBroker {
    KafkaBroker::new(cluster.bootstrap_servers())
        // No coalesced commit before the fault: what is stored then is committed only if the
        // runtime commits it.
        .commit_interval(Duration::from_secs(600))
        // The mock delays a group's first join by 3 s: a shorter session never joins.
        .config("session.timeout.ms", "4000")
        .config("heartbeat.interval.ms", "500")
}

/// A lost assignment is fenced at once: the runtime does not wait for the partition's
/// in-flight handler (the drain timeout here is a minute; the handler is cancelled), commits
/// nothing for it, and a late ack of its record (from a task the handler spawned) changes
/// nothing; the partition's next assignment delivers the record again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_assignment_is_fenced_at_once_without_drain_or_commit() {
    const TOPIC: &str = "lost";
    const GROUP: &str = "lost";
    const HELD: i64 = 5;
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic(TOPIC, 1, 1).expect("topic");
    let broker = broker(&cluster);
    for i in 0..10 {
        broker
            .publish(TOPIC, i.to_string())
            .partition(0)
            .await
            .expect("publish");
    }
    let recorder = Recorder::attach(&broker);
    let entered = Arc::new(Notify::new());
    let release = Arc::new(Semaphore::new(0));
    let late_ack: Arc<std::sync::OnceLock<SettleStatus>> = Arc::default();
    // Only the first delivery of the held record waits.
    let held_once = Arc::new(AtomicBool::new(false));
    {
        let (entered, release, late_ack) = (entered.clone(), release.clone(), late_ack.clone());
        let held_once = held_once.clone();
        broker
            .subscriber(TOPIC)
            .group_id(GROUP)
            .auto_offset_reset(OffsetReset::Earliest)
            .no_ack(true)
            .handle(move |msg: KafkaMessage| {
                let (entered, release, late_ack) =
                    (entered.clone(), release.clone(), late_ack.clone());
                let held_once = held_once.clone();
                async move {
                    if msg.offset() == HELD && !held_once.swap(true, AtomicOrdering::AcqRel) {
                        // Settled later from another task (after the loss), while the
                        // handler itself stays in flight until it is cancelled.
                        let msg = msg.clone();
                        tokio::spawn(async move {
                            release.acquire().await.expect("open").forget();
                            let status = msg.ack().await.expect("ack");
                            let _ = late_ack.set(status);
                        });
                        entered.notify_one();
                        std::future::pending::<()>().await;
                    }
                    msg.ack().await.expect("ack");
                }
            });
    }
    let app = App::new(broker.clone())
        .drain_timeout(Duration::from_secs(60))
        .spawn();
    let tp = TopicPartition::new(TOPIC, 0);
    entered.notified().await;
    recorder
        .wait_for("0..5 acked", |r| r.stored(&tp).contains(&HELD))
        .await;

    let lost_at = Instant::now();
    cluster.request_errors(
        RDKafkaApiKey::Heartbeat,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION],
    );
    let fenced_in_time = recorder
        .came_within(Duration::from_secs(15), |r| {
            r.events()
                .iter()
                .any(|e| matches!(e, ackstream::event::Event::Revoked { .. }))
        })
        .await;
    assert!(
        fenced_in_time,
        "the lost partition was not given up within 15 s (the drain timeout is 60 s)"
    );
    assert!(lost_at.elapsed() < Duration::from_secs(15));
    assert_eq!(
        broker
            .committed_offset(GROUP, TOPIC, 0)
            .await
            .expect("committed"),
        None,
        "nothing is committed for a lost partition"
    );

    // The handler of the lost assignment finishes late: its ack is stale.
    release.add_permits(1);
    let deadline = tokio::time::Instant::now() + ackstream_suite::EVENT_TIMEOUT;
    while late_ack.get().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the held handler never acked"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(late_ack.get(), Some(&SettleStatus::Stale));

    // The partition comes back (the member rejoins) and the record is delivered again.
    recorder
        .wait_for("the held record delivered again", |r| {
            r.deliveries(&tp, HELD) >= 2
        })
        .await;
    recorder
        .wait_for("the rest handled", |r| r.stored(&tp).contains(&10))
        .await;
    app.shutdown().await.expect("clean shutdown");
    assert_eq!(
        broker
            .committed_offset(GROUP, TOPIC, 0)
            .await
            .expect("committed"),
        Some(10)
    );
    drop(broker);
}

/// A fatal librdkafka error (here FENCED_INSTANCE_ID: another consumer took this static
/// member's `group.instance.id`) ends the subscriber; the app stops and returns the error,
/// naming it, instead of running on while consuming nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_client_error_ends_the_app_with_that_error() {
    const TOPIC: &str = "fatal";
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic(TOPIC, 1, 1).expect("topic");
    let broker = broker(&cluster).config("group.instance.id", "the-one");
    let recorder = Recorder::attach(&broker);
    broker
        .subscriber(TOPIC)
        .group_id("fatal")
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .handle(|_: String| async {});
    let app = App::new(broker.clone()).spawn();
    recorder
        .wait_for("assigned", |r| r.assignments("fatal") == 1)
        .await;
    cluster.request_errors(
        RDKafkaApiKey::Heartbeat,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_FENCED_INSTANCE_ID],
    );
    let outcome = tokio::time::timeout(Duration::from_secs(30), app.join())
        .await
        .expect("the app stops by itself after a fatal error");
    let err = outcome.expect_err("the app reports the fatal error");
    let AppError::Subscriber(backend) = &err else {
        panic!("not a subscriber error: {err}");
    };
    assert_eq!(backend.kind(), ackstream::BackendErrorKind::Fatal, "{err}");
    assert!(!backend.is_retriable());
    let text = err.to_string();
    assert!(
        text.contains("fatal") && text.to_lowercase().contains("fenced"),
        "the error names the fatal error: {text}"
    );
    drop(broker);
}
