//! The schedule explorer: many seeded runs of random subscribers under random interleavings,
//! each checked against the acknowledgement invariants from what happened (the runtime's event
//! log, the handler runs, the group's committed offsets).
//!
//! A schedule is drawn from its seed: policy, ordering, worker count, partitions, keys, what
//! each attempt of each record does (ack, nack with or without a delay, reject, interrupt, fail,
//! panic), where each settle comes from (the handler's task, a spawned task, another OS thread;
//! awaited by the handler or left to land later), and what happens to the membership (a second
//! member joins, and maybe leaves again so the partitions come back to the first, or joins and
//! leaves again and again while the first is busy; or the first member shuts down at a random
//! moment and a new one finishes the work). Some schedules are
//! nack storms (most first attempts nack), with long delays under key ordering when the
//! membership changes, so revokes come while keys wait. In some schedules (most of those with
//! long delays) every handler run blocks its thread for 0.1-1 ms before it yields, as a
//! blocking call or CPU-bound work does: handlers run inside their partition's task, so a
//! revoke's stop that comes meanwhile reaches the task's other futures (a key waiting out its
//! delay) before the task itself looks at it again.
//!
//! A run draws from a [`Mix`]: one member throughout, any membership, or revokes landing on
//! nacks ([`Mix::RevokeNacks`]: one-at-a-time partitions nacking most first attempts while a
//! second member joins, takes partitions, handles and commits some of their records and
//! leaves, so the partitions come back to the member that nacked during the revoke, after
//! another one committed past; a nack that still sought would leave a seek pending there).
//!
//! Invariants, checked after every run:
//! - **I1** whenever the group's committed offset of a partition is `c` (each store the runtime
//!   makes, and each committed offset sampled from the broker), every record below `c` is
//!   finished (acked or rejected) in its latest delivery;
//! - **I2** a group's committed offset never decreases;
//! - **I3** every record is processed: in the end each one is finished and committed past;
//! - **I4** under `Partition` and `Key`, handler runs of one lane never overlap, and no record
//!   of a lane starts while an earlier record of the lane has a nack made during its run that
//!   is not yet redelivered (a settle made after the handler returned is asynchronous: the
//!   records behind it may have started already);
//! - **I5** a redelivery after `nack_after(d)` (or a failure's backoff) starts no earlier than
//!   `d` after the nack, unless the partition changed hands in between (its revoke's drain
//!   ended, or it was assigned again);
//! - **I6** nothing starts once a partition stops: from the moment a member's revoke of a
//!   partition begins ([`Event::Revoking`]) until it ends ([`Event::Revoked`]), no record of
//!   it is delivered again (a retry) on that member, and no record delivered meanwhile starts
//!   there (a record read during the drain stays unstarted, for the next owner). The runtime
//!   stops a partition's dispatch under its ledger lock before it reports the revoke, so the
//!   order of events decides exactly; every entry names the member it came from.
//!
//! A failing schedule panics with its seed; `ACKSTREAM_EXPLORER_SEED=<seed>` runs only that one
//! (printing its plan), and the same seed always draws the same schedule. The interleaving
//! itself comes from real concurrency (threads, timers, the runtime's tasks, librdkafka's
//! rebalances), so a seed draws the schedule's *choices*, and a replay may take a different
//! interleaving: the explorer gets its reach from running many of them, and a seed that failed
//! once may need several replays to fail again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering as Atomic};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ackstream::event::Event;
use ackstream::prelude::*;
use ackstream::{Disposition, KeepOrder, RunningApp, SettleStatus, TopicPartition};
use tokio::sync::watch;

use crate::{Fixture, unique};

/// A small deterministic generator (xorshift64*), so a schedule is a function of its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Where a settle is made from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// The handler's own task.
    Handler,
    /// A `tokio::spawn`ed task, after `micros`.
    Task { micros: u64 },
    /// Another OS thread, after `micros`.
    Thread { micros: u64 },
}

/// What one attempt of a record does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    /// Returns `Ok` without settling (the policy decides).
    ReturnOk,
    /// Settles explicitly; `wait`: the handler waits for the settle before it returns.
    Settle {
        disposition: Disposition,
        from: Origin,
        wait: bool,
    },
    /// Returns an interrupt (`Err(NackMessage)` and friends).
    Interrupt(Disposition),
    /// Returns an error.
    Fail,
    /// Panics.
    Panic,
    /// Settles explicitly, then fails (returns an error or panics).
    SettleThenFail {
        disposition: Disposition,
        from: Origin,
        panic: bool,
    },
}

/// What happens to the group's membership during the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Membership {
    /// One member throughout.
    Alone,
    /// A second member joins after `after` deliveries and stays.
    Join { after: usize },
    /// A second member joins after `after` deliveries and leaves after `then` more, so the
    /// partitions come back to the first member.
    JoinLeave { after: usize, then: usize },
    /// The first member shuts down after `after` deliveries; a new one finishes.
    Restart { after: usize },
    /// A second member joins and leaves `times` times, each step after `every` more
    /// deliveries, so the first member's partitions are revoked and come back again and again
    /// while it is busy.
    Churn { every: usize, times: usize },
}

