//! Applying the ack policy around one handler call.

use std::any::Any;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tracing::Instrument;

use crate::AckPolicy;
use crate::config::SubscriberConfig;
use crate::event::Event;
use crate::handler::service::MessageService;
use crate::interrupt::Disposition;
use crate::message::{Claimed, KafkaMessage, Settling};
use crate::outcome::Outcome;
use crate::response::Output;
use crate::settle::output::Records;

/// One delivery's run: the service called for it (inside the panic guard), then its settle.
/// A macro, not a function: written into `process` itself, the untraced run is part of its
/// state machine, as it was before spans (as a nested future it measured 12 instructions per
/// record more, callgrind). The traced run uses it too.
macro_rules! run {
    ($msg:expr, $service:expr, $config:expr) => {{
        let (msg, service, config): (&KafkaMessage, _, &SubscriberConfig) =
            ($msg, $service, $config);
        if config.ack_policy == AckPolicy::AckFirst {
            // An ack is applied at once: the settle rule never dead-letters one.
            let _ = msg.settle_with(Disposition::Ack, None);
        }
        // `call_when_ready`, written out: through the function the per-record path measured
        // 7 instructions more (callgrind, `scripts/bench-cost`).
        let run = async {
            let Ok(()) = std::future::poll_fn(|cx| service.poll_ready(cx)).await;
            let Ok(outcome) = service.call(msg.clone()).await;
            outcome
        };
        let outcome = AssertUnwindSafe(run)
            .catch_unwind()
            .await
            .unwrap_or_else(|p| Outcome::Panicked(panic_message(&*p)));
        // `settle`, written out: awaiting it as a nested future measured 47 instructions more
        // per record (callgrind, `scripts/bench-cost`).
        if let Outcome::Success = outcome {
            settle_success(msg, config.ack_policy);
            // Nothing to drop in a success; forgetting it skips the call to the enum's drop
            // glue (27 instructions per record).
            std::mem::forget(outcome);
        } else if let Some(publish) = resolve(msg, outcome, config) {
            let _ = AssertUnwindSafe(publish).catch_unwind().await;
        }
    }};
}

/// Runs the subscriber's service (its layers and handler) for one delivery and settles it as
/// the policy says. The policy wraps the whole stack: whatever a layer does, panics included,
/// becomes an outcome the policy settles.
pub(super) async fn process<S: MessageService>(
    msg: &KafkaMessage,
    service: &mut S,
    config: &SubscriberConfig,
) {
    let ctx = msg.context();
    // A sampled record's handler is timed (off, or not sampled: one test).
    let started = ctx.times(msg.offset()).then(std::time::Instant::now);
    // Spans only while someone may want them: with tracing off, or while no subscriber
    // anywhere listens at `info`, the delivery runs as without observability (an instrumented
    // run with a disabled span cost about 90 instructions per record more).
    if traced(ctx) {
        traced_run(msg, service, config).await;
    } else {
        run!(msg, service, config);
    }
    if let Some(started) = started {
        ctx.timed(started.elapsed());
    }
}

/// Whether deliveries of `ctx`'s partition get spans now: the subscriber is traced and some
/// subscriber listens at `info` (tracing's global level filter, the first test its span macros
/// make; it follows subscribers set later and scoped ones).
#[inline]
fn traced(ctx: &crate::settle::PartitionContext) -> bool {
    ctx.config.tracing.is_some()
        && tracing::Level::INFO <= tracing::level_filters::LevelFilter::current()
}

/// The delivery's span, also kept with the delivery for its settle when a subscriber wants it.
#[inline(never)]
fn delivery_span(msg: &KafkaMessage) -> tracing::Span {
    let ctx = msg.context();
    let Some(tracing) = &ctx.config.tracing else {
        return tracing::Span::none();
    };
    let span = tracing.process_span(
        &ctx.span_name,
        msg.record(),
        ctx.config.group.as_deref(),
        msg.attempt(),
    );
    // A span no subscriber wants records nothing: not kept, no lock per record.
    if !span.is_disabled() {
        msg.keep_span(span.clone());
    }
    span
}

/// A delivery's run inside its span, which is kept with the delivery for its settle.
async fn traced_run<S: MessageService>(
    msg: &KafkaMessage,
    service: &mut S,
    config: &SubscriberConfig,
) {
    // In place, not boxed: a box would copy the whole future for every record.
    async { run!(msg, service, config) }
        .instrument(delivery_span(msg))
        .await;
    msg.release_span();
}

