//! What a subscriber looks like from outside while it runs: its phase, its partitions, the
//! record each partition's commit waits for and since when, consumer lag, and counts. Health
//! checks, metrics and the status page read it through [`SubscriberStatus::snapshot`].
//!
//! Nothing here is on the per-record path: the ledger counts under the lock it takes anyway,
//! and a snapshot reads each partition's ledger once. How long the oldest unfinished record
//! has held its partition's commit back is measured between snapshots (the first snapshot that
//! saw it as the oldest starts its clock), so take them regularly (the app's monitor does, a
//! few times a second) and read ages as accurate to that interval.
//!
//! ```
//! use ackstream_core::status::{Phase, SubscriberStatus};
//! let status = SubscriberStatus::new(vec!["orders".into()], Some("billing".into()));
//! let snapshot = status.snapshot();
//! assert_eq!(snapshot.phase, Phase::Starting);
//! assert!(snapshot.partitions.is_empty());
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::backend::offsets::OffsetStore;
use crate::error::BackendError;
use crate::event::{Counts, Durations};
use crate::record::TopicPartition;
use crate::settle::PartitionContext;
pub use crate::tracker::Holder;

/// Where a subscriber is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// Registered; its consumer is not created yet.
    Starting,
    /// Consuming (or waiting for an assignment).
    Running,
    /// Shut down cleanly.
    Stopped,
    /// Ended with an error (a fatal client error, a consumer that could not be created).
    Failed(String),
}

impl Phase {
    /// A short name: `starting`, `running`, `stopped`, `failed`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Running => "running",
            Phase::Stopped => "stopped",
            Phase::Failed(_) => "failed",
        }
    }
}

/// How often the subscriber's partitions were assigned, revoked and lost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rebalances {
    /// Partitions assigned.
    pub assigned: u64,
    /// Partitions revoked (after their drain and commit).
    pub revoked: u64,
    /// Partitions lost (fenced without a commit).
    pub lost: u64,
}

/// The record a partition's commit waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Unfinished {
    /// Its offset (the partition's commit cannot pass it).
    pub offset: i64,
    /// Which attempt of it is current (1 = first delivery).
    pub attempt: u32,
    /// What it waits on.
    pub holder: Holder,
    /// How long it has held the commit back (measured between snapshots, see the module docs).
    pub age: Duration,
}

/// One partition of a subscriber at the moment of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionSnapshot {
    /// The partition.
    pub tp: TopicPartition,
    /// Whether it is assigned to the subscriber now (a partition once assigned stays listed,
    /// with its counts, after it moved away).
    pub assigned: bool,
    /// The offset its commits have reached (stored for the next commit): every delivered
    /// record below it is finished.
    pub committable: Option<i64>,
    /// The offset the broker confirmed as committed, where the backend tracks it.
    pub confirmed: Option<i64>,
    /// Its high watermark as last seen (for lag), where the backend knows it.
    pub high_watermark: Option<i64>,
    /// Delivered records not finished yet (running, waiting for a redelivery, unsettled).
    pub unfinished: usize,
    /// The record its commit waits for, if any.
    pub oldest_unfinished: Option<Unfinished>,
    /// What happened to its records, over every assignment of it to this subscriber.
    pub counts: Counts,
    /// Its sampled handler durations, over every assignment (empty unless timed).
    pub durations: Durations,
}

impl PartitionSnapshot {
    /// Records the group has not finished yet: the high watermark minus the committable
    /// offset (minus the confirmed one when nothing is stored yet). `None` when either is
    /// unknown.
    pub fn lag(&self) -> Option<i64> {
        let high = self.high_watermark?;
        let at = self.committable.or(self.confirmed)?;
        Some((high - at).max(0))
    }
}

/// One subscriber at the moment of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriberSnapshot {
    /// The topics it reads.
    pub topics: Vec<String>,
    /// Its consumer group, if any.
    pub group: Option<String>,
    /// Where it is in its life.
    pub phase: Phase,
    /// Its rebalances so far.
    pub rebalances: Rebalances,
    /// Commits the broker answered (confirmed, failed) over the current run, where the backend
    /// commits in round trips (Kafka).
    pub commits: Option<(u64, u64)>,
    /// Every partition it has been assigned, in order.
    pub partitions: Vec<PartitionSnapshot>,
}

impl SubscriberSnapshot {
    /// A short name for the subscriber: its topics, joined with `,`.
    pub fn name(&self) -> String {
        self.topics.join(",")
    }

    /// The partition whose commit has been held back longest, and by what.
    pub fn most_held_back(&self) -> Option<(&PartitionSnapshot, Unfinished)> {
        self.partitions
            .iter()
            .filter(|p| p.assigned)
            .filter_map(|p| p.oldest_unfinished.map(|u| (p, u)))
            .max_by_key(|(_, u)| u.age)
    }
}

/// A subscriber's live status, shared by its runtime (which updates it) and whoever watches.
pub struct SubscriberStatus {
    topics: Vec<String>,
    group: Option<String>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    phase: Option<Phase>,
    /// The running consumer's offset store (for commit counts).
    offsets: Option<Arc<dyn OffsetStore>>,
    rebalances: Rebalances,
    partitions: BTreeMap<TopicPartition, Slot>,
}

#[derive(Default)]
struct Slot {
    /// The current assignment's ledger.
    live: Option<Arc<PartitionContext>>,
    /// Counts of the assignments that ended.
    ended: Counts,
    /// Durations of the assignments that ended.
    ended_durations: Durations,
    /// The oldest unfinished record seen by the last snapshot, and when a snapshot first saw it.
    front: Option<(i64, Instant)>,
}

