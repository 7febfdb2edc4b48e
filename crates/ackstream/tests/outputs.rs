//! Return values on the in-memory broker: published before the input is committable, composed
//! with each policy and with layers. (The behaviour suite's `outputs` area runs the main
//! scenarios on every broker.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ackstream::event::Event;
use ackstream::memory::MemoryBroker;
use ackstream::middleware::{Next, from_fn};
use ackstream::prelude::*;
use ackstream::response::{CORRELATION_ID, REPLY_TO};
use ackstream::{ConfigError, KafkaMessage, Outcome};

const WAIT: Duration = Duration::from_secs(30);

async fn committed(broker: &MemoryBroker, group: &str, topic: &str, offset: i64) {
    tokio::time::timeout(WAIT, broker.wait_committed(group, topic, offset))
        .await
        .unwrap_or_else(|_| panic!("{topic} not committed to {offset}"));
}

#[tokio::test]
async fn an_output_is_on_its_topic_before_its_input_becomes_committable() {
    let broker = MemoryBroker::new();
    for i in 0..20 {
        broker.publish("in", format!("{i}")).await.unwrap();
    }
    // At each stored offset, every input below it must have its output published already.
    let violations = Arc::new(Mutex::new(Vec::new()));
    let seen = broker.clone();
    let v = violations.clone();
    broker.observe(move |e| {
        if let Event::OffsetStored { tp, offset } = e
            && &*tp.topic == "in"
        {
            let outputs = seen.published("out").len() as i64;
            if outputs < *offset {
                v.lock().unwrap().push((*offset, outputs));
            }
        }
    });
    broker
        .subscriber("in")
        .group_id("g")
        .auto_commit(false)
        .auto_offset_reset(OffsetReset::Earliest)
        .publish_to("out")
        .handle(|n: String| async move { format!("out-{n}") });
    let app = App::new(broker.clone()).spawn();
    committed(&broker, "g", "in", 20).await;
    app.shutdown().await.unwrap();
    assert_eq!(*violations.lock().unwrap(), [], "(stored, outputs then)");
    assert_eq!(broker.published("out").len(), 20);
}

#[tokio::test]
async fn returning_none_publishes_nothing() {
    let broker = MemoryBroker::new();
    broker.create_topic("out", 1).await.unwrap();
    for body in ["keep", "drop", "keep"] {
        broker.publish("in", body).await.unwrap();
    }
    broker
        .subscriber("in")
        .group_id("g")
        .auto_commit(false)
        .auto_offset_reset(OffsetReset::Earliest)
        .publish_to("out")
        .handle(|body: String| async move { (body == "keep").then_some(body) });
    let app = App::new(broker.clone()).spawn();
    committed(&broker, "g", "in", 3).await;
    app.shutdown().await.unwrap();
    let out: Vec<_> = broker
        .published("out")
        .into_iter()
        .map(|r| r.payload)
        .collect();
    assert_eq!(out, ["keep", "keep"]);
}

#[tokio::test]
async fn every_output_topic_gets_the_value_and_no_reply_leaves_reply_to_alone() {
    let broker = MemoryBroker::new();
    broker
        .publish("in", "x")
        .header(REPLY_TO, "replies")
        .header(CORRELATION_ID, "c-1")
        .await
        .unwrap();
    broker
        .subscriber("in")
        .group_id("g")
        .auto_commit(false)
        .auto_offset_reset(OffsetReset::Earliest)
        .publish_to("a")
        .publish_to("b")
        .no_reply(true)
        .handle(|body: String| async move { body });
    let app = App::new(broker.clone()).spawn();
    committed(&broker, "g", "in", 1).await;
    app.shutdown().await.unwrap();
    for topic in ["a", "b"] {
        let out = broker.published(topic);
        assert_eq!(out.len(), 1, "{topic}");
        assert_eq!(
            out[0].headers.get_str(CORRELATION_ID),
            Some("c-1"),
            "{topic}"
        );
    }
    assert!(broker.published("replies").is_empty());
}

#[tokio::test]
async fn under_ack_first_a_refused_output_is_lost_and_the_input_committed() {
    // At most once: the input was acked before the handler ran, so it cannot wait.
    let broker = MemoryBroker::new();
    broker.create_topic("out", 1).await.unwrap();
    broker.publish("in", "x").await.unwrap();
    broker
        .subscriber("in")
        .group_id("g")
        .ack_policy(AckPolicy::AckFirst)
        .auto_offset_reset(OffsetReset::Earliest)
        .publish_to("out")
        .handle(|body: String| async move { ackstream::Response::new(body).partition(5) });
    let app = App::new(broker.clone()).spawn();
    committed(&broker, "g", "in", 1).await;
    app.shutdown().await.unwrap();
    assert!(broker.published("out").is_empty());
}

#[tokio::test]
async fn under_manual_an_unsettled_input_whose_output_fails_is_nacked() {
    let broker = MemoryBroker::new();
    broker.create_topic("out", 1).await.unwrap();
    broker.publish("in", "x").await.unwrap();
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let seen = attempts.clone();
    broker
        .subscriber("in")
        .group_id("g")
        .no_ack(true)
        .retry_backoff(ackstream::Backoff::none())
        .auto_offset_reset(OffsetReset::Earliest)
        .publish_to("out")
        .handle(move |msg: KafkaMessage, Attempt(attempt): Attempt| {
            seen.lock().unwrap().push(attempt);
            async move {
                if attempt == 1 {
                    // Left unsettled, with an output the topic refuses.
                    return ackstream::Response::new("first").partition(5);
                }
                msg.ack().await.unwrap();
                ackstream::Response::new("second")
            }
        });
    let app = App::new(broker.clone()).spawn();
    committed(&broker, "g", "in", 1).await;
    app.shutdown().await.unwrap();
    assert_eq!(*attempts.lock().unwrap(), [1, 2]);
    let out: Vec<_> = broker
        .published("out")
        .into_iter()
        .map(|r| r.payload)
        .collect();
    assert_eq!(out, ["second"]);
}

#[tokio::test]
async fn a_layer_sees_the_output_and_may_change_it_before_it_is_published() {
    let broker = MemoryBroker::new();
    broker.publish("in", "x").await.unwrap();
    broker
        .subscriber("in")
        .group_id("g")
        .auto_commit(false)
        .auto_offset_reset(OffsetReset::Earliest)
        .publish_to("out")
        .layer(from_fn(|msg: KafkaMessage, next: Next| async move {
            match next.run(msg).await {
                Outcome::Output(mut output) => {
                    output.headers.insert("stamped-by", "layer");
                    Outcome::Output(output)
                }
                other => other,
            }
        }))
        .handle(|body: String| async move { body });
    let app = App::new(broker.clone()).spawn();
    committed(&broker, "g", "in", 1).await;
    app.shutdown().await.unwrap();
    assert_eq!(
        broker.published("out")[0].headers.get_str("stamped-by"),
        Some("layer")
    );
}

#[test]
fn publishing_to_the_subscribers_own_topic_is_refused() {
    let broker = MemoryBroker::new();
    let err = broker
        .subscriber("in")
        .group_id("g")
        .publish_to("in")
        .try_handle(|body: String| async move { body })
        .unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::InvalidSetting {
                setting: "publish_to",
                ..
            }
        ),
        "{err}"
    );
}
