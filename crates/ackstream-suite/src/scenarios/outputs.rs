//! Return values: published to the subscriber's output topics and to an input's `reply_to`
//! before the input is acked. Each scenario is named after the behaviour it shows; the macro at
//! the end lists them for the suite.

use std::time::{Duration, Instant};

use crate::{EVENT_TIMEOUT, Fixture, Recorder, unique};
use ackstream::Disposition;
use ackstream::event::Event;
use ackstream::prelude::*;
use ackstream::response::{CORRELATION_ID, REPLY_TO};
use tokio::sync::mpsc;

use super::{publish_n, tp};

/// The next record read from an output topic; fails the test after [`EVENT_TIMEOUT`].
async fn next<T>(out: &mut mpsc::UnboundedReceiver<T>, what: &str) -> T {
    tokio::time::timeout(EVENT_TIMEOUT, out.recv())
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing published within {EVENT_TIMEOUT:?}"))
        .expect("the reading subscriber stopped")
}

/// Reads every record of `topic` from its start (without a group) into a channel:
/// `(key, partition, headers, payload)`.
fn read_topic<F: Fixture>(
    fx: &F,
    broker: &F::Broker,
    topic: &str,
) -> mpsc::UnboundedReceiver<(Option<String>, Headers, String)> {
    let (tx, rx) = mpsc::unbounded_channel();
    fx.subscriber(broker, topic)
        .auto_offset_reset(OffsetReset::Earliest)
        .handle(move |Key(key): Key, headers: Headers, body: String| {
            let tx = tx.clone();
            async move {
                let key = key.map(|k| String::from_utf8_lossy(&k).into_owned());
                let _ = tx.send((key, headers, body));
            }
        });
    rx
}

/// A handler's return value lands on the output topic, and its input is committed past.
pub async fn a_return_value_is_published_to_the_output_topic<F: Fixture>(fx: &F) {
    let (input, output, group) = (unique("in"), unique("out"), unique("group"));
    fx.create_topic(&input, 1).await;
    fx.create_topic(&output, 1).await;
    let broker = fx.connect();
    publish_n(&broker, &input, 0, 3).await;
    fx.subscriber(&broker, &input)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .publish_to(&output)
        .handle(|body: String| async move { Response::new(body.to_uppercase()).key("same") });
    let mut out = read_topic(fx, &broker, &output);
    let app = App::new(broker.clone()).spawn();
    let mut got = Vec::new();
    for _ in 0..3 {
        let (key, _, body) = next(&mut out, "an output").await;
        assert_eq!(key.as_deref(), Some("same"));
        got.push(body);
    }
    app.shutdown().await.unwrap();
    assert_eq!(got, ["RECORD-0", "RECORD-1", "RECORD-2"]);
    assert_eq!(fx.committed(&group, &input, 0).await, Some(3));
}

/// An output the broker refuses (a partition the topic lacks) leaves its input unfinished:
/// nothing is stored past it, and it is delivered again after the failure backoff, when its
/// output lands.
pub async fn a_failing_output_publish_leaves_the_input_uncommitted<F: Fixture>(fx: &F) {
    let (input, output, group) = (unique("in"), unique("out"), unique("group"));
    fx.create_topic(&input, 1).await;
    fx.create_topic(&output, 1).await;
    let broker = fx.connect();
    publish_n(&broker, &input, 0, 1).await;
    let recorder = Recorder::attach(&broker);
    let backoff = Duration::from_millis(300);
    fx.subscriber(&broker, &input)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .retry_backoff(ackstream::Backoff::fixed(backoff))
        .publish_to(&output)
        .handle(|body: String, Attempt(attempt): Attempt| async move {
            // The first attempt's output goes to partition 7, which the topic lacks.
            Response::new(format!("{body}@{attempt}")).partition(if attempt == 1 { 7 } else { 0 })
        });
    let mut out = read_topic(fx, &broker, &output);
    let started = Instant::now();
    let app = App::new(broker.clone()).spawn();
    let (_, _, body) = next(&mut out, "the second attempt's output").await;
    let took = started.elapsed();
    let p = tp(&input, 0);
    recorder
        .wait_for("record 0 acked", |r| r.stored(&p).contains(&1))
        .await;
    app.shutdown().await.unwrap();
    assert_eq!(
        body, "record-0@2",
        "only the second attempt's output landed"
    );
    assert!(
        took >= backoff,
        "redelivered after the backoff, not at once: {took:?}"
    );
    let settles = recorder.settles(&p, 0);
    assert!(
        matches!(settles.as_slice(), [Disposition::Nack { delay: Some(d) }, Disposition::Ack] if *d == backoff),
        "{settles:?}"
    );
    // Nothing was committable past the input while its first output was refused.
    let events = recorder.events();
    let second = events
        .iter()
        .position(|e| matches!(e, Event::Delivered { tp, offset: 0, attempt: 2 } if *tp == p))
        .expect("delivered a second time");
    assert!(
        !events[..second]
            .iter()
            .any(|e| matches!(e, Event::OffsetStored { tp, offset } if *tp == p && *offset > 0)),
        "stored past the input before its output was confirmed: {events:?}"
    );
    assert_eq!(fx.committed(&group, &input, 0).await, Some(1));
}

/// An input whose output is refused at every attempt is rejected at the subscriber's attempt
/// limit, as a failing handler's input is: dead-lettered first, then committed past (it does
/// not come back forever, holding its partition's commit back).
pub async fn an_input_whose_output_always_fails_is_dead_lettered_at_its_attempt_limit<
    F: Fixture,
