//! The ledger: the bridge between a message handle and its partition's offset tracker.
//!
//! Every delivered message points at its partition's [`PartitionContext`]. A settle (from the
//! handler, an interrupt, the policy, or any other task or thread holding the message) goes
//! through it: the first settle of a delivery wins, the tracker moves the finished prefix, the
//! new committable offset goes to the backend's offset store, and a nack leaves the record, in
//! memory, as a [`Retry`] for the partition task to deliver again (only that record: nothing
//! is rewound).
//!
//! Deliveries go through it too, under the same lock: a new record is refused while a retry is
//! waiting to be taken ([`Delivery::RetryFirst`]), so a record never overtakes the nack of an
//! earlier one, whichever task or thread the nack came from.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::Notify;

use super::SettleConfig;
use crate::backend::offsets::{OffsetStore, PartitionOffset};
use crate::event::{Counts, Durations, Event};
use crate::interrupt::{Disposition, MAX_NACK_DELAY, SettleStatus};
use crate::record::{Record, TopicPartition};
use crate::tracker::{Delivered, DeliveryId, Holder, OffsetTracker, TrackerError};

/// A nacked record waiting to be delivered again.
#[derive(Debug)]
pub(crate) struct Retry {
    pub(crate) record: Record,
    /// Not before this (a nack's delay, a failure's backoff).
    pub(crate) not_before: Option<Instant>,
}

/// What delivering a new record did.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// The tracker took it.
    Accepted(Delivered),
    /// A nacked record waits to be taken first: the record is not delivered (the caller keeps
    /// it and offers it again after the retries).
    RetryFirst,
    /// The tracker cannot take it (revoked, or out of order): it is not handled.
    Refused(TrackerError),
    /// The partition stopped dispatching (its revoke or the shutdown began): not delivered,
    /// it stays unfinished, for whoever owns the partition next.
    Stopped,
}

#[derive(Debug)]
struct Ledger {
    tracker: OffsetTracker,
    retries: Vec<Retry>,
    /// What happened to this assignment's records (read by status snapshots).
    counts: Counts,
    /// Sampled handler durations (when the subscriber is timed).
    durations: Durations,
}

/// A partition's state at one moment (see [`PartitionContext::look`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Look {
    pub(crate) committable: Option<i64>,
    pub(crate) unfinished: usize,
    pub(crate) oldest_unfinished: Option<(i64, u32, Holder)>,
    pub(crate) counts: Counts,
    pub(crate) durations: Durations,
}

/// One assigned partition's shared state: the tracker, the retries, the offset store.
#[derive(Debug)]
pub(crate) struct PartitionContext {
    pub(crate) tp: TopicPartition,
    ledger: Mutex<Ledger>,
    /// Woken when a retry is left for the partition task.
    pub(crate) retry_signal: Notify,
    /// Set while retries wait, so the partition task checks them without locking.
    retry_pending: AtomicBool,
    /// Set when the runtime stops the partition (revoke, shutdown), just before it cancels the
    /// partition's stop token: the per-record check, without the token's lock.
    pub(crate) stopping: AtomicBool,
    offsets: Arc<dyn OffsetStore>,
    /// This partition's slot in `offsets`, taken once so stores need no lookup.
    offset: Arc<dyn PartitionOffset>,
    pub(crate) config: Arc<SettleConfig>,
    /// Outputs of this partition's deliveries still being published (see
    /// [`PendingOutput`]); a revoke waits for them, within the drain deadline.
    pending_outputs: AtomicUsize,
    outputs_done: Notify,
    /// `process {topic}`, the name of this partition's delivery spans, made once (empty
    /// without tracing) rather than formatted for every record.
    pub(crate) span_name: Box<str>,
}

/// One output publish of a partition in flight: counted while it lives (dropped when the
/// publish ends or is abandoned).
pub(crate) struct PendingOutput(Arc<PartitionContext>);

impl PendingOutput {
    /// The partition the publish belongs to.
    pub(crate) fn context(&self) -> &PartitionContext {
        &self.0
    }
}

