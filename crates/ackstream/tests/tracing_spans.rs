//! Spans after OpenTelemetry's messaging conventions, checked with the OpenTelemetry SDK's
//! in-memory exporter behind `tracing-opentelemetry`: a record published, consumed, its return
//! value published and consumed again is one trace (each `process` span the child of the
//! `send` span whose context its record carried), or linked traces; attributes and settles
//! are on the spans, each on the span of the record it settles, wherever the settle runs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ackstream::memory::MemoryBroker;
use ackstream::prelude::*;
use ackstream::trace::attributes;
use opentelemetry::trace::{SpanKind, TracerProvider as _};
use opentelemetry::{Key, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt;

const WAIT: Duration = Duration::from_secs(30);

/// The tests of this file run one at a time. tracing caches each callsite's interest when the
/// callsite is first hit, from the dispatchers registered then; a test thread hitting a span
/// callsite while another registers its own dispatcher can cache "never" for it (seen once in
/// CI: a `process` span missing), which no app with one global subscriber meets.
async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    // (tokio's: each test has its own runtime; a panicking test does not poison it.)
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

/// Installs an OpenTelemetry layer on this thread; returns what it exported so far.
fn exporter() -> (
    InMemorySpanExporter,
    SdkTracerProvider,
    tracing::subscriber::DefaultGuard,
) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
    let guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
    (exporter, provider, guard)
}

/// Installs an OpenTelemetry layer for the whole process (once), for a test whose spans end on
/// threads it does not own (librdkafka's): tracing-subscriber's registry closes a span's
/// parent through the dispatcher current on the thread where the child ends, so under a
/// thread-local one a parent whose child ends elsewhere would never end. Only one test uses
/// it; the others' threads keep their own.
#[cfg(feature = "kafka")]
fn global_exporter() -> (InMemorySpanExporter, SdkTracerProvider) {
    static INSTALLED: std::sync::OnceLock<(InMemorySpanExporter, SdkTracerProvider)> =
        std::sync::OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let exporter = InMemorySpanExporter::default();
            let provider = SdkTracerProvider::builder()
                .with_simple_exporter(exporter.clone())
                .build();
            let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
            tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
                .expect("no other global subscriber in this test binary");
            (exporter, provider)
        })
        .clone()
}

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == Key::from(key.to_owned()))
        .map(|kv| &kv.value)
}

fn text(span: &SpanData, key: &str) -> String {
    attribute(span, key)
        .map(|v| v.as_str().into_owned())
        .unwrap_or_else(|| panic!("{key} on {}: {:?}", span.name, span.attributes))
}

/// Every value `key` was given on `span`, in order (a field recorded twice is there twice).
fn texts(span: &SpanData, key: &str) -> Vec<String> {
    span.attributes
        .iter()
        .filter(|kv| kv.key == Key::from(key.to_owned()))
        .map(|kv| kv.value.as_str().into_owned())
        .collect()
}

/// The `process {topic}` span of the delivery of `offset` (its only one).
fn process_of<'a>(spans: &'a [SpanData], topic: &str, offset: i64) -> &'a SpanData {
    let name = format!("process {topic}");
    let offset = Value::I64(offset);
    let found: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.name == name && attribute(s, attributes::OFFSET) == Some(&offset))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {name} span of offset {offset} among {:?}",
        spans
            .iter()
            .map(|s| (&s.name, attribute(s, attributes::OFFSET)))
            .collect::<Vec<_>>()
    );
    found[0]
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
        panic!(
            "a span {name} in {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        )
    })
}