/// One schedule, drawn from a seed.
#[derive(Clone, Debug)]
pub struct Schedule {
    seed: u64,
    policy: AckPolicy,
    ordering: KeepOrder,
    workers: Option<usize>,
    max_attempts: Option<u32>,
    backoff_ms: u64,
    partitions: i32,
    per_partition: usize,
    keys: u64,
    membership: Membership,
    /// Per (partition, offset): what attempts 1, 2, ... do (later attempts acknowledge).
    plan: HashMap<(i32, i64), Vec<Act>>,
    /// Per (partition, offset): yields the handler makes before it acts (and, when the
    /// schedule is paced, the share of the pace it works).
    yields: HashMap<(i32, i64), u8>,
    /// How long each handler run blocks its thread (a blocking call, or CPU-bound work)
    /// before it yields and acts; zero in most schedules. A handler runs inside its
    /// partition's task, so meanwhile that task polls nothing else: a revoke's stop that comes
    /// then is seen by the task's other futures (a key waiting out its delay) before the task
    /// itself looks at it again.
    blocking: Duration,
    /// Whether a member that joined leaves once it made deliveries of its own (so a partition
    /// it took is handled and committed by it before it comes back), rather than after a
    /// number of deliveries in all.
    leave_after_own: bool,
}

const POLICIES: [AckPolicy; 5] = [
    AckPolicy::AckFirst,
    AckPolicy::Ack,
    AckPolicy::RejectOnError,
    AckPolicy::NackOnError,
    AckPolicy::Manual,
];

fn draw_from(rng: &mut Rng) -> Origin {
    match rng.below(3) {
        0 => Origin::Handler,
        1 => Origin::Task {
            micros: rng.below(3) * rng.below(400),
        },
        _ => Origin::Thread {
            micros: rng.below(3) * rng.below(400),
        },
    }
}

fn draw_nack(rng: &mut Rng) -> Disposition {
    let delay = match rng.below(3) {
        0 => None,
        _ => Some(Duration::from_millis(1 + rng.below(4))),
    };
    Disposition::Nack { delay }
}

fn draw_disposition(rng: &mut Rng) -> Disposition {
    match rng.below(4) {
        0 | 1 => Disposition::Ack,
        2 => draw_nack(rng),
        _ => Disposition::Reject,
    }
}

/// An attempt that goes wrong somehow (the first attempt of a planned record).
fn draw_trouble(rng: &mut Rng, policy: AckPolicy) -> Act {
    if policy == AckPolicy::Manual {
        // The handler must settle every record somehow, or it never finishes.
        return match rng.below(4) {
            0 => Act::SettleThenFail {
                disposition: draw_disposition(rng),
                from: draw_from(rng),
                panic: rng.chance(50),
            },
            1 => Act::Interrupt(draw_disposition(rng)),
            _ => Act::Settle {
                disposition: draw_disposition(rng),
                from: draw_from(rng),
                wait: rng.chance(30),
            },
        };
    }
    match rng.below(6) {
        0 => Act::Fail,
        1 => Act::Panic,
        2 => Act::Interrupt(draw_disposition(rng)),
        3 => Act::SettleThenFail {
            disposition: draw_disposition(rng),
            from: draw_from(rng),
            panic: rng.chance(50),
        },
        _ => Act::Settle {
            disposition: draw_disposition(rng),
            from: draw_from(rng),
            wait: rng.chance(50),
        },
    }
}

/// An attempt that ends well.
fn draw_fine(rng: &mut Rng, policy: AckPolicy) -> Act {
    if policy == AckPolicy::Manual || rng.chance(30) {
        let disposition = if rng.chance(85) {
            Disposition::Ack
        } else {
            Disposition::Reject
        };
        Act::Settle {
            disposition,
            from: draw_from(rng),
            wait: policy != AckPolicy::Manual || rng.chance(30),
        }
    } else {
        Act::ReturnOk
    }
}

/// Which schedules a run of the explorer draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    /// One member throughout.
    Alone,
    /// Any membership: members may join, leave, churn and restart.
    Membership,
    /// Revokes that land on nacks: a second member joins and leaves (once, or again and
    /// again) while the first handles its partitions one record at a time under
    /// `KeepOrder::Partition`, most first attempts nacking without a delay from the handler,
    /// so nacks are made during revoke drains and partitions come back to the member that
    /// nacked after the other one committed past (where a nack rewound with a seek, a seek
    /// left pending by a revoke rewound that later assignment).
    RevokeNacks,
}

impl Schedule {
    /// Draws the schedule of `seed` from `mix`.
    pub fn draw(seed: u64, mix: Mix) -> Self {
        match mix {
            Mix::Alone => Self::draw_any(seed, false),
            Mix::Membership => Self::draw_any(seed, true),
            Mix::RevokeNacks => Self::draw_revoke_nacks(seed),
        }
    }

