//! `--amplification`: how many deliveries a nack costs. The first attempt of a deterministic one
//! record in `--fail-every` (default 10) is nacked, and the run lasts until every record has
//! been handled successfully once.
//!
//! With `--handler-sleep-ms MS` the handler awaits a timer of MS milliseconds (standing in for
//! an I/O call) before it nacks or succeeds, so that `--concurrency K` records of a partition
//! are in flight at once; without it each record is finished before the next is dispatched and
//! a nack has nothing behind it to deliver again.
//!
//! Every handler call is a delivery. The ideal is every record once plus one retry per failing
//! record (1.10 deliveries per record for 1 in 10); a nack that rewinds its partition and
//! delivers again the records behind it (running, waiting or already finished) costs more.
//!
//! The failure is an explicit nack (`Err(NackMessage.into())`), not a handler error: an
//! explicit nack has no redelivery delay by default, before and after the fix of issue 10 point
//! 4 (which gives handler *errors* under `NackOnError` an exponential backoff), so figures
//! measured on either side of that fix compare.
//!
//! Records are the bench's `Order`s (ids 0..N, spread round-robin over the partitions); which
//! ones fail depends on the id only, so the same records fail in every run and on every broker.
//! On Kafka the topic is filled with `--produce` first; with `--memory` the in-memory broker is
//! filled by the run itself.
//!
//! Prints one `key=value` line (`backend`, `records`, `failing`, `deliveries`, `nacks`,
//! `deliveries_per_record`, `ideal`, `x_ideal`, `elapsed_s`, `deliveries_at_shutdown`), then
//! `deliveries_per_record=<number>` last. `deliveries` counts handler calls from the first to
//! the moment the last record succeeded, `elapsed_s` the time between them;
//! `deliveries_at_shutdown` adds those made while the app stopped. The group's committed
//! offsets are checked to reach the end of every partition. A run in which no record succeeds
//! for `--quiet-timeout-s` ends with an error instead.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ackstream::Admin;
use ackstream::kafka::KafkaBroker;
use ackstream::memory::MemoryBroker;
use ackstream::prelude::*;
use tokio::sync::Notify;

use crate::args::Args;
use crate::count::Quiet;
use crate::{Order, read_contents};

/// Topic of the in-memory run.
const MEMORY_TOPIC: &str = "amplification";

/// A record not delivered yet.
const FRESH: u8 = 0;
/// A failing record whose first attempt was nacked.
const NACKED: u8 = 1;
/// A record handled successfully (at least once).
const DONE: u8 = 2;

/// splitmix64's finalizer: a fixed, well-mixed hash of a `u64`.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Whether the first attempt of record `id` fails: exactly one record in each block of `every`
/// consecutive ids, at a position a hash of the block picks (so failures fall on every
/// partition, at irregular distances).
pub(crate) fn fails_first(id: u64, every: u64) -> bool {
    id % every == mix(id / every) % every
}

/// What the handler saw: per-record state and the counters.
#[derive(Debug)]
struct Tally {
    /// `FRESH`, `NACKED` or `DONE`, per record id.
    state: Vec<AtomicU8>,
    every: u64,
    deliveries: AtomicU64,
    nacks: AtomicU64,
    /// Records handled successfully at least once.
    done_records: AtomicU64,
    first: OnceLock<Instant>,
    /// When the last record succeeded, with the deliveries made until then.
    last: OnceLock<(Instant, u64)>,
    done: Notify,
}

impl Tally {
    fn new(count: u64, every: u64) -> Self {
        Self {
            state: (0..count).map(|_| AtomicU8::new(FRESH)).collect(),
            every,
            deliveries: AtomicU64::new(0),
            nacks: AtomicU64::new(0),
            done_records: AtomicU64::new(0),
            first: OnceLock::new(),
            last: OnceLock::new(),
            done: Notify::new(),
        }
    }

    /// A delivery starts: counted before the handler's work.
    fn arrive(&self) {
        self.deliveries.fetch_add(1, Ordering::Relaxed);
        if self.first.get().is_none() {
            let _ = self.first.set(Instant::now());
        }
    }

    /// The handler's work for record `id` is over: a nack for the first attempt of a failing
    /// record, else a success.
    fn outcome(&self, id: u64) -> Result<(), HandlerError> {
        let state = self
            .state
            .get(id as usize)
            .ok_or_else(|| HandlerError::from(format!("record id {id} out of range")))?;
        if fails_first(id, self.every)
            && state
                .compare_exchange(FRESH, NACKED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.nacks.fetch_add(1, Ordering::Relaxed);
            // Explicit nack, no delay (see the module docs).
            return Err(NackMessage.into());
        }
        if state.swap(DONE, Ordering::AcqRel) != DONE
            && self.done_records.fetch_add(1, Ordering::AcqRel) + 1 == self.state.len() as u64
        {
            let _ = self
                .last
                .set((Instant::now(), self.deliveries.load(Ordering::Relaxed)));
            self.done.notify_one();
        }
        Ok(())
    }

    /// Waits until every record succeeded once; fails after `quiet` without a new one.
    async fn wait(&self, quiet: Duration) -> Result<(), String> {
        let mut watch = Quiet::new(quiet, Instant::now());
        let tick = (quiet / 4).min(Duration::from_secs(1));
        loop {
            tokio::select! {
                () = self.done.notified() => return Ok(()),
                () = tokio::time::sleep(tick) => {
                    let done = self.done_records.load(Ordering::Acquire);
                    if watch.stalled(done, Instant::now()) {
                        return Err(format!(
                            "no progress for {} s (--quiet-timeout-s): {done} of {} records \
                             succeeded, after {} deliveries",
                            quiet.as_secs(),
                            self.state.len(),
                            self.deliveries.load(Ordering::Relaxed)
                        ));
                    }
                }
            }
        }
    }

