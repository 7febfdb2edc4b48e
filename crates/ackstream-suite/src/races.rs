//! Regression scenarios for interleavings that once broke the rules: settles from other tasks,
//! a lane running past a nack, two nacks pending at once, a revoke during a key's delay. Each
//! produces its interleaving on purpose (the explorer finds them by chance).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ackstream::prelude::*;
use ackstream::{Disposition, KeepOrder, TopicPartition};
use tokio::sync::{mpsc, watch};

use crate::concurrency::check_commit_rule;
use crate::{Fixture, Recorder, unique};

async fn publish_keyed<B: Broker>(broker: &B, topic: &str, keys: &[&str]) {
    for (i, key) in keys.iter().enumerate() {
        broker
            .publish(topic, format!("record-{i}"))
            .partition(0)
            .key(key.to_string())
            .await
            .expect("publish");
    }
}

/// What the handlers reported, all of it (they have all finished: the app has shut down).
fn drained<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> Vec<T> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

/// Records per run of [`a_nack_from_another_task_keeps_the_commit_behind_the_record`]: many where
/// a record costs microseconds.
fn spawned_settle_records<F: Fixture>(fx: &F) -> usize {
    if fx.property_cases() > 100 {
        20_000
    } else {
        2_000
    }
}

/// A handler that hands each message to a spawned task which settles it later (a common
/// shape: the handler queues work for a worker that acks), the first attempt of every 50th
/// record nacked: every nacked record is delivered again, and the commit never passes a record
/// before it is acked.
pub async fn a_nack_from_another_task_keeps_the_commit_behind_the_record<F: Fixture>(fx: &F) {
    let n = spawned_settle_records(fx);
    let broker = fx.connect();
    let (topic, group) = (unique("spawnsettle"), unique("group"));
    fx.create_topic(&topic, 1).await;
    for i in 0..n {
        broker
            .publish(&topic, format!("record-{i}"))
            .partition(0)
            .await
            .expect("publish");
    }
    let recorder = Recorder::attach(&broker);
    fx.subscriber(&broker, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .no_ack(true)
        .handle(move |msg: KafkaMessage| async move {
            tokio::spawn(async move {
                tokio::task::yield_now().await;
                if msg.offset() % 50 == 0 && msg.attempt() == 1 {
                    msg.nack().await.expect("nack");
                } else {
                    msg.ack().await.expect("ack");
                }
            });
        });
    let app = App::new(broker.clone()).spawn();
    let p = TopicPartition::new(topic.as_str(), 0);
    recorder
        .wait_for("the end of the partition stored", |r| {
            r.stored(&p).last() == Some(&(n as i64))
        })
        .await;
    app.shutdown().await.unwrap();
    check_commit_rule(&recorder.events(), "settles from spawned tasks");
    for o in (0..n as i64).step_by(50) {
        assert!(
            recorder.settles(&p, o).contains(&Disposition::Ack),
            "nacked record {o} was delivered again and acked"
        );
    }
    assert_eq!(fx.committed(&group, &topic, 0).await, Some(n as i64));
}

/// What a handler run saw: offset, attempt, when it started and ended.
type Run = (i64, u32, Instant, Instant);

/// Under `Partition` or `Key` ordering with several workers, the record after a nacked one in
/// its lane starts only after the nacked record's retry (which waits out its delay), and runs
/// once.
async fn lane_waits_for_its_nacked_record<F: Fixture>(fx: &F, ordering: KeepOrder) {
    const DELAY: Duration = Duration::from_millis(300);
    let broker = fx.connect();
    let (topic, group) = (unique("laneover"), unique("group"));
    fx.create_topic(&topic, 1).await;
    // One key, so under Key ordering the lane is the same as under Partition.
    publish_keyed(&broker, &topic, &["a"; 10]).await;
    let (tx, mut rx) = mpsc::unbounded_channel::<Run>();
    fx.subscriber(&broker, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .max_workers(4)
        .ordering(ordering)
        .handle(move |Offset(o): Offset, Attempt(a): Attempt| {
            let tx = tx.clone();
            async move {
                let start = Instant::now();
                tokio::task::yield_now().await;
                let result = if o == 5 && a == 1 {
                    Err(NackMessage::after(DELAY).into())
                } else {
                    Ok::<(), HandlerError>(())
                };
                tx.send((o, a, start, Instant::now())).unwrap();
                result
            }
        });
    let app = App::new(broker.clone()).spawn();
    let mut runs: Vec<Run> = Vec::new();
    while !runs.iter().any(|r| r.0 == 9) || !runs.iter().any(|r| (r.0, r.1) == (5, 2)) {
        runs.push(rx.recv().await.unwrap());
    }
    app.shutdown().await.unwrap();
    let nacked = runs.iter().find(|r| (r.0, r.1) == (5, 1)).unwrap();
    let retry = runs.iter().find(|r| (r.0, r.1) == (5, 2)).unwrap();
    assert!(
        retry.2 - nacked.3 >= DELAY,
        "{ordering:?}: the retry waited its delay"
    );
    let sixth: Vec<&Run> = runs.iter().filter(|r| r.0 == 6).collect();
    assert_eq!(sixth.len(), 1, "{ordering:?}: record 6 ran once: {runs:?}");
    assert!(
        sixth[0].2 >= retry.3,
        "{ordering:?}: record 6 started {:?} after record 5 failed, before its retry ended",
        sixth[0].2 - nacked.3
    );
    assert_eq!(fx.committed(&group, &topic, 0).await, Some(10));
}

/// `KeepOrder::Partition` with several workers: a lane does not run past its nacked record.
pub async fn under_partition_ordering_a_lane_waits_for_its_nacked_record<F: Fixture>(fx: &F) {
    lane_waits_for_its_nacked_record(fx, KeepOrder::Partition).await;
}

/// `KeepOrder::Key` with several workers: a key's lane does not run past its nacked record.
pub async fn under_key_ordering_a_lane_waits_for_its_nacked_record<F: Fixture>(fx: &F) {
    lane_waits_for_its_nacked_record(fx, KeepOrder::Key).await;
}

/// Two records nacked at about the same time, the later one with a delay and the earlier one
/// without: each keeps its own delay (the later is not redelivered at once with the earlier).
pub async fn two_nacks_pending_at_once_keep_their_own_delays<F: Fixture>(fx: &F) {
    const DELAY: Duration = Duration::from_millis(300);
    let broker = fx.connect();
    let (topic, group) = (unique("twonacks"), unique("group"));
    fx.create_topic(&topic, 1).await;
    publish_keyed(&broker, &topic, &["a", "b", "c", "d"]).await;
    // Record 1's handler parks its message; record 2's handler nacks itself with a delay and
    // then record 1 without one, back to back, so both nacks are pending at once.
    let parked: Arc<std::sync::Mutex<Option<KafkaMessage>>> = Arc::default();
    let (both_nacked, _) = watch::channel(false);
    let both_nacked = Arc::new(both_nacked);
    let (tx, mut rx) = mpsc::unbounded_channel::<(i64, u32, Instant)>();
    let (slot, done) = (parked.clone(), both_nacked.clone());
    fx.subscriber(&broker, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .max_workers(4)
        .ordering(KeepOrder::Unordered)
        .handle(move |msg: KafkaMessage| {
            let (slot, done, tx) = (slot.clone(), done.clone(), tx.clone());
            async move {
                let (o, a) = (msg.offset(), msg.attempt());
                tx.send((o, a, Instant::now())).unwrap();
                if a == 1 && o == 1 {
                    *slot.lock().unwrap() = Some(msg.clone());
                    let _ = done.subscribe().wait_for(|n| *n).await;
                } else if a == 1 && o == 2 {
                    let earlier = loop {
                        if let Some(m) = slot.lock().unwrap().take() {
                            break m;
                        }
                        tokio::task::yield_now().await;
                    };
                    msg.nack_after(DELAY).await.unwrap();
                    earlier.nack().await.unwrap();
                    done.send_replace(true);
                }
                Ok::<(), HandlerError>(())
            }
        });
    let recorder = Recorder::attach(&broker);
    let app = App::new(broker.clone()).spawn();
    let p = TopicPartition::new(topic.as_str(), 0);
    recorder
        .wait_for("everything acked", |r| {
            (0..4).all(|o| r.settles(&p, o).last() == Some(&Disposition::Ack))
        })
        .await;
    app.shutdown().await.unwrap();
    let starts = drained(&mut rx);
    // The nack came after the first attempt started: measured from there, a lost delay shows.
    let nack_at = starts.iter().find(|s| (s.0, s.1) == (2, 1)).unwrap().2;
    let retry = starts.iter().find(|s| (s.0, s.1) == (2, 2)).unwrap().2;
    assert!(
        retry - nack_at >= DELAY,
        "record 2 came back {:?} after its nack with {DELAY:?}",
        retry - nack_at
    );
    assert_eq!(fx.committed(&group, &topic, 0).await, Some(4));
}

/// Under `KeepOrder::Key`, a revoke (here: the app shutting down) during a key's nack delay does
/// not end the delay early: neither the nacked record nor the record of its key waiting behind
/// it starts during the drain. Repeated, since the window is small.
pub async fn a_revoke_during_a_key_delay_starts_nothing_of_that_key<F: Fixture>(fx: &F) {
    const DELAY: Duration = Duration::from_secs(30);
    let rounds = if fx.property_cases() > 100 { 200 } else { 2 };
    for round in 0..rounds {
        let broker = fx.connect();
        let (topic, group) = (unique("keyrevoke"), unique("group"));
        fx.create_topic(&topic, 1).await;
        publish_keyed(&broker, &topic, &["a", "a", "b"]).await;
        let (tx, mut rx) = mpsc::unbounded_channel::<(i64, u32)>();
        fx.subscriber(&broker, &topic)
            .group_id(&group)
            .auto_offset_reset(OffsetReset::Earliest)
            .auto_commit(false)
            .max_workers(2)
            .ordering(KeepOrder::Key)
            .handle(move |Offset(o): Offset, Attempt(a): Attempt| {
                let tx = tx.clone();
                async move {
                    tx.send((o, a)).unwrap();
                    if o == 0 && a == 1 {
                        return Err(NackMessage::after(DELAY).into());
                    }
                    Ok::<(), HandlerError>(())
                }
            });
        let recorder = Recorder::attach(&broker);
        let app = App::new(broker.clone()).spawn();
        let p = TopicPartition::new(topic.as_str(), 0);
        recorder
            .wait_for("record 0 nacked and record 2 acked", |r| {
                !r.settles(&p, 0).is_empty() && r.settles(&p, 2).contains(&Disposition::Ack)
            })
            .await;
        let started = Instant::now();
        app.shutdown().await.unwrap();
        assert!(
            started.elapsed() < DELAY,
            "the drain does not wait the delay out"
        );
        let runs = drained(&mut rx);
        assert!(
            !runs.contains(&(0, 2)) && !runs.iter().any(|r| r.0 == 1),
            "round {round}: key a started during the drain: {runs:?}"
        );
        assert_eq!(fx.committed(&group, &topic, 0).await, Some(0));
    }
}

/// A handler that always fails under `NackOnError` backs off between attempts (100 ms doubling
/// by default), so in two seconds its record is delivered at most 6 times, and under
/// `KeepOrder::Key` the other keys of its partition keep flowing meanwhile.
pub async fn a_record_that_always_fails_backs_off_and_other_keys_flow<F: Fixture>(fx: &F) {
    const WATCH: Duration = Duration::from_secs(2);
    let broker = fx.connect();
    let (topic, group) = (unique("hotloop"), unique("group"));
    fx.create_topic(&topic, 1).await;
    let mut keys = vec!["poison"];
    keys.extend(std::iter::repeat_n("other", 20));
    publish_keyed(&broker, &topic, &keys).await;
    let (tx, mut rx) = mpsc::unbounded_channel::<(i64, Instant)>();
    fx.subscriber(&broker, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .max_workers(4)
        .ordering(KeepOrder::Key)
        .handle(move |Offset(o): Offset| {
            let tx = tx.clone();
            async move {
                tx.send((o, Instant::now())).unwrap();
                if o == 0 {
                    return Err(HandlerError::from("always fails"));
                }
                Ok::<(), HandlerError>(())
            }
        });
    let app = App::new(broker.clone()).spawn();
    let (first, started) = rx.recv().await.unwrap();
    assert_eq!(first, 0);
    let mut poison = 1;
    let mut others = 0;
    let deadline = tokio::time::Instant::from_std(started + WATCH);
    while let Ok(Some((o, _))) = tokio::time::timeout_at(deadline, rx.recv()).await {
        if o == 0 {
            poison += 1;
        } else {
            others += 1;
        }
    }
    app.shutdown().await.unwrap();
    assert!(
        (4..=6).contains(&poison),
        "the failing record was delivered {poison} times in {WATCH:?}"
    );
    assert_eq!(others, 20, "the other key's records all ran meanwhile");
    assert_eq!(
        fx.committed(&group, &topic, 0).await,
        Some(0),
        "nothing passes the failing record"
    );
}

/// One record at a time (the default): when two nacked records wait, and the first one's
/// redelivery is nacked again during its run (with a delay), the second waits behind it: the
/// partition's order holds across retries too.
pub async fn one_at_a_time_a_retry_waits_behind_an_earlier_retry_nacked_again<F: Fixture>(fx: &F) {
    const DELAY: Duration = Duration::from_millis(300);
    let broker = fx.connect();
    let (topic, group) = (unique("retryorder"), unique("group"));
    fx.create_topic(&topic, 1).await;
    publish_keyed(&broker, &topic, &["a", "a", "a", "a"]).await;
    let parked: Arc<std::sync::Mutex<Vec<KafkaMessage>>> = Arc::default();
    let (tx, mut rx) = mpsc::unbounded_channel::<(i64, u32, Instant)>();
    let slot = parked.clone();
    fx.subscriber(&broker, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .no_ack(true)
        .handle(move |msg: KafkaMessage| {
            let (slot, tx) = (slot.clone(), tx.clone());
            async move {
                let (o, a) = (msg.offset(), msg.attempt());
                tx.send((o, a, Instant::now())).unwrap();
                match (o, a) {
                    // 0 and 1 return unsettled; 2 nacks both (two retries wait), then acks.
                    (0 | 1, 1) => slot.lock().unwrap().push(msg.clone()),
                    (2, 1) => {
                        let earlier: Vec<KafkaMessage> = slot.lock().unwrap().drain(..).collect();
                        for m in earlier {
                            m.nack().await.unwrap();
                        }
                        msg.ack().await.unwrap();
                    }
                    // 0's first redelivery is nacked again, with a delay, during its run.
                    (0, 2) => {
                        msg.nack_after(DELAY).await.unwrap();
                    }
                    _ => {
                        msg.ack().await.unwrap();
                    }
                }
            }
        });
    let recorder = Recorder::attach(&broker);
    let app = App::new(broker.clone()).spawn();
    let p = TopicPartition::new(topic.as_str(), 0);
    recorder
        .wait_for("everything acked", |r| {
            (0..4).all(|o| r.settles(&p, o).last() == Some(&Disposition::Ack))
        })
        .await;
    app.shutdown().await.unwrap();
    let starts = drained(&mut rx);
    let at = |o: i64, a: u32| starts.iter().find(|s| (s.0, s.1) == (o, a)).unwrap().2;
    assert!(
        at(1, 2) >= at(0, 3),
        "record 1's retry started {:?} before record 0's second retry: {starts:?}",
        at(0, 3) - at(1, 2)
    );
    assert!(at(0, 3) - at(0, 2) >= DELAY, "record 0 waited its delay");
    assert_eq!(fx.committed(&group, &topic, 0).await, Some(4));
}

/// A nack with no delay gives way to the runtime's other tasks: a record nacked again and
/// again (until another task says stop) does not starve that task, even on a single-threaded
/// runtime, one record at a time or with workers.
pub async fn a_nack_without_delay_lets_other_tasks_run<F: Fixture>(fx: &F) {
    for workers in [None, Some(2)] {
        let broker = fx.connect();
        let (topic, group) = (unique("noyield"), unique("group"));
        // Two partitions nacking at once keep both of the test runtime's workers busy.
        fx.create_topic(&topic, 2).await;
        for partition in 0..2 {
            broker
                .publish(&topic, "record")
                .partition(partition)
                .await
                .expect("publish");
        }
        let go_on = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let g = go_on.clone();
        let mut b = fx
            .subscriber(&broker, &topic)
            .group_id(&group)
            .auto_offset_reset(OffsetReset::Earliest)
            .auto_commit(false);
        if let Some(n) = workers {
            b = b.max_workers(n);
        }
        b.handle(move || {
            let g = g.clone();
            async move {
                if g.load(std::sync::atomic::Ordering::SeqCst) {
                    Ok(())
                } else {
                    Err(HandlerError::from(NackMessage))
                }
            }
        });
        let recorder = Recorder::attach(&broker);
        let app = App::new(broker.clone()).spawn();
        // Another task of the same runtime ends the nacking; it must get to run.
        let g = go_on.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            g.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let p = TopicPartition::new(topic.as_str(), 0);
        recorder
            .wait_for("the record acked", |r| {
                r.settles(&p, 0).last() == Some(&Disposition::Ack)
            })
            .await;
        app.shutdown().await.unwrap();
        assert_eq!(
            fx.committed(&group, &topic, 0).await,
            Some(1),
            "{workers:?}"
        );
    }
}

/// A nack delay too large for the clock (`Duration::MAX`) is capped, not a panic: the record
/// waits (unfinished, holding the commit back), other keys go on, and shutdown is clean.
pub async fn a_nack_delay_too_large_for_the_clock_is_capped<F: Fixture>(fx: &F) {
    let broker = fx.connect();
    let (topic, group) = (unique("hugedelay"), unique("group"));
    fx.create_topic(&topic, 1).await;
    publish_keyed(&broker, &topic, &["a", "b", "b"]).await;
    let (tx, mut rx) = mpsc::unbounded_channel::<SettleOutcome>();
    fx.subscriber(&broker, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .no_ack(true)
        .max_workers(2)
        .ordering(KeepOrder::Key)
        .handle(move |msg: KafkaMessage| {
            let tx = tx.clone();
            async move {
                let status = if msg.offset() == 0 {
                    msg.nack_after(Duration::MAX).await
                } else {
                    msg.ack().await
                };
                tx.send(status.map_err(|e| e.to_string())).unwrap();
            }
        });
    let recorder = Recorder::attach(&broker);
    let app = App::new(broker.clone()).spawn();
    let p = TopicPartition::new(topic.as_str(), 0);
    recorder
        .wait_for("records 1 and 2 acked", |r| {
            (1..3).all(|o| r.settles(&p, o).contains(&Disposition::Ack))
        })
        .await;
    app.shutdown().await.unwrap();
    let outcomes = drained(&mut rx);
    assert_eq!(outcomes.len(), 3, "every handler finished: {outcomes:?}");
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    assert_eq!(
        fx.committed(&group, &topic, 0).await,
        Some(0),
        "record 0 waits, unfinished"
    );
}

type SettleOutcome = Result<ackstream::SettleStatus, String>;

/// The scenarios of this file, for `behaviour_suite!`: one test each per broker. A scenario
/// missing here would never run; `every_scenario_is_listed` fails if one is.
#[doc(hidden)]
#[macro_export]
macro_rules! __scenarios_races {
    ($attrs:tt $fixture:expr) => {
        $crate::__module_tests!($attrs $fixture, races,
            a_nack_from_another_task_keeps_the_commit_behind_the_record,
            under_partition_ordering_a_lane_waits_for_its_nacked_record,
            under_key_ordering_a_lane_waits_for_its_nacked_record,
            two_nacks_pending_at_once_keep_their_own_delays,
            a_revoke_during_a_key_delay_starts_nothing_of_that_key,
            a_record_that_always_fails_backs_off_and_other_keys_flow,
            one_at_a_time_a_retry_waits_behind_an_earlier_retry_nacked_again,
            a_nack_without_delay_lets_other_tasks_run,
            a_nack_delay_too_large_for_the_clock_is_capped,
        );
    };
}
