//! The test-broker assertions of `ackstream::testing::Calls`: what a subscriber's calls record
//! (the record, its attempt, what the handler returned, how the delivery was settled), the
//! waits, and the mock-style assertions whose failures show the expected and the actual.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use ackstream::middleware::Timeout;
use ackstream::prelude::*;
use ackstream::testing::{Calls, EVENT_TIMEOUT, MemoryBroker, Returned};
use ackstream::{Backoff, Disposition};
use tokio::sync::Notify;

/// The message of the panic `f` makes; fails the test if it does not panic.
fn panic_message(f: impl FnOnce()) -> String {
    let panic = catch_unwind(AssertUnwindSafe(f)).expect_err("the assertion should have failed");
    if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else {
        panic!("a panic without a message")
    }
}

/// A subscriber of `topic` in group "g", from the earliest record, under `policy`, recording
/// into `calls`.
fn subscriber(
    broker: &MemoryBroker,
    topic: &str,
    policy: AckPolicy,
    calls: &Calls,
) -> ackstream::SubscriberBuilder<ackstream::memory::MemoryBackend> {
    broker
        .subscriber(topic)
        .group_id("g")
        .auto_offset_reset(OffsetReset::Earliest)
        .ack_policy(policy)
        .layer(calls.layer())
}

/// Calls recorded with `payloads`, one each, acked: for the assertions' own tests.
async fn calls_with(payloads: &[&'static [u8]]) -> Calls {
    let broker = MemoryBroker::new();
    for payload in payloads {
        broker.publish("t", *payload).await.unwrap();
    }
    let calls = Calls::attach(&broker);
    subscriber(&broker, "t", AckPolicy::Ack, &calls).handle(|_: Vec<u8>| async {});
    let app = App::new(broker.clone()).spawn();
    calls.wait_settled(payloads.len(), EVENT_TIMEOUT).await;
    app.shutdown().await.unwrap();
    calls
}

#[tokio::test]
async fn each_call_records_key_headers_partition_offset_and_attempt() {
    let broker = MemoryBroker::new();
    broker.create_topic("orders", 2).await.unwrap();
    broker
        .publish("orders", "first")
        .partition(1)
        .await
        .unwrap();
    broker
        .publish("orders", "second")
        .partition(1)
        .key("customer-7")
        .header("trace", "t-1")
        .header("trace", "t-2")
        .await
        .unwrap();
    let calls = Calls::attach(&broker);
    subscriber(&broker, "orders", AckPolicy::NackOnError, &calls).handle(|_: String| async {});
    let app = App::new(broker.clone()).spawn();
    let seen = calls.wait_settled(2, EVENT_TIMEOUT).await;
    app.shutdown().await.unwrap();

    let second = &seen[1];
    assert_eq!(
        (second.topic.as_str(), second.partition, second.offset),
        ("orders", 1, 1)
    );
    assert_eq!(second.key.as_deref(), Some(&b"customer-7"[..]));
    let headers: Vec<(&str, Option<&[u8]>)> = second
        .headers
        .iter()
        .map(|h| (h.key.as_str(), h.value.as_deref()))
        .collect();
    assert_eq!(
        headers,
        [("trace", Some(&b"t-1"[..])), ("trace", Some(&b"t-2"[..]))]
    );
    assert_eq!(second.payload, "second");
    assert_eq!(second.text(), Some("second"));
    assert_eq!(second.attempt, 1);
    assert_eq!(second.returned, Returned::Success);
    assert_eq!(second.settle, Some(Disposition::Ack));
    assert_eq!((seen[0].offset, seen[0].key.clone()), (0, None));
    assert!(seen[0].headers.is_empty());
}

#[tokio::test]
async fn a_nacked_then_acked_record_shows_two_calls_with_attempts_1_and_2_and_their_settles() {
    let broker = MemoryBroker::new();
    broker.publish("t", "retry me").await.unwrap();
    let calls = Calls::attach(&broker);
    subscriber(&broker, "t", AckPolicy::NackOnError, &calls).handle(
        |_: String, Attempt(attempt): Attempt| async move {
            if attempt == 1 {
                return Err(HandlerError::from(NackMessage));
            }
            Ok(())
        },
    );
    let app = App::new(broker.clone()).spawn();
    let seen = calls.wait_settled(2, EVENT_TIMEOUT).await;
    app.shutdown().await.unwrap();

    let summary: Vec<(i64, u32, Returned, Option<Disposition>)> = seen
        .iter()
        .map(|c| (c.offset, c.attempt, c.returned.clone(), c.settle))
        .collect();
    assert_eq!(
        summary,
        [
            (
                0,
                1,
                Returned::Interrupted(Disposition::Nack { delay: None }),
                Some(Disposition::Nack { delay: None })
            ),
            (0, 2, Returned::Success, Some(Disposition::Ack)),
        ]
    );
    assert_eq!(broker.committed_now("g", "t", 0), Some(1));
}

#[tokio::test]
async fn wait_calls_returns_once_n_calls_arrived() {
    let broker = MemoryBroker::new();
    for body in ["a", "b", "c"] {
        broker.publish("t", body).await.unwrap();
    }
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    let calls = Calls::new();
    subscriber(&broker, "t", AckPolicy::Ack, &calls).handle(move |body: String| {
        let gate = g.clone();
        async move {
            if body == "c" {
                gate.notified().await; // held until the test has seen two calls
            }
        }
    });
    let app = App::new(broker.clone()).spawn();
    let two = calls.wait_calls(2, EVENT_TIMEOUT).await;
    assert_eq!(
        two.iter().map(|c| c.payload.clone()).collect::<Vec<_>>(),
        ["a", "b"],
        "the third call has not returned: it is not recorded yet"
    );
    gate.notify_one();
    let three = calls.wait_calls(3, EVENT_TIMEOUT).await;
    app.shutdown().await.unwrap();
    assert_eq!(three.len(), 3);
    assert_eq!(calls.payloads(), ["a", "b", "c"]);
}

#[tokio::test]
#[should_panic(expected = "timed out after 200ms waiting for 2 calls; 1 call:\n  1. t/0@0")]
async fn wait_calls_fails_after_its_timeout_listing_the_calls_that_came() {
    let calls = calls_with(&[b"only one"]).await;
    calls.wait_calls(2, Duration::from_millis(200)).await;
}

#[tokio::test]
#[should_panic(expected = "Calls::attach")]
async fn wait_settled_says_it_needs_the_brokers_events_when_made_without_them() {
    Calls::new().wait_settled(1, EVENT_TIMEOUT).await;
}

#[tokio::test]
async fn assert_called_once_with_shows_expected_and_actual_when_it_fails() {
    let calls = calls_with(&[b"hullo"]).await;
    calls.assert_called_once_with("hullo");
    let message = panic_message(|| calls.assert_called_once_with("hello"));
    assert!(
        message.contains("expected: \"hello\"") && message.contains("actual: \"hullo\""),
        "{message}"
    );
    assert!(
        message.contains("1. t/0@0 attempt 1"),
        "lists the call: {message}"
    );
}

#[tokio::test]
async fn assert_called_once_with_fails_when_there_were_two_calls_listing_both() {
    let calls = calls_with(&[b"a", b"b"]).await;
    let message = panic_message(|| calls.assert_called_once_with("a"));
    assert!(
        message.starts_with("expected 1 call with payload \"a\", got 2 calls:"),
        "{message}"
    );
    assert!(
        message.contains("payload \"a\"") && message.contains("payload \"b\""),
        "{message}"
    );
    let message = panic_message(|| calls.assert_called_once());
    assert!(
        message.starts_with("expected 1 call, got 2 calls:"),
        "{message}"
    );
}

#[tokio::test]
async fn assert_called_with_checks_the_last_call() {
    let calls = calls_with(&[b"first", b"last"]).await;
    calls.assert_called_with("last");
    calls.assert_called();
    calls.assert_any_call("first");
    let message = panic_message(|| calls.assert_called_with("first"));
    assert!(
        message.contains("expected: \"first\"") && message.contains("actual: \"last\""),
        "{message}"
    );
    let message = panic_message(|| calls.assert_any_call("neither"));
    assert!(
        message.starts_with("no call had payload \"neither\"; got 2 calls:"),
        "{message}"
    );
}

#[tokio::test]
async fn assert_not_called_passes_without_calls_and_fails_with_the_call_it_got() {
    let none = Calls::new();
    none.assert_not_called();
    assert_eq!(none.call_count(), 0);
    let message = panic_message(|| none.assert_called());
    assert_eq!(message, "expected at least one call, got none");
    let message = panic_message(|| none.assert_called_with("x"));
    assert_eq!(message, "expected a call with payload \"x\", got none");

    let calls = calls_with(&[b"unexpected"]).await;
    let message = panic_message(|| calls.assert_not_called());
    assert!(
        message.starts_with("expected no call, got 1 call:")
            && message.contains("payload \"unexpected\""),
        "{message}"
    );
    calls.reset();
    calls.assert_not_called();
}

#[tokio::test]
async fn a_payload_that_is_not_utf8_is_shown_as_bytes() {
    let calls = calls_with(&[b"\x00\xff"]).await;
    let message = panic_message(|| calls.assert_called_once_with(b"\x00\xfe"));
    assert!(
        message.contains(r#"expected: b"\0\xfe""#) && message.contains(r#"actual: b"\0\xff""#),
        "{message}"
    );
}

#[cfg(feature = "json")]
#[tokio::test]
async fn assert_called_once_with_json_compares_json_values_and_shows_both() {
    let calls = calls_with(&[br#"{ "order": 7, "items": ["book"] }"#]).await;
    calls.assert_called_once_with_json(&serde_json::json!({"items": ["book"], "order": 7}));
    calls.assert_called_with_json(&serde_json::json!({"order": 7, "items": ["book"]}));
    let message = panic_message(|| {
        calls.assert_called_once_with_json(&serde_json::json!({"order": 8, "items": ["book"]}));
    });
    assert!(
        message.contains(r#"expected: {"items":["book"],"order":8}"#)
            && message.contains(r#"actual: {"items":["book"],"order":7}"#),
        "{message}"
    );
    let order: serde_json::Value = calls.calls()[0].json().unwrap();
    assert_eq!(order["order"], 7);

    let not_json = calls_with(&[b"plain"]).await;
    let message = panic_message(|| not_json.assert_called_with_json(&1));
    assert!(
        message.contains("expected: 1") && message.contains("actual: \"plain\" (not JSON:"),
        "{message}"
    );
}

#[tokio::test]
async fn what_the_handler_returned_is_recorded_for_each_way_it_ends() {
    let broker = MemoryBroker::new();
    for body in [&b"ok"[..], b"err", b"panic", b"reject", b"\xff"] {
        broker.publish("t", body).await.unwrap();
    }
    let calls = Calls::attach(&broker);
    subscriber(&broker, "t", AckPolicy::RejectOnError, &calls).handle(|body: String| async move {
        match body.as_str() {
            "err" => Err(HandlerError::from("it failed")),
            "panic" => panic!("it panicked"),
            "reject" => Err(RejectMessage.into()),
            _ => Ok(()),
        }
    });
    let app = App::new(broker.clone()).spawn();
    let seen = calls.wait_settled(5, EVENT_TIMEOUT).await;
    app.shutdown().await.unwrap();

    assert_eq!(seen[0].returned, Returned::Success);
    assert_eq!(seen[1].returned, Returned::Failed("it failed".into()));
    assert_eq!(seen[2].returned, Returned::Panicked("it panicked".into()));
    assert_eq!(seen[3].returned, Returned::Interrupted(Disposition::Reject));
    assert!(
        matches!(&seen[4].returned, Returned::Rejected(reason) if reason.contains("cannot decode")),
        "{:?}",
        seen[4].returned
    );
    let settles: Vec<Option<Disposition>> = seen.iter().map(|c| c.settle).collect();
    assert_eq!(
        settles,
        [
            Some(Disposition::Ack),
            Some(Disposition::Reject),
            Some(Disposition::Reject),
            Some(Disposition::Reject),
            Some(Disposition::Reject)
        ],
        "the panic passed through the layer and was settled as a failure"
    );
}

#[tokio::test]
async fn a_returned_value_is_recorded_as_the_output_before_it_is_published() {
    let broker = MemoryBroker::new();
    broker.publish("in", "order").await.unwrap();
    let calls = Calls::attach(&broker);
    subscriber(&broker, "in", AckPolicy::NackOnError, &calls)
        .publish_to("out")
        .handle(|body: String| async move { format!("{body} shipped") });
    let app = App::new(broker.clone()).spawn();
    let seen = calls.wait_settled(1, EVENT_TIMEOUT).await;
    app.shutdown().await.unwrap();
    assert!(
        matches!(&seen[0].returned, Returned::Output(out) if out.payload == "order shipped"),
        "{:?}",
        seen[0].returned
    );
    assert_eq!(seen[0].settle, Some(Disposition::Ack));
    assert_eq!(broker.published("out")[0].payload, "order shipped");
}

#[tokio::test]
async fn a_call_an_outer_timeout_cancels_is_recorded_as_cancelled() {
    let broker = MemoryBroker::new();
    broker.publish("t", "slow").await.unwrap();
    let calls = Calls::attach(&broker);
    subscriber(&broker, "t", AckPolicy::Ack, &calls)
        .layer(Timeout::new(Duration::from_millis(50)))
        .handle(|_: String| std::future::pending::<()>());
    let app = App::new(broker.clone()).spawn();
    let seen = calls.wait_settled(1, EVENT_TIMEOUT).await;
    app.shutdown().await.unwrap();
    assert_eq!(seen[0].returned, Returned::Cancelled);
    assert_eq!(seen[0].settle, Some(Disposition::Ack));
}

#[tokio::test]
async fn a_settle_made_before_or_inside_the_handler_is_the_calls_settle() {
    let broker = MemoryBroker::new();
    broker.publish("first", "x").await.unwrap();
    for body in ["acked by the handler", "left unsettled"] {
        broker.publish("manual", body).await.unwrap();
    }
    let calls = Calls::attach(&broker);
    // AckFirst: acked before the handler ran, so its failure changes nothing.
    broker
        .subscriber("first")
        .group_id("g")
        .auto_offset_reset(OffsetReset::Earliest)
        .layer(calls.layer())
        .handle(|_: String| async { Err::<(), _>("too late") });
    let manual = Calls::attach(&broker);
    subscriber(&broker, "manual", AckPolicy::Manual, &manual).handle(
        |body: String, msg: KafkaMessage| async move {
            if body == "acked by the handler" {
                msg.ack().await?;
            }
            Ok::<(), HandlerError>(())
        },
    );
    let app = App::new(broker.clone()).spawn();
    let first = calls.wait_settled(1, EVENT_TIMEOUT).await;
    let seen = manual
        .wait_until("both manual calls", EVENT_TIMEOUT, |c| c.len() == 2)
        .await;
    app.shutdown().await.unwrap();
    assert_eq!(first[0].returned, Returned::Failed("too late".into()));
    assert_eq!(first[0].settle, Some(Disposition::Ack));
    assert_eq!(seen[0].settle, Some(Disposition::Ack));
    assert_eq!(seen[1].settle, None, "the handler left it unsettled");
}

#[tokio::test]
async fn the_layer_on_a_broker_records_every_subscriber_and_a_redelivery_after_backoff() {
    let calls = Calls::new();
    let broker = MemoryBroker::new().layer(calls.layer());
    broker.publish("a", "to a").await.unwrap();
    broker.publish("b", "to b").await.unwrap();
    for topic in ["a", "b"] {
        broker
            .subscriber(topic)
            .group_id(topic)
            .auto_offset_reset(OffsetReset::Earliest)
            .ack_policy(AckPolicy::NackOnError)
            .retry_backoff(Backoff::none())
            .handle(|Attempt(attempt): Attempt| async move {
                if attempt == 1 {
                    return Err(HandlerError::from("once"));
                }
                Ok(())
            });
    }
    let app = App::new(broker.clone()).spawn();
    let seen = calls.wait_calls(4, EVENT_TIMEOUT).await;
    app.shutdown().await.unwrap();
    let mut topics: Vec<(String, u32)> =
        seen.iter().map(|c| (c.topic.clone(), c.attempt)).collect();
    topics.sort();
    assert_eq!(
        topics,
        [
            ("a".into(), 1),
            ("a".into(), 2),
            ("b".into(), 1),
            ("b".into(), 2)
        ]
    );
    assert!(
        seen.iter().all(|c| c.settle.is_none()),
        "Calls::new does not hear settles"
    );
}

#[tokio::test]
async fn a_failed_assertion_lists_every_call_with_what_it_returned_and_its_settle() {
    let broker = MemoryBroker::new();
    broker
        .publish("orders", "book")
        .key("customer-1")
        .await
        .unwrap();
    let calls = Calls::attach(&broker);
    subscriber(&broker, "orders", AckPolicy::NackOnError, &calls)
        .retry_backoff(Backoff::none())
        .handle(|_: String, Attempt(attempt): Attempt| async move {
            if attempt == 1 {
                return Err(HandlerError::from("the stock service is down"));
            }
            Ok(())
        });
    let app = App::new(broker.clone()).spawn();
    calls.wait_settled(2, EVENT_TIMEOUT).await;
    app.shutdown().await.unwrap();
    // The message the module docs show.
    assert_eq!(
        panic_message(|| calls.assert_called_with("book!")),
        "the last call's payload differs\n  expected: \"book!\"\n    actual: \"book\"\n2 calls:\n  \
         1. orders/0@0 attempt 1 key \"customer-1\" payload \"book\" returned Failed(\"the stock service is down\") settled Nack { delay: None }\n  \
         2. orders/0@0 attempt 2 key \"customer-1\" payload \"book\" returned Success settled Ack"
    );
}
