//! The message handle a handler receives: the record plus the means to settle it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;

use crate::error::BackendError;
use crate::interrupt::Disposition;
use crate::interrupt::SettleStatus;
use crate::record::{Headers, OutgoingRecord, Record, TopicPartition};
use crate::settle::{self, PartitionContext, Plan};
use crate::trace::DeliverySpan;
use crate::tracker::DeliveryId;

/// One delivery of a Kafka record, with `ack`, `nack` and `reject`.
///
/// Cheap to clone (one reference count); every clone settles the same delivery, and the first
/// settle wins: later ones return [`SettleStatus::AlreadySettled`] and change nothing. Extract it
/// in a handler to settle manually:
///
/// ```
/// use ackstream_core::{HandlerError, KafkaMessage};
///
/// async fn handler(body: String, msg: KafkaMessage) -> Result<(), HandlerError> {
///     if body.is_empty() {
///         msg.reject().await?;
///     } else {
///         msg.ack().await?;
///     }
///     Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct KafkaMessage(Arc<Delivery>);

struct Delivery {
    record: Record,
    id: DeliveryId,
    attempt: u32,
    settled: AtomicBool,
    partition: Arc<PartitionContext>,
    /// Its span until it is settled, under tracing (empty otherwise).
    span: DeliverySpan,
}

impl KafkaMessage {
    pub(crate) fn new(
        record: Record,
        id: DeliveryId,
        attempt: u32,
        partition: Arc<PartitionContext>,
    ) -> Self {
        Self(Arc::new(Delivery {
            record,
            id,
            attempt,
            settled: AtomicBool::new(false),
            partition,
            span: DeliverySpan::default(),
        }))
    }

    /// A message for the next delivery, reusing `spare`'s allocation when nothing else holds
    /// it any more (the common case: the handler did not keep its message).
    pub(crate) fn renew(
        spare: Option<Self>,
        record: Record,
        id: DeliveryId,
        attempt: u32,
        partition: &Arc<PartitionContext>,
    ) -> Self {
        if let Some(mut msg) = spare
            && let Some(d) = Arc::get_mut(&mut msg.0)
            && Arc::ptr_eq(&d.partition, partition)
        {
            d.record = record;
            d.id = id;
            d.attempt = attempt;
            *d.settled.get_mut() = false;
            d.span.reset();
            return msg;
        }
        Self::new(record, id, attempt, partition.clone())
    }

    /// The record.
    pub fn record(&self) -> &Record {
        &self.0.record
    }

    /// The record's topic.
    pub fn topic(&self) -> &str {
        &self.0.record.topic
    }

    /// The record's partition.
    pub fn partition(&self) -> i32 {
        self.0.record.partition
    }

    /// The record's topic and partition.
    pub fn topic_partition(&self) -> &TopicPartition {
        &self.0.partition.tp
    }

    /// The record's offset.
    pub fn offset(&self) -> i64 {
        self.0.record.offset
    }

    /// The record's key, if any.
    pub fn key(&self) -> Option<&Bytes> {
        self.0.record.key.as_ref()
    }

    /// The record's headers.
    pub fn headers(&self) -> &Headers {
        &self.0.record.headers
    }

    /// The record's timestamp (ms since the Unix epoch), if known.
    pub fn timestamp(&self) -> Option<i64> {
        self.0.record.timestamp
    }

    /// The record's raw value.
    pub fn payload(&self) -> &Bytes {
        &self.0.record.payload
    }

    /// Which attempt this delivery is: 1 the first time, +1 after each nack of this record.
    pub fn attempt(&self) -> u32 {
        self.0.attempt
    }

    /// Whether this delivery has been settled (by the handler, an interrupt or the policy).
    pub fn is_settled(&self) -> bool {
        self.0.settled.load(Ordering::Acquire)
    }

