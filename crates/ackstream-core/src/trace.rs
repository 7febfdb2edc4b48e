//! Tracing: a span per delivered record and per publish, named and attributed after
//! OpenTelemetry's messaging conventions for Kafka, and trace context carried in record
//! headers by a [`Propagator`] (W3C `traceparent` / `tracestate`; the facade's `otel` feature
//! gives one on the `opentelemetry` crates).
//!
//! Off unless a broker is given a [`Tracing`] ([`Broker::trace`](crate::Broker::trace)); then
//! each delivery runs inside a `process {topic}` span (kind consumer) that also covers its
//! settle, and records the settle (`ackstream.settle`: ack, nack or reject), the attempt, and
//! on failure `error.type` and the reason. A settle is recorded on the span of the delivery it
//! settles, wherever it is made (a handler settling a message kept from an earlier delivery,
//! another task, a producer's delivery callback), never on the span current there. Each
//! publish (publishers, return values, replies, dead letters) gets a `send {topic}` span
//! (kind producer) whose context the propagator injects into the record's headers; a
//! consumer extracts it and parents its span under it, or links to it
//! ([`Tracing::link_to_producer`]), so a trace follows a record through a pipeline of
//! services.
//!
//! Every attribute name is in [`attributes`], one table; the span macros below are the only
//! other place that names them (tracing needs field names as literals), and a test checks the
//! two agree.
//!
//! ```
//! use ackstream_core::trace::Tracing;
//! let tracing = Tracing::spans().link_to_producer();
//! assert!(tracing.links());
//! ```

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tracing::Span;

use crate::interrupt::Disposition;
use crate::record::{Headers, OutgoingRecord, Record};

/// The attribute names of OpenTelemetry's messaging conventions that ackstream's spans carry,
/// and ackstream's own.
pub mod attributes {
    /// `kafka`.
    pub const SYSTEM: &str = "messaging.system";
    /// `process` or `send`.
    pub const OPERATION_TYPE: &str = "messaging.operation.type";
    /// The topic.
    pub const DESTINATION: &str = "messaging.destination.name";
    /// The partition.
    pub const PARTITION: &str = "messaging.destination.partition.id";
    /// The consumer group.
    pub const GROUP: &str = "messaging.consumer.group.name";
    /// The record's offset.
    pub const OFFSET: &str = "messaging.kafka.offset";
    /// The record's key, when it is UTF-8 text.
    pub const KEY: &str = "messaging.kafka.message.key";
    /// The failure's kind: `error`, `panic` or `decode`.
    pub const ERROR_TYPE: &str = "error.type";
    /// The span's name (tracing-opentelemetry reads it).
    pub const OTEL_NAME: &str = "otel.name";
    /// The span's kind: `consumer` or `producer` (tracing-opentelemetry reads it).
    pub const OTEL_KIND: &str = "otel.kind";
    /// Which attempt of the record this delivery is (ackstream's own).
    pub const ATTEMPT: &str = "ackstream.attempt";
    /// How the delivery was settled: `ack`, `nack` or `reject` (ackstream's own).
    pub const SETTLE: &str = "ackstream.settle";
    /// Why a delivery failed (ackstream's own).
    pub const REASON: &str = "ackstream.failure";

    /// Every name a `process` span carries.
    pub const PROCESS: &[&str] = &[
        OTEL_NAME,
        OTEL_KIND,
        SYSTEM,
        OPERATION_TYPE,
        DESTINATION,
        PARTITION,
        GROUP,
        OFFSET,
        KEY,
        ATTEMPT,
        SETTLE,
        ERROR_TYPE,
        REASON,
    ];
    /// Every name a `send` span carries.
    pub const SEND: &[&str] = &[
        OTEL_NAME,
        OTEL_KIND,
        SYSTEM,
        OPERATION_TYPE,
        DESTINATION,
        PARTITION,
    ];
}

/// Carries trace context in record headers: injected into what is published, extracted from
/// what is consumed.
pub trait Propagator: Send + Sync + 'static {
    /// Writes `span`'s context into `headers` (e.g. `traceparent`).
    fn inject(&self, span: &Span, headers: &mut Headers);
    /// Makes the context found in `headers`, if any, `span`'s parent (`link: false`) or a link
    /// of it (`link: true`).
    fn extract(&self, headers: &Headers, span: &Span, link: bool);
}

/// A broker's tracing: spans, and optionally a [`Propagator`].
#[derive(Clone, Default)]
pub struct Tracing {
    propagator: Option<Arc<dyn Propagator>>,
    link: bool,
}

impl fmt::Debug for Tracing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracing")
            .field("propagates", &self.propagator.is_some())
            .field("link", &self.link)
            .finish()
    }
}

impl Tracing {
    /// Spans only: no context crosses a record.
    pub fn spans() -> Self {
        Self::default()
    }

    /// Whether trace context crosses records (in their headers).
    pub(crate) fn propagates(&self) -> bool {
        self.propagator.is_some()
    }

    /// Spans, with context carried in headers by `propagator`.
    pub fn propagated(propagator: impl Propagator) -> Self {
        Self {
            propagator: Some(Arc::new(propagator)),
            link: false,
        }
    }

    /// A consumed record's span links to its producer's span instead of being its child
    /// (OpenTelemetry's advice when one process span covers many records, or when producer
    /// and consumer traces should stay apart).
    pub fn link_to_producer(mut self) -> Self {
        self.link = true;
        self
    }

    /// Whether a consumed record's span links to its producer's instead of being its child.
    pub fn links(&self) -> bool {
        self.link
    }

