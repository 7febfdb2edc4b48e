//! On librdkafka's mock cluster: a subscriber's status knows the partition's high watermark
//! (from librdkafka's statistics, once a second) and the offset the broker confirmed, so a
//! stuck partition shows its lag and where its commit stands.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ackstream::prelude::*;
use ackstream::status::Holder;
use ackstream_kafka::KafkaBroker;
use rdkafka::mocking::MockCluster;
use tokio::sync::Notify;

const TOPIC: &str = "status-lag";
const RECORDS: i64 = 10;
const STUCK: i64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_partition_on_kafka_shows_its_lag_and_confirmed_commit() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic(TOPIC, 1, 1).expect("topic");
    let broker = KafkaBroker::new(cluster.bootstrap_servers())
        .commit_interval(Duration::from_millis(100))
        .config("session.timeout.ms", "4000")
        .config("heartbeat.interval.ms", "1000");
    for i in 0..RECORDS {
        broker
            .publish(TOPIC, i.to_string())
            .partition(0)
            .await
            .unwrap();
    }
    let release = Arc::new(Notify::new());
    let r = release.clone();
    broker
        .subscriber(TOPIC)
        .group_id("status-lag")
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .handle(move |Offset(offset): Offset| {
            let r = r.clone();
            async move {
                if offset == STUCK {
                    r.notified().await;
                }
            }
        });
    let app = App::new(broker.clone())
        .stuck_after(Duration::from_millis(500))
        .spawn();
    let monitor = app.monitor();
    let deadline = Instant::now() + Duration::from_secs(60);
    let p = loop {
        let sample = monitor.sample();
        let p = sample[0].partitions.first().cloned();
        if let Some(p) = p.filter(|p| p.high_watermark.is_some() && p.confirmed == Some(STUCK)) {
            break p;
        }
        assert!(Instant::now() < deadline, "no lag known: {sample:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(p.high_watermark, Some(RECORDS));
    assert_eq!(p.committable, Some(STUCK));
    assert_eq!(p.lag(), Some(RECORDS - STUCK));
    let held = p.oldest_unfinished.expect("held");
    assert_eq!((held.offset, held.holder), (STUCK, Holder::Running));
    let (confirmed, failed) = monitor.latest()[0]
        .commits
        .expect("Kafka counts its commits");
    assert!(confirmed >= 1, "{STUCK} was confirmed by a commit");
    assert_eq!(failed, 0);
    release.notify_one();
    app.shutdown().await.unwrap();
}
