//! Scenarios for subscribers that handle several records at once (`max_workers`, `ordering`),
//! and the property test of the commit rule under random completion orders, nacks and
//! rebalances.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as Atomic};
use std::sync::{Arc, Mutex};

use ackstream::event::Event;
use ackstream::extract::Offset;
use ackstream::prelude::*;
use ackstream::{Disposition, KeepOrder, SettleStatus, TopicPartition};
use tokio::sync::{Barrier, Notify, mpsc};

use crate::explorer::Rng;
use crate::{Fixture, Recorder, unique};

async fn publish<B: Broker>(
    broker: &B,
    topic: &str,
    partition: i32,
    key: Option<String>,
    i: usize,
) {
    let mut p = broker
        .publish(topic, format!("record-{i}"))
        .partition(partition);
    if let Some(key) = key {
        p = p.key(key);
    }
    p.await.expect("publish");
}

/// Counts handlers running at once and remembers the most.
#[derive(Debug, Default)]
struct Gauge {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl Gauge {
    fn enter(&self) -> usize {
        let n = self.now.fetch_add(1, Atomic::SeqCst) + 1;
        self.peak.fetch_max(n, Atomic::SeqCst);
        n
    }
    fn leave(&self) {
        self.now.fetch_sub(1, Atomic::SeqCst);
    }
    fn peak(&self) -> usize {
        self.peak.load(Atomic::SeqCst)
    }
}

/// Handlers that wait until `need` of them run at once. Once that happened nobody waits again,
/// so a record delivered again (after a rebalance, say) never waits for a partner that will
/// not come. With fewer than `need` allowed at once, the first ones wait for ever and the test
/// times out.
struct Company {
    gauge: Gauge,
    need: usize,
    met: tokio::sync::watch::Sender<bool>,
}

impl Company {
    fn new(need: usize) -> Arc<Self> {
        Arc::new(Self {
            gauge: Gauge::default(),
            need,
            met: tokio::sync::watch::Sender::new(false),
        })
    }