    /// Acks: the record is finished and its partition's commit may move past it.
    ///
    /// Returns once the settle is recorded; the commit itself is coalesced and asynchronous
    /// (use [`commit`](Self::commit) to wait for it).
    pub async fn ack(&self) -> Result<SettleStatus, SettleError> {
        Ok(self.settle(Disposition::Ack).await)
    }

    /// Nacks: this record is delivered again, to this member, in its place in its lane (the
    /// records of its partition under `KeepOrder::Partition`, of its key under `KeepOrder::Key`,
    /// wait for it); records behind it that ran or finished are not delivered again. It stays
    /// unfinished meanwhile, so no commit passes it. After the subscriber's `max_attempts` it
    /// is rejected.
    pub async fn nack(&self) -> Result<SettleStatus, SettleError> {
        Ok(self.settle(Disposition::Nack { delay: None }).await)
    }

    /// Nacks with a delay: the record is delivered again no earlier than `delay` from now (its
    /// lane waits with it; other lanes go on).
    pub async fn nack_after(&self, delay: Duration) -> Result<SettleStatus, SettleError> {
        Ok(self.settle(Disposition::Nack { delay: Some(delay) }).await)
    }

    /// Rejects: finished but failed; committed past like ack.
    pub async fn reject(&self) -> Result<SettleStatus, SettleError> {
        Ok(self.settle(Disposition::Reject).await)
    }

    /// Commits every offset stored so far for this subscriber and waits for the broker's
    /// confirmation (settle first: only finished records are committed).
    pub async fn commit(&self) -> Result<(), SettleError> {
        self.0
            .partition
            .offsets()
            .commit()
            .await
            .map_err(SettleError::Commit)
    }

    async fn settle(&self, disposition: Disposition) -> SettleStatus {
        match self.settle_with(disposition, self.0.partition.config.max_attempts) {
            Settling::Done(status) => status,
            // Boxed: only this path waits, and its publish state is large.
            Settling::DeadLetterFirst(letter) => {
                let why = match disposition {
                    Disposition::Nack { .. } => "nacked by the handler with no attempts left",
                    _ => "rejected by the handler",
                };
                Box::pin(letter.publish(why)).await
            }
        }
    }

