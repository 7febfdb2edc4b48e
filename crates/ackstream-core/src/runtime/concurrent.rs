//! One assigned partition whose records may be handled several at a time (`max_workers`).
//!
//! Records are read in offset order and delivered to the tracker at once, so a record waiting
//! for its turn holds the commit back like one in flight. Each record then joins a *lane*: the
//! whole partition under `KeepOrder::Partition`, its key under `KeepOrder::Key`, none under
//! `KeepOrder::Unordered`. A lane runs one record at a time, in offset order; the rest wait in
//! it. A record starts once it has a worker permit from the subscriber's shared pool; a lane
//! hands its permit straight to its next record.
//!
//! A nack sends back only the nacked record: it rejoins its lane in its place (ahead of the
//! lane's later records) and runs again after its delay; the records behind it that ran or
//! finished are not delivered again, and librdkafka's prefetched records are kept. A record
//! waiting out its delay holds no worker (its lane waits; other lanes go on). The lane of a
//! record that ran takes in any nack made during the run before it starts its next record, so
//! a lane never runs past its nacked record.
//!
//! Bounds: the subscriber's partitions hold at most `2 x max_workers` records together
//! (running, waiting in a lane or for a permit), each an equal part of that, at least 1 and at
//! most `max_workers` (see [`Pool::bound`]), so what is held does not grow with the number of
//! partitions; plus as many more (at least 8) that cannot run yet: waiting out a nack's delay,
//! or queued behind one in their lane (so a key waiting out its delay does not stop the other
//! keys). At
//! its bound a partition reads nothing more, so the backend keeps (and stops fetching) the rest.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering as Atomic};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::partition::{self, Offered};
use super::policy;
use super::task::PartitionTask;
use crate::backend::PartitionFeed;
use crate::config::SubscriberConfig;
use crate::handler::service::MessageService;
use crate::message::KafkaMessage;
use crate::ordering::KeepOrder;
use crate::record::Record;
use crate::settle::{PartitionContext, Retry};

/// Which lane a record runs in.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Lane {
    /// The whole partition (`KeepOrder::Partition`).
    Partition,
    /// One key; records without a key share the `None` lane.
    Key(Option<Bytes>),
    /// No lane: runs as soon as it has a permit.
    Free,
}

fn lane_for(ordering: KeepOrder, key: Option<&Bytes>) -> Lane {
    match ordering {
        KeepOrder::Partition => Lane::Partition,
        KeepOrder::Key => Lane::Key(key.cloned()),
        KeepOrder::Unordered => Lane::Free,
    }
}

/// A record waiting for its turn: delivered for the first time, or nacked and to be delivered
/// again.
enum Item {
    Fresh(KafkaMessage),
    Retry(Retry),
}

impl Item {
    fn offset(&self) -> i64 {
        match self {
            Item::Fresh(m) => m.offset(),
            Item::Retry(r) => r.record.offset,
        }
    }
}

/// What a future in `running` ends with.
enum Done {
    /// A handler run ended; its permit goes to the lane's next record.
    Ran {
        lane: Lane,
        offset: i64,
        permit: Option<OwnedSemaphorePermit>,
    },
    /// A retry waited out its delay (or the partition stopped): it runs once it has a permit.
    Due { lane: Lane, record: Record },
}

