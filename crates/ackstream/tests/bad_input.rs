//! Bad input gets a clear outcome and loses nothing: one test per row of the README's
//! bad-input table (the rows covered elsewhere name their test there).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as Atomic};
use std::sync::{Arc, Mutex};

use ackstream::extract::Offset;
use ackstream::memory::MemoryBroker;
use ackstream::prelude::*;
use tokio::sync::mpsc;

#[derive(Debug, serde::Deserialize)]
struct Order {
    #[allow(dead_code)]
    id: u64,
}

/// A payload that is JSON but not of the handler's type never reaches the handler; under
/// `NackOnError` it is tried `max_decode_attempts` times, then rejected, and the partition
/// moves on.
#[tokio::test]
async fn json_of_the_wrong_shape_is_a_decode_failure_and_the_partition_moves_on() {
    let broker = MemoryBroker::new();
    broker
        .publish("t", r#"{"id":"not a number"}"#)
        .await
        .unwrap();
    broker.publish("t", r#"{"id":7}"#).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    broker
        .subscriber("t")
        .group_id("g")
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .handle(move |Json(order): Json<Order>| {
            let tx = tx.clone();
            async move { tx.send(order).unwrap() }
        });
    let attempts = Arc::new(AtomicUsize::new(0));
    let a = attempts.clone();
    broker.observe(move |e| {
        if let ackstream::event::Event::Delivered { offset: 0, .. } = e {
            a.fetch_add(1, Atomic::SeqCst);
        }
    });
    let app = App::new(broker.clone()).spawn();
    broker.wait_committed("g", "t", 2).await;
    app.shutdown().await.unwrap();
    assert_eq!(
        rx.recv().await.map(|o| o.id),
        Some(7),
        "only the good record"
    );
    assert_eq!(
        attempts.load(Atomic::SeqCst),
        ackstream::DEFAULT_DECODE_ATTEMPTS as usize
    );
    // Retries come from memory: the broker served the record once.
    assert_eq!(broker.delivery_count(Some("g"), "t", 0, 0), 1);
}

/// An empty payload is an empty `String` or `Bytes`, and a decode failure for `Json<T>`.
#[tokio::test]
async fn an_empty_payload_is_empty_text_and_not_json() {
    let broker = MemoryBroker::new();
    broker.publish("t", "").await.unwrap();
    let texts = Arc::new(AtomicUsize::new(0));
    let t = texts.clone();
    broker
        .subscriber("t")
        .group_id("text")
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .handle(move |body: String| {
            assert!(body.is_empty());
            t.fetch_add(1, Atomic::SeqCst);
            async {}
        });
    let json_called = Arc::new(AtomicBool::new(false));
    let j = json_called.clone();
    broker
        .subscriber("t")
        .group_id("json")
        .auto_offset_reset(OffsetReset::Earliest)
        .ack_policy(AckPolicy::RejectOnError)
        .handle(move |_: Json<Order>| {
            j.store(true, Atomic::SeqCst);
            async {}
        });
    let app = App::new(broker.clone()).spawn();
    broker.wait_committed("text", "t", 1).await;
    broker.wait_committed("json", "t", 1).await;
    app.shutdown().await.unwrap();
    assert_eq!(texts.load(Atomic::SeqCst), 1);
    assert!(!json_called.load(Atomic::SeqCst), "rejected, never handled");
}

/// A 10 MB payload is delivered whole by the in-memory broker (on Kafka, librdkafka refuses
/// to publish a record above `message.max.bytes`, 1 MB by default: see the Kafka tests).
#[tokio::test]
async fn a_10_mb_payload_is_delivered_whole() {
    let broker = MemoryBroker::new();
    let big = vec![b'x'; 10 * 1024 * 1024];
    broker.publish("t", big.clone()).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    broker
        .subscriber("t")
        .group_id("g")
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .handle(move |body: bytes::Bytes| {
            let tx = tx.clone();
            async move { tx.send(body.len()).unwrap() }
        });
    let app = App::new(broker.clone()).spawn();
    assert_eq!(rx.recv().await, Some(big.len()));
    broker.wait_committed("g", "t", 1).await;
    app.shutdown().await.unwrap();
}

/// ackstream counts attempts itself and never reads them from headers, so a record carrying a
/// garbled attempt-like header is an ordinary first delivery.
#[tokio::test]
async fn a_malformed_attempt_header_changes_nothing() {
    let broker = MemoryBroker::new();
    broker
        .publish("t", "body")
        .header("attempt", "not-a-number")
        .header(ackstream::dead_letter::HEADER_ATTEMPT, "\u{fffd}")
        .await
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    broker
        .subscriber("t")
        .group_id("g")
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .handle(move |Attempt(a): Attempt| {
            let tx = tx.clone();
            async move { tx.send(a).unwrap() }
        });
    let app = App::new(broker.clone()).spawn();
    assert_eq!(rx.recv().await, Some(1));
    broker.wait_committed("g", "t", 1).await;
    app.shutdown().await.unwrap();
}

/// Under `KeepOrder::Key`, records without a key count as one key: they run one at a time, in
/// offset order.
#[tokio::test]
async fn records_without_a_key_keep_their_order_under_key_ordering() {
    let broker = MemoryBroker::new();
    for i in 0..30 {
        broker.publish("t", format!("{i}")).await.unwrap();
    }
    let order: Arc<Mutex<Vec<i64>>> = Arc::default();
    let running = Arc::new(AtomicUsize::new(0));
    let overlapped = Arc::new(AtomicBool::new(false));
    let (o, r, over) = (order.clone(), running.clone(), overlapped.clone());
    broker
        .subscriber("t")
        .group_id("g")
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .max_workers(8)
        .ordering(KeepOrder::Key)
        .handle(move |Offset(offset): Offset| {
            let (o, r, over) = (o.clone(), r.clone(), over.clone());
            async move {
                if r.fetch_add(1, Atomic::SeqCst) > 0 {
                    over.store(true, Atomic::SeqCst);
                }
                o.lock().unwrap().push(offset);
                tokio::task::yield_now().await;
                r.fetch_sub(1, Atomic::SeqCst);
            }
        });
    let app = App::new(broker.clone()).spawn();
    broker.wait_committed("g", "t", 30).await;
    app.shutdown().await.unwrap();
    assert!(!overlapped.load(Atomic::SeqCst));
    assert_eq!(*order.lock().unwrap(), (0..30).collect::<Vec<i64>>());
}

/// A subscriber to a topic that does not exist yet waits for it (as Kafka does with topic
/// auto-creation); records published later are delivered.
#[tokio::test]
async fn a_topic_that_does_not_exist_yet_is_waited_for() {
    let broker = MemoryBroker::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    broker
        .subscriber("later")
        .group_id("g")
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .handle(move |body: String| {
            let tx = tx.clone();
            async move { tx.send(body).unwrap() }
        });
    let app = App::new(broker.clone()).spawn();
    broker.publish("later", "hello").await.unwrap();
    assert_eq!(rx.recv().await.as_deref(), Some("hello"));
    app.shutdown().await.unwrap();
}

/// A topic name Kafka does not allow is refused with a reason, at publish and at creation.
#[tokio::test]
async fn an_invalid_topic_name_is_refused_with_a_reason() {
    let broker = MemoryBroker::new();
    let err = broker.publish("no spaces!", "x").await.unwrap_err();
    assert!(err.to_string().contains("invalid topic name"), "{err}");
    let names: BTreeSet<String> = ["", ".", "..", &"x".repeat(250)]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for name in names {
        assert!(broker.create_topic(&name, 1).await.is_err(), "{name:?}");
    }
}
