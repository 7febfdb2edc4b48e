//! W3C trace context (`traceparent`, `tracestate`) in record headers, through OpenTelemetry:
//! the [`Propagator`] a broker's [`Tracing`] needs so that a record's trace crosses services.
//! It works with a `tracing-opentelemetry` layer installed (which is also what exports the
//! spans, to OTLP or any exporter); without one the headers stay empty of context.
//!
//! ```
//! use ackstream::prelude::*;
//! use ackstream::memory::MemoryBroker;
//! let broker = MemoryBroker::new();
//! broker.trace(ackstream::observe::otel::tracing());
//! ```

use ackstream_core::Headers;
use ackstream_core::trace::{Propagator, Tracing};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Spans, with W3C trace context carried in headers; a consumed record's span is its
/// producer's child (call [`Tracing::link_to_producer`] on the result to link instead).
pub fn tracing() -> Tracing {
    Tracing::propagated(W3c::default())
}

/// W3C trace context through OpenTelemetry's `TraceContextPropagator`.
#[derive(Debug, Default)]
pub struct W3c(TraceContextPropagator);

struct Writer<'a>(&'a mut Headers);

impl Injector for Writer<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value);
    }
}

struct Reader<'a>(&'a Headers);

impl Extractor for Reader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get_str(key)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|h| h.key.as_str()).collect()
    }
}

impl Propagator for W3c {
    fn inject(&self, span: &Span, headers: &mut Headers) {
        self.0.inject_context(&span.context(), &mut Writer(headers));
    }

    fn extract(&self, headers: &Headers, span: &Span, link: bool) {
        let context = self.0.extract(&Reader(headers));
        let remote = context.span().span_context().clone();
        if !remote.is_valid() {
            return;
        }
        if link {
            span.add_link(remote);
        } else {
            let _ = span.set_parent(context);
        }
    }
}