/// The partition's records in flight and waiting.
struct Dispatch<S> {
    service: S,
    config: Arc<SubscriberConfig>,
    ctx: Arc<PartitionContext>,
    workers: Option<Arc<Semaphore>>,
    /// Ends retry delays early when the partition stops.
    stop: CancellationToken,
    /// Lanes with a record running or waiting out its delay; what is queued behind it.
    busy: HashMap<Lane, VecDeque<Item>>,
    /// Records held: running, queued in a lane, waiting for a permit or out a delay.
    held: usize,
    /// Of those, records waiting out a nack's delay: they hold no worker, and up to the bound
    /// of them take no place in it, so a key waiting out its delay does not stop the others.
    sleeping: usize,
    /// Lanes whose next record waits out a delay, with how many records are queued behind it:
    /// those cannot run before it, so (with the sleeping ones, up to the bound) they take no
    /// place in the bound either.
    asleep: HashMap<Lane, usize>,
    /// The records queued in `asleep` lanes.
    blocked: usize,
    /// Records whose turn came, waiting for a worker permit, first come first served.
    needs_permit: VecDeque<(Item, Lane)>,
    running: FuturesUnordered<BoxFuture<'static, Done>>,
    /// Offsets with a handler run in progress.
    in_run: HashSet<i64>,
    /// Without lanes (`Unordered`): retries of records whose earlier run has not ended yet.
    after_run: HashMap<i64, Retry>,
}

impl<S: MessageService> Dispatch<S> {
    fn stopped(&self) -> bool {
        self.ctx.stopping.load(std::sync::atomic::Ordering::Acquire) || self.stop.is_cancelled()
    }

    /// Offers a record read from the feed for delivery; gives it back if a retry must be
    /// taken first.
    fn read(&mut self, record: Record) -> Option<Record> {
        match partition::deliver(&self.ctx, record, None) {
            Offered::Take(msg) => self.fresh(msg),
            Offered::Skip => {}
            Offered::Later(record) => return Some(record),
        }
        None
    }

    /// A record read from the feed and delivered to the tracker.
    fn fresh(&mut self, msg: KafkaMessage) {
        self.held += 1;
        let lane = lane_for(self.config.ordering, msg.key());
        self.offer(Item::Fresh(msg), lane);
    }

    /// Takes in the retries nacks left, each into its place in its lane.
    fn absorb(&mut self) {
        for retry in self.ctx.take_retries() {
            self.held += 1;
            let lane = lane_for(self.config.ordering, retry.record.key.as_ref());
            let offset = retry.record.offset;
            if lane == Lane::Free && self.in_run.contains(&offset) {
                self.after_run.insert(offset, retry);
            } else {
                self.offer(Item::Retry(retry), lane);
            }
        }
    }

    /// Queues `item` in its lane, in offset order, or begins it if the lane is free.
    fn offer(&mut self, item: Item, lane: Lane) {
        if lane != Lane::Free {
            if let Some(queue) = self.busy.get_mut(&lane) {
                let at = queue
                    .iter()
                    .position(|q| q.offset() > item.offset())
                    .unwrap_or(queue.len());
                queue.insert(at, item);
                if let Some(behind) = self.asleep.get_mut(&lane) {
                    *behind += 1;
                    self.blocked += 1;
                }
                return;
            }
            self.busy.insert(lane.clone(), VecDeque::new());
        }
        self.begin(item, lane, None);
    }