    /// Settles as the [settle rule](crate::settle) says, with `attempt_limit` for nacks (the
    /// runtime passes the decode-failure limit for records that do not decode). The first
    /// settle wins.
    #[inline]
    pub(crate) fn settle_with(
        &self,
        disposition: Disposition,
        attempt_limit: Option<u32>,
    ) -> Settling<'_> {
        let d = &self.0;
        if d.settled.swap(true, Ordering::AcqRel) {
            return Settling::Done(SettleStatus::AlreadySettled);
        }
        let dead_letters = d.partition.config.dead_letters.is_some();
        match settle::plan(
            &d.record,
            d.attempt,
            disposition,
            attempt_limit,
            dead_letters,
        ) {
            // No span kept (no tracing, or no subscriber wanted it): nothing to record, and the
            // path stays as it was without spans.
            Plan::Apply(disposition) if !d.span.is_kept() => {
                Settling::Done(d.partition.apply(&d.record, d.id, disposition))
            }
            Plan::Apply(disposition) => Settling::Done(self.apply_traced(disposition)),
            Plan::DeadLetterFirst => Settling::DeadLetterFirst(DeadLetter(self)),
        }
    }

    /// Applies `disposition` and records it on the span kept with this delivery: out of line,
    /// so the untraced settle above stays small enough to inline.
    #[inline(never)]
    fn apply_traced(&self, disposition: Disposition) -> SettleStatus {
        let d = &self.0;
        let span = d.span.take();
        d.partition
            .apply_traced(&d.record, d.id, disposition, span.as_ref())
    }

    /// Keeps `span` as this delivery's: its settle is recorded there, wherever it is made.
    pub(crate) fn keep_span(&self, span: tracing::Span) {
        self.0.span.keep(span);
    }

    /// Takes this delivery's span for its settle (whoever claimed the settle): `None`, without
    /// touching the slot, when none was kept.
    #[inline]
    pub(crate) fn take_span(&self) -> Option<tracing::Span> {
        self.0.span.take()
    }

    /// Lets this delivery's span end once its run is over, if nothing else holds the message
    /// (nothing can settle it any more; a message kept by the handler keeps its span until it
    /// is settled).
    pub(crate) fn release_span(&self) {
        if Arc::strong_count(&self.0) == 1 {
            drop(self.take_span());
        }
    }

    /// Publishes `outputs` without settling anything: for an input already settled.
    pub(crate) async fn publish_only(
        &self,
        outputs: Vec<OutgoingRecord>,
    ) -> Result<(), BackendError> {
        match &self.0.partition.config.outputs {
            Some(publisher) => publisher.publish_all(outputs).await,
            None => Ok(()),
        }
    }

    /// This delivery's id in its partition's tracker.
    pub(crate) fn delivery_id(&self) -> DeliveryId {
        self.0.id
    }

    /// The partition's shared state, to keep it alive past this call.
    pub(crate) fn context_arc(&self) -> &Arc<PartitionContext> {
        &self.0.partition
    }

    /// Claims this delivery's settle for the framework, unless it was settled already.
    pub(crate) fn claim(&self) -> Option<Claimed<'_>> {
        (!self.0.settled.swap(true, Ordering::AcqRel)).then_some(Claimed(self))
    }

    /// Marks that the handler returned without settling (manual policy).
    pub(crate) fn handler_returned(&self) {
        if !self.is_settled() {
            self.0.partition.returned(self.0.record.offset, self.0.id);
        }
    }

    pub(crate) fn context(&self) -> &PartitionContext {
        &self.0.partition
    }
}

/// What [`KafkaMessage::settle_with`] did.
#[must_use = "a dead letter must be published for the settle to finish"]
pub(crate) enum Settling<'a> {
    /// The settle is applied (or was a no-op).
    Done(SettleStatus),
    /// The settle is claimed and becomes a reject once its dead letter is published.
    DeadLetterFirst(DeadLetter<'a>),
}

/// A claimed settle whose dead letter is still to be published.
#[must_use = "a dead letter must be published for the settle to finish"]
pub(crate) struct DeadLetter<'a>(&'a KafkaMessage);

impl DeadLetter<'_> {
    /// Publishes the dead letter (carrying `why`) and finishes the settle: a reject once it is
    /// confirmed, a nack if it is not.
    pub(crate) async fn publish(self, why: &str) -> SettleStatus {
        let d = &self.0.0;
        let span = self.0.take_span();
        settle::dead_letter_first(&d.partition, &d.record, d.id, d.attempt, span.as_ref(), why)
            .await
    }
}

/// A settle the framework claimed and has still to apply.
#[must_use = "a claimed settle must be applied, or the record holds its partition back"]
pub(crate) struct Claimed<'a>(&'a KafkaMessage);

impl<'a> Claimed<'a> {
    /// The claimed delivery's message.
    pub(crate) fn message(&self) -> &'a KafkaMessage {
        self.0
    }
}

impl fmt::Debug for KafkaMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaMessage")
            .field("topic", &self.topic())
            .field("partition", &self.partition())
            .field("offset", &self.offset())
            .field("attempt", &self.attempt())
            .field("settled", &self.is_settled())
            .finish()
    }
}

/// A settle or commit that could not be carried out.
#[derive(Debug)]
#[non_exhaustive]
pub enum SettleError {
    /// The commit failed (it will be retried by later commits; nothing was reported committed).
    Commit(BackendError),
}

impl fmt::Display for SettleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SettleError::Commit(e) => write!(f, "commit failed: {e}"),
        }
    }
}

impl std::error::Error for SettleError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SettleError::Commit(e) => Some(e),
        }
    }
}