impl Drop for PendingOutput {
    fn drop(&mut self) {
        if self.0.pending_outputs.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.outputs_done.notify_waiters();
        }
    }
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
        let span_name = match config.tracing {
            Some(_) => format!("process {}", tp.topic).into(),
            None => Box::default(),
        };
        Self {
            span_name,
            tp,
            ledger: Mutex::new(Ledger {
                tracker,
                retries: Vec::new(),
                counts: Counts::default(),
                durations: Durations::default(),
            }),
            retry_signal: Notify::new(),
            retry_pending: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            offset,
            offsets,
            config,
            pending_outputs: AtomicUsize::new(0),
            outputs_done: Notify::new(),
        }
    }

    /// Counts an output publish in flight until the returned guard is dropped.
    pub(crate) fn output_started(self: &Arc<Self>) -> PendingOutput {
        self.pending_outputs.fetch_add(1, Ordering::AcqRel);
        PendingOutput(self.clone())
    }

    /// Waits until no output publish of this partition is in flight.
    pub(crate) async fn outputs_drained(&self) {
        loop {
            let done = self.outputs_done.notified();
            let mut done = std::pin::pin!(done);
            done.as_mut().enable();
            if self.pending_outputs.load(Ordering::Acquire) == 0 {
                return;
            }
            done.await;
        }
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        // A panic while holding the lock cannot leave the tracker half-updated (every tracker
        // method validates before mutating), so a poisoned lock is still consistent.
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Delivers a new record to the tracker, unless a retry must be taken first.
    pub(crate) fn deliver(&self, offset: i64) -> Delivery {
        let mut ledger = self.ledger();
        // Nothing starts once the partition stops: checked under the lock `stop_dispatching`
        // takes, as for a redelivery (the task's own check comes a little earlier).
        if self.stopping.load(Ordering::Acquire) {
            return Delivery::Stopped;
        }
        if !ledger.retries.is_empty() {
            return Delivery::RetryFirst;
        }
        match ledger.tracker.deliver(offset) {
            Ok(delivered) => {
                ledger.counts.delivered += 1;
                if delivered.attempt > 1 {
                    ledger.counts.redelivered += 1;
                }
                self.emit_delivered(offset, delivered.attempt);
                Delivery::Accepted(delivered)
            }
            Err(e) => Delivery::Refused(e),
        }
    }

    /// Delivers a nacked record again; `None` if that no longer counts (revoked meanwhile).
    pub(crate) fn redeliver(&self, offset: i64) -> Option<Delivered> {
        let mut ledger = self.ledger();
        // Nothing starts once the partition stops: checked under the lock `stop_dispatching`
        // takes, so a redelivery is reported before the stop or not made at all.
        if self.stopping.load(Ordering::Acquire) {
            return None;
        }
        let delivered = ledger.tracker.redeliver(offset).ok()?;
        ledger.counts.delivered += 1;
        ledger.counts.redelivered += 1;
        self.emit_delivered(offset, delivered.attempt);
        Some(delivered)
    }

    fn emit_delivered(&self, offset: i64, attempt: u32) {
        // Under the ledger lock, so a delivery and the settles around it reach observers in
        // the order the tracker saw them.
        self.emit(|| Event::Delivered {
            tp: self.tp.clone(),
            offset,
            attempt,
        });
    }

    /// Whether delivery `id` of `offset` still counts: its assignment has not ended (revoked,
    /// lost, shut down) and it is not settled yet.
    pub(crate) fn still_pending(&self, offset: i64, id: DeliveryId) -> bool {
        self.ledger().tracker.attempt(offset, id).is_some()
    }

    /// Stops dispatching the partition (a revoke began): sets `stopping` under the ledger
    /// lock, so every delivery and redelivery is either reported before this returns or
    /// refused.
    pub(crate) fn stop_dispatching(&self) {
        let _ledger = self.ledger();
        self.stopping.store(true, Ordering::Release);
    }

    /// Whether retries wait to be taken (a lock-free check).
    pub(crate) fn retry_pending(&self) -> bool {
        self.retry_pending.load(Ordering::Acquire)
    }

    /// Takes the waiting retries, lowest offset first.
    pub(crate) fn take_retries(&self) -> Vec<Retry> {
        if !self.retry_pending() {
            return Vec::new();
        }
        let mut ledger = self.ledger();
        self.retry_pending.store(false, Ordering::Release);
        let mut retries = std::mem::take(&mut ledger.retries);
        retries.sort_by_key(|r| r.record.offset);
        retries
    }

    /// Takes in the attempt counts the partition's previous owner handed over.
    pub(crate) fn carry_in(&self, attempts: &[(i64, u32)]) {
        if !attempts.is_empty() {
            let limit = self.config.max_attempts;
            self.ledger().tracker.carry_in(attempts, limit);
        }
    }

    /// Fences the partition; returns its final committable offset. Retries still waiting die
    /// with the assignment (the partition's next owner delivers them from Kafka).
    pub(crate) fn revoke(&self) -> Option<i64> {
        let mut ledger = self.ledger();
        ledger.retries.clear();
        ledger.tracker.revoke()
    }

    pub(crate) fn offsets(&self) -> &Arc<dyn OffsetStore> {
        &self.offsets
    }

    pub(crate) fn emit(&self, event: impl FnOnce() -> Event) {
        if let Some(o) = &self.config.observer {
            o.emit(&event());
        }
    }

    /// Counts something the ledger does not see itself (a failure, a decode failure, a dead
    /// letter); off the per-record path.
    pub(crate) fn count(&self, f: impl FnOnce(&mut Counts)) {
        f(&mut self.ledger().counts);
    }

    /// Whether this delivery's handler is to be timed: the subscriber is timed and the offset
    /// is one of the sampled (see [`SAMPLE_EVERY`](crate::event::SAMPLE_EVERY)).
    pub(crate) fn times(&self, offset: i64) -> bool {
        self.config.timed && offset % crate::event::SAMPLE_EVERY == 0
    }

    /// Counts a sampled handler duration.
    pub(crate) fn timed(&self, d: std::time::Duration) {
        self.ledger().durations.record(d);
    }

    /// Records a failure of a delivery, when traced. Only the ack policy records failures, as
    /// it resolves the outcome of a delivery's run, inside that delivery's span (its run is
    /// instrumented with it): there the current span is the delivery's. (Batches have no
    /// delivery spans: nothing is recorded for them.)
    pub(crate) fn trace_failure(&self, kind: &'static str, reason: &str) {
        if self.config.tracing.is_some() {
            crate::trace::record_failure(kind, reason);
        }
    }

    /// What the partition looks like now: its committable offset, how many delivered records
    /// are unfinished, the oldest of them, and the counts of this assignment.
    pub(crate) fn look(&self) -> Look {
        let ledger = self.ledger();
        Look {
            committable: ledger.tracker.position(),
            unfinished: ledger.tracker.unfinished(),
            oldest_unfinished: ledger.tracker.oldest_unfinished(),
            counts: ledger.counts,
            durations: ledger.durations,
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

    /// [`apply`](Self::apply), then records the settle on the delivery's `span` (kept with the
    /// delivery under tracing; none without).
    pub(crate) fn apply_traced(
        &self,
        record: &Record,
        id: DeliveryId,
        disposition: Disposition,
        span: Option<&tracing::Span>,
    ) -> SettleStatus {
        let status = self.apply(record, id, disposition);
        if let (Some(span), SettleStatus::Settled(d)) = (span, status) {
            crate::trace::record_settle(span, d);
        }
        status
    }

    /// Applies a settle of one delivery of `record` to the tracker, as decided by the settle
    /// rule ([`plan`](super::plan)).
    pub(crate) fn apply(
        &self,
        record: &Record,
        id: DeliveryId,
        disposition: Disposition,
    ) -> SettleStatus {
        let offset = record.offset;
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
                    if disposition == Disposition::Ack {
                        ledger.counts.acked += 1;
                    } else {
                        ledger.counts.rejected += 1;
                    }
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
                Ok(_) => {
                    ledger.counts.nacked += 1;
                    // Counted attempts go with the commits, so another member continues them.
                    if let Some((at, attempts)) = ledger.tracker.carry_out() {
                        self.offset.carry_attempts(at, &attempts);
                    }
                    // Flagged before the event: whoever sees the event reported, then looks
                    // for retries (a lane whose run ended after it), sees the flag and waits
                    // on this lock for the retry, so a nack reported during a run is taken in
                    // before the lane moves on.
                    self.retry_pending.store(true, Ordering::Release);
                    // The event first, then the delay starts: an observer never sees the
                    // retry come earlier than the delay after the event.
                    let status = settled(SettleStatus::Settled(disposition));
                    ledger.retries.push(Retry {
                        record: record.clone(),
                        not_before: delay.map(|d| Instant::now() + d.min(MAX_NACK_DELAY)),
                    });
                    drop(ledger);
                    self.retry_signal.notify_one();
                    status
                }
                Err(_) => settled(SettleStatus::Stale),
            },
        }
    }
}
