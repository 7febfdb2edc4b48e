//! One assigned partition whose records may be handled several at a time (`max_workers`).
//!
//! Records are read in offset order and delivered to the tracker at once, so a record waiting
//! for its turn holds the commit back like one in flight. Each record then joins a *lane*: the
//! whole partition under `Ordering::Partition`, its key under `Ordering::Key`, none under
//! `Ordering::Unordered`. A lane runs one record at a time, in offset order; the rest wait in
//! it. A record starts once it has a worker permit from the subscriber's shared pool; a lane
//! hands its permit straight to its next record.
//!
//! Bounds: at most `max_workers` records of the partition are held (running or waiting; a
//! paused key holds none); at the bound the partition reads nothing more, so the backend keeps
//! (and stops fetching) the rest.
//!
//! A nack rewinds the partition: records at or after the nacked offset that are still waiting
//! are dropped, those already running finish but their settles are stale (changing nothing), and
//! all of them are delivered again from the rewound position. Under `Ordering::Key` a
//! redelivered record still waits for its earlier run to finish, so one key never overlaps.
//!
//! A nack's delay holds back the whole partition under `Partition` and `Unordered`, but only
//! the nacked key under `Key`: the partition is rewound at once, and the key's lane pauses (a
//! pause holds no worker) while other keys go on. Either way the nacked record stays
//! unfinished, so the commit does not pass it during the delay.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{partition, policy};
use crate::backend::PartitionFeed;
use crate::handler::Handler;
use crate::message::KafkaMessage;
use crate::ordering::Ordering;
use crate::settle::PartitionContext;
use crate::state::StateMap;
use crate::subscriber::SubscriberConfig;

/// Which lane a record runs in.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Lane {
    /// The whole partition (`Ordering::Partition`).
    Partition,
    /// One key; records without a key share the `None` lane.
    Key(Option<Bytes>),
    /// No lane: runs as soon as it has a permit.
    Free,
}

fn lane_of(ordering: Ordering, msg: &KafkaMessage) -> Lane {
    match ordering {
        Ordering::Partition => Lane::Partition,
        Ordering::Key => Lane::Key(msg.key().cloned()),
        Ordering::Unordered => Lane::Free,
    }
}

/// A record that finished running (or a pause that ended), and the permit it ran with.
struct Finished {
    lane: Lane,
    permit: Option<OwnedSemaphorePermit>,
    pause: bool,
}

/// What waits in a busy lane.
enum Queued {
    Record(KafkaMessage),
    /// A nack's delay under `Ordering::Key`: the key's next record waits until then.
    Pause(Instant),
}

/// The partition's records in flight and waiting.
struct Dispatch<H, T> {
    handler: H,
    state: StateMap,
    config: Arc<SubscriberConfig>,
    workers: Option<Arc<Semaphore>>,
    /// Ends pauses early when the partition stops.
    stop: CancellationToken,
    /// Lanes with a record running (or pausing); what is queued behind it.
    busy: HashMap<Lane, VecDeque<Queued>>,
    /// Records waiting in a lane or for a permit.
    waiting: usize,
    /// Pauses among `running` (they hold no record, so they do not count against the bound).
    pausing: usize,
    /// Records whose lane's turn came after a pause, waiting for a worker permit.
    needs_permit: VecDeque<(KafkaMessage, Lane)>,
    running: FuturesUnordered<BoxFuture<'static, Finished>>,
    _marker: std::marker::PhantomData<fn() -> T>,
}

impl<H: Handler<T>, T> Dispatch<H, T> {
    fn held(&self) -> usize {
        self.running.len() - self.pausing + self.waiting
    }

    /// Queues `msg` behind its lane's running record; gives it back if its lane is free.
    fn queue(&mut self, msg: KafkaMessage) -> Option<(KafkaMessage, Lane)> {
        let lane = lane_of(self.config.ordering, &msg);
        if lane != Lane::Free
            && let Some(queue) = self.busy.get_mut(&lane)
        {
            queue.push_back(Queued::Record(msg));
            self.waiting += 1;
            return None;
        }
        Some((msg, lane))
    }

    /// Holds a key's lane until `until` (a nack's delay under `Ordering::Key`): a record of the
    /// key still running finishes first, then the lane pauses; its other records wait.
    fn pause(&mut self, lane: Lane, until: Instant) {
        match self.busy.get_mut(&lane) {
            Some(queue) => queue.push_front(Queued::Pause(until)),
            None => {
                self.busy.insert(lane.clone(), VecDeque::new());
                self.sleep(lane, until);
            }
        }
    }

    fn sleep(&mut self, lane: Lane, until: Instant) {
        let stop = self.stop.clone();
        self.pausing += 1;
        self.running.push(Box::pin(async move {
            tokio::select! {
                () = tokio::time::sleep_until(until.into()) => {}
                () = stop.cancelled() => {}
            }
            Finished {
                lane,
                permit: None,
                pause: true,
            }
        }));
    }

    /// Starts a record whose lane is free.
    fn admit(&mut self, msg: KafkaMessage, lane: Lane, permit: Option<OwnedSemaphorePermit>) {
        if lane != Lane::Free {
            self.busy.insert(lane.clone(), VecDeque::new());
        }
        self.start(msg, lane, permit);
    }

    fn start(&mut self, msg: KafkaMessage, lane: Lane, permit: Option<OwnedSemaphorePermit>) {
        let (handler, state, config) = (
            self.handler.clone(),
            self.state.clone(),
            self.config.clone(),
        );
        self.running.push(Box::pin(async move {
            policy::process(&msg, &handler, &state, &config).await;
            Finished {
                lane,
                permit,
                pause: false,
            }
        }));
    }

