//! `msg.commit()` waits for the broker on a bounded number of threads: during a coordinator
//! outage, many handlers committing at once do not each start a thread of their own (before,
//! every call started one, and each stayed blocked in librdkafka until the coordinator came
//! back). The OS threads are counted by name in `/proc/self/task` (this file is a test binary
//! of its own, so no other test's consumers are counted).
//!
//! On librdkafka's mock cluster, whose broker can be taken down and brought back.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::time::Duration;

use ackstream::prelude::*;
use ackstream_kafka::KafkaBroker;
use rdkafka::mocking::MockCluster;
use tokio::sync::{Notify, watch};

const TOPIC: &str = "commits";
const HANDLERS: usize = 64;

/// The process's threads whose (15-byte, kernel-truncated) name starts with "ackstream": the
/// backend's own threads.
fn ackstream_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("ackstream"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_commits_during_a_coordinator_outage_use_a_bounded_number_of_threads() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic(TOPIC, 1, 1).expect("topic");
    let broker = KafkaBroker::new(cluster.bootstrap_servers())
        .commit_interval(Duration::from_secs(600))
        .commit_timeout(Duration::from_secs(3))
        .config("session.timeout.ms", "4000")
        .config("heartbeat.interval.ms", "1000");
    for i in 0..HANDLERS {
        broker
            .publish(TOPIC, i.to_string())
            .partition(0)
            .await
            .expect("publish");
    }
    let entered = Arc::new(AtomicUsize::new(0));
    let all_entered = Arc::new(Notify::new());
    let (go, go_rx) = watch::channel(false);
    let committed = Arc::new(AtomicUsize::new(0));
    let confirmed = Arc::new(AtomicUsize::new(0));
    {
        let (entered, all_entered, committed, confirmed) = (
            entered.clone(),
            all_entered.clone(),
            committed.clone(),
            confirmed.clone(),
        );
        broker
            .subscriber(TOPIC)
            .group_id("commits")
            .auto_offset_reset(OffsetReset::Earliest)
            .no_ack(true)
            .max_workers(HANDLERS)
            .ordering(KeepOrder::Unordered)
            .handle(move |msg: KafkaMessage| {
                let (entered, all_entered, committed, confirmed) = (
                    entered.clone(),
                    all_entered.clone(),
                    committed.clone(),
                    confirmed.clone(),
                );
                let mut go = go_rx.clone();
                async move {
                    if entered.fetch_add(1, AtomicOrdering::AcqRel) + 1 == HANDLERS {
                        all_entered.notify_one();
                    }
                    go.wait_for(|g| *g).await.expect("open");
                    msg.ack().await.expect("ack");
                    if msg.commit().await.is_ok() {
                        confirmed.fetch_add(1, AtomicOrdering::AcqRel);
                    }
                    committed.fetch_add(1, AtomicOrdering::AcqRel);
                }
            });
    }
    let app = App::new(broker.clone()).spawn();
    all_entered.notified().await;
    let before = ackstream_threads();
    cluster.broker_down(1).expect("broker down");
    go.send_replace(true);
    // Until every commit call has returned (each waits at most the commit timeout), watch the
    // thread count.
    let mut most = before;
    let deadline = tokio::time::Instant::now() + ackstream_suite::EVENT_TIMEOUT;
    while committed.load(AtomicOrdering::Acquire) < HANDLERS {
        assert!(
            tokio::time::Instant::now() < deadline,
            "commit calls did not return"
        );
        most = most.max(ackstream_threads());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A call with nothing stored yet returns at once; the others wait for the broker.
    assert!(
        confirmed.load(AtomicOrdering::Acquire) < HANDLERS,
        "the commits did not meet the outage"
    );
    assert!(
        most <= 2,
        "{HANDLERS} concurrent commits ran on {most} ackstream threads (one poll thread and \
         one commit thread expected; {before} before the commits)"
    );
    cluster.broker_up(1).expect("broker up");
    app.shutdown().await.expect("clean shutdown");
    drop(broker);
}
