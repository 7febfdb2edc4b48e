//! One assigned partition, one record at a time: deliver the next record, run the handler,
//! settle. A nacked record comes back before any new one (after its delay: the partition waits
//! with it), from memory: nothing is read again.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokio_util::sync::CancellationToken;

use super::policy;
use super::task::PartitionTask;
use crate::backend::PartitionFeed;
use crate::handler::service::MessageService;
use crate::message::KafkaMessage;
use crate::record::Record;
use crate::settle::{Delivery, PartitionContext, Retry};
use crate::shutdown::Shutdown;

/// Records handled per unit of tokio's cooperative budget (128 units per turn).
pub(super) const BUDGET_EVERY: u32 = 8;

pub(super) async fn run<F, S>(task: PartitionTask<F, S>)
where
    F: PartitionFeed,
    S: MessageService,
{
    let PartitionTask {
        mut feed,
        ctx,
        mut service,
        stop,
        app,
        config,
    } = task;
    // The previous delivery's message, recycled for the next one when the handler let go of it.
    let mut spare: Option<KafkaMessage> = None;
    // A record read while a retry was waiting: offered again after the retries.
    let mut held: Option<Record> = None;
    // Retries taken from the ledger, lowest offset first: one is redelivered per turn, and
    // the ledger is looked at again before the next, so a retry nacked again during its run
    // comes back (after its delay) before any later record.
    let mut retries: Vec<Retry> = Vec::new();
    let mut handled: u32 = 0;
    loop {
        if ctx.retry_pending() {
            retries.extend(ctx.take_retries());
            retries.sort_by_key(|r| std::cmp::Reverse(r.record.offset));
        }
        if !retries.is_empty()
            && let Some(retry) = retries.pop()
        {
            if !wait_for(&retry, &stop).await || stopped(&ctx, &app) {
                return;
            }
            if let Some(msg) = redeliver(&ctx, retry.record, spare.take()) {
                policy::process(&msg, &mut service, &config).await;
                spare = Some(msg);
            }
            // A nack without a delay comes straight back: give the runtime's other tasks
            // their turn.
            tokio::task::coop::consume_budget().await;
            continue;
        }
        // Stopped? Two atomic loads: the runtime sets the partition's flag before it cancels
        // `stop` (revoke, shutdown), and the app's flag is set before its token is cancelled.
        // (The token's own check takes a lock.)
        if stopped(&ctx, &app) {
            return;
        }
        // (Checked before it is taken: taking moves the whole record slot.)
        if held.is_some()
            && let Some(record) = held.take()
        {
            match deliver(&ctx, record, spare.take()) {
                Offered::Take(msg) => {
                    policy::process(&msg, &mut service, &config).await;
                    spare = Some(msg);
                }
                Offered::Skip => {}
                Offered::Later(record) => held = Some(record),
            }
            continue;
        }
        // Fast path: a record already fetched is taken without registering any waker; only
        // an empty feed waits on the stop token and the retry signal as well.
        let ready = {
            // Polled in place, not moved into `now_or_never`: the feed's future is large.
            let next = std::pin::pin!(feed.next());
            match next.poll(&mut Context::from_waker(Waker::noop())) {
                Poll::Ready(next) => Some(next),
                Poll::Pending => None,
            }
        };
        let next = match ready {
            Some(next) => next,
            None => tokio::select! {
                biased;
                () = stop.cancelled() => return,
                () = ctx.retry_signal.notified() => continue,
                next = feed.next() => next,
            },
        };
        let Some(record) = next else { return };
        // Delivered here rather than through `deliver`, so the record moves straight into the
        // message (the per-record path; a held-back record takes the helper above).
        let d = match ctx.deliver(record.offset) {
            Delivery::Accepted(d) => d,
            Delivery::RetryFirst => {
                held = Some(record);
                continue;
            }
            // Stopped since the check above: the record stays unfinished, for the next owner.
            Delivery::Stopped => return,
            Delivery::Refused(e) => {
                tracing::debug!(tp = %ctx.tp, reason = %e, "record not delivered");
                continue;
            }
        };
        let msg = KafkaMessage::renew(spare.take(), record, d.id, d.attempt, &ctx);
        policy::process(&msg, &mut service, &config).await;
        spare = Some(msg);
        // The fast path above never yields on its own: take part in tokio's cooperative
        // budget, so the partitions sharing a worker thread take turns and an idle worker can
        // steal them. Once per few records is enough for that (a turn then lasts about a
        // thousand records, a fraction of a millisecond) and costs less than once per record.
        handled = handled.wrapping_add(1);
        if handled.is_multiple_of(BUDGET_EVERY) {
            tokio::task::coop::consume_budget().await;
        }
    }
}

pub(super) fn stopped(ctx: &PartitionContext, app: &Shutdown) -> bool {
    ctx.stopping.load(std::sync::atomic::Ordering::Acquire) || app.is_triggered()
}

/// Waits until a retry is due; `false` if stopped meanwhile (the record stays unfinished).
pub(super) async fn wait_for(retry: &Retry, stop: &CancellationToken) -> bool {
    let Some(at) = retry.not_before else {
        return true;
    };
    tokio::select! {
        biased;
        () = stop.cancelled() => false,
        () = tokio::time::sleep_until(at.into()) => true,
    }
}

/// What became of a record offered for delivery.
pub(super) enum Offered {
    /// Delivered: handle it.
    Take(KafkaMessage),
    /// The tracker cannot take it (revoked, or out of order): it is not handled, so not
    /// committed.
    Skip,
    /// A retry must be taken first: offer the record again after it.
    Later(Record),
}

/// Hands a new `record` to the tracker and wraps it for the handler (reusing `spare`'s
/// allocation if it can).
pub(super) fn deliver(
    ctx: &Arc<PartitionContext>,
    record: Record,
    spare: Option<KafkaMessage>,
) -> Offered {
    match ctx.deliver(record.offset) {
        Delivery::Accepted(d) => {
            Offered::Take(KafkaMessage::renew(spare, record, d.id, d.attempt, ctx))
        }
        Delivery::RetryFirst => Offered::Later(record),
        Delivery::Stopped => Offered::Skip,
        Delivery::Refused(e) => {
            tracing::debug!(tp = %ctx.tp, reason = %e, "record not delivered");
            Offered::Skip
        }
    }
}

/// Wraps a nacked record for its next delivery; `None` if that no longer counts (revoked).
pub(super) fn redeliver(
    ctx: &Arc<PartitionContext>,
    record: Record,
    spare: Option<KafkaMessage>,
) -> Option<KafkaMessage> {
    let d = ctx.redeliver(record.offset)?;
    Some(KafkaMessage::renew(spare, record, d.id, d.attempt, ctx))
}
