//! One assigned partition: rewind when asked, deliver the next record, run the handler, settle.

use std::sync::Arc;
use std::time::Duration;

use std::future::Future;
use std::task::{Context, Poll, Waker};

use tokio_util::sync::CancellationToken;

use super::policy;
use crate::backend::PartitionFeed;
use crate::event::Event;
use crate::handler::Handler;
use crate::message::KafkaMessage;
use crate::record::Record;
use crate::settle::PartitionContext;
use crate::shutdown::Shutdown;
use crate::state::StateMap;
use crate::subscriber::SubscriberConfig;

/// Records handled per unit of tokio's cooperative budget (128 units per turn).
const BUDGET_EVERY: u32 = 8;

pub(super) async fn run<F, H, T>(
    mut feed: F,
    ctx: Arc<PartitionContext>,
    handler: H,
    state: StateMap,
    stop: CancellationToken,
    app: Shutdown,
    config: Arc<SubscriberConfig>,
) where
    F: PartitionFeed,
    H: Handler<T>,
{
    // The previous delivery's message, recycled for the next one when the handler let go of it.
    let mut spare: Option<KafkaMessage> = None;
    let mut handled: u32 = 0;
    loop {
        if let Some(rewind) = ctx.take_rewind() {
            if let Some(delay) = rewind.delay {
                tokio::select! {
                    biased;
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
            if !seek(&mut feed, rewind.offset, &stop).await {
                return;
            }
            continue;
        }
        // Stopped? Two atomic loads: the runtime sets the partition's flag before it cancels
        // `stop` (revoke, shutdown), and the app's flag is set before its token is cancelled.
        // (The token's own check takes a lock.)
        if ctx.stopping.load(std::sync::atomic::Ordering::Acquire) || app.is_triggered() {
            return;
        }
        // Fast path: a record already fetched is taken without registering any waker; only
        // an empty feed waits on the stop token and the rewind signal as well.
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
                () = ctx.rewind_signal.notified() => continue,
                next = feed.next() => next,
            },
        };
        let Some(record) = next else { return };
        let Some(msg) = deliver(&ctx, record, spare.take()) else {
            continue;
        };
        policy::process(&msg, &handler, &state, &config).await;
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

/// Hands `record` to the tracker and wraps it for the handler (reusing `spare`'s allocation if
/// it can); `None` if the record is not to be handled: a rewind is pending (it will be read
/// again) or the tracker cannot accept it. Such a record is not committed.
pub(super) fn deliver(
    ctx: &Arc<PartitionContext>,
    record: Record,
    spare: Option<KafkaMessage>,
) -> Option<KafkaMessage> {
    let delivered = match ctx.deliver(record.offset) {
        Ok(d) => d,
        Err(e) => {
            tracing::debug!(tp = %ctx.tp, offset = record.offset, reason = %e, "record not delivered");
            return None;
        }
    };
    let msg = KafkaMessage::renew(spare, record, delivered.id, delivered.attempt, ctx);
    ctx.emit(|| Event::Delivered {
        tp: ctx.tp.clone(),
        offset: msg.offset(),
        attempt: delivered.attempt,
    });
    Some(msg)
}

/// Seeks, retrying while the backend refuses; `false` if stopped meanwhile. A partition that
/// cannot be rewound must not move on: its nacked record would never be redelivered.
pub(super) async fn seek<F: PartitionFeed>(
    feed: &mut F,
    offset: i64,
    stop: &CancellationToken,
) -> bool {
    let mut backoff = Duration::from_millis(10);
    loop {
        match feed.seek(offset) {
            Ok(()) => return true,
            Err(e) => {
                tracing::warn!(tp = %feed.topic_partition(), offset, error = %e, "seek failed; retrying");
                tokio::select! {
                    () = stop.cancelled() => return false,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}