/// A pipeline: `in` → (return value) → `out` → a second subscriber; a record published to
/// `in` from a client span; returns once both subscribers settled.
async fn pipeline(tracing: ackstream::trace::Tracing) {
    let broker = MemoryBroker::new();
    broker.trace(tracing);
    broker
        .subscriber("in")
        .group_id("transform")
        .auto_offset_reset(OffsetReset::Earliest)
        .ack_policy(AckPolicy::NackOnError)
        .publish_to("out")
        .handle(|body: String| async move { body.to_uppercase() });
    let (done, mut finished) = tokio::sync::mpsc::unbounded_channel();
    broker
        .subscriber("out")
        .group_id("sink")
        .auto_offset_reset(OffsetReset::Earliest)
        .ack_policy(AckPolicy::NackOnError)
        .handle(move |body: String| {
            let done = done.clone();
            async move {
                let _ = done.send(body);
            }
        });
    let app = App::new(broker.clone()).spawn();
    use tracing::Instrument;
    async { broker.publish("in", "hello").key("k1").await.unwrap() }
        .instrument(tracing::info_span!("client"))
        .await;
    let body = tokio::time::timeout(WAIT, finished.recv()).await.unwrap();
    assert_eq!(body.as_deref(), Some("HELLO"));
    tokio::time::timeout(WAIT, broker.wait_committed("sink", "out", 1))
        .await
        .unwrap();
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn a_trace_follows_a_record_through_a_pipeline() {
    let _serial = one_at_a_time().await;
    let (exporter, provider, _guard) = exporter();
    pipeline(ackstream::observe::otel::tracing()).await;
    let _ = provider.force_flush();
    let spans = exporter.get_finished_spans().unwrap();
    let client = named(&spans, "client");
    let send_in = named(&spans, "send in");
    let process_in = named(&spans, "process in");
    let send_out = named(&spans, "send out");
    let process_out = named(&spans, "process out");
    let trace = client.span_context.trace_id();
    for s in [send_in, process_in, send_out, process_out] {
        assert_eq!(
            s.span_context.trace_id(),
            trace,
            "{} in the client's trace",
            s.name
        );
    }
    assert_eq!(send_in.parent_span_id, client.span_context.span_id());
    assert_eq!(process_in.parent_span_id, send_in.span_context.span_id());
    assert!(
        process_in.parent_span_is_remote,
        "the parent came through the record's headers"
    );
    assert_eq!(send_out.parent_span_id, process_in.span_context.span_id());
    assert_eq!(process_out.parent_span_id, send_out.span_context.span_id());
    assert_eq!(send_in.span_kind, SpanKind::Producer);
    assert_eq!(process_in.span_kind, SpanKind::Consumer);

    assert_eq!(text(process_in, attributes::SYSTEM), "kafka");
    assert_eq!(text(process_in, attributes::OPERATION_TYPE), "process");
    assert_eq!(text(process_in, attributes::DESTINATION), "in");
    assert_eq!(text(process_in, attributes::PARTITION), "0");
    assert_eq!(text(process_in, attributes::GROUP), "transform");
    assert_eq!(text(process_in, attributes::KEY), "k1");
    assert_eq!(
        attribute(process_in, attributes::OFFSET),
        Some(&Value::I64(0))
    );
    assert_eq!(
        attribute(process_in, attributes::ATTEMPT),
        Some(&Value::I64(1))
    );
    assert_eq!(
        text(process_in, attributes::SETTLE),
        "ack",
        "acked once its output was confirmed"
    );
    assert_eq!(text(process_out, attributes::SETTLE), "ack");
    assert_eq!(text(send_out, attributes::DESTINATION), "out");
    assert!(attribute(process_in, attributes::ERROR_TYPE).is_none());
}

#[tokio::test(flavor = "current_thread")]
async fn a_consumer_span_can_link_to_its_producer_instead() {
    let _serial = one_at_a_time().await;
    let (exporter, provider, _guard) = exporter();
    pipeline(ackstream::observe::otel::tracing().link_to_producer()).await;
    let _ = provider.force_flush();
    let spans = exporter.get_finished_spans().unwrap();
    let send_in = named(&spans, "send in");
    let process_in = named(&spans, "process in");
    assert_ne!(
        process_in.span_context.trace_id(),
        send_in.span_context.trace_id()
    );
    let links = &process_in.links.links;
    assert_eq!(links.len(), 1, "{links:?}");
    assert_eq!(
        links[0].span_context.span_id(),
        send_in.span_context.span_id()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_delivery_records_its_error_and_nack_and_the_retry_its_ack() {
    let _serial = one_at_a_time().await;
    let (exporter, provider, _guard) = exporter();
    let broker = MemoryBroker::new();
    broker.trace(ackstream::trace::Tracing::spans());
    broker.publish("flaky", "x").await.unwrap();
    broker
        .subscriber("flaky")
        .group_id("g")
        .auto_offset_reset(OffsetReset::Earliest)
        .ack_policy(AckPolicy::NackOnError)
        .retry_backoff(ackstream::Backoff::none())
        .handle(|msg: KafkaMessage| async move {
            if msg.attempt() == 1 {
                return Err(HandlerError::from("not yet"));
            }
            Ok(())
        });
    let app = App::new(broker.clone()).spawn();
    tokio::time::timeout(WAIT, broker.wait_committed("g", "flaky", 1))
        .await
        .unwrap();
    app.shutdown().await.unwrap();
    let _ = provider.force_flush();
    let spans = exporter.get_finished_spans().unwrap();
    let process: Vec<&SpanData> = spans.iter().filter(|s| s.name == "process flaky").collect();
    assert_eq!(process.len(), 2, "one span per delivery");
    let (first, second) = (process[0], process[1]);
    assert_eq!(attribute(first, attributes::ATTEMPT), Some(&Value::I64(1)));
    assert_eq!(text(first, attributes::ERROR_TYPE), "error");
    assert_eq!(text(first, attributes::REASON), "not yet");
    assert_eq!(text(first, attributes::SETTLE), "nack");
    assert_eq!(attribute(second, attributes::ATTEMPT), Some(&Value::I64(2)));
    assert_eq!(text(second, attributes::SETTLE), "ack");
}

/// Under `Manual`, the handler of offset 1 acks the message of offset 0 (kept from its
/// delivery, unsettled) and then rejects its own: each settle lands on the span of the record
/// it settles, not on the span current where it is made.
#[tokio::test(flavor = "current_thread")]
async fn a_settle_is_recorded_on_the_settled_records_span_not_the_current_one() {
    let _serial = one_at_a_time().await;
    let (exporter, provider, _guard) = exporter();
    let broker = MemoryBroker::new();
    broker.trace(ackstream::trace::Tracing::spans());
    broker.publish("kept", "first").await.unwrap();
    broker.publish("kept", "second").await.unwrap();
    let kept: Arc<Mutex<Option<KafkaMessage>>> = Arc::default();
    broker
        .subscriber("kept")
        .group_id("g")
        .auto_offset_reset(OffsetReset::Earliest)
        .ack_policy(AckPolicy::Manual)
        .handle(move |msg: KafkaMessage| {
            let kept = kept.clone();
            async move {
                if msg.offset() == 0 {
                    *kept.lock().unwrap() = Some(msg);
                    return Ok(());
                }
                let first = kept.lock().unwrap().take().expect("offset 0 came first");
                first.ack().await?;
                msg.reject().await?;
                Ok::<(), HandlerError>(())
            }
        });
    let app = App::new(broker.clone()).spawn();
    tokio::time::timeout(WAIT, broker.wait_committed("g", "kept", 2))
        .await
        .unwrap();
    app.shutdown().await.unwrap();
    let _ = provider.force_flush();
    let spans = exporter.get_finished_spans().unwrap();
    let (first, second) = (process_of(&spans, "kept", 0), process_of(&spans, "kept", 1));
    assert_eq!(
        (
            texts(first, attributes::SETTLE),
            texts(second, attributes::SETTLE)
        ),
        (vec!["ack".to_owned()], vec!["reject".to_owned()]),
        "settles on the spans of (offset 0, acked from offset 1's handler) and (offset 1, \
         rejected by its own handler)"
    );
}

/// Settles made by another task, after the handlers returned, land on the records' spans.
#[tokio::test(flavor = "current_thread")]
async fn a_settle_from_a_spawned_task_is_recorded_on_its_records_span() {
    let _serial = one_at_a_time().await;
    let (exporter, provider, _guard) = exporter();
    let broker = MemoryBroker::new();
    broker.trace(ackstream::trace::Tracing::spans());
    broker.publish("later", "first").await.unwrap();
    broker.publish("later", "second").await.unwrap();
    let (hand_over, mut handed) = tokio::sync::mpsc::unbounded_channel::<KafkaMessage>();
    let settler = tokio::spawn(async move {
        while let Some(msg) = handed.recv().await {
            if msg.offset() == 0 {
                msg.ack().await.unwrap();
            } else {
                msg.reject().await.unwrap();
            }
        }
    });
    broker
        .subscriber("later")
        .group_id("g")
        .auto_offset_reset(OffsetReset::Earliest)
        .ack_policy(AckPolicy::Manual)
        .handle(move |msg: KafkaMessage| {
            let hand_over = hand_over.clone();
            async move {
                hand_over.send(msg).unwrap();
            }
        });
    let app = App::new(broker.clone()).spawn();
    tokio::time::timeout(WAIT, broker.wait_committed("g", "later", 2))
        .await
        .unwrap();
    app.shutdown().await.unwrap();
    settler.abort();
    let _ = provider.force_flush();
    let spans = exporter.get_finished_spans().unwrap();
    let (first, second) = (
        process_of(&spans, "later", 0),
        process_of(&spans, "later", 1),
    );
    assert_eq!(
        (
            texts(first, attributes::SETTLE),
            texts(second, attributes::SETTLE)
        ),
        (vec!["ack".to_owned()], vec!["reject".to_owned()]),
        "settles on the spans of offsets 0 (acked) and 1 (rejected), both by another task"
    );
}

/// Whether a delivery gets a span is decided per delivery, not once per partition: an app
/// that started while nobody listened (no span made, at no cost) traces the records delivered
/// after a subscriber starts listening.
#[tokio::test(flavor = "current_thread")]
async fn spans_begin_when_a_subscriber_starts_listening_while_the_app_runs() {
    let _serial = one_at_a_time().await;
    let broker = MemoryBroker::new();
    broker.trace(ackstream::trace::Tracing::spans());
    broker
        .subscriber("late")
        .group_id("g")
        .auto_offset_reset(OffsetReset::Earliest)
        .handle(|_: String| async {});
    let app = App::new(broker.clone()).spawn();
    broker.publish("late", "unheard").await.unwrap();
    tokio::time::timeout(WAIT, broker.wait_committed("g", "late", 1))
        .await
        .unwrap();
    let (exporter, provider, _guard) = exporter();
    broker.publish("late", "heard").await.unwrap();
    tokio::time::timeout(WAIT, broker.wait_committed("g", "late", 2))
        .await
        .unwrap();
    app.shutdown().await.unwrap();
    let _ = provider.force_flush();
    let spans = exporter.get_finished_spans().unwrap();
    assert_eq!(
        texts(process_of(&spans, "late", 1), attributes::SETTLE),
        vec!["ack".to_owned()],
        "the record delivered after the subscriber started has its span and its ack"
    );
}

/// `publish_to` on Kafka (librdkafka's mock cluster): the input is acked from the producer's
/// delivery callback, on librdkafka's thread, once its output is confirmed; the ack is on the
/// input's `process` span.
#[cfg(feature = "kafka")]
#[tokio::test(flavor = "current_thread")]
async fn an_input_acked_from_the_producer_callback_has_the_ack_on_its_span() {
    let _serial = one_at_a_time().await;
    use ackstream::event::Event;
    use ackstream::kafka::KafkaBroker;
    use ackstream::kafka::rdkafka::ClientConfig;
    use ackstream::kafka::rdkafka::producer::{BaseProducer, Producer};
    use ackstream::{Disposition, SettleStatus};

    // Owns the mock cluster until the test ends.
    let owner: BaseProducer = ClientConfig::new()
        .set("test.mock.num.brokers", "1")
        .create()
        .expect("start the mock cluster");
    let cluster = owner.client().mock_cluster().expect("mock cluster");
    for topic in ["orders", "invoices"] {
        cluster.create_topic(topic, 1, 1).expect("create topic");
    }
    let bootstrap = cluster.bootstrap_servers();

    let (exporter, provider) = global_exporter();
    let broker = KafkaBroker::new(bootstrap).commit_interval(Duration::from_millis(100));
    broker.trace(ackstream::trace::Tracing::spans());
    let (settled, mut settles) = tokio::sync::mpsc::unbounded_channel();
    broker.observe(move |event| {
        if let Event::Settled { tp, offset, status } = event
            && &*tp.topic == "orders"
        {
            let _ = settled.send((*offset, *status));
        }
    });
    broker.publish("orders", "o-1").partition(0).await.unwrap();
    broker
        .subscriber("orders")
        .group_id("billing")
        .auto_offset_reset(OffsetReset::Earliest)
        .ack_policy(AckPolicy::NackOnError)
        // The mock cluster's first join waits 3 s; a shorter session would expire meanwhile.
        .session_timeout(Duration::from_millis(4000))
        .heartbeat_interval(Duration::from_millis(1000))
        .publish_to("invoices")
        .handle(|body: String| async move { format!("invoice for {body}") });
    let app = App::new(broker.clone()).spawn();
    let settle = tokio::time::timeout(WAIT, settles.recv()).await.unwrap();
    assert_eq!(settle, Some((0, SettleStatus::Settled(Disposition::Ack))));
    app.shutdown().await.unwrap();
    let _ = provider.force_flush();
    let spans = exporter.get_finished_spans().unwrap();
    let input = process_of(&spans, "orders", 0);
    assert_eq!(
        texts(input, attributes::SETTLE),
        ["ack"],
        "acked from the producer's callback: {:?}",
        input.attributes
    );
    assert_eq!(
        text(named(&spans, "send invoices"), attributes::DESTINATION),
        "invoices"
    );
}

/// Under `AckFirst` the settle comes before the handler: a failure of the handler after it
/// is still recorded on the delivery's span, next to its ack.
#[tokio::test(flavor = "current_thread")]
async fn a_failure_after_the_settle_is_recorded_on_the_same_span() {
    let _serial = one_at_a_time().await;
    let (exporter, provider, _guard) = exporter();
    let broker = MemoryBroker::new();
    broker.trace(ackstream::trace::Tracing::spans());
    broker.publish("early", "x").await.unwrap();
    broker
        .subscriber("early")
        .group_id("g")
        .auto_offset_reset(OffsetReset::Earliest)
        .ack_policy(AckPolicy::AckFirst)
        .handle(|_: String| async move { Err::<(), _>(HandlerError::from("too late to nack")) });
    let app = App::new(broker.clone()).spawn();
    tokio::time::timeout(WAIT, broker.wait_committed("g", "early", 1))
        .await
        .unwrap();
    // The handler fails after its ack, so maybe after the commit: the shutdown drains it.
    app.shutdown().await.unwrap();
    let _ = provider.force_flush();
    let spans = exporter.get_finished_spans().unwrap();
    let span = process_of(&spans, "early", 0);
    assert_eq!(texts(span, attributes::SETTLE), ["ack"]);
    assert_eq!(text(span, attributes::ERROR_TYPE), "error");
    assert_eq!(text(span, attributes::REASON), "too late to nack");
}