    /// `item`'s turn in its lane has come: a retry first waits out its delay (holding no
    /// worker), then it needs a permit (or takes the one its lane hands over).
    fn begin(&mut self, item: Item, lane: Lane, permit: Option<OwnedSemaphorePermit>) {
        if let Item::Retry(Retry {
            record,
            not_before: Some(at),
        }) = item
        {
            if at > std::time::Instant::now() {
                drop(permit);
                self.sleeping += 1;
                if lane != Lane::Free {
                    let behind = self.busy.get(&lane).map_or(0, VecDeque::len);
                    self.asleep.insert(lane.clone(), behind);
                    self.blocked += behind;
                }
                let stop = self.stop.clone();
                self.running.push(Box::pin(async move {
                    let wait = at.saturating_duration_since(std::time::Instant::now());
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = stop.cancelled() => {}
                    }
                    Done::Due { lane, record }
                }));
                return;
            }
            return self.with_permit(
                Item::Retry(Retry {
                    record,
                    not_before: None,
                }),
                lane,
                permit,
            );
        }
        self.with_permit(item, lane, permit);
    }

    fn with_permit(&mut self, item: Item, lane: Lane, permit: Option<OwnedSemaphorePermit>) {
        let permit = match (permit, &self.workers) {
            (None, Some(pool)) => match pool.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    self.needs_permit.push_back((item, lane));
                    return;
                }
            },
            (permit, _) => permit,
        };
        self.start(item, lane, permit);
    }

    /// Runs `item`'s handler. Nothing starts once the partition is stopping.
    fn start(&mut self, item: Item, lane: Lane, permit: Option<OwnedSemaphorePermit>) {
        if self.stopped() {
            return;
        }
        let msg = match item {
            Item::Fresh(msg) => msg,
            Item::Retry(retry) => match partition::redeliver(&self.ctx, retry.record, None) {
                Some(msg) => msg,
                None => {
                    // Revoked meanwhile: no longer ours to deliver.
                    self.held -= 1;
                    return self.next_in_lane(lane, permit);
                }
            },
        };
        let offset = msg.offset();
        self.in_run.insert(offset);
        let (mut service, config, ctx) =
            (self.service.clone(), self.config.clone(), self.ctx.clone());
        self.running.push(Box::pin(async move {
            // Stopped between the decision and the first poll: the handler does not start.
            if !ctx.stopping.load(std::sync::atomic::Ordering::Acquire) {
                policy::process(&msg, &mut service, &config).await;
            }
            Done::Ran {
                lane,
                offset,
                permit,
            }
        }));
    }

    fn finished(&mut self, done: Done) {
        match done {
            Done::Ran {
                lane,
                offset,
                permit,
            } => {
                self.held -= 1;
                self.in_run.remove(&offset);
                // A nack made during the run joins the lane before the lane moves on.
                self.absorb();
                if let Some(retry) = self.after_run.remove(&offset) {
                    self.begin(Item::Retry(retry), Lane::Free, None);
                }
                self.next_in_lane(lane, permit);
            }
            Done::Due { lane, record } => {
                self.sleeping -= 1;
                if let Some(behind) = self.asleep.remove(&lane) {
                    self.blocked -= behind;
                }
                self.with_permit(
                    Item::Retry(Retry {
                        record,
                        not_before: None,
                    }),
                    lane,
                    None,
                );
            }
        }
    }

    /// Begins what comes next in a busy lane, with the permit of the record that ran, or frees
    /// the lane.
    fn next_in_lane(&mut self, lane: Lane, permit: Option<OwnedSemaphorePermit>) {
        if lane == Lane::Free {
            return;
        }
        match self.busy.get_mut(&lane).and_then(VecDeque::pop_front) {
            Some(item) => self.begin(item, lane, permit),
            None => {
                self.busy.remove(&lane);
            }
        }
    }
}

/// Records that cannot run yet a partition may hold beyond its bound, at least.
const MIN_WAITING: usize = 8;

/// What a subscriber's partitions share: its worker permits, and how many partitions it has
/// (each one's part of what may be held).
#[derive(Debug)]
pub(super) struct Pool {
    permits: Option<Arc<Semaphore>>,
    max_workers: usize,
    partitions: AtomicUsize,
}

impl Pool {
    pub(super) fn new(max_workers: Option<usize>) -> Self {
        Self {
            permits: max_workers.map(|n| Arc::new(Semaphore::new(n))),
            max_workers: max_workers.unwrap_or(1).max(1),
            partitions: AtomicUsize::new(0),
        }
    }

    /// Whether records run one at a time per partition (no permits to share).
    pub(super) fn is_single(&self) -> bool {
        self.permits.is_none()
    }

    /// The subscriber has `n` partitions assigned now.
    pub(super) fn assigned(&self, n: usize) {
        self.partitions.store(n, Atomic::Relaxed);
    }

    /// How many records of one partition that cannot run yet (waiting out a delay, or queued
    /// behind one) take no place in its bound: its bound, but at least [`MIN_WAITING`] (or
    /// `max_workers` if less), so a partition with a small part still reads past a waiting key.
    fn waiting_bound(&self) -> usize {
        self.bound().max(MIN_WAITING.min(self.max_workers))
    }

