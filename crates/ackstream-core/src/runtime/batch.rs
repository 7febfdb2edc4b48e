//! One assigned partition, in batches: collect up to `max_records` records (the nacked ones
//! first, once due), waiting at most `max_wait` after the first, call the batch handler, then
//! settle every record it left unsettled as the policy says for the batch's outcome. A record
//! that does not decode is settled alone, and the rest are delivered. Batches of a partition
//! run one at a time, in offset order; partitions run side by side.

use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::time::Instant;

use super::partition::{Offered, deliver, redeliver, stopped, wait_for};
use super::policy;
use super::task::PartitionTask;
use crate::AckPolicy;
use crate::backend::PartitionFeed;
use crate::config::SubscriberConfig;
use crate::error::HandlerError;
use crate::extract::FromMessage;
use crate::handler::batch::BatchHandler;
use crate::interrupt::Disposition;
use crate::message::KafkaMessage;
use crate::outcome::Outcome;
use crate::record::Record;
use crate::settle::Retry;
use crate::state::StateMap;

/// A batch subscriber's handler and batch bounds: what its partition tasks run.
pub(crate) struct Batches<H, T> {
    pub(crate) handler: H,
    pub(crate) state: StateMap,
    pub(crate) max_records: usize,
    pub(crate) max_wait: Duration,
    pub(crate) _marker: PhantomData<fn() -> T>,
}

impl<H: Clone, T> Clone for Batches<H, T> {
    fn clone(&self) -> Self {
        Self {
            handler: self.handler.clone(),
            state: self.state.clone(),
            max_records: self.max_records,
            max_wait: self.max_wait,
            _marker: PhantomData,
        }
    }
}

pub(super) async fn run<F, H, T>(task: PartitionTask<F, Batches<H, T>>)
where
    F: PartitionFeed,
    H: BatchHandler<T>,
    T: 'static,
{
    let PartitionTask {
        mut feed,
        ctx,
        service: batches,
        stop,
        app,
        config,
    } = task;
    let max = batches.max_records;
    // A record read while a retry was waiting: offered again after the retries.
    let mut held: Option<Record> = None;
    // Retries taken from the ledger, highest offset first (popped lowest first).
    let mut retries: Vec<Retry> = Vec::new();
    loop {
        let mut batch: Vec<KafkaMessage> = Vec::new();
        if ctx.retry_pending() {
            retries.extend(ctx.take_retries());
            retries.sort_by_key(|r| std::cmp::Reverse(r.record.offset));
        }
        // Nacked records first, lowest offset first; once the batch holds one, it does not
        // wait for a retry that is not due yet.
        while batch.len() < max
            && let Some(next) = retries.last()
        {
            if !batch.is_empty()
                && next
                    .not_before
                    .is_some_and(|at| at > std::time::Instant::now())
            {
                break;
            }
            let retry = retries.pop().expect("looked at above");
            if !wait_for(&retry, &stop).await || stopped(&ctx, &app) {
                return;
            }
            if let Some(msg) = redeliver(&ctx, retry.record, None) {
                batch.push(msg);
            }
        }
        // New records, while no retry waits, until the batch is full or `max_wait` passed since
        // its first record.
        let mut deadline = (!batch.is_empty()).then(|| Instant::now() + batches.max_wait);
        while retries.is_empty() && batch.len() < max {
            if stopped(&ctx, &app) {
                return;
            }
            let record = match held.take() {
                Some(record) => record,
                None => {
                    let next = tokio::select! {
                        biased;
                        () = stop.cancelled() => return,
                        () = ctx.retry_signal.notified() => break,
                        () = until(deadline) => break,
                        next = feed.next() => next,
                    };
                    let Some(record) = next else { return };
                    record
                }
            };
            match deliver(&ctx, record, None) {
                Offered::Take(msg) => {
                    batch.push(msg);
                    deadline.get_or_insert_with(|| Instant::now() + batches.max_wait);
                }
                Offered::Skip => {}
                Offered::Later(record) => {
                    held = Some(record);
                    break;
                }
            }
        }
        if batch.is_empty() {
            continue;
        }
        if stopped(&ctx, &app) {
            return;
        }
        process(batch, &batches, &config).await;
        tokio::task::coop::consume_budget().await;
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Decodes, calls the handler and settles one batch.
async fn process<H: BatchHandler<T>, T>(
    batch: Vec<KafkaMessage>,
    batches: &Batches<H, T>,
    config: &SubscriberConfig,
) {
    if config.ack_policy == AckPolicy::AckFirst {
        for msg in &batch {
            let _ = msg.settle_with(Disposition::Ack, None);
        }
    }
    let mut items = Vec::with_capacity(batch.len());
    let mut messages = Vec::with_capacity(batch.len());
    for msg in batch {
        let decoded = std::panic::catch_unwind(AssertUnwindSafe(|| {
            H::Item::from_message(&msg, &batches.state)
        }));
        match decoded {
            Ok(Ok(item)) => {
                items.push(item);
                messages.push(msg);
            }
            // Settled alone, as the policy settles a record that does not decode.
            Ok(Err(rejection)) => {
                policy::settle(&msg, Outcome::Rejected(rejection), config).await;
            }
            // A decoder that panics fails its record alone, as it would a single record's.
            Err(p) => {
                let outcome = Outcome::Panicked(policy::panic_message(&*p));
                policy::settle(&msg, outcome, config).await;
            }
        }
    }
    if messages.is_empty() {
        return;
    }
    // Called inside the guard: a handler may panic before its future is made, too.
    let call = async { batches.handler.call(items, messages.clone()).await };
    let outcome = AssertUnwindSafe(call)
        .catch_unwind()
        .await
        .unwrap_or_else(|p| Outcome::Panicked(policy::panic_message(&*p)));
    for msg in &messages {
        policy::settle(msg, each(&outcome), config).await;
    }
}

/// What the batch's outcome is for each of its records. A batch publishes nothing, so a
/// returned value counts as success.
fn each(outcome: &Outcome) -> Outcome {
    match outcome {
        Outcome::Interrupted(d) => Outcome::Interrupted(*d),
        Outcome::Failed(e) => Outcome::Failed(HandlerError::from(format!("the batch failed: {e}"))),
        Outcome::Panicked(m) => Outcome::Panicked(m.clone()),
        Outcome::Rejected(r) => Outcome::Failed(HandlerError::from(r.to_string())),
        Outcome::Success | Outcome::Output(_) => Outcome::Success,
    }
}

/// Spawns a partition's batch task.
pub(super) fn spawn<F, H, T>(
    task: PartitionTask<F, Batches<H, T>>,
    _: &Arc<super::concurrent::Pool>,
    _: bool,
) -> tokio::task::JoinHandle<()>
where
    F: PartitionFeed,
    H: BatchHandler<T>,
    T: 'static,
{
    tokio::spawn(run(task))
}
