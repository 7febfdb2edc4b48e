//! Watching a running app: each subscriber's partitions, the record each partition's commit
//! waits for and for how long, consumer lag, counts and rates; a warning when a partition is
//! stuck; readiness; Prometheus metrics and an HTTP endpoint (features `prometheus`, `http`).
//!
//! The [`Monitor`] samples every subscriber's [`status`](ackstream_core::status) a few times a
//! second (nothing it reads is on the per-record path). When the oldest unfinished record of
//! a partition has held its commit back longer than [`App::stuck_after`](crate::App::stuck_after)
//! (30 s by default), it logs one warning naming the topic, partition, offset, attempt and what
//! holds the record (a running handler, a waiting redelivery, a record left unsettled under
//! `Manual`), and the app is not ready until the commit moves again.
//!
//! ```
//! use std::time::Duration;
//! use ackstream::prelude::*;
//! use ackstream::testing::MemoryBroker;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let broker = MemoryBroker::new();
//! broker.subscriber("orders").group_id("billing").handle(|_: String| async {});
//! let app = App::new(broker).stuck_after(Duration::from_secs(10)).spawn();
//! let monitor = app.monitor();
//! assert!(monitor.latest().iter().all(|s| s.name() == "orders"));
//! app.shutdown().await.unwrap();
//! # }
//! ```

pub mod conventions;
#[cfg(feature = "http")]
pub(crate) mod http;
#[cfg(feature = "prometheus")]
pub mod metrics;
#[cfg(feature = "otel")]
pub mod otel;
#[cfg(feature = "http")]
mod page;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ackstream_core::Runnable;
use ackstream_core::TopicPartition;
use ackstream_core::status::{Phase, PublishSnapshot, SubscriberSnapshot, SubscriberStatus};

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("subscribers", &self.statuses.len())
            .field("stuck_after", &self.stuck_after)
            .finish_non_exhaustive()
    }
}

/// How long a partition's commit may be held back before it counts as stuck, by default.
pub const DEFAULT_STUCK_AFTER: Duration = Duration::from_secs(30);

/// Samples the app's subscribers: see the module docs. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Monitor(Arc<Shared>);

struct Shared {
    statuses: Vec<Arc<SubscriberStatus>>,
    /// The brokers whose publishes are counted.
    brokers: Vec<Arc<dyn Runnable>>,
    stuck_after: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    latest: Vec<SubscriberSnapshot>,
    /// When `latest` was taken.
    at: Option<Instant>,
    /// Deliveries per second of each (subscriber, partition) between the last two samples.
    rates: HashMap<(usize, TopicPartition), f64>,
    /// The stuck records already warned about: (subscriber, partition, offset).
    warned: HashSet<(usize, TopicPartition, i64)>,
}

/// Whether the app is ready, and if not, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readiness {
    /// Every subscriber runs and no partition's commit is held back longer than the limit.
    pub ready: bool,
    /// What stops it, one line each (empty when ready).
    pub reasons: Vec<String>,
}

impl Monitor {
    /// A monitor of `statuses`; a partition counts as stuck after `stuck_after`.
    pub fn new(statuses: Vec<Arc<SubscriberStatus>>, stuck_after: Duration) -> Self {
        Self::of(statuses, Vec::new(), stuck_after)
    }

    /// A monitor of `brokers`' subscribers and publishes.
    pub(crate) fn of_brokers(brokers: &[Arc<dyn Runnable>], stuck_after: Duration) -> Self {
        let statuses = brokers.iter().flat_map(|b| b.statuses()).collect();
        Self::of(statuses, brokers.to_vec(), stuck_after)
    }

    fn of(
        statuses: Vec<Arc<SubscriberStatus>>,
        brokers: Vec<Arc<dyn Runnable>>,
        stuck_after: Duration,
    ) -> Self {
        Self(Arc::new(Shared {
            statuses,
            brokers,
            stuck_after,
            state: Mutex::new(State::default()),
        }))
    }

    /// What the brokers' publishes did so far, together.
    pub fn publishes(&self) -> PublishSnapshot {
        let mut all = PublishSnapshot::default();
        for b in &self.0.brokers {
            all.add(&b.publishes());
        }
        all
    }

    /// How long a commit may be held back before the partition counts as stuck.
    pub fn stuck_after(&self) -> Duration {
        self.0.stuck_after
    }