    async fn run(&self) {
        let mut met = self.met.subscribe();
        if self.gauge.enter() >= self.need {
            self.met.send_replace(true);
        }
        let _ = met.wait_for(|m| *m).await;
        tokio::task::yield_now().await;
        self.gauge.leave();
    }
}

/// A partition whose handler is stuck does not hold up the subscriber's other partitions.
pub async fn a_slow_partition_does_not_stall_the_others<F: Fixture>(fx: &F) {
    let broker = fx.connect();
    let (topic, group) = (unique("slowpart"), unique("group"));
    fx.create_topic(&topic, 2).await;
    publish(&broker, &topic, 0, None, 0).await;
    for i in 0..20 {
        publish(&broker, &topic, 1, None, i).await;
    }
    let gate = Arc::new(Notify::new());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let g = gate.clone();
    fx.subscriber(&broker, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .handle(move |Partition(p): Partition| {
            let (g, tx) = (g.clone(), tx.clone());
            async move {
                if p == 0 {
                    g.notified().await; // stuck until the test lets it go
                }
                tx.send(p).unwrap();
            }
        });
    let app = App::new(broker.clone()).spawn();
    for _ in 0..20 {
        assert_eq!(rx.recv().await, Some(1), "partition 1 moves on meanwhile");
    }
    gate.notify_one();
    assert_eq!(rx.recv().await, Some(0));
    app.shutdown().await.unwrap();
    assert_eq!(fx.committed(&group, &topic, 0).await, Some(1));
    assert_eq!(fx.committed(&group, &topic, 1).await, Some(20));
}

/// `KeepOrder::Unordered` runs up to `max_workers` records at once, never more.
pub async fn unordered_runs_up_to_max_workers_at_once<F: Fixture>(fx: &F) {
    let broker = fx.connect();
    let (topic, group) = (unique("unordered"), unique("group"));
    fx.create_topic(&topic, 1).await;
    for i in 0..12 {
        publish(&broker, &topic, 0, None, i).await;
    }
    let company = Company::new(4);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let c = company.clone();
    fx.subscriber(&broker, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .max_workers(4)
        .ordering(KeepOrder::Unordered)
        .handle(move |Offset(o): Offset| {
            let (c, tx) = (c.clone(), tx.clone());
            async move {
                c.run().await;
                tx.send(o).unwrap();
            }
        });
    let app = App::new(broker.clone()).spawn();
    let mut seen = BTreeSet::new();
    while seen.len() < 12 {
        seen.insert(rx.recv().await.unwrap());
    }
    app.shutdown().await.unwrap();
    assert_eq!(company.gauge.peak(), 4, "four at once, never more");
    assert_eq!(fx.committed(&group, &topic, 0).await, Some(12));
}

/// `max_workers` bounds the whole subscriber: with `KeepOrder::Partition` and two workers, two
/// of four partitions run at a time.
pub async fn max_workers_bounds_the_subscriber_across_partitions<F: Fixture>(fx: &F) {
    let broker = fx.connect();
    let (topic, group) = (unique("pool"), unique("group"));
    fx.create_topic(&topic, 4).await;
    for p in 0..4 {
        for i in 0..2 {
            publish(&broker, &topic, p, None, i).await;
        }
    }
    let company = Company::new(2);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let c = company.clone();
    fx.subscriber(&broker, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .max_workers(2)
        .handle(move |Partition(p): Partition, Offset(o): Offset| {
            let (c, tx) = (c.clone(), tx.clone());
            async move {
                c.run().await;
                tx.send((p, o)).unwrap();
            }
        });
    let app = App::new(broker.clone()).spawn();
    let mut seen = BTreeSet::new();
    while seen.len() < 8 {
        seen.insert(rx.recv().await.unwrap());
    }
    app.shutdown().await.unwrap();
    assert_eq!(company.gauge.peak(), 2, "two at once, never more");
    for p in 0..4 {
        assert_eq!(fx.committed(&group, &topic, p).await, Some(2));
    }
}

/// A partition and a key.
type KeyLane = (i32, Vec<u8>);

/// Under `KeepOrder::Key`, records of one key never overlap in time and run in offset order,
/// while different keys run side by side.
pub async fn key_ordering_never_overlaps_a_key_and_keeps_its_order<F: Fixture>(fx: &F) {
    const PER_PARTITION: usize = 150;
    let broker = fx.connect();
    let (topic, group) = (unique("keyorder"), unique("group"));
    fx.create_topic(&topic, 2).await;
    for p in 0..2 {
        for i in 0..PER_PARTITION {
            publish(&broker, &topic, p, Some(format!("k{}", i % 7)), i).await;
        }
    }
    let gauge = Arc::new(Gauge::default());
    let active: Arc<Mutex<BTreeSet<KeyLane>>> = Arc::default();
    let order: Arc<Mutex<HashMap<KeyLane, Vec<i64>>>> = Arc::default();
    let overlapped = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (g, a, ord, over) = (
        gauge.clone(),
        active.clone(),
        order.clone(),
        overlapped.clone(),
    );
    fx.subscriber(&broker, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .max_workers(16)
        .ordering(KeepOrder::Key)
        .handle(
            move |Partition(p): Partition, Offset(o): Offset, Key(key): Key| {
                let (g, a, ord, over, tx) =
                    (g.clone(), a.clone(), ord.clone(), over.clone(), tx.clone());
                async move {
                    let lane = (p, key.unwrap_or_default().to_vec());
                    if !a.lock().unwrap().insert(lane.clone()) {
                        over.store(true, Atomic::SeqCst);
                    }
                    g.enter();
                    ord.lock().unwrap().entry(lane.clone()).or_default().push(o);
                    // Finish in a scrambled order: later offsets of other keys overtake.
                    for _ in 0..(o * 7919 % 5) {
                        tokio::task::yield_now().await;
                    }
                    g.leave();
                    a.lock().unwrap().remove(&lane);
                    tx.send(()).unwrap();
                }
            },
        );
    let app = App::new(broker.clone()).spawn();
    for _ in 0..2 * PER_PARTITION {
        rx.recv().await.unwrap();
    }
    app.shutdown().await.unwrap();
    assert!(
        !overlapped.load(Atomic::SeqCst),
        "two records of one key ran at once"
    );
    assert!(gauge.peak() > 1, "different keys ran side by side");
    let order = std::mem::take(&mut *order.lock().unwrap());
    assert_eq!(order.len(), 14, "7 keys in each of 2 partitions");
    for ((p, key), offsets) in &order {
        let expected: Vec<i64> = (0..PER_PARTITION as i64)
            .filter(|i| format!("k{}", i % 7).as_bytes() == key.as_slice())
            .collect();
        assert_eq!(
            offsets, &expected,
            "partition {p}: key {key:?} out of order"
        );
    }
    for p in 0..2 {
        assert_eq!(
            fx.committed(&group, &topic, p).await,
            Some(PER_PARTITION as i64)
        );
    }
}

/// A nack under concurrency sends back only the nacked record: the records in flight beside
/// and behind it finish once and are not delivered again, and the commit still reaches the end.
pub async fn nack_under_concurrency_redelivers_only_the_nacked_record<F: Fixture>(fx: &F) {
    let broker = fx.connect();
    let (topic, group) = (unique("concnack"), unique("group"));
    fx.create_topic(&topic, 1).await;
    for i in 0..8 {
        publish(&broker, &topic, 0, None, i).await;
    }
    let recorder = Recorder::attach(&broker);
    let together = Arc::new(Barrier::new(4));
    let calls = Arc::new(AtomicUsize::new(0));
    let (b, c) = (together.clone(), calls.clone());
    fx.subscriber(&broker, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .max_workers(4)
        .ordering(KeepOrder::Unordered)
        .handle(move |Offset(o): Offset, Attempt(attempt): Attempt| {
            let (b, c) = (b.clone(), c.clone());
            async move {
                if c.fetch_add(1, Atomic::SeqCst) < 4 {
                    b.wait().await; // the first four calls (0..=3) are in flight together
                }
                if attempt == 1 && o == 2 {
                    return Err(NackMessage.into());
                }
                Ok::<(), HandlerError>(())
            }
        });
    let app = App::new(broker.clone()).spawn();
    let p = TopicPartition::new(topic.as_str(), 0);
    recorder
        .wait_for("every record acked", |r| {
            (0..8).all(|o| r.settles(&p, o).contains(&Disposition::Ack))
        })
        .await;
    app.shutdown().await.unwrap();
    assert_eq!(recorder.deliveries(&p, 0), 1);
    assert_eq!(recorder.deliveries(&p, 1), 1);
    assert_eq!(recorder.deliveries(&p, 2), 2, "the nacked record again");
    assert_eq!(
        recorder.deliveries(&p, 3),
        1,
        "in flight behind the nack: not delivered again"
    );
    for o in 4..8 {
        assert_eq!(recorder.deliveries(&p, o), 1, "after the nack: once");
    }
    assert_eq!(fx.committed(&group, &topic, 0).await, Some(8));
}

/// Under `KeepOrder::Key` with more partitions than workers (each partition's part of what may
/// be held is small), a key waiting out a nack's delay, with another record of it queued behind,
/// still lets the partition's other keys run.
pub async fn under_key_ordering_a_waiting_key_stops_no_other_key_however_many_partitions<
    F: Fixture,
>(
    fx: &F,
) {
    const PARTITIONS: i32 = 8;
    let (topic, group) = (unique("keywait"), unique("group"));
    fx.create_topic(&topic, PARTITIONS).await;
    let broker = fx.connect();
    publish(&broker, &topic, 0, Some("a".into()), 0).await;
    publish(&broker, &topic, 0, Some("a".into()), 1).await;
    for i in 2..8 {
        publish(&broker, &topic, 0, Some("b".into()), i).await;
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    fx.subscriber(&broker, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .max_workers(2)
        .ordering(KeepOrder::Key)
        .handle(move |Offset(offset): Offset, Attempt(attempt): Attempt| {
            let tx = tx.clone();
            async move {
                if (offset, attempt) == (0, 1) {
                    return Err(NackMessage::after(std::time::Duration::from_secs(600)).into());
                }
                tx.send(offset).unwrap();
                Ok::<(), HandlerError>(())
            }
        });
    let app = App::new(broker.clone()).spawn();
    let others = async {
        let mut seen = BTreeSet::new();
        while seen.len() < 6 {
            seen.insert(rx.recv().await.unwrap());
        }
        seen
    };
    let seen = tokio::time::timeout(std::time::Duration::from_secs(20), others)
        .await
        .expect("key b's records run while key a waits");
    assert_eq!(seen, (2..8).collect::<BTreeSet<i64>>());
    app.shutdown().await.unwrap();
    assert_eq!(fx.committed(&group, &topic, 0).await, Some(0));
}

/// Under `KeepOrder::Key`, a nack's delay holds back only the nacked key: the partition is
/// rewound at once, and the records of other keys are handled, and finished, while the nacked
/// record waits out its delay (unfinished: the commit does not pass it meanwhile). With two
/// workers: the pause itself takes no place in the partition's bound, only the record waiting
/// behind it does.
pub async fn under_key_ordering_a_nack_delay_holds_back_only_its_key<F: Fixture>(fx: &F) {
    // Long enough for a Kafka partition to be fetched again after the rewind.
    const DELAY: std::time::Duration = std::time::Duration::from_millis(1500);
    let (topic, group) = (unique("keydelay"), unique("group"));
    fx.create_topic(&topic, 1).await;
    let broker = fx.connect();
    publish(&broker, &topic, 0, Some("a".into()), 0).await;
    for i in 1..7 {
        let key = if i % 2 == 0 { "b" } else { "c" };
        publish(&broker, &topic, 0, Some(key.into()), i).await;
    }
    let recorder = Recorder::attach(&broker);
    // Other keys run only once "a" has nacked, so all their work falls in the delay.
    let (nacked, _) = tokio::sync::watch::channel(false);
    let nacked = Arc::new(nacked);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let n = nacked.clone();
    fx.subscriber(&broker, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .max_workers(2)
        .ordering(KeepOrder::Key)
        .handle(
            move |Key(key): Key, Offset(offset): Offset, Attempt(attempt): Attempt| {
                let (n, tx) = (n.clone(), tx.clone());
                async move {
                    if offset == 0 {
                        tx.send((offset, attempt, std::time::Instant::now()))
                            .unwrap();
                        if attempt == 1 {
                            n.send_replace(true);
                            return Err(NackMessage::after(DELAY).into());
                        }
                    } else {
                        assert_ne!(key.as_deref(), Some(b"a".as_slice()));
                        let _ = n.subscribe().wait_for(|nacked| *nacked).await;
                        tx.send((offset, attempt, std::time::Instant::now()))
                            .unwrap();
                    }
                    Ok::<(), HandlerError>(())
                }
            },
        );
    let app = App::new(broker.clone()).spawn();
    let mut seen = Vec::new();
    while !seen.iter().any(|&(o, a, _)| (o, a) == (0, 2)) {
        seen.push(rx.recv().await.unwrap());
    }
    let p = TopicPartition::new(topic.as_str(), 0);
    recorder
        .wait_for("record 0 acked", |r| {
            r.settles(&p, 0).last() == Some(&Disposition::Ack)
        })
        .await;
    app.shutdown().await.unwrap();
    let nack = seen.iter().find(|&&(o, a, _)| (o, a) == (0, 1)).unwrap().2;
    let retry = seen.last().unwrap().2;
    assert!(
        retry - nack >= DELAY,
        "record 0 ran again after {:?}",
        retry - nack
    );
    for offset in 1..7 {
        let done = seen
            .iter()
            .filter(|&&(o, _, _)| o == offset)
            .map(|&(_, _, t)| t)
            .min();
        assert!(
            done.is_some_and(|t| t < nack + DELAY),
            "record {offset} (another key) was handled during the delay"
        );
    }
    // Record 0 was unfinished through the delay: no offset past it was stored before it.
    let events = recorder.events();
    check_commit_rule(&events, "key delay");
    assert_eq!(fx.committed(&group, &topic, 0).await, Some(7));
}

/// The commit rule holds whatever the completion order, the nacks and the rebalances: every
/// stored offset `o` of a partition has every record below `o` finished (a nack unfinishes
/// only its record); and in the end everything is committed.
/// Runs [`Fixture::property_cases`] random cases (ordering, workers, partitions, records, which
/// first attempts nack, how long each handler takes, whether a second member joins midway).
pub async fn commit_rule_holds_under_random_concurrency_nacks_and_rebalances<F: Fixture>(fx: &F) {
    for seed in 1..=fx.property_cases() {
        commit_rule_case(fx, seed).await;
    }
}

async fn commit_rule_case<F: Fixture>(fx: &F, seed: u64) {
    let mut rng = Rng::new(seed);
    let ordering = KeepOrder::ALL[rng.below(3) as usize];
    let workers = 1 + rng.below(8) as usize;
    let partitions = 1 + rng.below(3) as i32;
    let per_partition = 1 + rng.below(25) as usize;
    // The mock cluster refuses commits for seconds after a member joins: rebalances are
    // exercised on brokers that accept them.
    let rebalance = rng.below(3) == 0 && fx.accepts_commits_while_rebalancing();
    // Per (partition, offset): yields before finishing, whether the first attempt nacks, and
    // the nack's delay in milliseconds (under key ordering a delay pauses the key).
    type Plan = HashMap<(i32, i64), (u64, bool, u64)>;
    let plan: Arc<Plan> = Arc::new(
        (0..partitions)
            .flat_map(|p| (0..per_partition as i64).map(move |o| (p, o)))
            .map(|k| (k, (rng.below(6), rng.below(5) == 0, rng.below(3))))
            .collect(),
    );
    let case = format!(
        "seed {seed}: {ordering:?}, {workers} workers, {partitions} partitions x {per_partition}, rebalance {rebalance}"
    );
    let (topic, group) = (unique("prop"), unique("group"));
    fx.create_topic(&topic, partitions).await;
    let first = fx.connect();
    for p in 0..partitions {
        for i in 0..per_partition {
            publish(&first, &topic, p, Some(format!("k{}", i % 3)), i).await;
        }
    }
    let recorder = Recorder::attach(&first);
    let subscribe = |broker: &F::Broker| {
        let plan = plan.clone();
        fx.subscriber(broker, &topic)
            .group_id(&group)
            .auto_offset_reset(OffsetReset::Earliest)
            .auto_commit(false)
            .max_workers(workers)
            .ordering(ordering)
            .handle(
                move |Partition(p): Partition, Offset(o): Offset, Attempt(attempt): Attempt| {
                    let (yields, nack, delay) = plan[&(p, o)];
                    async move {
                        for _ in 0..yields {
                            tokio::task::yield_now().await;
                        }
                        if nack && attempt == 1 {
                            let delay = std::time::Duration::from_millis(delay);
                            return Err(NackMessage::after(delay).into());
                        }
                        Ok::<(), HandlerError>(())
                    }
                },
            );
    };
    subscribe(&first);
    let total = partitions as usize * per_partition;
    let app = App::new(first.clone()).spawn();
    let mut second_app = None;
    if rebalance {
        recorder
            .wait_for(&format!("{case}: half handled"), |r| {
                r.deliveries_of_topic(&topic) >= total / 2
            })
            .await;
        let second = fx.connect();
        recorder.attach_also(&second);
        subscribe(&second);
        second_app = Some(App::new(second).spawn());
    }
    let tps: Vec<TopicPartition> = (0..partitions)
        .map(|p| TopicPartition::new(topic.as_str(), p))
        .collect();
    recorder
        .wait_for(&format!("{case}: everything stored"), |r| {
            tps.iter()
                .all(|tp| r.stored(tp).last() == Some(&(per_partition as i64)))
        })
        .await;
    match second_app {
        // Both at once: one leaving first would rebalance the other before its final commit.
        Some(second) => {
            let (a, b) = tokio::join!(app.shutdown(), second.shutdown());
            a.unwrap();
            b.unwrap();
        }
        None => app.shutdown().await.unwrap(),
    }
    check_commit_rule(&recorder.events(), &case);
    for p in 0..partitions {
        assert_eq!(
            fx.committed(&group, &topic, p).await,
            Some(per_partition as i64),
            "{case}: partition {p} committed to the end"
        );
    }
}

/// Replays the events: a store of offset `o` needs every record below `o` finished. A store is
/// reported just after the settle that caused it (both under the partition's lock). Panics,
/// naming `case`, at the first store that breaks the rule.
pub fn check_commit_rule(events: &[Event], case: &str) {
    let mut finished: HashMap<TopicPartition, BTreeSet<i64>> = HashMap::new();
    for event in events {
        match event {
            Event::Settled {
                tp,
                offset,
                status: SettleStatus::Settled(d),
            } => {
                let done = finished.entry(tp.clone()).or_default();
                match d {
                    Disposition::Ack | Disposition::Reject => {
                        done.insert(*offset);
                    }
                    // A nack, or anything else: not finished.
                    _ => {
                        done.remove(offset);
                    }
                }
            }
            Event::OffsetStored { tp, offset } => {
                let done = finished.get(tp).cloned().unwrap_or_default();
                let missing: Vec<i64> = (0..*offset).filter(|o| !done.contains(o)).collect();
                assert!(
                    missing.is_empty(),
                    "{case}: stored {tp}@{offset} while {missing:?} unfinished"
                );
            }
            _ => {}
        }
    }
}

/// The scenarios of this file, for `behaviour_suite!`: one test each per broker. A scenario
/// missing here would never run; `every_scenario_is_listed` fails if one is.
#[doc(hidden)]
#[macro_export]
macro_rules! __scenarios_concurrency {
    ($attrs:tt $fixture:expr) => {
        $crate::__module_tests!($attrs $fixture, concurrency,
            a_slow_partition_does_not_stall_the_others,
            unordered_runs_up_to_max_workers_at_once,
            max_workers_bounds_the_subscriber_across_partitions,
            key_ordering_never_overlaps_a_key_and_keeps_its_order,
            nack_under_concurrency_redelivers_only_the_nacked_record,
            under_key_ordering_a_nack_delay_holds_back_only_its_key,
            under_key_ordering_a_waiting_key_stops_no_other_key_however_many_partitions,
            commit_rule_holds_under_random_concurrency_nacks_and_rebalances,
        );
    };
}
