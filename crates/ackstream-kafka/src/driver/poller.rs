//! The poll thread: the one reader of a librdkafka consumer.
//!
//! librdkafka's consumer is built to be polled from one thread (each poll updates
//! consumer-wide state under a lock), so one thread pops every record, from the consumer's one
//! queue, which also carries logs, statistics, rebalances, commit results and errors (served
//! by their callbacks as they come). Since all partitions share that queue, librdkafka's
//! prefetch limits bound the whole consumer, however many partitions it has, and a turn costs
//! the same with 4 partitions or 1,024: it pops what arrived, whichever partitions it is for.
//!
//! The thread copies each record out and hands it to its partition's [`Inbox`], a run of one
//! partition at a time; the partitions' handlers run on the async runtime. What the inboxes
//! hold stays within the consumer's [`Budget`](crate::driver::budget::Budget): a record a partition may
//! not take now is given back (the partition is paused and sought back to it, so librdkafka
//! drops what it prefetched of it and fetches nothing more of it) and the partition resumes
//! once it has drained. So a slow partition holds its part of the budget and never stops the
//! others.
//!
//! The same thread does the feeds' seeks. Doing a seek here, between two pops, makes it exact:
//! every record popped before it is dropped, every record popped after it comes from the new
//! position. A seek belongs to the assignment it was asked in: once that ends, it is dropped,
//! not retried. A fatal error seen here ends the subscriber.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use ackstream_core::{Header, Record, TopicPartition};
use bytes::{Bytes, BytesMut};
use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Headers as _, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::driver::RdConsumer;
use crate::driver::inbox::Inbox;

/// Queue entries (records and events) served per turn at most, so seeks and resumes get their
/// turn during a flood.
const TURN_MAX: usize = 2048;
/// How long the thread sleeps when nothing arrives and nobody wakes it: a safety net, since
/// librdkafka's queue and the feeds wake it.
const IDLE_WAIT: Duration = Duration::from_millis(10);
const SEEK_TIMEOUT: Duration = Duration::from_secs(10);
const SEEK_RETRY: Duration = Duration::from_millis(50);

/// Payloads and keys are copied out of librdkafka into shared chunks of this size, so most
/// records cost no allocation of their own. A chunk is freed once every record copied into it
/// is dropped, so one record a partition keeps keeps its chunk: small chunks keep that cost low
/// with a thousand partitions (64 KiB chunks cost 90 MB more at 1,024 partitions).
const CHUNK: usize = 8 * 1024;
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

pub(crate) struct Poller {
    consumer: Arc<RdConsumer>,
    wakeup: Arc<Wakeup>,
    stop: Arc<AtomicBool>,
    /// The inboxes records were routed to, by topic and partition (the consumer's context
    /// holds the current ones; this is the poll thread's copy).
    routes: HashMap<String, Vec<Option<Arc<Inbox>>>>,
    /// The run being collected: records of one partition, popped in a row, within one
    /// assignment (the rebalance count it began at).
    run: Option<Arc<Inbox>>,
    run_rebalances: u64,
    batch: Vec<Record>,
    chunks: BytesMut,
    /// Partitions paused at the budget's limit, to resume once drained, each with the offset
    /// it was sought back to (none if librdkafka refused that seek).
    paused: Vec<(Arc<Inbox>, Option<i64>)>,
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
            routes: HashMap::new(),
            run: None,
            run_rebalances: 0,
            batch: Vec::new(),
            chunks: BytesMut::new(),
            paused: Vec::new(),
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

    /// One turn: seeks, what the queue holds (up to a bound), resumes; `true` if anything
    /// was served (so the thread does not sleep with more waiting).
    fn turn(&mut self) -> bool {
        self.serve_seeks();
        let busy = self.serve_queue();
        self.resume_drained();
        busy
    }

    /// Pops records and serves events until the queue is empty or [`TURN_MAX`] entries were
    /// served; `true` if any was.
    fn serve_queue(&mut self) -> bool {
        let consumer = self.consumer.clone();
        let mut busy = false;
        for _ in 0..TURN_MAX {
            let served = consumer.context().served();
            match consumer.poll(Duration::ZERO) {
                Some(Ok(m)) => self.collect(&m),
                Some(Err(e)) if !consumer.context().check_fatal(&consumer) => {
                    tracing::warn!(error = %e, "Kafka consumer error");
                }
                Some(Err(_)) => {}
                // Nothing returned, and no callback ran: the queue is empty.
                None if consumer.context().served() == served => break,
                None => {}
            }
            busy = true;
        }
        self.hand_over_run();
        busy
    }

