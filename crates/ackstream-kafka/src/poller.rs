//! The poll thread: the one reader of a librdkafka consumer.
//!
//! librdkafka's consumer is built to be polled from one thread (each poll updates
//! consumer-wide state under a lock), so one thread pops every record. Each assigned partition
//! has its own librdkafka queue; the thread takes turns over them, pops a batch from each whose
//! [`Inbox`] has room, copies the records out and hands them over. The partitions' handlers run
//! on the async runtime. A partition whose inbox is full is skipped, so its records stay in
//! librdkafka's queue, and librdkafka stops fetching it once that queue reaches its limits.
//!
//! The same thread serves librdkafka's main queue (logs, statistics, rebalances, commit
//! results, errors), drained every turn up to a bound, and the feeds' seeks (a nack's rewind).
//! Doing a seek here, between two pops, makes it exact: every record popped before it is
//! dropped, every record popped after it comes from the new position. A seek belongs to the
//! assignment it was asked in: once that ends, it is dropped, not retried. A fatal error seen
//! here ends the subscriber.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use ackstream_core::{Header, Record, TopicPartition};
use bytes::{Bytes, BytesMut};
use rdkafka::Offset;
use rdkafka::consumer::Consumer;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::message::{BorrowedMessage, Headers as _, Message};

use crate::consumer::{DriverContext, RdConsumer};
use crate::inbox::Inbox;

/// Records popped from one partition per turn.
const BATCH: usize = 256;
/// How long the thread sleeps when nothing arrives and nobody wakes it: a safety net, since
/// librdkafka's queues and the feeds wake it.
const IDLE_WAIT: Duration = Duration::from_millis(10);
/// Main-queue events served per turn at most, so a flood of them (a log burst) still leaves
/// the partitions their turn.
const MAIN_QUEUE_MAX: usize = 512;
const SEEK_TIMEOUT: Duration = Duration::from_secs(10);
const SEEK_RETRY: Duration = Duration::from_millis(50);

/// Payloads and keys are copied out of librdkafka into shared chunks of this size, so most
/// records cost no allocation of their own. A chunk is freed once every record copied into it
/// is dropped.
const CHUNK: usize = 64 * 1024;
/// Values larger than this get their own allocation rather than a chunk.
const CHUNK_MAX_VALUE: usize = 4 * 1024;

/// Wakes the poll thread: librdkafka's queues when they fill, the feeds when they ask.
#[derive(Debug, Default)]
pub(crate) struct Wakeup {
    thread: OnceLock<Thread>,
    /// Seeks asked for since the poll thread last looked.
    seeks: Mutex<Vec<Arc<Inbox>>>,
    seeks_pending: AtomicBool,
}

impl Wakeup {
    pub(crate) fn wake(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }

    /// Asks for the seek the inbox's state holds.
    pub(crate) fn seek(&self, inbox: Arc<Inbox>) {
        self.seeks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(inbox);
        self.seeks_pending.store(true, Ordering::Release);
        self.wake();
    }

