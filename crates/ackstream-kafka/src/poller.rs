//! The poll thread: the one reader of a librdkafka consumer.
//!
//! librdkafka's consumer is built to be polled from one thread (each poll updates
//! consumer-wide state under a lock), so one thread pops every record, copies it out, and hands
//! it to its partition's [`Inbox`] in batches; the partitions' handlers run on the async
//! runtime. The same thread serves librdkafka's callbacks (rebalances, commit results) and the
//! feeds' requests: seeks (a nack's rewind) and resumes (a drained inbox). Doing the seeks here,
//! between two polls, is what makes them exact: every record popped before the seek is dropped,
//! every record popped after it comes from the new position.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ackstream_core::{Header, Record, TopicPartition};
use bytes::{Bytes, BytesMut};
use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Headers as _, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::consumer::RdConsumer;
use crate::inbox::{Handover, Inbox};

/// Records handed to an inbox at once (fewer when the consumer runs dry).
const BATCH: usize = 128;
/// How long an idle poll blocks; also the longest a request waits while nothing arrives.
const IDLE_WAIT: Duration = Duration::from_millis(10);
const SEEK_TIMEOUT: Duration = Duration::from_secs(10);
const SEEK_RETRY: Duration = Duration::from_millis(50);

/// Payloads and keys are copied out of librdkafka into shared chunks of this size, so most
/// records cost no allocation of their own. A chunk is freed once every record copied into it
/// is dropped.
const CHUNK: usize = 64 * 1024;
/// Values larger than this get their own allocation rather than a chunk.
const CHUNK_MAX_VALUE: usize = 4 * 1024;

/// What a feed asks of the poll thread.
#[derive(Debug)]
pub(crate) enum Request {
    /// Seek the inbox's partition to the offset its state holds.
    Seek(Arc<Inbox>),
    /// The feed took a paused inbox's records: resume fetching.
    Resume(Arc<Inbox>),
}

/// Requests from the feeds, served between two polls.
#[derive(Debug, Default)]
pub(crate) struct Requests {
    pending: AtomicBool,
    list: Mutex<Vec<Request>>,
}

impl Requests {
    pub(crate) fn push(&self, request: Request) {
        self.list
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(request);
        self.pending.store(true, Ordering::Release);
    }