    /// Adds a record to the run, first handing the run over if it is another partition's.
    fn collect(&mut self, m: &BorrowedMessage<'_>) {
        // A rebalance since the run began may have ended its assignment and opened another
        // for the same partition: records of the new one go to the new inbox.
        let rebalances = self.consumer.context().rebalances();
        let same = rebalances == self.run_rebalances
            && self.run.as_ref().is_some_and(|inbox| {
                // A one-topic consumer's record is of the run's topic: not read back from
                // librdkafka for every record (a length, a UTF-8 check and a comparison).
                inbox.tp.partition == m.partition()
                    && (self.consumer.context().one_topic() || *inbox.tp.topic == *m.topic())
            });
        if !same {
            self.hand_over_run();
            self.run_rebalances = rebalances;
            self.run = self.route(m.topic(), m.partition());
            if self.run.is_none() {
                tracing::debug!(
                    topic = m.topic(),
                    partition = m.partition(),
                    offset = m.offset(),
                    "record for an unassigned partition dropped"
                );
                return;
            }
        }
        let tp = &self.run.as_ref().expect("a run").tp;
        self.batch
            .push(record(tp, &mut self.chunks, m, self.headers));
    }

    /// The open inbox of a partition, from the copy or else from the consumer's context (a
    /// partition assigned since, or assigned again).
    fn route(&mut self, topic: &str, partition: i32) -> Option<Arc<Inbox>> {
        let index = usize::try_from(partition).ok()?;
        let cached = self
            .routes
            .get(topic)
            .and_then(|by_partition| by_partition.get(index))
            .and_then(Option::as_ref)
            .filter(|inbox| !inbox.state().closed);
        if let Some(inbox) = cached {
            return Some(inbox.clone());
        }
        let inbox = self
            .consumer
            .context()
            .inbox(&TopicPartition::new(topic, partition))?;
        let by_partition = self.routes.entry(topic.to_owned()).or_default();
        if by_partition.len() <= index {
            by_partition.resize(index + 1, None);
        }
        by_partition[index] = Some(inbox.clone());
        Some(inbox)
    }

    /// Hands the run to its inbox; what the budget refuses is given back to librdkafka.
    fn hand_over_run(&mut self) {
        let Some(inbox) = self.run.take() else {
            return;
        };
        if let Some(offset) = inbox.hand_over(&mut self.batch) {
            self.give_back(&inbox, offset);
        }
        self.batch.clear();
    }

    /// Pauses the partition and seeks it back to `offset`, its first refused record (still
    /// in the batch), so librdkafka drops what it prefetched of it and fetches it again only
    /// once resumed. If librdkafka refuses, the records are kept over the budget instead: a
    /// record popped and dropped without a seek would be skipped.
    fn give_back(&mut self, inbox: &Arc<Inbox>, offset: i64) {
        let newly = !inbox.paused.swap(true, Ordering::AcqRel);
        if newly && !pause(&self.consumer, &inbox.tp, true) {
            inbox.paused.store(false, Ordering::Release);
            inbox.hand_over_all(&mut self.batch);
            return;
        }
        let sought = seek(&self.consumer, &inbox.tp, offset);
        if !sought {
            inbox.hand_over_all(&mut self.batch);
        }
        let at = sought.then_some(offset);
        match self.paused.iter_mut().find(|(p, _)| Arc::ptr_eq(p, inbox)) {
            Some(entry) => entry.1 = at,
            None => self.paused.push((inbox.clone(), at)),
        }
    }

    /// Resumes the paused partitions that have drained (and forgets the closed ones: their
    /// assignment's end resumed them, see the consumer's `revoked`).
    ///
    /// A resumed partition is sought again to where it was given back. librdkafka does not
    /// fetch again on a resume alone: with every partition paused, its fetcher idles for about
    /// a second before it looks again, and the whole consumer stalls. A seek starts the fetch
    /// at once; to the same offset, it changes nothing else (nothing of the partition was
    /// popped while it was paused).
    fn resume_drained(&mut self) {
        if self.paused.is_empty() {
            return;
        }
        let consumer = self.consumer.clone();
        self.paused.retain(|(inbox, at)| {
            if !inbox.resumable() {
                return true;
            }
            if !inbox.state().closed {
                if !pause(&consumer, &inbox.tp, false) {
                    return true;
                }
                if let Some(offset) = *at {
                    // Refused, the fetch still starts, a second later.
                    seek(&consumer, &inbox.tp, offset);
                }
            }
            inbox.paused.store(false, Ordering::Release);
            false
        });
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

/// Pauses (`true`) or resumes fetching a partition; `false` (logged) if librdkafka refused.
pub(crate) fn pause(consumer: &RdConsumer, tp: &TopicPartition, pause: bool) -> bool {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&tp.topic, tp.partition);
    let result = if pause {
        consumer.pause(&tpl)
    } else {
        consumer.resume(&tpl)
    };
    match result {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(%tp, pause, error = %e, "pause or resume failed");
            false
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
