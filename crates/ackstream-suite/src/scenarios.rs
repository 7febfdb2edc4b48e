//! Scenarios beyond the policy table: groups, rebalances, restarts, shutdown, fencing, delays.
//! Each is named after the behaviour it shows.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ackstream::extract::Offset;
use ackstream::prelude::*;
use ackstream::{Disposition, SettleStatus, TopicPartition};
use tokio::sync::{Notify, mpsc};

use crate::{Fixture, Recorder, unique};

async fn publish_n<B: Broker>(broker: &B, topic: &str, partition: i32, n: usize) {
    for i in 0..n {
        broker
            .publish(topic, format!("record-{i}"))
            .partition(partition)
            .await
            .expect("publish");
    }
}

/// Publishes `n` records to `partition` with many in flight at once (fast on a real broker).
async fn publish_many<B: Broker>(broker: &B, topic: &str, partition: i32, n: usize) {
    for start in (0..n).step_by(2000) {
        let mut sends = tokio::task::JoinSet::new();
        for i in start..n.min(start + 2000) {
            sends.spawn(
                broker
                    .publish(topic, format!("record-{i}"))
                    .partition(partition)
                    .into_future(),
            );
        }
        while let Some(sent) = sends.join_next().await {
            sent.expect("publish task").expect("publish");
        }
    }
}

fn tp(topic: &str, partition: i32) -> TopicPartition {
    TopicPartition::new(topic, partition)
}

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