    /// See [`Mix::RevokeNacks`]: the schedule of `seed` with membership changes, made one at a
    /// time under partition order, its membership a join-and-leave or a churn, most first
    /// attempts a nack without delay.
    fn draw_revoke_nacks(seed: u64) -> Self {
        let mut s = Self::draw_any(seed, true);
        let mut rng = Rng::new(seed ^ 0x7265_766f_6b65);
        s.leave_after_own = true;
        s.ordering = KeepOrder::Partition;
        s.workers = None;
        if s.policy == AckPolicy::AckFirst {
            // Acked before the handler runs: its interrupts would change nothing.
            s.policy = AckPolicy::NackOnError;
        }
        let total = s.partitions as u64 * s.per_partition as u64;
        s.membership = if rng.chance(50) {
            Membership::JoinLeave {
                after: rng.below(total) as usize,
                then: (1 + rng.below(1 + total / 2)) as usize,
            }
        } else {
            Membership::Churn {
                every: 1 + rng.below(1 + total / 4) as usize,
                times: 2 + rng.below(3) as usize,
            }
        };
        let total = s.partitions.min(2) as u64 * s.per_partition as u64;
        if let Membership::JoinLeave { after, .. } | Membership::Churn { every: after, .. } =
            &mut s.membership
        {
            // Joins while records are left to do.
            *after = (*after).min(total.saturating_sub(1) as usize / 2).max(1);
        }
        // At most two partitions: with two members each takes one, so a partition whose
        // record was nacked during the revoke moves to the other member.
        s.partitions = s.partitions.min(2);
        // Most first attempts, and many second ones, nack without a delay: the record in
        // flight when a revoke comes is likely one.
        let share = 70 + rng.below(26);
        for p in 0..s.partitions {
            for o in 0..s.per_partition as i64 {
                let acts = s.plan.get_mut(&(p, o)).expect("planned");
                for _ in 0..2 {
                    if rng.chance(share) {
                        acts.insert(0, Act::Interrupt(Disposition::Nack { delay: None }));
                    }
                }
            }
        }
        s
    }

    /// Draws the schedule of `seed`. `membership_changes`: whether members may join, leave and
    /// restart (brokers whose rebalances take seconds explore without).
    fn draw_any(seed: u64, membership_changes: bool) -> Self {
        let mut rng = Rng::new(seed);
        let policy = POLICIES[rng.below(5) as usize];
        let ordering = KeepOrder::ALL[rng.below(3) as usize];
        let workers = match rng.below(4) {
            0 if ordering == KeepOrder::Partition => None,
            0 | 1 => Some(1 + rng.below(4) as usize),
            2 => Some(1 + rng.below(16) as usize),
            _ => Some(1 + rng.below(64) as usize),
        };
        let max_attempts = rng.chance(25).then(|| 2 + rng.below(3) as u32);
        let backoff_ms = 1 + rng.below(3);
        let partitions = 1 + rng.below(3) as i32;
        // Mostly small runs (many of them), sometimes a longer one with more in flight.
        let per_partition = if rng.chance(20) {
            30 + rng.below(90) as usize
        } else {
            1 + rng.below(30) as usize
        };
        // Sometimes every settle comes from elsewhere (a handler handing work to a worker).
        let elsewhere = rng.chance(25);
        let keys = 1 + rng.below(4);
        let total = partitions as usize * per_partition;
        let membership = if !membership_changes {
            Membership::Alone
        } else {
            match rng.below(7) {
                0 => Membership::Join {
                    after: rng.below(total as u64) as usize,
                },
                1 => Membership::JoinLeave {
                    after: rng.below(total as u64) as usize,
                    then: rng.below(1 + total as u64 / 2) as usize,
                },
                2 => Membership::Restart {
                    after: rng.below(total as u64) as usize,
                },
                3 => Membership::Churn {
                    every: 1 + rng.below(1 + total as u64 / 4) as usize,
                    times: 2 + rng.below(4) as usize,
                },
                _ => Membership::Alone,
            }
        };
        // Sometimes a nack storm: most first attempts nack (with delays up to 20 ms, or none),
        // so nacks pile up while others run, and delays outlast a membership change.
        let storm = rng.chance(15);
        // Under key ordering with the membership changing, a storm's delays are long (50-300
        // ms), so a revoke or a shutdown comes while keys wait out their delays.
        let long_delays = storm && ordering == KeepOrder::Key && membership != Membership::Alone;
        let trouble = if storm {
            60 + rng.below(30)
        } else {
            5 + rng.below(50)
        };
        let mut plan = HashMap::new();
        let mut yields = HashMap::new();
        for p in 0..partitions {
            for o in 0..per_partition as i64 {
                let mut acts = Vec::new();
                if storm && rng.chance(trouble) {
                    let delay = rng.chance(70).then(|| {
                        Duration::from_millis(if long_delays {
                            50 + rng.below(250)
                        } else {
                            1 + rng.below(20)
                        })
                    });
                    acts.push(Act::Interrupt(Disposition::Nack { delay }));
                } else if rng.chance(trouble) {
                    acts.push(draw_trouble(&mut rng, policy));
                    if rng.chance(30) {
                        acts.push(draw_trouble(&mut rng, policy));
                    }
                }
                acts.push(draw_fine(&mut rng, policy));
                if elsewhere {
                    for act in &mut acts {
                        if let Act::Settle { from, .. } | Act::SettleThenFail { from, .. } = act
                            && *from == Origin::Handler
                        {
                            *from = Origin::Task {
                                micros: rng.below(300),
                            };
                        }
                    }
                }
                plan.insert((p, o), acts);
                yields.insert((p, o), rng.below(4) as u8);
            }
        }
        // Drawn last, so the choices above stay those of the same seed without it. Blocking
        // handlers mostly where keys wait out long delays while revokes come.
        let blocking = if rng.chance(if long_delays { 60 } else { 4 }) {
            Duration::from_micros(100 + rng.below(900))
        } else {
            Duration::ZERO
        };
        Self {
            seed,
            policy,
            ordering,
            workers,
            max_attempts,
            backoff_ms,
            partitions,
            per_partition,
            keys,
            membership,
            plan,
            yields,
            blocking,
            leave_after_own: false,
        }
    }