    /// How often the app samples: often enough that a stuck partition shows within a quarter
    /// of the limit, at most four times a second.
    pub fn interval(&self) -> Duration {
        (self.0.stuck_after / 4).clamp(Duration::from_millis(10), Duration::from_millis(250))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a sample now: snapshots every subscriber, updates the rates, and warns once about
    /// each record that has held its partition's commit back longer than the limit.
    pub fn sample(&self) -> Vec<SubscriberSnapshot> {
        let now = Instant::now();
        let latest: Vec<SubscriberSnapshot> =
            self.0.statuses.iter().map(|s| s.snapshot()).collect();
        let mut state = self.state();
        let elapsed = state.at.map(|at| now.duration_since(at).as_secs_f64());
        let mut rates = HashMap::new();
        for (i, sub) in latest.iter().enumerate() {
            for p in &sub.partitions {
                let before = state
                    .latest
                    .get(i)
                    .and_then(|old| old.partitions.iter().find(|o| o.tp == p.tp));
                if let (Some(before), Some(secs)) = (before, elapsed.filter(|&s| s > 0.0)) {
                    let delta = p.counts.delivered.saturating_sub(before.counts.delivered);
                    rates.insert((i, p.tp.clone()), delta as f64 / secs);
                }
            }
        }
        let mut still_stuck = HashSet::new();
        for (i, sub) in latest.iter().enumerate() {
            for p in sub.partitions.iter().filter(|p| p.assigned) {
                let Some(u) = p.oldest_unfinished else {
                    continue;
                };
                if u.age < self.0.stuck_after {
                    continue;
                }
                let key = (i, p.tp.clone(), u.offset);
                if !state.warned.contains(&key) {
                    tracing::warn!(
                        topic = %p.tp.topic,
                        partition = p.tp.partition,
                        offset = u.offset,
                        attempt = u.attempt,
                        held_by = u.holder.as_str(),
                        held_for = ?u.age,
                        group = sub.group.as_deref().unwrap_or(""),
                        "partition stuck: one unfinished record has held its commit back longer \
                         than {:?}",
                        self.0.stuck_after
                    );
                }
                still_stuck.insert(key);
            }
        }
        state.warned = still_stuck;
        state.rates = rates;
        state.at = Some(now);
        state.latest = latest.clone();
        latest
    }

    /// The last sample (empty before the first).
    pub fn latest(&self) -> Vec<SubscriberSnapshot> {
        self.state().latest.clone()
    }

    /// Deliveries per second of subscriber `index`'s partition `tp` between the last two
    /// samples.
    pub fn rate(&self, index: usize, tp: &TopicPartition) -> Option<f64> {
        self.state().rates.get(&(index, tp.clone())).copied()
    }

    /// Whether the app is ready, from the last sample: every subscriber runs (assigned, or
    /// waiting for an assignment) and no partition's commit has been held back longer than
    /// the limit.
    pub fn readiness(&self) -> Readiness {
        let latest = self.latest();
        let mut reasons = Vec::new();
        if latest.len() < self.0.statuses.len() {
            reasons.push("not sampled yet".to_owned());
        }
        for sub in &latest {
            match &sub.phase {
                Phase::Running => {}
                Phase::Failed(error) => reasons.push(format!("{}: failed: {error}", sub.name())),
                other => reasons.push(format!("{}: {}", sub.name(), other.as_str())),
            }
            if let Some((p, u)) = sub.most_held_back()
                && u.age >= self.0.stuck_after
            {
                reasons.push(format!(
                    "{}: partition {}/{} stuck at offset {} (attempt {}, {}) for {:.1}s",
                    sub.name(),
                    p.tp.topic,
                    p.tp.partition,
                    u.offset,
                    u.attempt,
                    u.holder.as_str(),
                    u.age.as_secs_f64()
                ));
            }
        }
        Readiness {
            ready: reasons.is_empty(),
            reasons,
        }
    }

    /// Samples every [`interval`](Self::interval) until `stop` fires.
    pub(crate) async fn run(self, stop: Stop) {
        let mut tick = tokio::time::interval(self.interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.wait() => break,
                _ = tick.tick() => {
                    self.sample();
                }
            }
        }
    }
}

/// Fires once the app has finished: what the monitor and the HTTP server wait on.
#[derive(Clone, Debug)]
pub(crate) struct Stop(pub(crate) tokio::sync::watch::Receiver<bool>);

impl Stop {
    pub(crate) async fn wait(&self) {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|stopped| *stopped).await;
    }
}