    /// A record (or a pause) finished: its lane's next record starts with the same permit.
    fn finished(&mut self, done: Finished) {
        if done.pause {
            self.pausing -= 1;
        }
        if done.lane != Lane::Free {
            self.next_in_lane(done.lane, done.permit);
        }
    }

    /// Starts what comes next in a busy lane, or frees the lane. A record after a pause (which
    /// held no permit) needs one from the pool first.
    fn next_in_lane(&mut self, lane: Lane, permit: Option<OwnedSemaphorePermit>) {
        match self.busy.get_mut(&lane).and_then(VecDeque::pop_front) {
            Some(Queued::Record(msg)) => {
                let permit = match (permit, &self.workers) {
                    (None, Some(pool)) => match pool.clone().try_acquire_owned() {
                        Ok(permit) => Some(permit),
                        Err(_) => {
                            self.needs_permit.push_back((msg, lane));
                            return;
                        }
                    },
                    (permit, _) => permit,
                };
                self.waiting -= 1;
                self.start(msg, lane, permit);
            }
            // A pause holds no worker: the permit goes back to the pool.
            Some(Queued::Pause(until)) => self.sleep(lane, until),
            None => {
                self.busy.remove(&lane);
            }
        }
    }

    /// Drops waiting records at or after a rewind: they will be delivered again. Pauses stay.
    fn drop_waiting_from(&mut self, offset: i64) {
        for queue in self.busy.values_mut() {
            let before = queue.len();
            queue.retain(|q| match q {
                Queued::Record(m) => m.offset() < offset,
                Queued::Pause(_) => true,
            });
            self.waiting -= before - queue.len();
        }
        // A lane whose next record was waiting for a permit moves on to what follows it.
        let (dropped, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.needs_permit)
            .into_iter()
            .partition(|(m, _)| m.offset() >= offset);
        self.needs_permit = kept.into();
        for (_, lane) in dropped {
            self.waiting -= 1;
            self.next_in_lane(lane, None);
        }
    }
}

pub(super) async fn run<F, H, T>(
    mut feed: F,
    ctx: Arc<PartitionContext>,
    handler: H,
    state: StateMap,
    stop: CancellationToken,
    config: Arc<SubscriberConfig>,
    workers: Option<Arc<Semaphore>>,
) where
    F: PartitionFeed,
    H: Handler<T>,
{
    let bound = config.max_workers.unwrap_or(1).max(1);
    let by_key = config.ordering == Ordering::Key;
    let mut d = Dispatch {
        handler,
        state,
        config,
        workers: workers.clone(),
        stop: stop.clone(),
        busy: HashMap::new(),
        waiting: 0,
        pausing: 0,
        needs_permit: VecDeque::new(),
        running: FuturesUnordered::new(),
        _marker: std::marker::PhantomData,
    };
    // A record whose lane is free, waiting for a permit from the subscriber's pool.
    let mut pending: Option<(KafkaMessage, Lane)> = None;
    'read: loop {
        if let Some(rewind) = ctx.take_rewind() {
            d.drop_waiting_from(rewind.offset);
            if pending
                .as_ref()
                .is_some_and(|(m, _)| m.offset() >= rewind.offset)
            {
                pending = None;
            }
            if by_key {
                // Only the nacked keys wait; the partition is read again at once.
                let now = Instant::now();
                for (key, delay) in rewind.key_delays {
                    d.pause(Lane::Key(key), now + delay);
                }
            } else if let Some(delay) = rewind.delay
                && !wait_out(&mut d, delay, &stop).await
            {
                break 'read;
            }
            if !partition::seek(&mut feed, rewind.offset, &stop).await {
                break 'read;
            }
            continue;
        }
        let room = pending.is_none() && d.held() < bound;
        tokio::select! {
            biased;
            () = stop.cancelled() => break 'read,
            Some(done) = d.running.next(), if !d.running.is_empty() => d.finished(done),
            () = ctx.rewind_signal.notified() => {}
            permit = acquire(workers.as_ref()), if pending.is_some() || !d.needs_permit.is_empty() => {
                // A lane's turn after a pause came first, so it goes first.
                if let Some((msg, lane)) = d.needs_permit.pop_front() {
                    d.waiting -= 1;
                    d.start(msg, lane, permit);
                } else if let Some((msg, lane)) = pending.take() {
                    d.admit(msg, lane, permit);
                }
            }
            next = feed.next(), if room => {
                let Some(record) = next else { break 'read };
                let Some(msg) = partition::deliver(&ctx, record, None) else {
                    continue;
                };
                if let Some((msg, lane)) = d.queue(msg) {
                    match &workers {
                        None => d.admit(msg, lane, None),
                        Some(pool) => match pool.clone().try_acquire_owned() {
                            Ok(permit) => d.admit(msg, lane, Some(permit)),
                            Err(_) => pending = Some((msg, lane)),
                        },
                    }
                }
            }
        }
    }
    // Stopping: nothing new starts; running handlers finish (the runtime cancels this task at
    // its drain deadline). Waiting records are left unfinished, so they are not committed.
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

/// Waits out a nack's delay while running handlers complete; `false` if stopped meanwhile.
async fn wait_out<H: Handler<T>, T>(
    d: &mut Dispatch<H, T>,
    delay: Duration,
    stop: &CancellationToken,
) -> bool {
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return false,
            () = &mut sleep => return true,
            Some(done) = d.running.next(), if !d.running.is_empty() => d.finished(done),
        }
    }
}