    /// How many records one partition may hold: its part of `2 x max_workers`, at least 1
    /// and at most `max_workers`.
    fn bound(&self) -> usize {
        let n = self.partitions.load(Atomic::Relaxed).max(1);
        (2 * self.max_workers)
            .div_ceil(n)
            .clamp(1, self.max_workers)
    }
}

pub(super) async fn run<F, S>(task: PartitionTask<F, S>, pool: Arc<Pool>)
where
    F: PartitionFeed,
    S: MessageService,
{
    let PartitionTask {
        mut feed,
        ctx,
        service,
        stop,
        app,
        config,
    } = task;
    let workers = pool.permits.clone();
    let mut d = Dispatch {
        service,
        config,
        ctx: ctx.clone(),
        workers: workers.clone(),
        stop: stop.clone(),
        busy: HashMap::new(),
        held: 0,
        sleeping: 0,
        asleep: HashMap::new(),
        blocked: 0,
        needs_permit: VecDeque::new(),
        running: FuturesUnordered::new(),
        in_run: HashSet::new(),
        after_run: HashMap::new(),
    };
    // A record read while a retry was waiting to be taken: offered again after it.
    let mut held_back: Option<Record> = None;
    let mut turns: u32 = 0;
    loop {
        // A run that is ready at once (a nack without a delay, again and again) keeps a branch
        // below ready every turn: take part in tokio's cooperative budget, so the runtime's
        // other tasks get their turn.
        turns = turns.wrapping_add(1);
        if turns.is_multiple_of(partition::BUDGET_EVERY) {
            tokio::task::coop::consume_budget().await;
        }
        if ctx.retry_pending() {
            d.absorb();
        }
        if let Some(record) = held_back.take() {
            held_back = d.read(record);
            continue;
        }
        let bound = pool.bound();
        let waiting_out = (d.sleeping + d.blocked).min(pool.waiting_bound());
        let room = d.needs_permit.is_empty() && d.held - waiting_out < bound;
        // Fast path, as in `partition::run`: a run that ended, or a record already fetched, is
        // taken without registering wakers on the stop token and the retry signal (a lock
        // each, made and dropped twice per record: 8-10 % of the workers' time at 64
        // workers). Stopping is seen by its flags, retries were taken in above; when nothing
        // is ready, the `select!` below polls every branch again with the task's waker.
        if !partition::stopped(&ctx, &app) {
            let mut noop = Context::from_waker(Waker::noop());
            if !d.running.is_empty()
                && let Poll::Ready(Some(done)) = d.running.poll_next_unpin(&mut noop)
            {
                d.finished(done);
                continue;
            }
            if room && let Poll::Ready(next) = std::pin::pin!(feed.next()).poll(&mut noop) {
                let Some(record) = next else { break };
                held_back = d.read(record);
                continue;
            }
        }
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            Some(done) = d.running.next(), if !d.running.is_empty() => d.finished(done),
            () = ctx.retry_signal.notified() => {}
            permit = acquire(workers.as_ref()), if !d.needs_permit.is_empty() => {
                if let Some((item, lane)) = d.needs_permit.pop_front() {
                    d.start(item, lane, permit);
                }
            }
            next = feed.next(), if room => {
                let Some(record) = next else { break };
                held_back = d.read(record);
            }
        }
    }
    // Stopping: nothing new starts; running handlers finish (the runtime cancels this task at
    // its drain deadline); retries waiting out a delay end at once. Records not finished are
    // not committed.
    while d.running.next().await.is_some() {}
}

/// A worker permit from the subscriber's pool (`None` without a pool).
async fn acquire(workers: Option<&Arc<Semaphore>>) -> Option<OwnedSemaphorePermit> {
    match workers {
        // The pool is never closed.
        Some(pool) => pool.clone().acquire_owned().await.ok(),
        None => None,
    }
}