    fn failing(&self) -> u64 {
        (0..self.state.len() as u64)
            .filter(|&id| fails_first(id, self.every))
            .count() as u64
    }
}

/// Declares the subscriber (group `group`, on `topic`) with the chosen policy, ordering and
/// workers, and a handler that reports to `tally`.
fn subscribe<B: Broker>(broker: &B, topic: &str, group: &str, args: &Args, tally: &Arc<Tally>) {
    let policy: AckPolicy = args.policy.parse().expect("checked by Args::parse");
    // The bench nacks explicitly (`Err(NackMessage)`), which has no redelivery delay: the same
    // before and after failures got a backoff, so the figures compare.
    let subscriber = crate::framework::subscriber(broker, topic, group, policy, args);
    let t = tally.clone();
    if let Some(io) = args.handler_sleep {
        // Stands in for an I/O call that fails or succeeds when it completes.
        subscriber.handle(move |Json(order): Json<Order>| {
            t.arrive();
            let t = t.clone();
            async move {
                crate::timer::sleep(io).await;
                t.outcome(order.id)
            }
        });
    } else {
        subscriber.handle(move |Json(order): Json<Order>| {
            t.arrive();
            std::future::ready(t.outcome(order.id))
        });
    }
}

/// Waits for every record to succeed once, stops the app and prints the result lines; fails
/// when no record succeeds for `quiet`. `committed` sums the group's committed offsets after
/// the stop.
async fn finish<F, Fut>(
    backend: &str,
    app: ackstream::RunningApp,
    tally: &Tally,
    quiet: Duration,
    committed: F,
) -> Result<(), String>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<i64, String>>,
{
    let records = tally.state.len() as u64;
    if let Err(e) = tally.wait(quiet).await {
        // Best effort: the error is what matters.
        let _ = tokio::time::timeout(Duration::from_secs(10), app.shutdown()).await;
        return Err(e);
    }
    app.shutdown().await.map_err(|e| e.to_string())?;
    let committed = committed().await?;
    if committed != records as i64 {
        return Err(format!(
            "committed offsets sum to {committed}, expected {records}: not every record was committed"
        ));
    }
    let (last, deliveries) = *tally.last.get().ok_or("no record handled")?;
    let elapsed = last.duration_since(*tally.first.get().ok_or("no record handled")?);
    let failing = tally.failing();
    let per_record = deliveries as f64 / records as f64;
    let ideal = (records + failing) as f64 / records as f64;
    println!(
        "backend={backend} records={records} failing={failing} deliveries={deliveries} nacks={} \
         deliveries_per_record={per_record:.3} ideal={ideal:.3} x_ideal={:.2} elapsed_s={:.3} \
         deliveries_at_shutdown={} committed={committed} (verified: end of every partition)",
        tally.nacks.load(Ordering::Relaxed),
        per_record / ideal,
        elapsed.as_secs_f64(),
        tally.deliveries.load(Ordering::Relaxed),
    );
    println!("deliveries_per_record={per_record:.3}");
    Ok(())
}

/// The Kafka run, on the topic `--produce` filled (checked to hold `--count` records).
pub(crate) async fn run_kafka(args: &Args) -> Result<(), String> {
    let partitions = read_contents(args)?.partitions().len() as i32;
    let mut broker = KafkaBroker::new(&args.bootstrap);
    for (k, v) in &args.config {
        broker = broker.config(k, v);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let group = format!("bench-amplification-{}-{nanos}", std::process::id());
    let tally = Arc::new(Tally::new(args.count(), args.fail_every));
    subscribe(&broker, &args.topic, &group, args, &tally);
    let app = App::new(broker.clone())
        .drain_timeout(Duration::from_secs(30))
        .spawn();
    finish("kafka", app, &tally, args.quiet_timeout, || async {
        let mut committed = 0;
        for partition in 0..partitions {
            committed += broker
                .committed_offset(&group, &args.topic, partition)
                .await
                .map_err(|e| e.to_string())?
                .unwrap_or(0);
        }
        Ok(committed)
    })
    .await
}

/// The in-memory run: fills a topic of `--partitions` partitions as `--produce` would, then
/// consumes it.
pub(crate) async fn run_memory(args: &Args) -> Result<(), String> {
    let broker = MemoryBroker::new();
    broker
        .create_topic(MEMORY_TOPIC, args.partitions)
        .await
        .map_err(|e| e.to_string())?;
    for id in 0..args.count() {
        broker
            .publish_json(MEMORY_TOPIC, &Order::new(id))
            .map_err(|e| e.to_string())?
            .key((id % 10_000).to_string())
            .partition((id % args.partitions as u64) as i32)
            .await
            .map_err(|e| e.to_string())?;
    }
    let group = "bench-amplification";
    let tally = Arc::new(Tally::new(args.count(), args.fail_every));
    subscribe(&broker, MEMORY_TOPIC, group, args, &tally);
    let app = App::new(broker.clone())
        .drain_timeout(Duration::from_secs(30))
        .spawn();
    finish("memory", app, &tally, args.quiet_timeout, || async {
        Ok(broker.committed_total(group, MEMORY_TOPIC))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::fails_first;

    #[test]
    fn one_in_every_fails_and_on_every_partition() {
        let failing: Vec<u64> = (0..50_000).filter(|&id| fails_first(id, 10)).collect();
        assert_eq!(failing.len(), 5_000);
        for p in 0..4 {
            let n = failing.iter().filter(|&&id| id % 4 == p).count();
            assert!((1_000..1_500).contains(&n), "partition {p}: {n}");
        }
    }
}
