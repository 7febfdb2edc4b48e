//! One assigned partition: its own librdkafka queue, awaited without blocking a thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ackstream_core::backend::PartitionFeed;
use ackstream_core::{BackendError, Header, Record, TopicPartition};
use bytes::{Bytes, BytesMut};
use rdkafka::Offset;
use rdkafka::consumer::Consumer;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::message::{BorrowedMessage, Headers as _, Message};
use tokio::sync::Notify;

use crate::consumer::{DriverContext, RdConsumer};

const SEEK_TIMEOUT: Duration = Duration::from_secs(10);

/// Payloads and keys are copied out of librdkafka into shared chunks of this size, so most
/// records cost no allocation of their own. A chunk is freed once every record copied into it
/// is dropped.
const CHUNK: usize = 64 * 1024;
/// Values larger than this get their own allocation rather than a chunk.
const CHUNK_MAX_VALUE: usize = 4 * 1024;

/// Copies record values into shared chunks (see [`CHUNK`]).
#[derive(Debug, Default)]
struct Chunks(BytesMut);

impl Chunks {
    fn copy(&mut self, value: &[u8]) -> Bytes {
        if value.is_empty() {
            return Bytes::new();
        }
        if value.len() > CHUNK_MAX_VALUE {
            return Bytes::copy_from_slice(value);
        }
        if self.0.capacity() - self.0.len() < value.len() {
            self.0 = BytesMut::with_capacity(CHUNK);
        }
        self.0.extend_from_slice(value);
        self.0.split().freeze()
    }
}

/// Wakes a feed when its queue fills, and tells it to rewind if one of its records was found
/// on the consumer's main queue (which would otherwise be skipped).
#[derive(Debug, Default)]
pub(crate) struct FeedSignal {
    pub(crate) notify: Notify,
    resync: Mutex<Option<i64>>,
    /// Set with `resync`, so the hot path checks it without locking.
    resync_pending: AtomicBool,
}

impl FeedSignal {
    pub(crate) fn resync_at(&self, offset: i64) {
        let mut r = self.resync.lock().unwrap_or_else(|p| p.into_inner());
        *r = Some(r.map_or(offset, |o| o.min(offset)));
        self.resync_pending.store(true, Ordering::Release);
        drop(r);
        self.notify.notify_one();
    }

    fn take_resync(&self) -> Option<i64> {
        if !self.resync_pending.load(Ordering::Acquire) {
            return None;
        }
        let mut r = self.resync.lock().unwrap_or_else(|p| p.into_inner());
        self.resync_pending.store(false, Ordering::Release);
        r.take()
    }
}

/// The records of one assigned partition, from its own librdkafka queue.
pub struct KafkaFeed {
    tp: TopicPartition,
    queue: PartitionQueue<DriverContext>,
    signal: Arc<FeedSignal>,
    consumer: Arc<RdConsumer>,
    chunks: Chunks,
}

impl std::fmt::Debug for KafkaFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaFeed")
            .field("tp", &self.tp)
            .finish_non_exhaustive()
    }
}

impl KafkaFeed {
    /// Splits the partition's messages off the main queue into their own.
    pub(crate) fn split(
        consumer: &Arc<RdConsumer>,
        tp: TopicPartition,
    ) -> Option<(Self, Arc<FeedSignal>)> {
        let mut queue = consumer.split_partition_queue(&tp.topic, tp.partition)?;
        let signal = Arc::new(FeedSignal::default());
        let wake = signal.clone();
        queue.set_nonempty_callback(move || wake.notify.notify_one());
        let feed = Self {
            tp,
            queue,
            signal: signal.clone(),
            consumer: consumer.clone(),
            chunks: Chunks::default(),
        };
        Some((feed, signal))
    }

    fn record(tp: &TopicPartition, chunks: &mut Chunks, m: &BorrowedMessage<'_>) -> Record {
        let headers = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| Header {
                        key: h.key.to_owned(),
                        value: h.value.map(Bytes::copy_from_slice),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Record {
            topic: tp.topic.clone(),
            partition: tp.partition,
            offset: m.offset(),
            key: m.key().map(|k| chunks.copy(k)),
            headers,
            timestamp: m.timestamp().to_millis(),
            payload: m.payload().map(|p| chunks.copy(p)).unwrap_or_default(),
        }
    }
}

impl PartitionFeed for KafkaFeed {
    fn topic_partition(&self) -> &TopicPartition {
        &self.tp
    }

    async fn next(&mut self) -> Option<Record> {
        loop {
            if let Some(offset) = self.signal.take_resync()
                && let Err(e) = self.seek(offset)
            {
                tracing::error!(tp = %self.tp, offset, error = %e, "cannot rewind after a misrouted record");
            }
            match self.queue.poll(Duration::ZERO) {
                Some(Ok(m)) => return Some(Self::record(&self.tp, &mut self.chunks, &m)),
                Some(Err(e)) => {
                    tracing::warn!(tp = %self.tp, error = %e, "consume error");
                }
                // The nonempty callback (or a permit it left) wakes us; no lost wake-ups.
                None => self.signal.notify.notified().await,
            }
        }
    }

    fn seek(&mut self, offset: i64) -> Result<(), BackendError> {
        self.consumer
            .seek(
                &self.tp.topic,
                self.tp.partition,
                Offset::Offset(offset),
                SEEK_TIMEOUT,
            )
            .map_err(|e| BackendError::with_source(format!("seek {}@{offset}", self.tp), e))
    }
}
