//! Publishers: defaults on every record, batches, use from a handler, failures and no_confirm.

use std::time::Duration;

use ackstream::memory::{MemoryBackend, MemoryBroker};
use ackstream::prelude::*;
use ackstream::{BackendErrorKind, Publisher};

#[tokio::test]
async fn a_publisher_puts_its_defaults_on_every_record() {
    let broker = MemoryBroker::new();
    broker.create_topic("audit", 3).await.unwrap();
    let audit = broker
        .publisher("audit")
        .key("service-a")
        .header("source", "billing")
        .partition(2)
        .timestamp(1_700_000_000_123);
    let first = audit.publish("one").await.unwrap().expect("confirmed");
    let second = audit
        .clone()
        .publish("two")
        .await
        .unwrap()
        .expect("confirmed");
    assert_eq!((first.partition, first.offset), (2, 0));
    assert_eq!((second.partition, second.offset), (2, 1));
    let records = broker.records("audit", 2);
    assert_eq!(records.len(), 2);
    for r in &records {
        assert_eq!(r.key.as_deref(), Some(&b"service-a"[..]));
        assert_eq!(r.headers.get("source"), Some(&b"billing"[..]));
        assert_eq!(r.timestamp, Some(1_700_000_000_123));
    }
}

#[tokio::test]
async fn a_batch_is_confirmed_record_by_record_in_the_order_given() {
    let broker = MemoryBroker::new();
    broker.create_topic("out", 1).await.unwrap();
    let out = broker.publisher("out");
    let positions = out.publish_batch(["a", "b", "c"]).await.unwrap();
    let offsets: Vec<i64> = positions
        .iter()
        .map(|p| p.expect("confirmed").offset)
        .collect();
    assert_eq!(offsets, [0, 1, 2]);
    let payloads: Vec<_> = broker
        .records("out", 0)
        .into_iter()
        .map(|r| r.payload)
        .collect();
    assert_eq!(payloads, ["a", "b", "c"]);
}

#[tokio::test]
async fn a_handler_publishes_through_a_publisher_given_as_state() {
    let broker = MemoryBroker::new();
    let out = broker.publisher("out").key("k");
    let broker = broker.with_state(out);
    broker.publish("in", "3").await.unwrap();
    broker
        .subscriber("in")
        .group_id("g")
        .auto_commit(false)
        .auto_offset_reset(OffsetReset::Earliest)
        .handle(
            |n: String, State(out): State<Publisher<MemoryBackend>>| async move {
                let doubled = n.parse::<u32>()? * 2;
                out.publish(doubled.to_string()).await?;
                Ok::<(), HandlerError>(())
            },
        );
    let app = App::new(broker.clone()).spawn();
    tokio::time::timeout(Duration::from_secs(30), broker.wait_committed("g", "in", 1))
        .await
        .expect("the input committed");
    app.shutdown().await.unwrap();
    // Published (and confirmed) before the handler returned, so before the input's commit.
    let out = broker.records("out", 0);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].payload, "6");
}

#[tokio::test]
async fn a_publish_the_broker_refuses_says_the_topic_and_is_not_retriable() {
    let broker = MemoryBroker::new();
    let err = broker
        .publisher("no spaces!")
        .publish("x")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no spaces!"), "{err}");
    assert_eq!(err.kind(), BackendErrorKind::Invalid);
    assert!(!err.is_retriable());
}

#[tokio::test]
async fn without_confirmation_a_publish_returns_before_the_broker_answers() {
    let broker = MemoryBroker::new();
    // The broker refuses this topic: a confirmed publish fails, an unconfirmed one does not
    // wait to find out.
    let unconfirmed = broker.publisher("no spaces!").no_confirm();
    assert_eq!(unconfirmed.publish("x").await.unwrap(), None);
    assert!(broker.publisher("no spaces!").publish("x").await.is_err());
}

#[cfg(feature = "json")]
#[tokio::test]
async fn a_publisher_publishes_json() {
    let broker = MemoryBroker::new();
    let out = broker.publisher("out");
    out.publish_json(&serde_json::json!({ "id": 7 }))
        .await
        .unwrap();
    assert_eq!(broker.records("out", 0)[0].payload, r#"{"id":7}"#);
}

#[cfg(feature = "json")]
#[tokio::test]
async fn the_memory_broker_shows_what_was_published_to_a_topic_decoded() {
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Out {
        id: u32,
    }
    let broker = MemoryBroker::new();
    broker.create_topic("out", 2).await.unwrap();
    let out = broker.publisher("out");
    out.clone()
        .partition(1)
        .publish_json(&serde_json::json!({ "id": 2 }))
        .await
        .unwrap();
    out.partition(0)
        .publish_json(&serde_json::json!({ "id": 1 }))
        .await
        .unwrap();
    let decoded: Vec<Out> = broker.published_json("out").unwrap();
    assert_eq!(decoded, [Out { id: 1 }, Out { id: 2 }]);
    broker
        .publish("out", "not json")
        .partition(0)
        .await
        .unwrap();
    let err = broker.published_json::<Out>("out").unwrap_err();
    assert!(err.to_string().contains("out/0@1"), "{err}");
}