    /// How long a handler run works, on average, where a rebalance takes `rebalance`: so long
    /// that the schedule's records span about a rebalance and a half when its membership
    /// changes (records are in flight when a revoke arrives), nothing otherwise.
    fn pace(&self, rebalance: Duration) -> Duration {
        if rebalance.is_zero() || self.membership == Membership::Alone {
            return Duration::ZERO;
        }
        let total = self.partitions as u32 * self.per_partition as u32;
        let at_once = self.workers.unwrap_or(self.partitions as usize).max(1) as u32;
        (rebalance * 3 / 2 * at_once / total.max(1)).min(Duration::from_millis(200))
    }

    fn act(&self, partition: i32, offset: i64, attempt: u32) -> Act {
        let acts = &self.plan[&(partition, offset)];
        let i = (attempt.max(1) as usize - 1).min(acts.len() - 1);
        acts[i]
    }

    fn summary(&self) -> String {
        format!(
            "seed {}: {:?}, {:?}, workers {:?}, max_attempts {:?}, {} partitions x {}, {} keys, {:?}, blocking {:?}",
            self.seed,
            self.policy,
            self.ordering,
            self.workers,
            self.max_attempts,
            self.partitions,
            self.per_partition,
            self.keys,
            self.membership,
            self.blocking
        )
    }
}

/// What the explorer saw, in one timeline.
#[derive(Clone, Debug)]
enum Entry {
    /// A runtime event, reported by member `.0` (0: the first member, then in joining order).
    Event(usize, Event),
    /// A handler run began on a member.
    Start {
        member: usize,
        run: u64,
        tp: TopicPartition,
        offset: i64,
        key: Option<Vec<u8>>,
    },
    /// A handler run ended (returned, panicked or was cancelled).
    End { run: u64 },
    /// The group's committed offset of a partition, read from the broker.
    Committed { tp: TopicPartition, offset: i64 },
}

#[derive(Debug, Default)]
struct Log {
    entries: Mutex<Vec<(Instant, Entry)>>,
    changes: watch::Sender<u64>,
    runs: AtomicU64,
}

impl Log {
    fn push(&self, entry: Entry) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((Instant::now(), entry));
        self.changes.send_modify(|n| *n += 1);
    }

    fn snapshot(&self) -> Vec<(Instant, Entry)> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Deliveries made by `member`.
    fn deliveries_by(&self, member: usize) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Event(m, Event::Delivered { .. }) if *m == member))
            .count()
    }

    fn deliveries(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Event(_, Event::Delivered { .. })))
            .count()
    }

    /// Whether the group's committed offset of every partition was last read as `end`.
    fn committed_to(&self, topic: &str, partitions: i32, end: i64) -> bool {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut last: HashMap<i32, i64> = HashMap::new();
        for (_, e) in entries.iter() {
            if let Entry::Committed { tp, offset } = e
                && &*tp.topic == topic
            {
                last.insert(tp.partition, *offset);
            }
        }
        (0..partitions).all(|p| last.get(&p) == Some(&end))
    }

    /// Whether every record is finished in its latest delivery and stored past.
    fn done(&self, topic: &str, partitions: i32, per_partition: usize) -> bool {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut finished = Finished::default();
        let mut stored: HashMap<i32, i64> = HashMap::new();
        for (_, e) in entries.iter() {
            finished.follow(topic, e);
            if let Entry::Event(_, Event::OffsetStored { tp, offset }) = e
                && &*tp.topic == topic
            {
                let s = stored.entry(tp.partition).or_insert(0);
                *s = (*s).max(*offset);
            }
        }
        (0..partitions).all(|p| {
            stored.get(&p) == Some(&(per_partition as i64)) && finished.count(p) == per_partition
        })
    }
}

/// The records of one topic finished in their latest delivery, per partition, replayed from
/// the timeline: a delivery or a nack unfinishes a record, an ack or a reject finishes it.
#[derive(Debug, Default)]
struct Finished(HashMap<i32, HashSet<i64>>);

impl Finished {
    fn follow(&mut self, topic: &str, entry: &Entry) {
        match entry {
            Entry::Event(_, Event::Delivered { tp, offset, .. }) if &*tp.topic == topic => {
                self.0.entry(tp.partition).or_default().remove(offset);
            }
            Entry::Event(
                _,
                Event::Settled {
                    tp,
                    offset,
                    status: SettleStatus::Settled(d),
                },
            ) if &*tp.topic == topic => {
                let set = self.0.entry(tp.partition).or_default();
                if matches!(d, Disposition::Nack { .. }) {
                    set.remove(offset);
                } else {
                    set.insert(*offset);
                }
            }
            _ => {}
        }
    }

    fn count(&self, partition: i32) -> usize {
        self.0.get(&partition).map_or(0, HashSet::len)
    }

    /// The records below `offset` of `partition` that are not finished.
    fn missing_below(&self, partition: i32, offset: i64) -> Vec<i64> {
        let done = self.0.get(&partition);
        (0..offset)
            .filter(|o| !done.is_some_and(|d| d.contains(o)))
            .collect()
    }
}

/// Logs a handler run's end when dropped: on return, on panic, and on cancellation.
struct RunGuard {
    log: Arc<Log>,
    run: u64,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        self.log.push(Entry::End { run: self.run });
    }
}

fn handler_error() -> HandlerError {
    HandlerError::from("explorer: planned failure")
}

