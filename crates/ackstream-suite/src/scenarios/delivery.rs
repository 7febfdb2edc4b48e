//! Delivery and the policies beyond the table: what a handler sees, the backlog, the commit after success, a manual record left unsettled.
//! Each scenario is named after the behaviour it shows; the macro at the end lists them for
//! the suite.

use crate::{EVENT_TIMEOUT, Fixture, Recorder, unique};
use ackstream::extract::Offset;
use ackstream::prelude::*;
use ackstream::testing::{Calls, Returned};
use ackstream::{Backoff, Disposition};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

use super::{publish_many, publish_n, tp};

/// `AckFirst` settles before the handler runs: inside the handler the record is already acked,
/// and a failing handler loses the record (at most once).
pub async fn ack_first_acks_before_the_handler_runs<F: Fixture>(fx: &F) {
    let broker = fx.connect();
    let (topic, group) = (unique("ackfirst"), unique("group"));
    fx.create_topic(&topic, 1).await;
    publish_n(&broker, &topic, 0, 2).await;
    let recorder = Recorder::attach(&broker);
    let (tx, mut rx) = mpsc::unbounded_channel();
    fx.subscriber(&broker, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .handle(move |msg: KafkaMessage| {
            let tx = tx.clone();
            async move {
                tx.send(msg.is_settled()).unwrap();
                Err::<(), _>("fails after the ack")
            }
        });
    let app = App::new(broker.clone()).spawn();
    assert!(
        rx.recv().await.unwrap(),
        "record 0 acked before its handler ran"
    );
    assert!(
        rx.recv().await.unwrap(),
        "record 1 acked before its handler ran"
    );
    recorder
        .wait_for("record 1 delivered", |r| {
            r.deliveries(&tp(&topic, 0), 1) == 1
        })
        .await;
    app.shutdown().await.unwrap();
    assert_eq!(recorder.deliveries(&tp(&topic, 0), 0), 1, "not redelivered");
    assert_eq!(fx.committed(&group, &topic, 0).await, Some(2));
}

/// A handler sees the record's key, headers (in order, duplicates kept) and position as
/// published.
pub async fn key_headers_and_position_reach_the_handler<F: Fixture>(fx: &F) {
    let broker = fx.connect();
    let topic = unique("metadata");
    fx.create_topic(&topic, 2).await;
    broker
        .publish(&topic, "first")
        .partition(1)
        .await
        .expect("publish");
    broker
        .publish(&topic, "second")
        .partition(1)
        .key("k-1")
        .header("trace", "t-1")
        .header("attempt", "1")
        .header("trace", "t-2")
        .await
        .expect("publish");
    let (tx, mut rx) = mpsc::unbounded_channel();
    fx.subscriber(&broker, &topic)
        .auto_offset_reset(OffsetReset::Earliest)
        .handle(
            move |Key(key): Key, headers: Headers, Partition(p): Partition, body: String| {
                let tx = tx.clone();
                async move { tx.send((key, headers, p, body)).unwrap() }
            },
        );
    let app = App::new(broker.clone()).spawn();
    let (key, headers, partition, body) = rx.recv().await.unwrap();
    assert_eq!((key, headers.len(), partition), (None, 0, 1));
    assert_eq!(body, "first");
    let (key, headers, partition, body) = rx.recv().await.unwrap();
    app.shutdown().await.unwrap();
    assert_eq!(key.as_deref(), Some(&b"k-1"[..]));
    assert_eq!((partition, body.as_str()), (1, "second"));
    let listed: Vec<(&str, Option<&[u8]>)> = headers
        .iter()
        .map(|h| (h.key.as_str(), h.value.as_deref()))
        .collect();
    assert_eq!(
        listed,
        [
            ("trace", Some(&b"t-1"[..])),
            ("attempt", Some(&b"1"[..])),
            ("trace", Some(&b"t-2"[..]))
        ]
    );
    assert_eq!(headers.get_str("trace"), Some("t-2"), "last one wins");
}

/// A backlog larger than what a consumer buffers per partition (the Kafka backend pauses a
/// partition whose buffer is full) is handled completely, each record once and in order.
pub async fn a_backlog_beyond_the_buffer_bound_is_handled_once_in_order<F: Fixture>(fx: &F) {
    const PER_PARTITION: usize = 40_000;
    let broker = fx.connect();
    let (topic, group) = (unique("backlog"), unique("group"));
    fx.create_topic(&topic, 2).await;
    for partition in 0..2 {
        publish_many(&broker, &topic, partition, PER_PARTITION).await;
    }
    let seen: Arc<Mutex<[Vec<i64>; 2]>> = Arc::default();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let s = seen.clone();
    fx.subscriber(&broker, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .handle(move |Partition(p): Partition, Offset(o): Offset| {
            let (s, done_tx) = (s.clone(), done_tx.clone());
            async move {
                // Slower than fetching, so buffers fill up.
                tokio::task::yield_now().await;
                let mut seen = s.lock().unwrap();
                let list = &mut seen[p as usize];
                list.push(o);
                if list.len() == PER_PARTITION {
                    done_tx.send(p).unwrap();
                }
            }
        });
    let app = App::new(broker.clone()).spawn();
    let mut finished = [done_rx.recv().await.unwrap(), done_rx.recv().await.unwrap()];
    finished.sort_unstable();
    assert_eq!(finished, [0, 1]);
    app.shutdown().await.unwrap();
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let expected: Vec<i64> = (0..PER_PARTITION as i64).collect();
    for (partition, offsets) in seen.iter().enumerate() {
        assert!(
            *offsets == expected,
            "partition {partition}: not each record once in order"
        );
        assert_eq!(
            fx.committed(&group, &topic, partition as i32).await,
            Some(PER_PARTITION as i64)
        );
    }
}

/// The seed: `group_id("group").auto_commit(false)` commits a record after its handler returns
/// Ok; after an error the record is delivered again and its offset is not committed until then.
pub async fn nack_on_error_commits_after_success_and_redelivers_after_error<F: Fixture>(fx: &F) {
    let broker = fx.connect();
    let (topic, group) = (unique("seed"), unique("group"));
    fx.create_topic(&topic, 1).await;
    publish_n(&broker, &topic, 0, 3).await;
    let recorder = Recorder::attach(&broker);
    fx.subscriber(&broker, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .handle(|body: String, msg: KafkaMessage| async move {
            if body == "record-1" && msg.attempt() == 1 {
                return Err(HandlerError::from("first attempt fails"));
            }
            msg.ack().await?;
            Ok(())
        });
    let app = App::new(broker.clone()).spawn();
    let p = tp(&topic, 0);
    recorder
        .wait_for("record 2 settled", |r| r.is_settled(&p, 2))
        .await;
    app.shutdown().await.unwrap();
    assert_eq!(recorder.deliveries(&p, 0), 1);
    assert_eq!(
        recorder.deliveries(&p, 1),
        2,
        "failed record delivered again"
    );
    assert_eq!(recorder.deliveries(&p, 2), 1);
    assert_eq!(
        recorder.settles(&p, 1),
        vec![
            Disposition::Nack {
                delay: Some(Duration::from_millis(100)),
            },
            Disposition::Ack
        ],
        "a failure backs off (100 ms by default) before its retry"
    );
    assert_eq!(
        recorder.stored(&p),
        vec![1, 2, 3],
        "1 committed only after its redelivery succeeded"
    );
    assert_eq!(fx.committed(&group, &topic, 0).await, Some(3));
}

/// Under `Manual` a record the handler leaves unsettled holds its partition's commit back (later
/// acks do not pass it, a warning names it); acking it later releases everything.
pub async fn manual_unsettled_record_holds_back_the_commit<F: Fixture>(fx: &F) {
    let broker = fx.connect();
    let (topic, group) = (unique("manual"), unique("group"));
    fx.create_topic(&topic, 1).await;
    publish_n(&broker, &topic, 0, 3).await;
    let recorder = Recorder::attach(&broker);
    let parked: Arc<Mutex<Option<KafkaMessage>>> = Arc::default();
    let release = Arc::new(Notify::new());
    let (parked2, release2) = (parked.clone(), release.clone());
    fx.subscriber(&broker, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .no_ack(true)
        .handle(move |msg: KafkaMessage| {
            let (parked, release) = (parked2.clone(), release2.clone());
            async move {
                match msg.offset() {
                    0 => *parked.lock().unwrap() = Some(msg), // left unsettled
                    1 => {
                        msg.ack().await?;
                    }
                    _ => {
                        release.notified().await;
                        msg.ack().await?;
                        let first = parked.lock().unwrap().take().unwrap();
                        first.ack().await?;
                    }
                }
                Ok::<(), HandlerError>(())
            }
        });
    let app = App::new(broker.clone()).spawn();
    let p = tp(&topic, 0);
    // The report comes with record 1's ack, just after its `Settled` event.
    recorder
        .wait_for("record 1 acked and the unsettled record 0 reported", |r| {
            r.is_settled(&p, 1) && r.held_back(&p, 0)
        })
        .await;
    assert!(
        recorder.stored(&p).is_empty(),
        "nothing committable past record 0"
    );
    release.notify_one();
    recorder
        .wait_for("record 0 acked late", |r| r.is_settled(&p, 0))
        .await;
    app.shutdown().await.unwrap();
    assert_eq!(recorder.stored(&p), vec![3]);
    assert_eq!(fx.committed(&group, &topic, 0).await, Some(3));
}

/// The test-broker assertions on a real delivery: a subscriber's [`Calls`] show each record it
/// received (payload, key, headers, position, attempt), what the handler returned and how the
/// delivery was settled, here a record that fails once and is redelivered.
pub async fn a_subscribers_calls_show_each_record_and_its_settle<F: Fixture>(fx: &F) {
    let broker = fx.connect();
    let (topic, group) = (unique("calls"), unique("group"));
    fx.create_topic(&topic, 1).await;
    broker
        .publish(&topic, "a")
        .partition(0)
        .key("k-a")
        .header("trace", "t-a")
        .await
        .expect("publish");
    broker
        .publish(&topic, "b")
        .partition(0)
        .await
        .expect("publish");
    let calls = Calls::attach(&broker);
    fx.subscriber(&broker, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .ack_policy(AckPolicy::NackOnError)
        .retry_backoff(Backoff::none())
        .layer(calls.layer())
        // `Headers` makes the Kafka backend decode them, for the handler and the layer.
        .handle(
            |body: String, _: Headers, Attempt(attempt): Attempt| async move {
                if body == "b" && attempt == 1 {
                    return Err(HandlerError::from("b fails once"));
                }
                Ok(())
            },
        );
    let app = App::new(broker.clone()).spawn();
    let seen = calls.wait_settled(3, EVENT_TIMEOUT).await;
    app.shutdown().await.unwrap();

    let summary: Vec<(i64, u32, &str, Returned, Option<Disposition>)> = seen
        .iter()
        .map(|c| {
            let text = c.text().expect("UTF-8");
            (c.offset, c.attempt, text, c.returned.clone(), c.settle)
        })
        .collect();
    assert_eq!(
        summary,
        [
            (0, 1, "a", Returned::Success, Some(Disposition::Ack)),
            (
                1,
                1,
                "b",
                Returned::Failed("b fails once".into()),
                Some(Disposition::Nack { delay: None })
            ),
            (1, 2, "b", Returned::Success, Some(Disposition::Ack)),
        ],
        "{}: each call and its settle",
        fx.name()
    );
    let first = &seen[0];
    assert_eq!((first.topic.as_str(), first.partition), (topic.as_str(), 0));
    assert_eq!(first.key.as_deref(), Some(&b"k-a"[..]));
    assert_eq!(first.headers.get_str("trace"), Some("t-a"));
    assert_eq!(seen[1].key, None);
    calls.assert_any_call("a");
    calls.assert_called_with("b");
    assert_eq!(fx.committed(&group, &topic, 0).await, Some(2));
}

/// A payload that does not decode shows in the calls as rejected at decode, once per attempt
/// (the handler never ran), nacked until `max_decode_attempts` runs out and then rejected; the
/// record after it is called once and committed past both.
pub async fn an_undecodable_record_shows_as_rejected_calls_until_attempts_run_out<F: Fixture>(
    fx: &F,
) {
    let broker = fx.connect();
    let (topic, group) = (unique("calls-decode"), unique("group"));
    fx.create_topic(&topic, 1).await;
    broker
        .publish(&topic, &b"\xff\xfe"[..])
        .partition(0)
        .await
        .expect("publish");
    broker
        .publish(&topic, "fine")
        .partition(0)
        .await
        .expect("publish");
    let calls = Calls::attach(&broker);
    fx.subscriber(&broker, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .ack_policy(AckPolicy::NackOnError)
        .max_decode_attempts(2)
        .retry_backoff(Backoff::none())
        .layer(calls.layer())
        .handle(|_: String| async {});
    let app = App::new(broker.clone()).spawn();
    let seen = calls.wait_settled(3, EVENT_TIMEOUT).await;
    app.shutdown().await.unwrap();

    for (call, attempt, settled) in [
        (&seen[0], 1, Disposition::Nack { delay: None }),
        (&seen[1], 2, Disposition::Reject),
    ] {
        assert_eq!((call.offset, call.attempt), (0, attempt), "{}", fx.name());
        assert_eq!(call.payload, &b"\xff\xfe"[..]);
        assert!(
            matches!(&call.returned, Returned::Rejected(reason) if reason.contains("cannot decode")),
            "{}: {call}",
            fx.name()
        );
        assert_eq!(call.settle, Some(settled), "{}: {call}", fx.name());
    }
    assert_eq!(
        (seen[2].offset, seen[2].attempt, &seen[2].returned),
        (1, 1, &Returned::Success)
    );
    calls.assert_called_with("fine");
    assert_eq!(
        calls.call_count(),
        3,
        "{}: nothing else was called",
        fx.name()
    );
    assert_eq!(fx.committed(&group, &topic, 0).await, Some(2));
}

/// The scenarios of this file, for `behaviour_suite!`: one test each per broker. A scenario
/// missing here would never run; `every_scenario_is_listed` fails if one is.
#[doc(hidden)]
#[macro_export]
macro_rules! __scenarios_delivery {
    ($attrs:tt $fixture:expr) => {
        $crate::__module_tests!($attrs $fixture, delivery,
            ack_first_acks_before_the_handler_runs,
            key_headers_and_position_reach_the_handler,
            a_backlog_beyond_the_buffer_bound_is_handled_once_in_order,
            nack_on_error_commits_after_success_and_redelivers_after_error,
            manual_unsettled_record_holds_back_the_commit,
            a_subscribers_calls_show_each_record_and_its_settle,
            an_undecodable_record_shows_as_rejected_calls_until_attempts_run_out,
        );
    };
}
