//! Redelivery: nack delays and attempt limits.
//! Each scenario is named after the behaviour it shows; the macro at the end lists them for
//! the suite.

use crate::{Fixture, Recorder, unique};
use ackstream::Disposition;
use ackstream::extract::Offset;
use ackstream::prelude::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};

use super::{publish_n, tp};

/// `NackMessage::after(d)` redelivers the record no sooner than `d` later.
pub async fn nack_after_delay_redelivers_later<F: Fixture>(fx: &F) {
    const DELAY: Duration = Duration::from_millis(300);
    let (topic, group) = (unique("delay"), unique("group"));
    fx.create_topic(&topic, 1).await;
    let broker = fx.connect();
    publish_n(&broker, &topic, 0, 1).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    fx.subscriber(&broker, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .handle(move |msg: KafkaMessage| {
            let tx = tx.clone();
            async move {
                tx.send(Instant::now()).unwrap();
                if msg.attempt() == 1 {
                    return Err(NackMessage::after(DELAY).into());
                }
                Ok::<(), HandlerError>(())
            }
        });
    let app = App::new(broker.clone()).spawn();
    let first = rx.recv().await.unwrap();
    let second = rx.recv().await.unwrap();
    app.shutdown().await.unwrap();
    assert!(
        second - first >= DELAY,
        "redelivered after {:?}",
        second - first
    );
    assert_eq!(fx.committed(&group, &topic, 0).await, Some(1));
}

/// A nack's redelivery delay holds back only its own partition: while one partition waits out
/// 200 ms, another keeps handling records.
pub async fn a_nack_delay_holds_back_only_its_partition<F: Fixture>(fx: &F) {
    const DELAY: Duration = Duration::from_millis(200);
    let (topic, group) = (unique("delayiso"), unique("group"));
    fx.create_topic(&topic, 2).await;
    let broker = fx.connect();
    publish_n(&broker, &topic, 0, 1).await;
    publish_n(&broker, &topic, 1, 5).await;
    // Partition 1 starts only once partition 0 has nacked, so its records are handled during
    // the delay (all of them are fetched already: no fetch latency is measured).
    let nacked = Arc::new(Notify::new());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let n = nacked.clone();
    fx.subscriber(&broker, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .handle(
            move |Partition(p): Partition, Attempt(attempt): Attempt, Offset(o): Offset| {
                let (n, tx) = (n.clone(), tx.clone());
                async move {
                    if p == 1 && o == 0 {
                        n.notified().await;
                    }
                    tx.send((p, attempt, Instant::now())).unwrap();
                    if p == 0 && attempt == 1 {
                        n.notify_one();
                        return Err(NackMessage::after(DELAY).into());
                    }
                    Ok::<(), HandlerError>(())
                }
            },
        );
    let app = App::new(broker.clone()).spawn();
    let mut seen = Vec::new();
    while !seen.iter().any(|(p, a, _)| (*p, *a) == (0, 2)) {
        seen.push(rx.recv().await.unwrap());
    }
    app.shutdown().await.unwrap();
    let nack = seen.iter().find(|(p, a, _)| (*p, *a) == (0, 1)).unwrap().2;
    let retry = seen.last().unwrap().2;
    let others: Vec<Instant> = seen
        .iter()
        .filter(|(p, _, _)| *p == 1)
        .map(|(_, _, t)| *t)
        .collect();
    assert_eq!(
        others.len(),
        5,
        "partition 1 finished while partition 0 waited"
    );
    assert!(others.iter().all(|t| *t < retry));
    assert!(
        retry - nack >= DELAY,
        "redelivered after {:?}",
        retry - nack
    );
    assert_eq!(fx.committed(&group, &topic, 0).await, Some(1));
    assert_eq!(fx.committed(&group, &topic, 1).await, Some(5));
}

/// With `max_attempts(n)`, the n-th nack of a record rejects it and the partition moves on.
pub async fn max_attempts_turns_nack_into_reject<F: Fixture>(fx: &F) {
    let (topic, group) = (unique("attempts"), unique("group"));
    fx.create_topic(&topic, 1).await;
    let broker = fx.connect();
    publish_n(&broker, &topic, 0, 2).await;
    let recorder = Recorder::attach(&broker);
    fx.subscriber(&broker, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .max_attempts(3)
        .handle(|body: String| async move {
            if body == "record-0" {
                return Err(HandlerError::from("poison"));
            }
            Ok(())
        });
    let app = App::new(broker.clone()).spawn();
    let p = tp(&topic, 0);
    recorder
        .wait_for("record 1 handled", |r| r.is_settled(&p, 1))
        .await;
    app.shutdown().await.unwrap();
    assert_eq!(recorder.deliveries(&p, 0), 3);
    assert_eq!(recorder.settles(&p, 0).last(), Some(&Disposition::Reject));
    assert_eq!(fx.committed(&group, &topic, 0).await, Some(2));
}

/// The scenarios of this file, for `behaviour_suite!`: one test each per broker. A scenario
/// missing here would never run; `every_scenario_is_listed` fails if one is.
#[doc(hidden)]
#[macro_export]
macro_rules! __scenarios_redelivery {
    ($attrs:tt $fixture:expr) => {
        $crate::__module_tests!($attrs $fixture, redelivery,
            nack_after_delay_redelivers_later,
            a_nack_delay_holds_back_only_its_partition,
            max_attempts_turns_nack_into_reject,
        );
    };
}
