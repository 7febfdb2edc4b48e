//! Dead letters: a poison record moved aside, and a dead-letter publish that fails.
//! Each scenario is named after the behaviour it shows; the macro at the end lists them for
//! the suite.

use crate::{Fixture, Recorder, unique};
use ackstream::Disposition;
use ackstream::prelude::*;
use tokio::sync::mpsc;

use super::{publish_n, tp};

/// A record that keeps failing is moved to the dead-letter topic once its attempts run out:
/// the dead letter keeps its key, payload and headers and names its origin, attempt and error;
/// it is published before the original is committed past, and the partition moves on.
pub async fn a_poison_record_moves_to_the_dead_letter_topic<F: Fixture>(fx: &F) {
    let (topic, dlq, group) = (unique("poison"), unique("poison-dlq"), unique("group"));
    fx.create_topic(&topic, 1).await;
    fx.create_topic(&dlq, 1).await;
    let broker = fx.connect();
    for i in 0..3 {
        broker
            .publish(&topic, format!("record-{i}"))
            .partition(0)
            .key(format!("k{i}"))
            .header("trace", format!("t{i}"))
            .await
            .expect("publish");
    }
    let recorder = Recorder::attach(&broker);
    fx.subscriber(&broker, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .max_attempts(2)
        .dead_letter_topic(&dlq)
        .handle(|body: String| async move {
            if body == "record-1" {
                return Err(HandlerError::from("the payment service refused it"));
            }
            Ok(())
        });
    let (tx, mut rx) = mpsc::unbounded_channel();
    fx.subscriber(&broker, &dlq)
        .auto_offset_reset(OffsetReset::Earliest)
        .handle(move |Key(key): Key, headers: Headers, body: String| {
            let tx = tx.clone();
            async move { tx.send((key, headers, body)).unwrap() }
        });
    let app = App::new(broker.clone()).spawn();
    let (key, headers, body) = rx.recv().await.unwrap();
    let p = tp(&topic, 0);
    recorder
        .wait_for("record 2 handled", |r| r.is_settled(&p, 2))
        .await;
    app.shutdown().await.unwrap();
    assert_eq!(
        (body.as_str(), key.as_deref()),
        ("record-1", Some(&b"k1"[..]))
    );
    assert_eq!(
        headers.get_str("trace"),
        Some("t1"),
        "original headers kept"
    );
    use ackstream::dead_letter as dl;
    assert_eq!(headers.get_str(dl::HEADER_TOPIC), Some(topic.as_str()));
    assert_eq!(headers.get_str(dl::HEADER_PARTITION), Some("0"));
    assert_eq!(headers.get_str(dl::HEADER_OFFSET), Some("1"));
    assert_eq!(headers.get_str(dl::HEADER_ATTEMPT), Some("2"));
    let error = headers.get_str(dl::HEADER_ERROR).unwrap_or_default();
    assert!(error.contains("the payment service refused it"), "{error}");
    assert_eq!(
        recorder.deliveries(&p, 1),
        2,
        "two attempts, then the dead letter"
    );
    assert_eq!(recorder.settles(&p, 1).last(), Some(&Disposition::Reject));
    assert_eq!(recorder.deliveries(&p, 2), 1);
    assert_eq!(fx.committed(&group, &topic, 0).await, Some(3));
}

/// If the dead letter cannot be published, the record is not committed past: it is nacked and
/// comes back, so nothing is lost.
pub async fn a_failing_dead_letter_publish_leaves_the_record_uncommitted<F: Fixture>(fx: &F) {
    if !fx.refuses_invalid_topic_names() {
        eprintln!("{}: cannot make a publish fail here; skipped", fx.name());
        return;
    }
    let (topic, group) = (unique("dlqfail"), unique("group"));
    fx.create_topic(&topic, 1).await;
    let broker = fx.connect();
    publish_n(&broker, &topic, 0, 2).await;
    let recorder = Recorder::attach(&broker);
    fx.subscriber(&broker, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        // Kafka refuses this name, so every publish to it fails.
        .dead_letter_topic("not a topic!")
        .handle(|body: String| async move {
            if body == "record-0" {
                return Err(RejectMessage.into());
            }
            Ok::<(), HandlerError>(())
        });
    let app = App::new(broker.clone()).spawn();
    let p = tp(&topic, 0);
    recorder
        .wait_for("record 0 delivered a second time", |r| {
            r.deliveries(&p, 0) >= 2
        })
        .await;
    app.shutdown().await.unwrap();
    assert!(
        recorder
            .settles(&p, 0)
            .iter()
            .all(|d| matches!(d, Disposition::Nack { .. })),
        "never rejected: {:?}",
        recorder.settles(&p, 0)
    );
    assert!(
        recorder.stored(&p).is_empty(),
        "nothing committable past record 0"
    );
    // Committing 0 (to hand the attempt count over) claims nothing.
    let committed = fx.committed(&group, &topic, 0).await;
    assert!(matches!(committed, None | Some(0)), "{committed:?}");
}

/// The scenarios of this file, for `behaviour_suite!`: one test each per broker. A scenario
/// missing here would never run; `every_scenario_is_listed` fails if one is.
#[doc(hidden)]
#[macro_export]
macro_rules! __scenarios_dead_letters {
    ($attrs:tt $fixture:expr) => {
        $crate::__module_tests!($attrs $fixture, dead_letters,
            a_poison_record_moves_to_the_dead_letter_topic,
            a_failing_dead_letter_publish_leaves_the_record_uncommitted,
        );
    };
}
