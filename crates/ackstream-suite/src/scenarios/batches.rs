//! Batch subscribers: per-record settles inside a batch, decode failures settled alone,
//! a failing batch, and batches per partition. Each scenario is named after the behaviour it
//! shows; the macro at the end lists them for the suite.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{Fixture, Recorder, unique};
use ackstream::Disposition;
use ackstream::prelude::*;

use super::{publish_n, tp};

/// What each call of a batch handler received: `(partition, offset, payload)` per record.
type Calls = Arc<Mutex<Vec<Vec<(i32, i64, String)>>>>;

fn seen(batch: &Batch<String>) -> Vec<(i32, i64, String)> {
    batch
        .iter()
        .zip(batch.messages())
        .map(|(body, m)| (m.partition(), m.offset(), body.clone()))
        .collect()
}

/// The handler acks records 0 and 2 of a batch and nacks 1: the partition is committed exactly
/// to 1, and only record 1 is delivered again (alone, in the next batch).
pub async fn a_batch_acking_0_and_2_and_nacking_1_commits_to_1_and_redelivers_only_1<F: Fixture>(
    fx: &F,
) {
    let (topic, group) = (unique("batch"), unique("group"));
    fx.create_topic(&topic, 1).await;
    let broker = fx.connect();
    publish_n(&broker, &topic, 0, 3).await;
    let recorder = Recorder::attach(&broker);
    let calls: Calls = Arc::default();
    let c = calls.clone();
    fx.subscriber(&broker, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .batch(3, Duration::from_secs(5))
        .handle(move |batch: Batch<String>| {
            c.lock().unwrap().push(seen(&batch));
            async move {
                if batch.len() == 3 {
                    batch.ack(0).await?;
                    batch.nack(1).await?;
                    batch.ack(2).await?;
                }
                Ok::<(), HandlerError>(())
            }
        });
    let app = App::new(broker.clone()).spawn();
    let p = tp(&topic, 0);
    recorder
        .wait_for("record 1 acked on its second delivery", |r| {
            r.stored(&p).contains(&3)
        })
        .await;
    app.shutdown().await.unwrap();
    let calls = calls.lock().unwrap().clone();
    let offsets: Vec<Vec<i64>> = calls
        .iter()
        .map(|c| c.iter().map(|(_, o, _)| *o).collect())
        .collect();
    assert_eq!(offsets, [vec![0, 1, 2], vec![1]], "{calls:?}");
    assert_eq!(
        recorder.stored(&p),
        [1, 3],
        "committable to 1 while 1 was nacked, then to the end"
    );
    assert_eq!(
        recorder.settles(&p, 1),
        [Disposition::Nack { delay: None }, Disposition::Ack]
    );
    assert_eq!(
        (recorder.deliveries(&p, 0), recorder.deliveries(&p, 2)),
        (1, 1)
    );
    assert_eq!(fx.committed(&group, &topic, 0).await, Some(3));
}

/// A record of a batch that does not decode is settled alone, by the policy (rejected here,
/// its decode attempts used up), and the batch's other records are delivered.
pub async fn a_record_of_a_batch_that_does_not_decode_is_settled_alone<F: Fixture>(fx: &F) {
    let (topic, group) = (unique("batchdecode"), unique("group"));
    fx.create_topic(&topic, 1).await;
    let broker = fx.connect();
    for body in [&b"first"[..], &[0xff, 0xfe][..], &b"third"[..]] {
        broker
            .publish(&topic, body.to_vec())
            .partition(0)
            .await
            .expect("publish");
    }
    let recorder = Recorder::attach(&broker);
    let calls: Calls = Arc::default();
    let c = calls.clone();
    fx.subscriber(&broker, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .max_decode_attempts(1)
        .batch(3, Duration::from_secs(5))
        .handle(move |batch: Batch<String>| {
            c.lock().unwrap().push(seen(&batch));
            async {}
        });
    let app = App::new(broker.clone()).spawn();
    let p = tp(&topic, 0);
    recorder
        .wait_for("the batch settled", |r| r.stored(&p).contains(&3))
        .await;
    app.shutdown().await.unwrap();
    let calls = calls.lock().unwrap().clone();
    let bodies: Vec<Vec<&str>> = calls
        .iter()
        .map(|c| c.iter().map(|(_, _, b)| b.as_str()).collect())
        .collect();
    assert_eq!(bodies, [vec!["first", "third"]]);
    assert_eq!(recorder.settles(&p, 1), [Disposition::Reject]);
    assert_eq!(recorder.settles(&p, 0), [Disposition::Ack]);
    assert_eq!(recorder.settles(&p, 2), [Disposition::Ack]);
    assert_eq!(fx.committed(&group, &topic, 0).await, Some(3));
}

/// A batch handler that fails nacks (under `NackOnError`, after the backoff) every record it
/// did not settle itself; those come back together, the one it acked does not.
pub async fn a_failing_batch_nacks_only_the_records_it_left_unsettled<F: Fixture>(fx: &F) {
    let (topic, group) = (unique("batchfail"), unique("group"));
    fx.create_topic(&topic, 1).await;
    let broker = fx.connect();
    publish_n(&broker, &topic, 0, 3).await;
    let recorder = Recorder::attach(&broker);
    let calls: Calls = Arc::default();
    let c = calls.clone();
    fx.subscriber(&broker, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .retry_backoff(ackstream::Backoff::fixed(Duration::from_millis(50)))
        .batch(3, Duration::from_secs(5))
        .handle(move |batch: Batch<String>| {
            let first = c.lock().unwrap().is_empty();
            c.lock().unwrap().push(seen(&batch));
            async move {
                if first {
                    batch.ack(0).await?;
                    return Err(HandlerError::from("the warehouse is down"));
                }
                Ok(())
            }
        });
    let app = App::new(broker.clone()).spawn();
    let p = tp(&topic, 0);
    recorder
        .wait_for("everything acked", |r| r.stored(&p).contains(&3))
        .await;
    app.shutdown().await.unwrap();
    let calls = calls.lock().unwrap().clone();
    let offsets: Vec<Vec<i64>> = calls
        .iter()
        .map(|c| c.iter().map(|(_, o, _)| *o).collect())
        .collect();
    assert_eq!(offsets, [vec![0, 1, 2], vec![1, 2]], "{calls:?}");
    let backoff = Some(Duration::from_millis(50));
    for offset in [1, 2] {
        assert_eq!(
            recorder.settles(&p, offset),
            [Disposition::Nack { delay: backoff }, Disposition::Ack],
            "record {offset}"
        );
    }
    assert_eq!(fx.committed(&group, &topic, 0).await, Some(3));
}

/// A batch holds records of one partition, in offset order, and each partition's records
/// arrive in order across its batches.
pub async fn a_batch_holds_one_partitions_records_in_offset_order<F: Fixture>(fx: &F) {
    let (topic, group) = (unique("batchparts"), unique("group"));
    fx.create_topic(&topic, 2).await;
    let broker = fx.connect();
    publish_n(&broker, &topic, 0, 20).await;
    publish_n(&broker, &topic, 1, 20).await;
    let recorder = Recorder::attach(&broker);
    let calls: Calls = Arc::default();
    let c = calls.clone();
    fx.subscriber(&broker, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .batch(6, Duration::from_millis(20))
        .handle(move |batch: Batch<String>| {
            c.lock().unwrap().push(seen(&batch));
            async {}
        });
    let app = App::new(broker.clone()).spawn();
    recorder
        .wait_for("both partitions acked", |r| {
            r.stored(&tp(&topic, 0)).contains(&20) && r.stored(&tp(&topic, 1)).contains(&20)
        })
        .await;
    app.shutdown().await.unwrap();
    let calls = calls.lock().unwrap().clone();
    let mut next = [0i64; 2];
    for call in &calls {
        assert!(call.len() <= 6, "{call:?}");
        let partition = call[0].0;
        for (p, offset, body) in call {
            assert_eq!(*p, partition, "one partition per batch: {call:?}");
            assert_eq!(
                *offset, next[partition as usize],
                "in offset order: {calls:?}"
            );
            assert_eq!(body, &format!("record-{offset}"));
            next[partition as usize] += 1;
        }
    }
    assert_eq!(next, [20, 20]);
}

/// The scenarios of this file, for `behaviour_suite!`: one test each per broker. A scenario
/// missing here would never run; `every_scenario_is_listed` fails if one is.
#[doc(hidden)]
#[macro_export]
macro_rules! __scenarios_batches {
    ($attrs:tt $fixture:expr) => {
        $crate::__module_tests!($attrs $fixture, batches,
            a_batch_acking_0_and_2_and_nacking_1_commits_to_1_and_redelivers_only_1,
            a_record_of_a_batch_that_does_not_decode_is_settled_alone,
            a_failing_batch_nacks_only_the_records_it_left_unsettled,
            a_batch_holds_one_partitions_records_in_offset_order,
        );
    };
}