    /// The span of one delivery of `record`, named `name` (`process {topic}`), its producer's
    /// context applied.
    pub(crate) fn process_span(
        &self,
        name: &str,
        record: &Record,
        group: Option<&str>,
        attempt: u32,
    ) -> Span {
        let key = record
            .key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok());
        let span = tracing::info_span!(
            target: "ackstream",
            "process",
            "otel.name" = name,
            "otel.kind" = "consumer",
            "messaging.system" = "kafka",
            "messaging.operation.type" = "process",
            "messaging.destination.name" = &*record.topic,
            "messaging.destination.partition.id" = %record.partition,
            "messaging.consumer.group.name" = group,
            "messaging.kafka.offset" = record.offset,
            "messaging.kafka.message.key" = key,
            "ackstream.attempt" = i64::from(attempt),
            "ackstream.settle" = tracing::field::Empty,
            "error.type" = tracing::field::Empty,
            "ackstream.failure" = tracing::field::Empty,
        );
        if let Some(p) = &self.propagator {
            p.extract(&record.headers, &span, self.link);
        }
        span
    }

    /// The span of one publish of `record`, whose context goes into its headers.
    pub(crate) fn send_span(&self, record: &mut OutgoingRecord) -> Span {
        let span = tracing::info_span!(
            target: "ackstream",
            "send",
            "otel.name" = format!("send {}", record.topic),
            "otel.kind" = "producer",
            "messaging.system" = "kafka",
            "messaging.operation.type" = "send",
            "messaging.destination.name" = &*record.topic,
            "messaging.destination.partition.id" = record.partition.map(|p| p.to_string()),
        );
        if let Some(p) = &self.propagator {
            p.inject(&span, &mut record.headers);
        }
        span
    }
}

/// The `send` span of publishing `record` (none without tracing), its context injected.
pub(crate) fn sending(tracing: Option<&Tracing>, record: &mut OutgoingRecord) -> Span {
    match tracing {
        Some(t) => t.send_span(record),
        None => Span::none(),
    }
}

/// The span of one delivery, kept with it (in its message) until it is settled, so that its
/// settle is recorded on that span wherever and whenever the settle is made: in its own
/// handler, in the handler of another delivery that kept it, in another task, or in a
/// producer's delivery callback on another thread. Empty without tracing: nothing is made or
/// cloned per record then.
///
/// The span ends when its delivery has both run and been settled (or can no longer be: every
/// handle to its message is gone). A lock, not a cell: whichever thread settles takes it.
#[derive(Default)]
pub(crate) struct DeliverySpan {
    /// Whether the slot holds a span: a settle of a delivery whose span nobody wanted (no
    /// subscriber) reads this flag only, and takes no lock.
    kept: AtomicBool,
    slot: Mutex<Option<Span>>,
}

impl DeliverySpan {
    /// Keeps `span` as the delivery's (before its run: every settle comes after).
    pub(crate) fn keep(&self, span: Span) {
        *self.slot() = Some(span);
        self.kept.store(true, Ordering::Release);
    }

    /// Whether a span is kept: false for every delivery without tracing, and for every one
    /// whose span no subscriber wanted.
    #[inline]
    pub(crate) fn is_kept(&self) -> bool {
        self.kept.load(Ordering::Acquire)
    }

    /// Takes the span, for the delivery's one settle (or to let the span end).
    pub(crate) fn take(&self) -> Option<Span> {
        if !self.kept.load(Ordering::Acquire) {
            return None;
        }
        let span = self.slot().take();
        self.kept.store(false, Ordering::Release);
        span
    }

    /// Forgets the span: the message is reused for another delivery.
    pub(crate) fn reset(&mut self) {
        if std::mem::take(self.kept.get_mut()) {
            *self.slot.get_mut().unwrap_or_else(PoisonError::into_inner) = None;
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Span>> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Records `disposition`, the settle applied, on its delivery's `span` (the one kept with the
/// delivery, not the current one: a settle can be made anywhere).
pub(crate) fn record_settle(span: &Span, disposition: Disposition) {
    span.record(
        attributes::SETTLE,
        match disposition {
            Disposition::Ack => "ack",
            Disposition::Reject => "reject",
            Disposition::Nack { .. } => "nack",
        },
    );
}

/// Records a failure on the current span: called by the ack policy inside the failed
/// delivery's span (see `PartitionContext::trace_failure`).
pub(crate) fn record_failure(kind: &'static str, reason: &str) {
    let span = Span::current();
    span.record(attributes::ERROR_TYPE, kind);
    span.record(attributes::REASON, reason);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_names(span: &Span) -> Vec<&'static str> {
        let meta = span
            .metadata()
            .expect("enabled under the test's subscriber");
        meta.fields().iter().map(|f| f.name()).collect()
    }

    #[test]
    fn the_spans_carry_exactly_the_names_of_the_attribute_table() {
        let _guard = tracing::subscriber::set_default(tracing_subscriber::registry());
        let record = Record {
            topic: "t".into(),
            partition: 0,
            offset: 5,
            key: None,
            headers: Headers::default(),
            timestamp: None,
            payload: "payload".into(),
        };
        let process = Tracing::spans().process_span("process t", &record, Some("g"), 1);
        assert_eq!(field_names(&process), attributes::PROCESS);
        let mut outgoing = OutgoingRecord::new("t", "payload");
        let send = Tracing::spans().send_span(&mut outgoing);
        assert_eq!(field_names(&send), attributes::SEND);
    }
}
