//! Consumer groups: members splitting partitions, rebalances (eager and cooperative), revokes during work, restarts, offset reset, settles after a revoke, attempts handed over.
//! Each scenario is named after the behaviour it shows; the macro at the end lists them for
//! the suite.

use crate::{EVENT_TIMEOUT, Fixture, Recorder, unique};
use ackstream::extract::Offset;
use ackstream::prelude::*;
use ackstream::{Disposition, SettleStatus};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

use super::{publish_n, tp};

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

/// A group member and the recorder of its events.
type Member<B> = (B, Arc<Recorder>);

/// Two members of `group`, each with a `NackOnError` subscriber to `topic` that handles
/// records without doing anything, and their recorders (the second's events wake the first's
/// waits). Neither is started.
fn two_members<F: Fixture>(fx: &F, topic: &str, group: &str) -> [Member<F::Broker>; 2] {
    let (a, b) = (fx.connect(), fx.connect());
    let ra = Recorder::attach(&a);
    let rb = Recorder::attach_beside(&b, &ra);
    for broker in [&a, &b] {
        fx.subscriber(broker, topic)
            .group_id(group)
            .auto_offset_reset(OffsetReset::Earliest)
            .auto_commit(false)
            .handle(|_: String| async {});
    }
    [(a, ra), (b, rb)]
}

/// Two members of one group split the partitions between them; each record is handled once.
pub async fn members_of_one_group_split_the_partitions<F: Fixture>(fx: &F) {
    let (topic, group) = (unique("split"), unique("group"));
    fx.create_topic(&topic, 4).await;
    let [(a, ra), (b, rb)] = two_members(fx, &topic, &group);
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

/// A member that joins a group whose partitions all go to others still reports its
/// assignment (an empty one), so "the second member has joined" can be awaited.
pub async fn a_member_given_no_partition_still_reports_its_assignment<F: Fixture>(fx: &F) {
    let (topic, group) = (unique("empty-assignment"), unique("group"));
    fx.create_topic(&topic, 1).await;
    let [(a, ra), (b, rb)] = two_members(fx, &topic, &group);
    let app_a = App::new(a.clone()).spawn();
    ra.wait_for("first member assigned", |r| r.assigned(&group).len() == 1)
        .await;
    let app_b = App::new(b.clone()).spawn();
    let rb2 = rb.clone();
    // The one partition ends with one member; both report an assignment after the join.
    ra.wait_for("both members report an assignment", |r| {
        rb2.assignments(&group) >= 1 && r.assigned(&group).len() + rb2.assigned(&group).len() == 1
    })
    .await;
    let (done_a, done_b) = tokio::join!(app_a.shutdown(), app_b.shutdown());
    done_a.unwrap();
    done_b.unwrap();
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
    if !fx.accepts_commits_while_rebalancing() {
        // This broker refuses every commit for a while after the join (librdkafka's mock
        // cluster), so a shutdown then would have its final commits refused: wait for the
        // member's own, retried commits to reach the end first (seen failing on a loaded
        // machine: nothing committed at all).
        let reached = tokio::time::timeout(EVENT_TIMEOUT, async {
            while fx.committed(&group, &topic, 0).await != Some(10) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(reached.is_ok(), "the members' retried commits reached 10");
    }
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

/// The scenarios of this file, for `behaviour_suite!`: one test each per broker. A scenario
/// missing here would never run; `every_scenario_is_listed` fails if one is.
#[doc(hidden)]
#[macro_export]
macro_rules! __scenarios_groups {
    ($attrs:tt $fixture:expr) => {
        $crate::__module_tests!($attrs $fixture, groups,
            nack_redelivers_to_another_group_member,
            members_of_one_group_split_the_partitions,
            a_member_given_no_partition_still_reports_its_assignment,
            cooperative_rebalance_hands_over_without_loss_or_repeats,
            revoke_during_in_flight_processing_commits_exactly_the_finished_prefix,
            every_group_sees_every_record,
            restart_resumes_from_the_committed_offset,
            latest_offset_reset_skips_earlier_records,
            settle_after_revoke_changes_nothing,
            attempts_survive_a_move_to_another_member,
        );
    };
}