/// Settles `msg` as the policy says for `outcome` (of its handler, or of its batch's).
pub(super) async fn settle(msg: &KafkaMessage, outcome: Outcome, config: &SubscriberConfig) {
    // The common case, settled at once without the bookkeeping failures need.
    if let Outcome::Success = outcome {
        settle_success(msg, config.ack_policy);
        return;
    }
    if let Some(publish) = resolve(msg, outcome, config) {
        // A panic while publishing (a backend's) must not end the partition's task; the
        // abandoned publish nacks the record (see `settle::dead_letter_first`).
        let _ = AssertUnwindSafe(publish).catch_unwind().await;
    }
}

/// Settles a delivery whose handler succeeded, as the policy says.
#[inline]
fn settle_success(msg: &KafkaMessage, policy: AckPolicy) {
    match policy {
        AckPolicy::Ack | AckPolicy::RejectOnError | AckPolicy::NackOnError => {
            let _ = msg.settle_with(Disposition::Ack, None);
        }
        AckPolicy::AckFirst => {}
        AckPolicy::Manual => msg.handler_returned(),
    }
}

/// Publishes a return value and settles its input: under a policy that acks after the handler,
/// the ack waits for every confirmation (the settle rule's "publish first"), and a failed
/// publish nacks the input after the failure backoff. An input already settled (under
/// `AckFirst`, or by the handler) cannot wait: its outputs are published and a failure logged.
fn publish_output<'a>(
    msg: &'a KafkaMessage,
    output: Output,
    config: &SubscriberConfig,
) -> Option<BoxFuture<'a, ()>> {
    let policy = config.ack_policy;
    let Some(publisher) = &msg.context().config.outputs else {
        settle_success(msg, policy);
        return None;
    };
    let outputs = publisher.records(msg.record(), output);
    if outputs.is_empty() {
        settle_success(msg, policy);
        return None;
    }
    let failed = Disposition::Nack {
        delay: config.retry_backoff.delay(msg.attempt()),
    };
    if matches!(
        policy,
        AckPolicy::Ack | AckPolicy::RejectOnError | AckPolicy::NackOnError
    ) && let Some(claimed) = msg.claim()
    {
        // With a permit free and room in the producer's queue, nothing here waits: no future.
        return match publisher.in_flight.clone().try_acquire_owned() {
            Ok(permit) => publisher
                .publish_then_ack(claimed, outputs, failed, permit)
                .map(|rest| -> BoxFuture<'a, ()> { rest }),
            Err(_) => Some(Box::pin(publish_in_background(claimed, outputs, failed))),
        };
    }
    let outputs = outputs.into_vec();
    let limit = config.max_attempts;
    Some(Box::pin(async move {
        let published = msg.publish_only(outputs).await;
        match published {
            Ok(()) if policy == AckPolicy::Manual => msg.handler_returned(),
            Ok(()) => {}
            Err(error) if policy == AckPolicy::Manual && !msg.is_settled() => {
                tracing::warn!(
                    topic = msg.topic(),
                    partition = msg.partition(),
                    offset = msg.offset(),
                    %error,
                    "output not published: the input is nacked, not committed"
                );
                if let Settling::DeadLetterFirst(letter) = msg.settle_with(failed, limit) {
                    letter.publish("output not published").await;
                }
            }
            Err(error) => tracing::error!(
                topic = msg.topic(),
                partition = msg.partition(),
                offset = msg.offset(),
                %error,
                "output not published, and its input was settled before it (AckFirst, or by the handler)"
            ),
        }
    }))
}

/// Hands a claimed input's outputs to the backend and lets them be confirmed in the
/// background, so the partition goes on with its next record meanwhile (outputs are then sent
/// back to back, as a producer is fast at; the commit rule needs no wait: the input stays
/// unfinished until its ack). They are handed over here, in the partition's order, so the
/// outputs of a partition (and of a key) reach the producer in input order. Waits for a permit
/// first while the subscriber has
/// [`OUTPUTS_IN_FLIGHT`](crate::settle::output::OUTPUTS_IN_FLIGHT) inputs publishing.
async fn publish_in_background(claimed: Claimed<'_>, outputs: Records, failed: Disposition) {
    let publisher = claimed
        .message()
        .context()
        .config
        .outputs
        .as_ref()
        .expect("outputs exist where an output has somewhere to go");
    let permit = publisher
        .in_flight
        .clone()
        .acquire_owned()
        .await
        .expect("the permits are never closed");
    if let Some(rest) = publisher.publish_then_ack(claimed, outputs, failed, permit) {
        rest.await;
    }
}