async fn settle(msg: &KafkaMessage, disposition: Disposition) {
    let _ = match disposition {
        Disposition::Ack => msg.ack().await,
        Disposition::Reject => msg.reject().await,
        Disposition::Nack { delay: None } => msg.nack().await,
        Disposition::Nack { delay: Some(d) } => msg.nack_after(d).await,
        other => unreachable!("the explorer draws no {other:?}"),
    };
}

/// Makes a settle from where the plan says; returns a handle to wait on if it runs elsewhere.
fn settle_from(
    msg: &KafkaMessage,
    disposition: Disposition,
    from: Origin,
) -> Option<tokio::sync::oneshot::Receiver<()>> {
    let msg = msg.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    match from {
        Origin::Handler => return None,
        Origin::Task { micros } => {
            tokio::spawn(async move {
                if micros > 0 {
                    tokio::time::sleep(Duration::from_micros(micros)).await;
                } else {
                    tokio::task::yield_now().await;
                }
                settle(&msg, disposition).await;
                let _ = tx.send(());
            });
        }
        Origin::Thread { micros } => {
            let runtime = tokio::runtime::Handle::current();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_micros(micros));
                runtime.block_on(settle(&msg, disposition));
                let _ = tx.send(());
            });
        }
    }
    Some(rx)
}

fn interrupt(d: Disposition) -> HandlerError {
    match d {
        Disposition::Ack => AckMessage.into(),
        Disposition::Reject => RejectMessage.into(),
        Disposition::Nack { delay: None } => NackMessage.into(),
        Disposition::Nack { delay: Some(d) } => NackMessage::after(d).into(),
        other => HandlerError::from_disposition(other),
    }
}

async fn perform(msg: &KafkaMessage, act: Act) -> Result<(), HandlerError> {
    match act {
        Act::ReturnOk => Ok(()),
        Act::Interrupt(d) => Err(interrupt(d)),
        Act::Fail => Err(handler_error()),
        Act::Panic => panic!("explorer: planned panic"),
        Act::Settle {
            disposition,
            from,
            wait,
        } => {
            match settle_from(msg, disposition, from) {
                None => settle(msg, disposition).await,
                Some(done) if wait => {
                    let _ = done.await;
                }
                Some(_) => {}
            }
            Ok(())
        }
        Act::SettleThenFail {
            disposition,
            from,
            panic,
        } => {
            if settle_from(msg, disposition, from).is_none() {
                settle(msg, disposition).await;
            }
            if panic {
                panic!("explorer: planned panic after a settle");
            }
            Err(handler_error())
        }
    }
}

fn subscribe<F: Fixture>(
    fx: &F,
    broker: &F::Broker,
    s: &Arc<Schedule>,
    topic: &str,
    group: &str,
    log: &Arc<Log>,
    member: usize,
) {
    let mut b = fx
        .subscriber(broker, topic)
        .group_id(group)
        .auto_offset_reset(OffsetReset::Earliest)
        .ack_policy(s.policy)
        .ordering(s.ordering)
        .retry_backoff(ackstream::Backoff::exponential(
            Duration::from_millis(s.backoff_ms),
            Duration::from_millis(4 * s.backoff_ms),
        ));
    if let Some(n) = s.workers {
        b = b.max_workers(n);
    }
    if let Some(n) = s.max_attempts {
        b = b.max_attempts(n);
    }
    let pace = s.pace(fx.rebalance_takes());
    let (s, log) = (s.clone(), log.clone());
    b.handle(move |msg: KafkaMessage| {
        let (s, log) = (s.clone(), log.clone());
        async move {
            let run = log.runs.fetch_add(1, Atomic::Relaxed);
            log.push(Entry::Start {
                member,
                run,
                tp: msg.topic_partition().clone(),
                offset: msg.offset(),
                key: msg.key().map(|k| k.to_vec()),
            });
            let _guard = RunGuard {
                log: log.clone(),
                run,
            };
            let yields = s.yields[&(msg.partition(), msg.offset())];
            for _ in 0..yields {
                tokio::task::yield_now().await;
            }
            if !s.blocking.is_zero() {
                // Blocks the thread, as a blocking call does, then lets the task go on.
                std::thread::sleep(s.blocking);
                tokio::task::yield_now().await;
            }
            if !pace.is_zero() {
                tokio::time::sleep(pace * (u32::from(yields) + 1) / 2).await;
            }
            let act = s.act(msg.partition(), msg.offset(), msg.attempt());
            perform(&msg, act).await
        }
    });
}

/// Panics from planned failures are expected: keep them out of the test output.
fn quiet_planned_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let planned = info
                .payload()
                .downcast_ref::<&str>()
                .is_some_and(|m| m.starts_with("explorer: planned"));
            if !planned {
                default(info);
            }
        }));
    });
}