>(
    fx: &F,
) {
    let (input, output, dlq, group) = (unique("in"), unique("out"), unique("dlq"), unique("group"));
    fx.create_topic(&input, 1).await;
    fx.create_topic(&output, 1).await;
    fx.create_topic(&dlq, 1).await;
    let broker = fx.connect();
    publish_n(&broker, &input, 0, 1).await;
    let recorder = Recorder::attach(&broker);
    let (tx, mut attempts) = mpsc::unbounded_channel();
    fx.subscriber(&broker, &input)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .max_attempts(2)
        .dead_letter_topic(&dlq)
        .retry_backoff(ackstream::Backoff::none())
        .publish_to(&output)
        .handle(move |body: String, Attempt(attempt): Attempt| {
            let _ = tx.send(attempt);
            // Partition 7, which the topic lacks: refused every time.
            async move { Response::new(body).partition(7) }
        });
    let mut letters = read_topic(fx, &broker, &dlq);
    let app = App::new(broker.clone()).spawn();
    let (_, headers, body) = next(&mut letters, "the dead letter").await;
    let p = tp(&input, 0);
    recorder
        .wait_for("record 0 rejected", |r| r.stored(&p).contains(&1))
        .await;
    app.shutdown().await.unwrap();
    assert_eq!(body, "record-0");
    assert_eq!(
        headers.get_str(ackstream::dead_letter::HEADER_ATTEMPT),
        Some("2")
    );
    let seen: Vec<u32> = std::iter::from_fn(|| attempts.try_recv().ok()).collect();
    assert_eq!(seen, [1, 2], "delivered past its limit");
    assert_eq!(recorder.settles(&p, 0).last(), Some(&Disposition::Reject));
    assert_eq!(fx.committed(&group, &input, 0).await, Some(1));
}

/// An input naming a `reply_to` topic gets the return value there too, carrying its
/// correlation id.
pub async fn a_reply_goes_to_reply_to_with_the_correlation_id<F: Fixture>(fx: &F) {
    let (input, replies, group) = (unique("rpc"), unique("replies"), unique("group"));
    fx.create_topic(&input, 1).await;
    fx.create_topic(&replies, 1).await;
    let broker = fx.connect();
    broker
        .publish(&input, "ping")
        .partition(0)
        .header(REPLY_TO, replies.clone())
        .header(CORRELATION_ID, "call-17")
        .await
        .expect("publish");
    fx.subscriber(&broker, &input)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .handle(|body: String| async move { format!("{body}: pong") });
    let mut out = read_topic(fx, &broker, &replies);
    let app = App::new(broker.clone()).spawn();
    let (_, headers, body) = next(&mut out, "the reply").await;
    app.shutdown().await.unwrap();
    assert_eq!(body, "ping: pong");
    assert_eq!(headers.get_str(CORRELATION_ID), Some("call-17"));
    assert_eq!(fx.committed(&group, &input, 0).await, Some(1));
}

/// Under `Key` with several workers, the outputs of one key are published in the order of
/// their inputs (the key's next record waits for the output of the one before).
pub async fn outputs_of_one_key_keep_their_input_order<F: Fixture>(fx: &F) {
    let (input, output, group) = (unique("in"), unique("out"), unique("group"));
    fx.create_topic(&input, 1).await;
    fx.create_topic(&output, 1).await;
    let broker = fx.connect();
    let n = 120;
    for i in 0..n {
        broker
            .publish(&input, format!("{i}"))
            .partition(0)
            .key(format!("k{}", i % 4))
            .await
            .expect("publish");
    }
    fx.subscriber(&broker, &input)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .max_workers(4)
        .ordering(KeepOrder::Key)
        .publish_to(&output)
        .handle(|Key(key): Key, body: String| async move {
            let i: u64 = body.parse().unwrap();
            // Uneven handler times, so records of different keys overtake each other.
            tokio::time::sleep(Duration::from_millis((i * 7) % 5)).await;
            Response::new(body)
                .key(key.unwrap_or_default())
                .partition(0)
        });
    let mut out = read_topic(fx, &broker, &output);
    let app = App::new(broker.clone()).spawn();
    let mut per_key: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for _ in 0..n {
        let (key, _, body) = next(&mut out, "an output").await;
        per_key
            .entry(key.unwrap())
            .or_default()
            .push(body.parse().unwrap());
    }
    app.shutdown().await.unwrap();
    for (key, order) in &per_key {
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(order, &sorted, "outputs of {key} out of input order");
    }
    assert_eq!(per_key.values().map(Vec::len).sum::<usize>(), n as usize);
}

/// The scenarios of this file, for `behaviour_suite!`: one test each per broker. A scenario
/// missing here would never run; `every_scenario_is_listed` fails if one is.
#[doc(hidden)]
#[macro_export]
macro_rules! __scenarios_outputs {
    ($attrs:tt $fixture:expr) => {
        $crate::__module_tests!($attrs $fixture, outputs,
            a_return_value_is_published_to_the_output_topic,
            a_failing_output_publish_leaves_the_input_uncommitted,
            an_input_whose_output_always_fails_is_dead_lettered_at_its_attempt_limit,
            a_reply_goes_to_reply_to_with_the_correlation_id,
            outputs_of_one_key_keep_their_input_order,
        );
    };
}