/// A record nacked by one member is delivered again to another member after a rebalance.
pub async fn nack_redelivers_to_another_group_member<F: Fixture>(fx: &F) {
    let (topic, group) = (unique("handover"), unique("group"));
    fx.create_topic(&topic, 1).await;
    let first = fx.connect();
    publish_n(&first, &topic, 0, 1).await;
    let first_rec = Recorder::attach(&first);
    fx.subscriber(&first, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .handle(|_: String| async { Err::<(), _>(NackMessage) });
    let first_app = App::new(first.clone()).spawn();
    let p = tp(&topic, 0);
    first_rec
        .wait_for("record 0 nacked by the first member", |r| {
            !r.settles(&p, 0).is_empty()
        })
        .await;

    let second = fx.connect();
    let second_rec = Recorder::attach(&second);
    let (tx, mut rx) = mpsc::unbounded_channel();
    fx.subscriber(&second, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .handle(move |body: String| {
            let tx = tx.clone();
            async move { tx.send(body).unwrap() }
        });
    let second_app = App::new(second.clone()).spawn();
    second_rec
        .wait_for("the second member joined", |r| r.assignments(&group) > 0)
        .await;
    first_app.shutdown().await.unwrap(); // leaves the group: rebalance
    assert_eq!(rx.recv().await.as_deref(), Some("record-0"));
    second_rec
        .wait_for("record 0 acked by the second member", |r| {
            r.is_settled(&p, 0)
        })
        .await;
    second_app.shutdown().await.unwrap();
    assert!(first_rec.deliveries(&p, 0) >= 1);
    assert_eq!(
        first_rec
            .settles(&p, 0)
            .iter()
            .filter(|d| **d == Disposition::Ack)
            .count(),
        0,
        "the first member never finished it"
    );
    if fx.accepts_commits_while_rebalancing() {
        assert_eq!(fx.committed(&group, &topic, 0).await, Some(1));
    }
}

/// Two members of one group split the partitions between them; each record is handled once.
pub async fn members_of_one_group_split_the_partitions<F: Fixture>(fx: &F) {
    let (topic, group) = (unique("split"), unique("group"));
    fx.create_topic(&topic, 4).await;
    let (a, b) = (fx.connect(), fx.connect());
    let ra = Recorder::attach(&a);
    let rb = Recorder::attach_beside(&b, &ra);
    for broker in [&a, &b] {
        fx.subscriber(broker, &topic)
            .group_id(&group)
            .auto_offset_reset(OffsetReset::Earliest)
            .auto_commit(false)
            .handle(|_: String| async {});
    }
    let app_a = App::new(a.clone()).spawn();
    ra.wait_for("first member assigned", |r| r.assigned(&group).len() == 4)
        .await;
    let app_b = App::new(b.clone()).spawn();
    let rb2 = rb.clone();
    ra.wait_for("partitions split between members", |r| {
        let (x, y) = (r.assigned(&group), rb2.assigned(&group));
        !x.is_empty() && !y.is_empty() && x.len() + y.len() == 4 && x.iter().all(|p| !y.contains(p))
    })
    .await;
    for partition in 0..4 {
        publish_n(&a, &topic, partition, 5).await;
    }
    let rb3 = rb.clone();
    ra.wait_for("all 20 records handled", |r| {
        r.deliveries_of_topic(&topic) + rb3.deliveries_of_topic(&topic) >= 20
    })
    .await;
    // Both at once: a member that leaves first starts a rebalance, and a broker may refuse the
    // other's final commit meanwhile (the mock cluster does, see `accepts_commits_while_rebalancing`).
    let (done_a, done_b) = tokio::join!(app_a.shutdown(), app_b.shutdown());
    done_a.unwrap();
    done_b.unwrap();
    for partition in 0..4 {
        for offset in 0..5 {
            let p = tp(&topic, partition);
            assert_eq!(
                ra.deliveries(&p, offset) + rb.deliveries(&p, offset),
                1,
                "{p}@{offset}"
            );
        }
        assert_eq!(fx.committed(&group, &topic, partition).await, Some(5));
    }
}

/// With librdkafka's `cooperative-sticky` assignment, a joining member takes partitions over
/// incrementally (the first member keeps the rest without a pause); records published before,
/// during and after the hand-over are each handled once and committed. (The in-memory broker
/// ignores the setting and rebalances eagerly: the same outcome.)
pub async fn cooperative_rebalance_hands_over_without_loss_or_repeats<F: Fixture>(fx: &F) {
    let (topic, group) = (unique("coop"), unique("group"));
    fx.create_topic(&topic, 4).await;
    let (a, b) = (fx.connect(), fx.connect());
    let ra = Recorder::attach(&a);
    let rb = Recorder::attach_beside(&b, &ra);
    for broker in [&a, &b] {
        fx.subscriber(broker, &topic)
            .group_id(&group)
            .auto_offset_reset(OffsetReset::Earliest)
            .auto_commit(false)
            .config("partition.assignment.strategy", "cooperative-sticky")
            .handle(|_: String| async {});
    }
    for partition in 0..4 {
        publish_n(&a, &topic, partition, 5).await;
    }
    let app_a = App::new(a.clone()).spawn();
    ra.wait_for("first 20 handled", |r| r.deliveries_of_topic(&topic) >= 20)
        .await;
    let app_b = App::new(b.clone()).spawn();
    let rb2 = rb.clone();
    ra.wait_for("partitions split between members", |r| {
        let (x, y) = (r.assigned(&group), rb2.assigned(&group));
        !x.is_empty() && !y.is_empty() && x.len() + y.len() == 4
    })
    .await;
    for partition in 0..4 {
        for i in 5..10 {
            a.publish(&topic, format!("record-{i}"))
                .partition(partition)
                .await
                .expect("publish");
        }
    }
    let rb3 = rb.clone();
    ra.wait_for("all 40 handled", |r| {
        r.deliveries_of_topic(&topic) + rb3.deliveries_of_topic(&topic) >= 40
    })
    .await;
    let (done_a, done_b) = tokio::join!(app_a.shutdown(), app_b.shutdown());
    done_a.unwrap();
    done_b.unwrap();
    for partition in 0..4 {
        let p = tp(&topic, partition);
        for offset in 0..10 {
            assert_eq!(
                ra.deliveries(&p, offset) + rb.deliveries(&p, offset),
                1,
                "{p}@{offset}"
            );
        }
        assert_eq!(fx.committed(&group, &topic, partition).await, Some(10));
    }
}

/// A revoke that arrives while a handler is stuck: the member stops reading, waits for the
/// handler until the drain deadline, cancels it, commits exactly the finished prefix, and only
/// then lets the partition go; the next owner resumes at the stuck record, so nothing finished
/// is handled twice and nothing unfinished is skipped.
pub async fn revoke_during_in_flight_processing_commits_exactly_the_finished_prefix<F: Fixture>(
    fx: &F,
) {
    let (topic, group) = (unique("revokeflight"), unique("group"));
    fx.create_topic(&topic, 1).await;
    let (a, b) = (fx.connect(), fx.connect());
    publish_n(&a, &topic, 0, 10).await;
    let ra = Recorder::attach(&a);
    let rb = Recorder::attach_beside(&b, &ra);
    // Record 5 hangs the first time it is handled, whoever handles it.
    let hung = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for broker in [&a, &b] {
        let hung = hung.clone();
        fx.subscriber(broker, &topic)
            .group_id(&group)
            .auto_offset_reset(OffsetReset::Earliest)
            .auto_commit(false)
            .handle(move |Offset(o): Offset| {
                let hung = hung.clone();
                async move {
                    if o == 5 && !hung.swap(true, std::sync::atomic::Ordering::SeqCst) {
                        std::future::pending::<()>().await;
                    }
                }
            });
    }
    let drain = Duration::from_millis(300);
    let app_a = App::new(a.clone()).drain_timeout(drain).spawn();
    let p = tp(&topic, 0);
    ra.wait_for("record 5 in flight on the first member", |r| {
        r.deliveries(&p, 5) == 1
    })
    .await;
    let app_b = App::new(b.clone()).drain_timeout(drain).spawn();
    let rb2 = rb.clone();
    ra.wait_for("all 10 finished after the hand-over", |r| {
        (0..10).all(|o| r.is_settled(&p, o) || rb2.is_settled(&p, o))
    })
    .await;
    let (done_a, done_b) = tokio::join!(app_a.shutdown(), app_b.shutdown());
    done_a.unwrap();
    done_b.unwrap();
    let deliveries = |o| ra.deliveries(&p, o) + rb.deliveries(&p, o);
    assert_eq!(
        deliveries(5),
        2,
        "the stuck record was cancelled and delivered again"
    );
    for o in 6..10 {
        assert_eq!(
            deliveries(o),
            1,
            "record {o} was not read while record 5 was stuck"
        );
    }
    if fx.accepts_commits_while_rebalancing() {
        for o in 0..5 {
            assert_eq!(deliveries(o), 1, "record {o} was committed at the revoke");
        }
    }
    assert_eq!(fx.committed(&group, &topic, 0).await, Some(10));
}

/// Every consumer group sees every record.
pub async fn every_group_sees_every_record<F: Fixture>(fx: &F) {
    let topic = unique("fanout");
    let groups = [unique("group"), unique("group")];
    fx.create_topic(&topic, 2).await;
    let broker = fx.connect();
    publish_n(&broker, &topic, 0, 3).await;
    publish_n(&broker, &topic, 1, 2).await;
    let recorder = Recorder::attach(&broker);
    for group in &groups {
        fx.subscriber(&broker, &topic)
            .group_id(group)
            .auto_offset_reset(OffsetReset::Earliest)
            .ack_policy(AckPolicy::Ack)
            .handle(|_: String| async {});
    }
    let app = App::new(broker.clone()).spawn();
    recorder
        .wait_for("both groups handled all 5 records", |r| {
            r.deliveries_of_topic(&topic) >= 10
        })
        .await;
    app.shutdown().await.unwrap();
    for group in &groups {
        assert_eq!(fx.committed(group, &topic, 0).await, Some(3), "{group}");
        assert_eq!(fx.committed(group, &topic, 1).await, Some(2), "{group}");
    }
}

/// A consumer stopped gracefully mid-stream commits what it finished (including the record in
/// flight when the stop began); its successor in the group resumes there, so every record is
/// processed at least once and none below the committed offset was skipped.
pub async fn restart_resumes_from_the_committed_offset<F: Fixture>(fx: &F) {
    const N: i64 = 30;
    const STOP_AT: i64 = 15;
    let (topic, group) = (unique("restart"), unique("group"));
    fx.create_topic(&topic, 1).await;
    let seen: Arc<Mutex<Vec<(usize, i64)>>> = Arc::default();
    let gate = Arc::new(Notify::new());
    let run = |generation: usize| {
        let broker = fx.connect();
        let (seen, gate) = (seen.clone(), gate.clone());
        fx.subscriber(&broker, &topic)
            .group_id(&group)
            .auto_offset_reset(OffsetReset::Earliest)
            .auto_commit(false)
            .handle(move |msg: KafkaMessage| {
                let (seen, gate) = (seen.clone(), gate.clone());
                async move {
                    if generation == 1 && msg.offset() == STOP_AT {
                        gate.notified().await; // in flight when the stop begins
                    }
                    seen.lock().unwrap().push((generation, msg.offset()));
                }
            });
        broker
    };
    let first = run(1);
    publish_n(&first, &topic, 0, N as usize).await;
    let first_rec = Recorder::attach(&first);
    let app = App::new(first.clone()).spawn();
    let p = tp(&topic, 0);
    first_rec
        .wait_for("the record where the stop begins", |r| {
            r.deliveries(&p, STOP_AT) == 1
        })
        .await;
    app.shutdown_handle().shutdown();
    gate.notify_one();
    app.join().await.unwrap();
    let committed = fx.committed(&group, &topic, 0).await;
    assert_eq!(
        committed,
        Some(STOP_AT + 1),
        "finished prefix committed at shutdown"
    );
    let second = run(2);
    let second_rec = Recorder::attach(&second);
    let app = App::new(second.clone()).spawn();
    second_rec
        .wait_for("the rest of the records", |r| r.is_settled(&p, N - 1))
        .await;
    app.shutdown().await.unwrap();
    let seen = seen.lock().unwrap().clone();
    for offset in 0..N {
        assert!(
            seen.iter().any(|(_, o)| *o == offset),
            "record {offset} never processed"
        );
    }
    assert!(
        seen.iter().all(|(g, o)| (*g == 1) == (*o <= STOP_AT)),
        "each record processed by exactly the generation that owned it: {seen:?}"
    );
    assert_eq!(fx.committed(&group, &topic, 0).await, Some(N));
}

/// A new group with `auto_offset_reset(Latest)` starts after the records already there.
///
/// Kafka resolves "latest" when the consumer first fetches, a moment after the assignment, and
/// nothing announces that moment: so records are published one at a time until one arrives.
/// Whatever arrives, the record that was there before the subscriber must never.
pub async fn latest_offset_reset_skips_earlier_records<F: Fixture>(fx: &F) {
    let (topic, group) = (unique("latest"), unique("group"));
    fx.create_topic(&topic, 1).await;
    let broker = fx.connect();
    publish_n(&broker, &topic, 0, 1).await;
    let recorder = Recorder::attach(&broker);
    fx.subscriber(&broker, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Latest)
        .auto_commit(false)
        .handle(|_: String| async {});
    let app = App::new(broker.clone()).spawn();
    recorder
        .wait_for("assigned", |r| !r.assigned(&group).is_empty())
        .await;
    let mut published = 1;
    loop {
        broker.publish(&topic, "after").partition(0).await.unwrap();
        published += 1;
        let arrived = |r: &Recorder| r.deliveries_of_topic(&topic) > 0;
        if recorder
            .came_within(Duration::from_millis(250), arrived)
            .await
        {
            break;
        }
        assert!(
            published < 200,
            "no record published after the subscription arrived"
        );
    }
    let p = tp(&topic, 0);
    recorder
        .wait_for("the last record handled", |r| {
            r.is_settled(&p, published - 1)
        })
        .await;
    app.shutdown().await.unwrap();
    assert_eq!(
        recorder.deliveries(&p, 0),
        0,
        "the earlier record is skipped"
    );
    assert_eq!(fx.committed(&group, &topic, 0).await, Some(published));
}

/// Shutdown stops fetching, waits for the in-flight handler, and commits its record.
pub async fn shutdown_drains_in_flight_handlers_and_commits<F: Fixture>(fx: &F) {
    let (topic, group) = (unique("drain"), unique("group"));
    fx.create_topic(&topic, 1).await;
    let broker = fx.connect();
    publish_n(&broker, &topic, 0, 3).await;
    let recorder = Recorder::attach(&broker);
    let release = Arc::new(Notify::new());
    let release2 = release.clone();
    fx.subscriber(&broker, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .handle(move |_: String| {
            let release = release2.clone();
            async move { release.notified().await }
        });
    let app = App::new(broker.clone()).spawn();
    let p = tp(&topic, 0);
    recorder
        .wait_for("record 0 in flight", |r| r.deliveries(&p, 0) == 1)
        .await;
    let handle = app.shutdown_handle();
    handle.shutdown();
    release.notify_one();
    app.join().await.unwrap();
    assert_eq!(
        recorder.deliveries(&p, 1),
        0,
        "nothing fetched after shutdown began"
    );
    assert_eq!(
        fx.committed(&group, &topic, 0).await,
        Some(1),
        "the drained record is committed"
    );
}

/// A handler still running at the drain deadline is cancelled, and its record not committed.
pub async fn handler_cancelled_at_drain_deadline_is_not_committed<F: Fixture>(fx: &F) {
    let (topic, group) = (unique("deadline"), unique("group"));
    fx.create_topic(&topic, 1).await;
    let broker = fx.connect();
    publish_n(&broker, &topic, 0, 2).await;
    let recorder = Recorder::attach(&broker);
    let dropped = Arc::new(Notify::new());
    let dropped2 = dropped.clone();
    struct OnDrop(Arc<Notify>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.notify_one();
        }
    }
    fx.subscriber(&broker, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .handle(move |msg: KafkaMessage| {
            let guard = OnDrop(dropped2.clone());
            async move {
                if msg.offset() == 1 {
                    let _guard = guard;
                    std::future::pending::<()>().await;
                }
            }
        });
    let app = App::new(broker.clone())
        .drain_timeout(Duration::from_millis(200))
        .spawn();
    let p = tp(&topic, 0);
    recorder
        .wait_for("record 1 in flight", |r| r.deliveries(&p, 1) == 1)
        .await;
    app.shutdown().await.unwrap();
    dropped.notified().await; // the handler future was dropped (cancelled)
    assert!(!recorder.is_settled(&p, 1));
    assert_eq!(
        fx.committed(&group, &topic, 0).await,
        Some(1),
        "only record 0 is committed"
    );
}

/// A settle that arrives after its partition was revoked changes nothing.
pub async fn settle_after_revoke_changes_nothing<F: Fixture>(fx: &F) {
    let (topic, group) = (unique("fenced"), unique("group"));
    fx.create_topic(&topic, 1).await;
    let broker = fx.connect();
    publish_n(&broker, &topic, 0, 1).await;
    let recorder = Recorder::attach(&broker);
    let parked: Arc<Mutex<Option<KafkaMessage>>> = Arc::default();
    let parked2 = parked.clone();
    fx.subscriber(&broker, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .no_ack(true)
        .handle(move |msg: KafkaMessage| {
            let parked = parked2.clone();
            async move { *parked.lock().unwrap() = Some(msg) }
        });
    let app = App::new(broker.clone()).spawn();
    let p = tp(&topic, 0);
    recorder
        .wait_for("record 0 delivered", |r| r.deliveries(&p, 0) == 1)
        .await;
    app.shutdown().await.unwrap(); // revokes every partition
    let late = parked
        .lock()
        .unwrap()
        .take()
        .expect("handler parked the message");
    assert_eq!(late.ack().await.unwrap(), SettleStatus::Stale);
    assert_eq!(fx.committed(&group, &topic, 0).await, None);
}

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

/// A record's attempts survive a move to another member: the first member nacks it twice and
/// stops during the third attempt; the second member goes on from attempt 3 and, with a limit of
/// 4, rejects it after its fourth attempt (without the hand-over it would start again at 1).
pub async fn attempts_survive_a_move_to_another_member<F: Fixture>(fx: &F) {
    let (topic, group) = (unique("carried"), unique("group"));
    fx.create_topic(&topic, 1).await;
    let first = fx.connect();
    publish_n(&first, &topic, 0, 1).await;
    let first_rec = Recorder::attach(&first);
    fx.subscriber(&first, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .max_attempts(4)
        .handle(|Attempt(attempt): Attempt, _: String| async move {
            if attempt >= 3 {
                // Still running when the member stops: cancelled, neither settled nor counted.
                std::future::pending::<()>().await;
            }
            Err::<(), _>(HandlerError::from("poison"))
        });
    let first_app = App::new(first.clone())
        .drain_timeout(Duration::from_millis(100))
        .spawn();
    let p = tp(&topic, 0);
    first_rec
        .wait_for("the third attempt under way", |r| r.deliveries(&p, 0) == 3)
        .await;
    first_app.shutdown().await.unwrap();
    assert_eq!(
        first_rec.settles(&p, 0),
        [100, 200].map(|ms| Disposition::Nack {
            delay: Some(Duration::from_millis(ms)),
        })
    );

    let second = fx.connect();
    let second_rec = Recorder::attach(&second);
    fx.subscriber(&second, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .max_attempts(4)
        .handle(|_: String| async { Err::<(), _>(HandlerError::from("poison")) });
    let second_app = App::new(second.clone()).spawn();
    second_rec
        .wait_for("the record rejected at its attempt limit", |r| {
            r.settles(&p, 0).last() == Some(&Disposition::Reject)
        })
        .await;
    second_app.shutdown().await.unwrap();
    let attempts: Vec<u32> = second_rec
        .events()
        .iter()
        .filter_map(|e| match e {
            ackstream::event::Event::Delivered {
                tp,
                offset: 0,
                attempt,
                ..
            } if *tp == p => Some(*attempt),
            _ => None,
        })
        .collect();
    if fx.keeps_commit_metadata() {
        assert_eq!(attempts, [3, 4], "the second member continued the count");
    } else {
        // The count travels in commit metadata; this broker drops it, so the count restarts
        // (and the limit still holds per member).
        eprintln!(
            "{}: commit metadata not kept; attempts restart on a move",
            fx.name()
        );
        assert_eq!(attempts, [1, 2, 3, 4]);
    }
    if fx.accepts_commits_while_rebalancing() {
        assert_eq!(fx.committed(&group, &topic, 0).await, Some(1));
    }
}
