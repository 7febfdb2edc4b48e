//! Publishing: one `FutureProducer` per broker, keys placed by murmur2 as Java clients do.

use std::time::Duration;

use ackstream_core::{BackendError, OutgoingRecord, RecordPosition};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::error::kafka_error;
use crate::settings::Settings;

const SEND_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn create(settings: &Settings) -> Result<FutureProducer, BackendError> {
    let mut config = settings.client_config(&[]);
    // Place keys where Java clients (and the in-memory broker) do; librdkafka's default is CRC32.
    if !settings.extra.iter().any(|(k, _)| k == "partitioner") {
        config.set("partitioner", "murmur2_random");
    }
    config
        .create()
        .map_err(|e| kafka_error("cannot create Kafka producer", e))
}

pub(crate) async fn publish(
    producer: &FutureProducer,
    record: OutgoingRecord,
) -> Result<RecordPosition, BackendError> {
    let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
    for h in &record.headers {
        headers = headers.insert(Header {
            key: &h.key,
            value: h.value.as_deref(),
        });
    }
    let mut future = FutureRecord::to(&record.topic)
        .payload(&record.payload[..])
        .headers(headers);
    if let Some(key) = &record.key {
        future = future.key(&key[..]);
    }
    if let Some(p) = record.partition {
        future = future.partition(p);
    }
    if let Some(t) = record.timestamp {
        future = future.timestamp(t);
    }
    match producer.send(future, SEND_TIMEOUT).await {
        Ok(delivery) => Ok(RecordPosition {
            partition: delivery.partition,
            offset: delivery.offset,
        }),
        Err((e, _)) => {
            let at = record
                .partition
                .map_or_else(String::new, |p| format!(" partition {p}"));
            Err(kafka_error(
                format!("publish to {}{at} failed", record.topic),
                e,
            ))
        }
    }
}
