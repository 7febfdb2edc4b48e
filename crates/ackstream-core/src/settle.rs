//! Settlement: the bridge between a message handle and its partition's offset tracker.
//!
//! Every delivered message points at its partition's [`PartitionContext`]. A settle (from the
//! handler, an interrupt or the policy) goes through it: the first settle of a delivery wins,
//! the tracker moves the finished prefix, the new committable offset goes to the backend's
//! offset store, and a nack leaves a rewind request for the partition task.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;

use tokio::sync::Notify;

use crate::backend::{OffsetStore, PartitionOffset};
use crate::dead_letter::DeadLetters;
use crate::event::{Event, Observer};
use crate::interrupt::Disposition;
use crate::record::TopicPartition;
use crate::tracker::{Delivered, DeliveryId, OffsetTracker, TrackerError};

/// What a settle did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SettleStatus {
    /// The delivery was settled as given. A nack whose record ran out of attempts is reported
    /// as the reject it became.
    Settled(Disposition),
    /// The delivery had already been settled; nothing changed.
    AlreadySettled,
    /// The delivery no longer counts: its partition was revoked, or an earlier record's nack
    /// rewound the partition past it (it will be delivered again). Nothing changed.
    Stale,
}

/// Subscriber settings the settle path needs.
#[derive(Debug)]
pub(crate) struct SettleConfig {
    pub(crate) max_attempts: Option<u32>,
    pub(crate) observer: Option<Observer>,
    pub(crate) dead_letters: Option<DeadLetters>,
}

#[derive(Debug)]
pub(crate) struct Rewind {
    pub(crate) offset: i64,
    pub(crate) delay: Option<Duration>,
    /// The key of every nack with a delay, and its delay: under `Ordering::Key` only those keys
    /// wait, and the partition is rewound at once.
    pub(crate) key_delays: Vec<(Option<Bytes>, Duration)>,
}

#[derive(Debug)]
struct Ledger {
    tracker: OffsetTracker,
    rewind: Option<Rewind>,
}

/// One assigned partition's shared state: the tracker, the pending rewind, the offset store.
#[derive(Debug)]
pub(crate) struct PartitionContext {
    pub(crate) tp: TopicPartition,
    ledger: Mutex<Ledger>,
    pub(crate) rewind_signal: Notify,
    /// Set with a pending rewind, so the partition task checks it without locking.
    rewind_pending: AtomicBool,
    /// Set when the runtime stops the partition (revoke, shutdown), just before it cancels the
    /// partition's stop token: the per-record check, without the token's lock.
    pub(crate) stopping: AtomicBool,
    offsets: Arc<dyn OffsetStore>,
    /// This partition's slot in `offsets`, taken once so stores need no lookup.
    offset: Arc<dyn PartitionOffset>,
    pub(crate) config: Arc<SettleConfig>,
}

impl std::fmt::Debug for dyn OffsetStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OffsetStore")
    }
}

