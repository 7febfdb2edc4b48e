//! The settle rule: what a settle of one delivery becomes. Every settle goes through here,
//! whoever makes it (the handler through [`KafkaMessage`](crate::KafkaMessage), an interrupt,
//! the ack policy, another task or thread holding the message):
//!
//! 1. a nack of a delivery at or past the subscriber's attempt limit becomes a reject;
//! 2. a reject, when the subscriber has a dead-letter topic, is published there first, and is
//!    applied as a reject only once the broker confirmed it;
//! 3. if that publish fails, the record is nacked instead (after [`DEAD_LETTER_RETRY`]): it
//!    stays unfinished, nothing commits past it, and it comes back;
//! 4. an ack after the handler returned a value is applied only once the broker confirmed the
//!    value on every output topic (and the input's `reply_to`): publish first, then ack; if a
//!    publish fails (or its answer can never come), the record is nacked instead, after the
//!    failure backoff ([`output::Outputs::publish_then_ack`]);
//! 5. everything else is applied as given.
//!
//! [`ledger`] applies the result to the partition's tracker; [`dead_letter`] builds and
//! publishes the dead letter; [`output`] the outputs.

pub mod dead_letter;
pub(crate) mod ledger;
pub(crate) mod output;

use std::time::Duration;

pub(crate) use ledger::{Delivery, PartitionContext, Retry};

use futures_util::future::BoxFuture;
use tracing::Span;

use crate::error::BackendError;
use crate::event::Observer;
use crate::record::{OutgoingRecord, RecordPosition};
use output::DeliveryCallback;

use crate::interrupt::{Disposition, SettleStatus};
use crate::record::Record;
use crate::tracker::DeliveryId;

/// How long a record whose dead letter could not be published waits before it is delivered
/// again (the dead-letter topic may be back by then).
pub(crate) const DEAD_LETTER_RETRY: Duration = Duration::from_secs(1);

/// Subscriber settings the settle path needs.
#[derive(Debug)]
pub(crate) struct SettleConfig {
    pub(crate) max_attempts: Option<u32>,
    pub(crate) observer: Option<Observer>,
    pub(crate) dead_letters: Option<dead_letter::DeadLetters>,
    /// Where return values go (`None`: nowhere, not even to a `reply_to`).
    pub(crate) outputs: Option<output::Outputs>,
    /// The broker's tracing: each delivery's span, settles recorded on it.
    pub(crate) tracing: Option<crate::trace::Tracing>,
    /// The subscriber's group (for spans).
    pub(crate) group: Option<std::sync::Arc<str>>,
    /// Whether handler durations are sampled (for the duration histogram).
    pub(crate) timed: bool,
}

/// The erased backend publish the settle rule waits on (dead letters, `publish_only` outputs).
pub(crate) type PublishFn = dyn Fn(OutgoingRecord) -> BoxFuture<'static, Result<RecordPosition, BackendError>>
    + Send
    + Sync;

/// The erased backend hand-over outputs are published with (`Backend::publish_then`).
pub(crate) type EnqueueFn =
    dyn Fn(OutgoingRecord, DeliveryCallback) -> BoxFuture<'static, ()> + Send + Sync;

/// The erased backend hand-over without a wait (`Backend::try_publish_then`): `Err` gives the
/// record and its callback back when the producer cannot take it now.
#[allow(clippy::result_large_err)] // given back only when the producer's queue is full
pub(crate) type TryEnqueueFn = dyn Fn(OutgoingRecord, DeliveryCallback) -> Result<(), (OutgoingRecord, DeliveryCallback)>
    + Send
    + Sync;

/// Observes one output's hand-over (a span injected into its headers, its answer counted and
/// timed): takes the record's callback and returns the one to hand over with it.
pub(crate) type ObserveFn =
    dyn Fn(&mut OutgoingRecord, DeliveryCallback) -> DeliveryCallback + Send + Sync;