/// What the policy does after a failure (an error, a panic, a decode failure) of `attempt`:
/// under `NackOnError` a nack after the subscriber's backoff, so a record that always fails
/// does not loop hot.
fn on_failure(config: &SubscriberConfig, attempt: u32) -> Option<Disposition> {
    match config.ack_policy {
        AckPolicy::AckFirst | AckPolicy::Manual => None,
        AckPolicy::Ack => Some(Disposition::Ack),
        AckPolicy::RejectOnError => Some(Disposition::Reject),
        AckPolicy::NackOnError => Some(Disposition::Nack {
            delay: config.retry_backoff.delay(attempt),
        }),
    }
}

/// Settles `msg` as the policy says for an outcome other than success. Every settle is synchronous except one that
/// publishes a dead letter first: that one is returned, boxed, for the caller to await (so the
/// common path carries no publish state).
#[inline(never)]
fn resolve<'a>(
    msg: &'a KafkaMessage,
    outcome: Outcome,
    config: &SubscriberConfig,
) -> Option<BoxFuture<'a, ()>> {
    let policy = config.ack_policy;
    let ctx = msg.context();
    let why: String;
    let (disposition, attempt_limit) = match outcome {
        // Settled by `process` before it gets here.
        Outcome::Success => return None,
        Outcome::Output(output) => return publish_output(msg, *output, config),
        Outcome::Interrupted(d) => {
            why = format!("{d:?} interrupt from the handler");
            (Some(d), config.max_attempts)
        }
        Outcome::Failed(error) => {
            why = format!("handler failed: {error}");
            tracing::warn!(
                topic = msg.topic(),
                partition = msg.partition(),
                offset = msg.offset(),
                attempt = msg.attempt(),
                %error,
                "handler failed (attempt {})",
                msg.attempt()
            );
            ctx.count(|c| c.failed += 1);
            ctx.trace_failure("error", &error.to_string());
            ctx.emit(|| Event::HandlerFailed {
                tp: ctx.tp.clone(),
                offset: msg.offset(),
                error: error.to_string(),
                panicked: false,
            });
            (on_failure(config, msg.attempt()), config.max_attempts)
        }
        Outcome::Panicked(message) => {
            why = format!("handler panicked: {message}");
            tracing::error!(
                topic = msg.topic(),
                partition = msg.partition(),
                offset = msg.offset(),
                attempt = msg.attempt(),
                panic = %message,
                "handler panicked (attempt {})",
                msg.attempt()
            );
            ctx.count(|c| {
                c.failed += 1;
                c.panicked += 1;
            });
            ctx.trace_failure("panic", &message);
            ctx.emit(|| Event::HandlerFailed {
                tp: ctx.tp.clone(),
                offset: msg.offset(),
                error: message.clone(),
                panicked: true,
            });
            (on_failure(config, msg.attempt()), config.max_attempts)
        }
        Outcome::Rejected(rejection) => {
            why = format!("cannot be decoded: {rejection}");
            tracing::warn!(
                topic = msg.topic(),
                partition = msg.partition(),
                offset = msg.offset(),
                attempt = msg.attempt(),
                reason = %rejection,
                "record cannot be decoded; handler not called"
            );
            ctx.count(|c| c.decode_failed += 1);
            ctx.trace_failure("decode", &rejection.to_string());
            ctx.emit(|| Event::DecodeFailed {
                tp: ctx.tp.clone(),
                offset: msg.offset(),
                reason: rejection.to_string(),
            });
            // The handler never saw the record, so under Manual nobody else can settle it.
            let disposition = match policy {
                AckPolicy::Manual => Some(Disposition::Reject),
                _ => on_failure(config, msg.attempt()),
            };
            let limit = config.max_attempts.unwrap_or(config.max_decode_attempts);
            (disposition, Some(limit))
        }
    };
    match disposition {
        Some(d) => match msg.settle_with(d, attempt_limit) {
            Settling::Done(_) => None,
            Settling::DeadLetterFirst(letter) => Some(Box::pin(async move {
                letter.publish(&why).await;
            })),
        },
        None if policy == AckPolicy::Manual => {
            msg.handler_returned();
            None
        }
        None => None,
    }
}

pub(super) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "handler panicked with a non-string payload".to_owned()
    }
}