impl fmt::Debug for SubscriberStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriberStatus")
            .field("topics", &self.topics)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl SubscriberStatus {
    /// The status of a subscriber to `topics` in `group`, not started yet.
    pub fn new(topics: Vec<String>, group: Option<String>) -> Self {
        Self {
            topics,
            group,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The subscriber as it is now (see the module docs for how ages are measured).
    pub fn snapshot(&self) -> SubscriberSnapshot {
        let now = Instant::now();
        let mut inner = self.inner();
        let partitions = inner
            .partitions
            .iter_mut()
            .map(|(tp, slot)| slot.snapshot(tp, now))
            .collect();
        SubscriberSnapshot {
            topics: self.topics.clone(),
            group: self.group.clone(),
            phase: inner.phase.clone().unwrap_or(Phase::Starting),
            rebalances: inner.rebalances,
            commits: inner.offsets.as_ref().and_then(|o| o.commits()),
            partitions,
        }
    }

    pub(crate) fn starting(&self) {
        self.inner().phase = Some(Phase::Starting);
    }

    pub(crate) fn running(&self, offsets: &Arc<dyn OffsetStore>) {
        let mut inner = self.inner();
        inner.phase = Some(Phase::Running);
        inner.offsets = Some(offsets.clone());
    }

    pub(crate) fn ended(&self, result: &Result<(), BackendError>) {
        let mut inner = self.inner();
        inner.phase = Some(match result {
            Ok(()) => Phase::Stopped,
            Err(e) => Phase::Failed(e.to_string()),
        });
        for slot in inner.partitions.values_mut() {
            slot.end();
        }
    }

    pub(crate) fn assigned(&self, ctx: &Arc<PartitionContext>) {
        let mut inner = self.inner();
        inner.rebalances.assigned += 1;
        let slot = inner.partitions.entry(ctx.tp.clone()).or_default();
        slot.end();
        slot.live = Some(ctx.clone());
    }

    pub(crate) fn unassigned(&self, partitions: &[TopicPartition], lost: bool) {
        let mut inner = self.inner();
        if lost {
            inner.rebalances.lost += partitions.len() as u64;
        } else {
            inner.rebalances.revoked += partitions.len() as u64;
        }
        for tp in partitions {
            if let Some(slot) = inner.partitions.get_mut(tp) {
                slot.end();
            }
        }
    }
}

impl Slot {
    /// Folds the live assignment's counts into the ended ones.
    fn end(&mut self) {
        if let Some(ctx) = self.live.take() {
            let look = ctx.look();
            self.ended.add(&look.counts);
            self.ended_durations.add(&look.durations);
        }
        self.front = None;
    }

    fn snapshot(&mut self, tp: &TopicPartition, now: Instant) -> PartitionSnapshot {
        let mut counts = self.ended;
        let mut durations = self.ended_durations;
        let Some(ctx) = &self.live else {
            return PartitionSnapshot {
                tp: tp.clone(),
                assigned: false,
                committable: None,
                confirmed: None,
                high_watermark: None,
                unfinished: 0,
                oldest_unfinished: None,
                counts,
                durations,
            };
        };
        let look = ctx.look();
        counts.add(&look.counts);
        durations.add(&look.durations);
        let oldest_unfinished = look.oldest_unfinished.map(|(offset, attempt, holder)| {
            let since = match self.front {
                Some((seen, since)) if seen == offset => since,
                _ => now,
            };
            self.front = Some((offset, since));
            Unfinished {
                offset,
                attempt,
                holder,
                age: now.duration_since(since),
            }
        });
        if oldest_unfinished.is_none() {
            self.front = None;
        }
        PartitionSnapshot {
            tp: tp.clone(),
            assigned: true,
            committable: look.committable,
            confirmed: ctx.offsets().confirmed(tp),
            high_watermark: ctx.offsets().high_watermark(tp),
            unfinished: look.unfinished,
            oldest_unfinished,
            counts,
            durations,
        }
    }
}

/// What a broker's publishes did (publishers, `broker.publish`, return values, replies, dead
/// letters): how many the broker confirmed and how many failed, and how long each took until
/// its answer.
#[derive(Debug, Default)]
pub struct PublishStatus {
    inner: Mutex<PublishSnapshot>,
}

/// A broker's publishes at the moment of a snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishSnapshot {
    /// Publishes the broker confirmed.
    pub confirmed: u64,
    /// Publishes that failed (refused, timed out, or abandoned).
    pub failed: u64,
    /// How long each took until the broker's answer (every publish is timed).
    pub durations: Durations,
}

impl PublishSnapshot {
    /// Adds `other` to this.
    pub fn add(&mut self, other: &PublishSnapshot) {
        self.confirmed += other.confirmed;
        self.failed += other.failed;
        self.durations.add(&other.durations);
    }
}

impl PublishStatus {
    /// The publishes so far.
    pub fn snapshot(&self) -> PublishSnapshot {
        *self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one publish answered after `took`.
    pub(crate) fn answered(&self, ok: bool, took: Duration) {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if ok {
            s.confirmed += 1;
        } else {
            s.failed += 1;
        }
        s.durations.record(took);
    }

    /// `publish`, counted and timed.
    pub(crate) async fn count<T>(
        &self,
        publish: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        let started = Instant::now();
        let result = publish.await;
        self.answered(result.is_ok(), started.elapsed());
        result
    }
}