impl PartitionContext {
    pub(crate) fn new(
        tp: TopicPartition,
        offsets: Arc<dyn OffsetStore>,
        config: Arc<SettleConfig>,
        cumulative: bool,
    ) -> Self {
        let tracker = if cumulative {
            OffsetTracker::cumulative()
        } else {
            OffsetTracker::new()
        };
        let offset = offsets.partition(&tp);
        Self {
            tp,
            ledger: Mutex::new(Ledger {
                tracker,
                rewind: None,
            }),
            rewind_signal: Notify::new(),
            rewind_pending: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            offset,
            offsets,
            config,
        }
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        // A panic while holding the lock cannot leave the tracker half-updated (every tracker
        // method validates before mutating), so a poisoned lock is still consistent.
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn deliver(&self, offset: i64) -> Result<Delivered, TrackerError> {
        self.ledger().tracker.deliver(offset)
    }

    /// Takes in the attempt counts the partition's previous owner handed over.
    pub(crate) fn carry_in(&self, attempts: &[(i64, u32)]) {
        if !attempts.is_empty() {
            self.ledger().tracker.carry_in(attempts);
        }
    }

    pub(crate) fn take_rewind(&self) -> Option<Rewind> {
        if !self.rewind_pending.load(Ordering::Acquire) {
            return None;
        }
        let mut ledger = self.ledger();
        self.rewind_pending.store(false, Ordering::Release);
        ledger.rewind.take()
    }

    /// Fences the partition; returns its final committable offset.
    pub(crate) fn revoke(&self) -> Option<i64> {
        self.ledger().tracker.revoke()
    }

    pub(crate) fn offsets(&self) -> &Arc<dyn OffsetStore> {
        &self.offsets
    }

    pub(crate) fn emit(&self, event: impl FnOnce() -> Event) {
        if let Some(o) = &self.config.observer {
            o.emit(&event());
        }
    }

    /// The handler returned without settling (manual policy).
    pub(crate) fn returned(&self, offset: i64, id: DeliveryId) {
        let held = self.ledger().tracker.returned(offset, id);
        if let Ok(Some(held)) = held {
            self.warn_held_back(held);
        }
    }

    fn warn_held_back(&self, offset: i64) {
        tracing::warn!(
            topic = %self.tp.topic,
            partition = self.tp.partition,
            offset,
            "record left unsettled by its handler holds back the partition's commit; \
             later acks will not commit past it (settle it, or opt into manual_cumulative)"
        );
        self.emit(|| Event::HeldBack {
            tp: self.tp.clone(),
            offset,
        });
    }

    /// Applies a settle to the tracker. `attempt_limit`: a nack of a record at or past this
    /// attempt becomes a reject.
    pub(crate) fn apply(
        &self,
        key: Option<&Bytes>,
        offset: i64,
        id: DeliveryId,
        attempt: u32,
        disposition: Disposition,
        attempt_limit: Option<u32>,
    ) -> SettleStatus {
        let disposition = match disposition {
            Disposition::Nack { .. } if attempt_limit.is_some_and(|limit| attempt >= limit) => {
                tracing::warn!(
                    topic = %self.tp.topic,
                    partition = self.tp.partition,
                    offset,
                    attempt,
                    "record ran out of attempts; rejecting instead of nacking"
                );
                Disposition::Reject
            }
            d => d,
        };
        // Events are emitted under the ledger lock, so a partition's events reach observers in
        // the order the tracker saw them; a settle's `Settled` comes first, then what it caused
        // (`OffsetStored`, `HeldBack`).
        let settled = |status: SettleStatus| {
            self.emit(|| Event::Settled {
                tp: self.tp.clone(),
                offset,
                status,
            });
            status
        };
        let mut ledger = self.ledger();
        match disposition {
            Disposition::Ack | Disposition::Reject => match ledger.tracker.finish(offset, id) {
                Ok(finished) => {
                    let status = settled(SettleStatus::Settled(disposition));
                    if let Some(position) = finished.advanced_to {
                        self.emit(|| Event::OffsetStored {
                            tp: self.tp.clone(),
                            offset: position,
                        });
                        // Stored under the lock so stores of one partition are monotonic, and
                        // after the events, so an observer has seen the settle before any
                        // commit can carry it.
                        self.offset.store(position);
                    }
                    if let Some(held) = finished.held_back_by {
                        self.warn_held_back(held);
                    }
                    status
                }
                Err(_) => settled(SettleStatus::Stale),
            },
            Disposition::Nack { delay } => match ledger.tracker.nack(offset, id) {
                Ok(rewind_to) => {
                    // Counted attempts go with the commits, so another member continues them.
                    if let Some((at, attempts)) = ledger.tracker.carry_out() {
                        self.offset.carry_attempts(at, &attempts);
                    }
                    let previous = ledger.rewind.take();
                    let mut key_delays = previous
                        .as_ref()
                        .map(|r| r.key_delays.clone())
                        .unwrap_or_default();
                    if let Some(delay) = delay {
                        key_delays.push((key.cloned(), delay));
                    }
                    let (offset, delay) = match previous {
                        Some(r) if r.offset < rewind_to => (r.offset, r.delay),
                        _ => (rewind_to, delay),
                    };
                    let rewind = Rewind {
                        offset,
                        delay,
                        key_delays,
                    };
                    ledger.rewind = Some(rewind);
                    self.rewind_pending.store(true, Ordering::Release);
                    let status = settled(SettleStatus::Settled(disposition));
                    drop(ledger);
                    self.rewind_signal.notify_one();
                    status
                }
                Err(_) => settled(SettleStatus::Stale),
            },
        }
    }
}