    pub(crate) fn take(&self) -> Vec<Request> {
        if !self.pending.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        std::mem::take(&mut *self.list.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The inbox the current run of records goes to, valid while the assignment is unchanged.
struct Current {
    inbox: Arc<Inbox>,
    generation: u64,
}

pub(crate) struct Poller {
    consumer: Arc<RdConsumer>,
    requests: Arc<Requests>,
    stop: Arc<AtomicBool>,
    chunks: BytesMut,
    current: Option<Current>,
    batch: Vec<Record>,
    /// Seeks that failed, with when to try again.
    retry: Vec<(Instant, Arc<Inbox>)>,
    /// Whether the handler reads headers; decoding them is skipped if not.
    headers: bool,
}

impl Poller {
    pub(crate) fn new(
        consumer: Arc<RdConsumer>,
        requests: Arc<Requests>,
        stop: Arc<AtomicBool>,
        headers: bool,
    ) -> Self {
        Self {
            consumer,
            requests,
            stop,
            chunks: BytesMut::new(),
            current: None,
            batch: Vec::with_capacity(BATCH),
            retry: Vec::new(),
            headers,
        }
    }

    pub(crate) fn run(mut self) {
        // Records borrow the consumer they were polled from, so poll through a handle of our own.
        let consumer = self.consumer.clone();
        while !self.stop.load(Ordering::Acquire) {
            self.serve_requests();
            match consumer.poll(Duration::ZERO) {
                Some(Ok(m)) => self.dispatch(&m),
                Some(Err(e)) => tracing::warn!(error = %e, "Kafka consumer error"),
                None => {
                    // Ran dry (or served a callback): hand over what is pending, then block
                    // until something arrives.
                    self.flush();
                    match consumer.poll(IDLE_WAIT) {
                        Some(Ok(m)) => self.dispatch(&m),
                        Some(Err(e)) => tracing::warn!(error = %e, "Kafka consumer error"),
                        None => {}
                    }
                }
            }
        }
        self.flush();
    }

    fn dispatch(&mut self, m: &BorrowedMessage<'_>) {
        let generation = self.consumer.context().generation();
        let same = self.current.as_ref().is_some_and(|c| {
            c.generation == generation
                && c.inbox.tp.partition == m.partition()
                && *c.inbox.tp.topic == *m.topic()
        });
        if !same {
            self.flush();
            self.current = self
                .consumer
                .context()
                .inbox(m.topic(), m.partition())
                .map(|inbox| Current { inbox, generation });
        }
        let Some(current) = &self.current else {
            tracing::debug!(
                topic = m.topic(),
                partition = m.partition(),
                offset = m.offset(),
                "record for an unassigned partition dropped"
            );
            return;
        };
        let record = record(&current.inbox.tp, &mut self.chunks, m, self.headers);
        self.batch.push(record);
        if self.batch.len() >= BATCH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let Some(current) = &self.current else {
            self.batch.clear();
            return;
        };
        if current.inbox.hand_over(&mut self.batch) == Handover::Pause {
            let tp = &current.inbox.tp;
            tracing::debug!(%tp, "inbox full: partition paused");
            if let Err(e) = self.consumer.pause(&tpl(tp)) {
                tracing::warn!(%tp, error = %e, "cannot pause partition");
            }
        }
    }

    fn serve_requests(&mut self) {
        let mut requests = self.requests.take();
        if !self.retry.is_empty() {
            let now = Instant::now();
            let (due, later): (Vec<_>, Vec<_>) =
                self.retry.drain(..).partition(|(at, _)| *at <= now);
            self.retry = later;
            requests.extend(due.into_iter().map(|(_, inbox)| Request::Seek(inbox)));
        }
        for request in requests {
            match request {
                Request::Seek(inbox) => self.seek(inbox),
                Request::Resume(inbox) => self.resume(&inbox),
            }
        }
    }

    fn seek(&mut self, inbox: Arc<Inbox>) {
        if self
            .current
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(&c.inbox, &inbox))
        {
            // Popped before the seek: the inbox would drop them anyway.
            self.batch.clear();
        }
        let (offset, paused) = {
            let state = inbox.state();
            match state.seek {
                Some(offset) if !state.closed => (offset, state.paused),
                _ => return, // done by an earlier request, or revoked
            }
        };
        let tp = &inbox.tp;
        if let Err(e) = self.consumer.seek(
            &tp.topic,
            tp.partition,
            Offset::Offset(offset),
            SEEK_TIMEOUT,
        ) {
            tracing::warn!(%tp, offset, error = %e, "seek failed; retrying");
            self.retry.push((Instant::now() + SEEK_RETRY, inbox));
            return;
        }
        let mut state = inbox.state();
        if state.seek == Some(offset) {
            state.seek = None;
        }
        // The inbox was emptied for the seek: a pause for a full inbox no longer applies.
        let resume = paused && state.paused;
        state.paused = false;
        drop(state);
        if resume {
            self.resume(&inbox);
        }
    }

    fn resume(&self, inbox: &Inbox) {
        if inbox.state().closed {
            return;
        }
        let tp = &inbox.tp;
        tracing::debug!(%tp, "inbox drained: partition resumed");
        if let Err(e) = self.consumer.resume(&tpl(tp)) {
            tracing::warn!(%tp, error = %e, "cannot resume partition");
        }
    }
}

fn tpl(tp: &TopicPartition) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&tp.topic, tp.partition);
    tpl
}

/// Copies a value into the current chunk (see [`CHUNK`]).
fn copy(chunks: &mut BytesMut, value: &[u8]) -> Bytes {
    if value.is_empty() {
        return Bytes::new();
    }
    if value.len() > CHUNK_MAX_VALUE {
        return Bytes::copy_from_slice(value);
    }
    if chunks.capacity() - chunks.len() < value.len() {
        *chunks = BytesMut::with_capacity(CHUNK);
    }
    chunks.extend_from_slice(value);
    chunks.split().freeze()
}

fn record(
    tp: &TopicPartition,
    chunks: &mut BytesMut,
    m: &BorrowedMessage<'_>,
    with_headers: bool,
) -> Record {
    let headers = with_headers
        .then(|| m.headers())
        .flatten()
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
        key: m.key().map(|k| copy(chunks, k)),
        headers,
        timestamp: m.timestamp().to_millis(),
        payload: m.payload().map(|p| copy(chunks, p)).unwrap_or_default(),
    }
}