/// How long a publish the settle waits for (a dead letter, an output) may take to be confirmed
/// before it counts as failed (a producer can otherwise wait minutes for an unreachable broker).
pub(crate) const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// What a settle becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Applied to the ledger at once.
    Apply(Disposition),
    /// Published as a dead letter first, then applied as a reject (or, if the publish fails,
    /// as a nack).
    DeadLetterFirst,
}

/// Whether delivery `attempt` has used up `limit` attempts. The one place the attempt limit is
/// checked.
pub(crate) fn out_of_attempts(attempt: u32, limit: Option<u32>) -> bool {
    limit.is_some_and(|limit| attempt >= limit)
}

/// What settling delivery `attempt` of `record` with `disposition` becomes, under an attempt
/// `limit`, with or without a dead-letter topic.
#[inline]
pub(crate) fn plan(
    record: &Record,
    attempt: u32,
    disposition: Disposition,
    limit: Option<u32>,
    dead_letters: bool,
) -> Plan {
    let disposition = match disposition {
        Disposition::Nack { .. } if out_of_attempts(attempt, limit) => {
            tracing::warn!(
                topic = %record.topic,
                partition = record.partition,
                offset = record.offset,
                attempt,
                "record ran out of attempts; rejecting instead of nacking"
            );
            Disposition::Reject
        }
        d => d,
    };
    match disposition {
        Disposition::Reject if dead_letters => Plan::DeadLetterFirst,
        d => Plan::Apply(d),
    }
}

/// Publishes `record` as a dead letter (`why`: the reason it carries), then applies the reject;
/// if the publish fails, applies a nack instead, so nothing is committed past the record. If
/// this future is dropped before the publish ends (a timeout around the handler, a panic, a
/// drain deadline), the nack is applied then: the settle was claimed, so it must not be left
/// unapplied, or the record would hold its partition's commit back until the next revoke.
pub(crate) async fn dead_letter_first(
    ctx: &PartitionContext,
    record: &Record,
    id: DeliveryId,
    attempt: u32,
    span: Option<&Span>,
    why: &str,
) -> SettleStatus {
    let Some(dead_letters) = &ctx.config.dead_letters else {
        return ctx.apply_traced(record, id, Disposition::Reject, span);
    };
    // A settle of an assignment that ended changes nothing, and publishes nothing either: the
    // record's next owner delivers it again (a late output failure, a late reject from a task
    // that kept the message, would otherwise dead-letter a record that is then processed).
    if !ctx.still_pending(record.offset, id) {
        return ctx.apply_traced(record, id, DEAD_LETTER_NACK, span);
    }
    let unfinished = NackOnDrop(Some((ctx, record, id, span)));
    let published = dead_letters.publish(record, attempt, why).await;
    unfinished.disarm();
    match published {
        Ok(_) => {
            ctx.count(|c| c.dead_lettered += 1);
            ctx.apply_traced(record, id, Disposition::Reject, span)
        }
        Err(e) => {
            tracing::error!(
                topic = %record.topic,
                partition = record.partition,
                offset = record.offset,
                dead_letter_topic = %dead_letters.topic,
                error = %e,
                "dead letter not published: the record is nacked, not committed"
            );
            ctx.apply_traced(record, id, DEAD_LETTER_NACK, span)
        }
    }
}

/// What a record whose dead letter was not published becomes.
const DEAD_LETTER_NACK: Disposition = Disposition::Nack {
    delay: Some(DEAD_LETTER_RETRY),
};

/// Nacks a delivery whose dead letter is abandoned (as one that was not published).
struct NackOnDrop<'a>(
    Option<(
        &'a PartitionContext,
        &'a Record,
        DeliveryId,
        Option<&'a Span>,
    )>,
);

impl NackOnDrop<'_> {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for NackOnDrop<'_> {
    fn drop(&mut self) {
        if let Some((ctx, record, id, span)) = self.0.take() {
            tracing::warn!(
                topic = %record.topic,
                partition = record.partition,
                offset = record.offset,
                "dead letter abandoned before it was confirmed: the record is nacked, not committed"
            );
            ctx.apply_traced(record, id, DEAD_LETTER_NACK, span);
        }
    }
}

#[cfg(test)]
mod tests;
