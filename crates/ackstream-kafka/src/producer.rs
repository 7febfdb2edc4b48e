//! Publishing: one producer per broker (librdkafka's, polled by its own thread), keys placed by
//! murmur2 as Java clients do. Each record carries the callback its delivery report calls:
//! `publish` awaits it through a oneshot channel, `publish_then` hands it to the caller, so an
//! output needs no task or timer of its own.

use std::time::{Duration, Instant};

use ackstream_core::backend::{Answer, DeliveryCallback};
use ackstream_core::{BackendError, OutgoingRecord, RecordPosition};
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, ProducerContext, ThreadedProducer};

use crate::error::kafka_error;
use crate::settings::Settings;

/// How long a record waits for room in a full producer queue before its publish fails.
const QUEUE_FULL_PATIENCE: Duration = Duration::from_secs(30);

/// The broker's producer.
pub(crate) type Producer = ThreadedProducer<Deliveries>;

/// Calls each record's callback with its delivery report.
pub(crate) struct Deliveries;

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = DeliveryCallback;

    fn delivery(&self, result: &DeliveryResult<'_>, done: Self::DeliveryOpaque) {
        let answer = match result {
            Ok(m) => Ok(RecordPosition {
                partition: m.partition(),
                offset: m.offset(),
            }),
            Err((e, m)) => Err(kafka_error(
                format!(
                    "publish to {} partition {} failed",
                    m.topic(),
                    m.partition()
                ),
                e.clone(),
            )),
        };
        done.call(answer);
    }
}

pub(crate) fn create(settings: &Settings) -> Result<Producer, BackendError> {
    let mut config = settings.client_config(&[]);
    // Place keys where Java clients (and the in-memory broker) do; librdkafka's default is CRC32.
    if !settings.extra.iter().any(|(k, _)| k == "partitioner") {
        config.set("partitioner", "murmur2_random");
    }
    config
        .create_with_context(Deliveries)
        .map_err(|e| kafka_error("cannot create Kafka producer", e))
}

/// Publishes `record` and waits for its delivery report.
pub(crate) async fn publish(
    producer: &Producer,
    record: OutgoingRecord,
) -> Result<RecordPosition, BackendError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let done = Answer::new(move |answer| {
        let _ = tx.send(answer);
    });
    let topic = record.topic.clone();
    let partition = record.partition;
    enqueue(producer, record, done).await;
    rx.await.unwrap_or_else(|_| {
        let at = partition.map_or_else(String::new, |p| format!(" partition {p}"));
        Err(BackendError::new(format!(
            "publish to {topic}{at}: the producer went away before it answered"
        )))
    })
}

/// Hands `record` to the producer, waiting while its queue is full; `done` gets the delivery
/// report (or the reason the record could not be handed over).
pub(crate) async fn enqueue(
    producer: &Producer,
    record: OutgoingRecord,
    mut done: DeliveryCallback,
) {
    // Read only once the queue is full: a clock read per record shows in a profile.
    let mut since: Option<Instant> = None;
    loop {
        match send(producer, &record, done) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                if since.get_or_insert_with(Instant::now).elapsed() < QUEUE_FULL_PATIENCE =>
            {
                done = back;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err((e, back)) => return refused(&record, e, back),
        }
    }
}

/// Hands `record` to the producer if its queue has room; gives both back if it is full.
#[allow(clippy::result_large_err)] // given back only when the queue is full
pub(crate) fn try_enqueue(
    producer: &Producer,
    record: OutgoingRecord,
    done: DeliveryCallback,
) -> Result<(), (OutgoingRecord, DeliveryCallback)> {
    match send(producer, &record, done) {
        Ok(()) => Ok(()),
        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
            Err((record, back))
        }
        Err((e, back)) => {
            refused(&record, e, back);
            Ok(())
        }
    }
}

/// Calls `done` with why `record` was not handed over.
fn refused(record: &OutgoingRecord, e: KafkaError, done: DeliveryCallback) {
    let at = record
        .partition
        .map_or_else(String::new, |p| format!(" partition {p}"));
    done.call(Err(kafka_error(
        format!("publish to {}{at} failed", record.topic),
        e,
    )));
}

/// One attempt to hand `record` over; the callback comes back with the error.
#[allow(clippy::result_large_err)]
fn send(
    producer: &Producer,
    record: &OutgoingRecord,
    done: DeliveryCallback,
) -> Result<(), (KafkaError, DeliveryCallback)> {
    let mut base = BaseRecord::with_opaque_to(&record.topic, done).payload(&record.payload[..]);
    // (No header list at all for a record without headers: librdkafka allocates one.)
    if !record.headers.is_empty() {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for h in &record.headers {
            headers = headers.insert(Header {
                key: &h.key,
                value: h.value.as_deref(),
            });
        }
        base = base.headers(headers);
    }
    if let Some(key) = &record.key {
        base = base.key(&key[..]);
    }
    if let Some(p) = record.partition {
        base = base.partition(p);
    }
    if let Some(t) = record.timestamp {
        base = base.timestamp(t);
    }
    producer
        .send(base)
        .map_err(|(e, back)| (e, back.delivery_opaque))
}