    pub(crate) fn take_seeks(&self) -> Vec<Arc<Inbox>> {
        if !self.seeks_pending.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        std::mem::take(&mut *self.seeks.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// An assigned partition: its librdkafka queue and its inbox.
pub(crate) struct Source {
    pub(crate) inbox: Arc<Inbox>,
    pub(crate) queue: PartitionQueue<DriverContext>,
    /// A record of this partition turned up on the main queue: rewind to it before popping.
    resync: Option<i64>,
}

impl Source {
    pub(crate) fn new(inbox: Arc<Inbox>, queue: PartitionQueue<DriverContext>) -> Self {
        Self {
            inbox,
            queue,
            resync: None,
        }
    }
}

pub(crate) struct Poller {
    consumer: Arc<RdConsumer>,
    wakeup: Arc<Wakeup>,
    stop: Arc<AtomicBool>,
    sources: Vec<Source>,
    chunks: BytesMut,
    batch: Vec<Record>,
    /// Seeks that failed, with when to try again.
    retry: Vec<(Instant, Arc<Inbox>)>,
    /// Whether the handler reads headers; decoding them is skipped if not.
    headers: bool,
}

impl Poller {
    pub(crate) fn new(
        consumer: Arc<RdConsumer>,
        wakeup: Arc<Wakeup>,
        stop: Arc<AtomicBool>,
        headers: bool,
    ) -> Self {
        Self {
            consumer,
            wakeup,
            stop,
            sources: Vec::new(),
            chunks: BytesMut::new(),
            batch: Vec::with_capacity(BATCH),
            retry: Vec::new(),
            headers,
        }
    }

    pub(crate) fn run(mut self) {
        let _ = self.wakeup.thread.set(std::thread::current());
        while !self.stop.load(Ordering::Acquire) {
            if !self.turn() {
                // A wake that came during the turn is kept by `unpark`, so none is lost.
                std::thread::park_timeout(IDLE_WAIT);
            }
        }
    }

    /// One turn over the main queue and every partition; `true` if records moved.
    fn turn(&mut self) -> bool {
        let mut moved = self.serve_main_queue();
        self.sources
            .extend(self.consumer.context().take_new_sources());
        self.sources.retain(|s| !s.inbox.state().closed);
        self.serve_seeks();
        for i in 0..self.sources.len() {
            moved |= self.pop(i);
        }
        moved
    }

    /// Drains the main queue (logs, statistics, rebalances, commit results, errors), up to
    /// [`MAIN_QUEUE_MAX`] events; `true` if a record turned up or the bound was reached (so
    /// the thread does not sleep with events waiting).
    fn serve_main_queue(&mut self) -> bool {
        let consumer = self.consumer.clone();
        let mut busy = false;
        for _ in 0..MAIN_QUEUE_MAX {
            let served = consumer.context().served();
            match self.serve_main_event(&consumer) {
                Some(moved) => busy |= moved,
                // Nothing returned, and no callback ran: the queue is empty. (An event that no
                // callback counts ends the drain early; the next turn goes on.)
                None if consumer.context().served() == served => return busy,
                None => {}
            }
        }
        true
    }

    /// Serves one main-queue event: `None` if none was returned (empty, or served by a
    /// callback), else whether records moved. A record found there belongs to a partition
    /// whose queue was split too late: rewind that partition to it.
    fn serve_main_event(&mut self, consumer: &Arc<RdConsumer>) -> Option<bool> {
        match consumer.poll(Duration::ZERO) {
            Some(Ok(m)) => {
                let (partition, offset) = (m.partition(), m.offset());
                // Only an open assignment's source: a record of an ended one is dropped with it.
                match self.sources.iter_mut().find(|s| {
                    s.inbox.tp.partition == partition
                        && *s.inbox.tp.topic == *m.topic()
                        && !s.inbox.state().closed
                }) {
                    Some(source) => {
                        source.resync = Some(source.resync.map_or(offset, |o| o.min(offset)));
                    }
                    None => tracing::debug!(
                        topic = m.topic(),
                        partition,
                        offset,
                        "record for an unassigned partition dropped"
                    ),
                }
                Some(true)
            }
            Some(Err(e)) => {
                if !consumer.context().check_fatal(consumer) {
                    tracing::warn!(error = %e, "Kafka consumer error");
                }
                Some(false)
            }
            None => None,
        }
    }

    /// Pops up to a batch of one partition's records into its inbox; `true` if any.
    fn pop(&mut self, i: usize) -> bool {
        let source = &mut self.sources[i];
        if let Some(offset) = source.resync.take()
            && !seek(&self.consumer, &source.inbox.tp, offset)
        {
            source.resync = Some(offset);
            return false;
        }
        let room = source.inbox.room().min(BATCH);
        while self.batch.len() < room {
            match source.queue.poll(Duration::ZERO) {
                Some(Ok(m)) => {
                    self.batch
                        .push(record(&source.inbox.tp, &mut self.chunks, &m, self.headers));
                }
                Some(Err(e)) => {
                    if !self.consumer.context().check_fatal(&self.consumer) {
                        let tp = &source.inbox.tp;
                        tracing::warn!(%tp, error = %e, "consume error");
                    }
                }
                None => break,
            }
        }
        if self.batch.is_empty() {
            return false;
        }
        source.inbox.hand_over(&mut self.batch);
        true
    }

    /// Does the seeks the feeds asked for, and retries those librdkafka refused, as long as
    /// their assignment lasts.
    fn serve_seeks(&mut self) {
        let mut seeks = self.wakeup.take_seeks();
        if !self.retry.is_empty() {
            let now = Instant::now();
            let (due, later): (Vec<_>, Vec<_>) =
                self.retry.drain(..).partition(|(at, _)| *at <= now);
            self.retry = later;
            seeks.extend(due.into_iter().map(|(_, inbox)| inbox));
        }
        for inbox in seeks {
            let offset = {
                let state = inbox.state();
                // A seek belongs to the assignment its inbox was opened for. Once that ended
                // (revoked, lost, or replaced by a new assignment: each closes the inbox, on
                // this thread), the seek is dropped: done later, it would rewind another
                // assignment, below what another member committed meanwhile.
                if state.closed {
                    continue;
                }
                match state.seek {
                    Some(offset) => offset,
                    None => continue, // done by an earlier request
                }
            };
            if !seek(&self.consumer, &inbox.tp, offset) {
                self.retry.push((Instant::now() + SEEK_RETRY, inbox));
                continue;
            }
            let mut state = inbox.state();
            if state.seek == Some(offset) {
                state.seek = None;
            }
        }
    }
}

/// Seeks a partition; `false` (logged) if librdkafka refused.
fn seek(consumer: &RdConsumer, tp: &TopicPartition, offset: i64) -> bool {
    match consumer.seek(
        &tp.topic,
        tp.partition,
        Offset::Offset(offset),
        SEEK_TIMEOUT,
    ) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(%tp, offset, error = %e, "seek failed; retrying");
            false
        }
    }
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