/// How long one schedule may take before it counts as hung: alone one takes well under a
/// second, but `scripts/test` runs it beside the Kafka tests on two cores.
const SCHEDULE_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the schedule of `seed` and checks the invariants; panics with the seed on a violation.
pub async fn run_schedule<F: Fixture>(fx: &F, seed: u64, mix: Mix) {
    quiet_planned_panics();
    let s = Arc::new(Schedule::draw(seed, mix));
    if replayed_seed() == Some(seed) {
        eprintln!("{}\nplan: {:?}", s.summary(), s.plan);
    }
    let (topic, group) = (unique("explore"), unique("group"));
    fx.create_topic(&topic, s.partitions).await;
    let first = fx.connect();
    for p in 0..s.partitions {
        for i in 0..s.per_partition {
            first
                .publish(&topic, format!("record-{i}"))
                .partition(p)
                .key(format!("k{}", i as u64 % s.keys))
                .await
                .expect("publish");
        }
    }
    let log = Arc::new(Log::default());
    let observe = |broker: &F::Broker, member: usize| {
        let log = log.clone();
        broker.observe(move |e| log.push(Entry::Event(member, e.clone())));
    };
    observe(&first, 0);
    subscribe(fx, &first, &s, &topic, &group, &log, 0);
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let outcome = tokio::time::timeout(SCHEDULE_TIMEOUT, async {
        let sampler = sample_committed(fx, &topic, &group, s.partitions, &log, &sampling);
        let drive = async {
            let mut apps: Vec<RunningApp> = vec![App::new(first.clone()).spawn()];
            let (topic, s, log) = (&topic, &s, &log);
            let done = move |log: &Log| log.done(topic, s.partitions, s.per_partition);
            let reached =
                move |n: usize| wait_until(log, move |log| log.deliveries() >= n || done(log));
            let members = AtomicUsize::new(0);
            let join = |apps: &mut Vec<RunningApp>| {
                let broker = fx.connect();
                let member = members.fetch_add(1, Atomic::Relaxed) + 1;
                observe(&broker, member);
                subscribe(fx, &broker, s, topic, &group, log, member);
                apps.push(App::new(broker).spawn());
                member
            };
            // When a member that joined after `at` deliveries in all leaves: after `then`
            // more in all, or (`leave_after_own`) once it made `then` deliveries itself.
            let leaves = move |member: usize, at: usize, then: usize| async move {
                if s.leave_after_own {
                    wait_until(log, move |log| {
                        log.deliveries_by(member) >= then || done(log)
                    })
                    .await;
                } else {
                    reached(at + then).await;
                }
            };
            match s.membership {
                Membership::Alone => {}
                Membership::Join { after } => {
                    reached(after).await;
                    join(&mut apps);
                }
                Membership::JoinLeave { after, then } => {
                    reached(after).await;
                    let second = join(&mut apps);
                    leaves(second, after, then).await;
                    let second = apps.pop().expect("second member");
                    second.shutdown().await.expect("second member shuts down");
                }
                Membership::Restart { after } => {
                    reached(after).await;
                    let first = apps.pop().expect("first member");
                    first.shutdown().await.expect("first member shuts down");
                    join(&mut apps);
                }
                Membership::Churn { every, times } => {
                    let mut at = 0;
                    for _ in 0..times {
                        at += every;
                        reached(at).await;
                        let second = join(&mut apps);
                        leaves(second, at, every).await;
                        at += every;
                        let second = apps.pop().expect("second member");
                        second.shutdown().await.expect("second member shuts down");
                    }
                }
            }
            wait_until(log, done).await;
            if !fx.accepts_commits_while_rebalancing() {
                // The final commits of a shutdown during a rebalance would be refused: wait for
                // the members' own (retried) commits to reach the end first.
                let ends = s.per_partition as i64;
                wait_until(log, move |log| log.committed_to(topic, s.partitions, ends)).await;
            }
            // Together: one leaving first would rebalance the other before its final commit.
            let second = apps.pop();
            let first = apps.pop();
            let shut = |app: Option<RunningApp>| async move {
                if let Some(app) = app {
                    app.shutdown().await.expect("member shuts down");
                }
            };
            tokio::join!(shut(first), shut(second));
            sampling.store(false, Atomic::Release);
        };
        tokio::join!(sampler, drive);
    })
    .await;
    let entries = log.snapshot();
    let mut committed = Vec::new();
    for p in 0..s.partitions {
        committed.push(fx.committed(&group, &topic, p).await);
    }
    let hung = outcome.is_err().then(|| {
        format!("hung (not every record finished and stored within {SCHEDULE_TIMEOUT:?})")
    });
    let violations = check(&s, &topic, &entries, &committed).err();
    let found: Vec<String> = hung.into_iter().chain(violations).collect();
    if replayed_seed() == Some(seed) {
        eprintln!("{}", tail_from(&entries, 0));
    }
    if !found.is_empty() {
        panic!(
            "{}: {}; replay with ACKSTREAM_EXPLORER_SEED={seed}\n{}",
            s.summary(),
            found.join("; "),
            tail(&entries)
        );
    }
}

/// Waits until `cond` holds for the log (re-checked at every entry).
async fn wait_until(log: &Log, cond: impl Fn(&Log) -> bool) {
    let mut rx = log.changes.subscribe();
    while !cond(log) {
        let _ = rx.changed().await;
    }
}

/// Reads the group's committed offsets into the log until `sampling` turns off.
async fn sample_committed<F: Fixture>(
    fx: &F,
    topic: &str,
    group: &str,
    partitions: i32,
    log: &Log,
    sampling: &std::sync::atomic::AtomicBool,
) {
    let every = if fx.property_cases() > 100 {
        Duration::from_millis(1)
    } else {
        Duration::from_millis(50)
    };
    while sampling.load(Atomic::Acquire) {
        for p in 0..partitions {
            if let Some(offset) = fx.committed(group, topic, p).await {
                log.push(Entry::Committed {
                    tp: TopicPartition::new(topic, p),
                    offset,
                });
            }
        }
        tokio::time::sleep(every).await;
    }
}

