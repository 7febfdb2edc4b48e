//! The in-memory broker's Kafka semantics.

use ackstream::memory::{MemoryBroker, partition_for_key};
use ackstream::prelude::*;

#[tokio::test]
async fn keyed_records_land_where_kafkas_partitioner_puts_them() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 6).await.unwrap();
    for key in ["a", "customer-42", "21", "foobar", ""] {
        let pos = broker.publish("t", "v").key(key).await.unwrap();
        assert_eq!(pos.partition, partition_for_key(key.as_bytes(), 6), "{key}");
    }
    // same key, same partition, increasing offsets
    let a = broker.publish("t", "1").key("k").await.unwrap();
    let b = broker.publish("t", "2").key("k").await.unwrap();
    assert_eq!(a.partition, b.partition);
    assert_eq!(b.offset, a.offset + 1);
}

#[tokio::test]
async fn explicit_partition_wins_and_must_exist() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 2).await.unwrap();
    let pos = broker
        .publish("t", "v")
        .key("k")
        .partition(1)
        .await
        .unwrap();
    assert_eq!(pos.partition, 1);
    let err = broker.publish("t", "v").partition(2).await.unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[tokio::test]
async fn topics_are_created_on_first_use_with_the_default_partition_count() {
    let broker = MemoryBroker::new().with_default_partitions(3);
    broker.publish("new", "v").await.unwrap();
    assert_eq!(broker.partition_count("new"), Some(3));
    assert!(
        broker.create_topic("new", 5).await.is_err(),
        "recreating with another count"
    );
}

#[tokio::test]
async fn headers_and_keys_reach_the_handler() {
    let broker = MemoryBroker::new();
    broker
        .publish("t", "body")
        .key("the-key")
        .header("trace", "abc")
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    broker
        .subscriber("t")
        .auto_offset_reset(OffsetReset::Earliest)
        .handle(move |Key(key): Key, headers: Headers, msg: KafkaMessage| {
            let tx = tx.clone();
            async move {
                tx.send((
                    key,
                    headers.get_str("trace").map(str::to_owned),
                    msg.topic().to_owned(),
                ))
                .unwrap();
            }
        });
    let app = App::new(broker).spawn();
    let (key, trace, topic) = rx.recv().await.unwrap();
    app.shutdown().await.unwrap();
    assert_eq!(key.as_deref(), Some(&b"the-key"[..]));
    assert_eq!(trace.as_deref(), Some("abc"));
    assert_eq!(topic, "t");
}

#[tokio::test]
async fn subscriber_without_group_reads_every_partition_and_commits_nothing() {
    let broker = MemoryBroker::new();
    broker.create_topic("t", 3).await.unwrap();
    for p in 0..3 {
        broker.publish("t", "v").partition(p).await.unwrap();
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    broker
        .subscriber("t")
        .auto_offset_reset(OffsetReset::Earliest)
        .handle(move |msg: KafkaMessage| {
            let tx = tx.clone();
            async move { tx.send(msg.partition()).unwrap() }
        });
    let app = App::new(broker.clone()).spawn();
    let mut seen = vec![
        rx.recv().await.unwrap(),
        rx.recv().await.unwrap(),
        rx.recv().await.unwrap(),
    ];
    app.shutdown().await.unwrap();
    seen.sort();
    assert_eq!(seen, vec![0, 1, 2]);
    assert_eq!(broker.delivery_count(None, "t", 1, 0), 1);
}

#[tokio::test]
async fn group_membership_follows_app_lifecycles() {
    let broker = MemoryBroker::new();
    let second = broker.connect();
    let joined = std::sync::Arc::new(tokio::sync::Notify::new());
    let j = joined.clone();
    second.observe(move |e| {
        if matches!(e, ackstream::event::Event::Assigned { .. }) {
            j.notify_one();
        }
    });
    for b in [&broker, &second] {
        b.subscriber("t")
            .group_id("g")
            .auto_commit(false)
            .handle(|_: String| async {});
    }
    let a = App::new(broker.clone()).spawn();
    let b = App::new(second).spawn();
    joined.notified().await; // the second member's first assignment: it has joined
    assert_eq!(broker.group_size("g").await, 2);
    a.shutdown().await.unwrap();
    assert_eq!(broker.group_size("g").await, 1);
    b.shutdown().await.unwrap();
    assert_eq!(broker.group_size("g").await, 0);
}