fn tail(entries: &[(Instant, Entry)]) -> String {
    tail_from(entries, entries.len().saturating_sub(80))
}

fn tail_from(entries: &[(Instant, Entry)], from: usize) -> String {
    let start = entries.first().map(|(t, _)| *t);
    entries[from..]
        .iter()
        .map(|(t, e)| {
            let at = start.map_or(Duration::ZERO, |s| t.duration_since(s));
            format!("  {at:>10.3?} {e:?}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A record's lane under the schedule's ordering (`None`: unordered, no lane).
fn lane(
    s: &Schedule,
    tp: &TopicPartition,
    key: &Option<Vec<u8>>,
) -> Option<(i32, Option<Vec<u8>>)> {
    match s.ordering {
        KeepOrder::Partition => Some((tp.partition, None)),
        KeepOrder::Key => Some((tp.partition, key.clone())),
        KeepOrder::Unordered => None,
    }
}

/// A lane: partition, and key under `KeepOrder::Key`.
type LaneId = (i32, Option<Vec<u8>>);
/// A handler run's record: where, its key, when it started.
type RunOf = (TopicPartition, i64, Option<Vec<u8>>, Instant);

/// Checks I1-I5 over a run's timeline and the final committed offsets.
fn check(
    s: &Schedule,
    topic: &str,
    entries: &[(Instant, Entry)],
    committed: &[Option<i64>],
) -> Result<(), String> {
    let ours = |tp: &TopicPartition| &*tp.topic == topic;
    // The first violation of each invariant.
    let mut violations: BTreeMap<&'static str, String> = BTreeMap::new();
    let mut fail = |invariant: &'static str, what: String| {
        violations.entry(invariant).or_insert(what);
    };
    // I1: finished records per partition (in their latest delivery).
    let mut finished = Finished::default();
    // I2: the highest committed offset seen per partition.
    let mut highest: HashMap<i32, i64> = HashMap::new();
    // I4: runs in progress per lane, and each run's record.
    let mut running: HashMap<(i32, Option<Vec<u8>>), HashSet<u64>> = HashMap::new();
    let mut runs: HashMap<u64, RunOf> = HashMap::new();
    let mut active: HashMap<(i32, i64), u64> = HashMap::new();
    // I4: records with a nack made during their run, not yet started again, per lane.
    let mut unresolved: HashMap<LaneId, BTreeMap<i64, ()>> = HashMap::new();
    // I5: the last nack with a delay per record, and whether the partition moved since.
    let mut delayed: HashMap<(i32, i64), (Instant, Duration)> = HashMap::new();
    let mut keys: HashMap<(i32, i64), Option<Vec<u8>>> = HashMap::new();
    // I6: per member and partition, the entry its revoke began at (until its drain ended),
    // the offsets delivered in its current assignment, and those delivered since the revoke
    // began (which must not start).
    let mut revoking: HashMap<(usize, i32), usize> = HashMap::new();
    let mut delivered: HashMap<(usize, i32), HashSet<i64>> = HashMap::new();
    let mut late: HashSet<(usize, i32, i64)> = HashSet::new();
    for (i, (at, entry)) in entries.iter().enumerate() {
        finished.follow(topic, entry);
        match entry {
            Entry::Event(m, Event::Revoking { partitions, .. }) => {
                for tp in partitions.iter().filter(|tp| ours(tp)) {
                    revoking.insert((*m, tp.partition), i);
                }
            }
            Entry::Event(
                m,
                Event::Delivered {
                    tp,
                    offset,
                    attempt,
                },
            ) if ours(tp) => {
                let here = (*m, tp.partition);
                let again = !delivered.entry(here).or_default().insert(*offset);
                if let Some(began) = revoking.get(&here) {
                    if again {
                        fail(
                            "I6",
                            format!(
                                "I6: {tp}@{offset} delivered again (attempt {attempt}) on member {m} after its partition's revoke began (entry {began}) (entry {i})"
                            ),
                        );
                    }
                    late.insert((*m, tp.partition, *offset));
                }
            }
            Entry::Event(
                _,
                Event::Settled {
                    tp,
                    offset,
                    status: SettleStatus::Settled(Disposition::Nack { delay }),
                },
            ) if ours(tp) => {
                if let Some(d) = delay {
                    delayed.insert((tp.partition, *offset), (*at, *d));
                }
                if active.contains_key(&(tp.partition, *offset))
                    && let Some(l) =
                        lane(s, tp, keys.get(&(tp.partition, *offset)).unwrap_or(&None))
                {
                    unresolved.entry(l).or_default().insert(*offset, ());
                }
            }
            Entry::Event(m, Event::Revoked { partitions, .. })
            | Entry::Event(m, Event::Assigned { partitions, .. }) => {
                for tp in partitions.iter().filter(|tp| ours(tp)) {
                    // The member's assignment of the partition ended (or a new one began).
                    revoking.remove(&(*m, tp.partition));
                    delivered.remove(&(*m, tp.partition));
                    late.retain(|(lm, p, _)| (*lm, *p) != (*m, tp.partition));
                    // The partition changed hands: pending redeliveries died with the assignment.
                    delayed.retain(|(p, _), _| *p != tp.partition);
                    unresolved.retain(|(p, _), _| *p != tp.partition);
                }
            }
            Entry::Event(_, Event::OffsetStored { tp, offset }) if ours(tp) => {
                // A store is reported after the settle that caused it (under one lock).
                let missing = finished.missing_below(tp.partition, *offset);
                if !missing.is_empty() {
                    fail(
                        "I1",
                        format!(
                            "I1: stored {tp}@{offset} while {missing:?} unfinished (entry {i})"
                        ),
                    );
                }
            }
            Entry::Committed { tp, offset } if ours(tp) => {
                let h = highest.entry(tp.partition).or_insert(*offset);
                if *offset < *h {
                    fail(
                        "I2",
                        format!(
                            "I2: committed offset of {tp} went back from {h} to {offset} (entry {i})"
                        ),
                    );
                }
                *h = *offset;
                let missing = finished.missing_below(tp.partition, *offset);
                if !missing.is_empty() {
                    fail(
                        "I1",
                        format!(
                            "I1: group committed {tp}@{offset} while {missing:?} unfinished (entry {i})"
                        ),
                    );
                }
            }
            Entry::Start {
                member,
                run,
                tp,
                offset,
                key,
            } if ours(tp) => {
                keys.insert((tp.partition, *offset), key.clone());
                if late.contains(&(*member, tp.partition, *offset)) {
                    fail(
                        "I6",
                        format!(
                            "I6: {tp}@{offset} started on member {member}, delivered after its partition's revoke began (entry {}) (entry {i})",
                            revoking
                                .get(&(*member, tp.partition))
                                .copied()
                                .unwrap_or_default()
                        ),
                    );
                }
                if let Some((nacked_at, delay)) = delayed.remove(&(tp.partition, *offset))
                    && at.duration_since(nacked_at) < delay
                {
                    fail(
                        "I5",
                        format!(
                            "I5: {tp}@{offset} started again {:?} after a nack with delay {delay:?} (entry {i})",
                            at.duration_since(nacked_at)
                        ),
                    );
                }
                if let Some(l) = lane(s, tp, key) {
                    let lane_runs = running.entry(l.clone()).or_default();
                    if let Some(other) = lane_runs.iter().next() {
                        let (_, o, _, _) = &runs[other];
                        fail(
                            "I4",
                            format!(
                                "I4: {tp}@{offset} started while {tp}@{o} of its lane was running (entry {i})"
                            ),
                        );
                    }
                    lane_runs.insert(*run);
                    let waiting = unresolved.entry(l).or_default();
                    waiting.remove(offset);
                    if let Some((&earlier, _)) = waiting.range(..*offset).next() {
                        fail(
                            "I4",
                            format!(
                                "I4: {tp}@{offset} started while {tp}@{earlier} of its lane waited for its redelivery (entry {i})"
                            ),
                        );
                    }
                }
                active.insert((tp.partition, *offset), *run);
                runs.insert(*run, (tp.clone(), *offset, key.clone(), *at));
            }
            Entry::End { run } => {
                if let Some((tp, offset, key, _)) = runs.get(run) {
                    if let Some(l) = lane(s, tp, key)
                        && let Some(set) = running.get_mut(&l)
                    {
                        set.remove(run);
                    }
                    if active.get(&(tp.partition, *offset)) == Some(run) {
                        active.remove(&(tp.partition, *offset));
                    }
                }
            }
            _ => {}
        }
    }
    // I3: everything processed and committed to the end.
    for (p, c) in committed.iter().enumerate() {
        if *c != Some(s.per_partition as i64) {
            fail(
                "I3",
                format!(
                    "I3: partition {p} committed {c:?} at the end, not {}",
                    s.per_partition
                ),
            );
        }
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(violations.into_values().collect::<Vec<_>>().join("; "))
    }
}

/// The seed to replay alone, from `ACKSTREAM_EXPLORER_SEED`.
pub fn replayed_seed() -> Option<u64> {
    std::env::var("ACKSTREAM_EXPLORER_SEED").ok()?.parse().ok()
}

/// Runs the schedules `seeds` drawn from `mix` (or only the replayed seed, if it is among
/// them), `parallel` at a time.
pub async fn explore<F: Fixture + Clone>(
    fx: &F,
    seeds: std::ops::Range<u64>,
    parallel: usize,
    mix: Mix,
) {
    let seeds: Vec<u64> = match replayed_seed() {
        Some(seed) if seeds.contains(&seed) => vec![seed],
        Some(_) => Vec::new(),
        None => seeds.collect(),
    };
    let mut tasks = tokio::task::JoinSet::new();
    let mut failures = Vec::new();
    for seed in seeds {
        while tasks.len() >= parallel {
            if let Some(Err(e)) = tasks.join_next().await {
                failures.push(panic_text(e));
            }
        }
        let fx = fx.clone();
        tasks.spawn(async move { run_schedule(&fx, seed, mix).await });
    }
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r {
            failures.push(panic_text(e));
        }
    }
    if !failures.is_empty() {
        let count = |what: &str| failures.iter().filter(|f| f.contains(what)).count();
        panic!(
            "{} schedule(s) failed (I1 {}, I2 {}, I3 {}, I4 {}, I5 {}, I6 {}, hung {}):\n{}",
            failures.len(),
            count("I1:"),
            count("I2:"),
            count("I3:"),
            count("I4:"),
            count("I5:"),
            count("I6:"),
            count("hung"),
            failures.join("\n\n")
        );
    }
}

fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "non-string panic".into()),
        Err(e) => e.to_string(),
    }
}
