//! `--pipeline raw|ackstream --output OUT`: consume the topic, publish each record's payload to
//! OUT, and count an input as finished only once the broker confirmed its output.
//!
//! - `raw`: a plain rdkafka loop (a `BaseConsumer` with auto commit and
//!   `enable.auto.offset.store=false`, a `ThreadedProducer`). The delivery callback marks the
//!   input confirmed and stores the offset after the confirmed prefix of its partition (an
//!   output is keyless, so outputs of one input partition land on several output partitions
//!   and their confirmations can come in any order): only inputs whose outputs are confirmed
//!   are committed, the framework's rule written by hand.
//! - `ackstream`: a subscriber with `auto_commit(false)` (`NackOnError`) and `publish_to(OUT)`
//!   whose handler returns the payload (`Bytes`) as it came.
//!
//! Both get the same librdkafka settings (`--config`, on the consumer and on the producer) and
//! the partitioner ackstream's producer uses. The time is from the first record consumed to
//! the moment the last partition's committable offset reached its end (raw: stored by the
//! delivery callback; ackstream: the subscriber's status, sampled every 2 ms, as an app's
//! monitor reads it, since an observer would make the runtime build events for every record).
//! Then the group's committed
//! offsets are checked to be at the end of every partition, and OUT is read to its end (in a
//! child process, as the input was) and must hold at least as many records as the input.
//! Each run also prints `longest_stall_ms=`, the longest time without any progress, and
//! `thread_cpu_ms=`, the CPU time of each thread.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ackstream::Admin;
use ackstream::kafka::KafkaBroker;
use ackstream::prelude::*;
use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext, Message};

use crate::args::Args;
use crate::contents::{self, Contents};
use crate::count::{Counts, Quiet};
use crate::{read_contents, report};

/// The partitioner ackstream's producer sets (Java clients' placement of keys); outputs here
/// are keyless, so it only matters in that both variants use the same one.
const PARTITIONER: &str = "murmur2_random";

/// How often [`Confirmed::watch_stalls`] looks at the progress.
const STALL_SAMPLE: Duration = Duration::from_millis(10);

/// What both variants share: per partition, the committable offset (the end of the prefix of
/// inputs whose outputs are confirmed) against the partition's end, and the first and last
/// moments.
#[derive(Debug)]
struct Confirmed {
    /// The offset after each partition's last record (see `contents.rs`).
    ends: Vec<i64>,
    /// Each partition's committable offset so far.
    at: Vec<AtomicI64>,
    partitions_done: AtomicUsize,
    first: OnceLock<Instant>,
    last: OnceLock<Instant>,
    /// Outputs the broker refused (raw: delivery errors), with the first error.
    failures: AtomicU64,
    first_failure: OnceLock<String>,
}

impl Confirmed {
    fn new(contents: &Contents) -> Self {
        let ends: Vec<i64> = contents.partitions().iter().map(|p| p.end).collect();
        Self {
            at: ends.iter().map(|_| AtomicI64::new(0)).collect(),
            partitions_done: AtomicUsize::new(ends.iter().filter(|&&e| e == 0).count()),
            ends,
            first: OnceLock::new(),
            last: OnceLock::new(),
            failures: AtomicU64::new(0),
            first_failure: OnceLock::new(),
        }
    }

    fn started(&self) {
        if self.first.get().is_none() {
            let _ = self.first.set(Instant::now());
        }
    }

    /// Partition `p`'s committable offset moved to `offset`: the last partition to reach its
    /// end ends the run.
    fn set(&self, p: usize, offset: i64) {
        let (Some(at), Some(&end)) = (self.at.get(p), self.ends.get(p)) else {
            return;
        };
        let before = at.fetch_max(offset, Ordering::AcqRel);
        if before < end
            && offset >= end
            && self.partitions_done.fetch_add(1, Ordering::AcqRel) + 1 == self.ends.len()
        {
            let _ = self.last.set(Instant::now());
        }
    }

    fn is_done(&self) -> bool {
        self.last.get().is_some()
    }

    fn failed(&self, why: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let _ = self.first_failure.set(why);
    }

    fn check_failures(&self) -> Result<(), String> {
        match self.failures.load(Ordering::Relaxed) {
            0 => Ok(()),
            n => Err(format!(
                "{n} outputs were not delivered; first: {}",
                self.first_failure.get().map_or("?", String::as_str)
            )),
        }
    }

    /// Grows while the run makes progress.
    fn progress(&self) -> u64 {
        self.at
            .iter()
            .map(|a| a.load(Ordering::Relaxed) as u64)
            .sum()
    }

    /// The error of a run without progress for `quiet`: where each partition got to.
    fn stalled_error(&self, quiet: Duration) -> String {
        let at: Vec<String> = self
            .at
            .iter()
            .zip(&self.ends)
            .enumerate()
            .map(|(p, (a, end))| format!("p{p}={}/{end}", a.load(Ordering::Relaxed)))
            .collect();
        format!(
            "no progress for {} s (--quiet-timeout-s): committable offsets {}",
            quiet.as_secs(),
            at.join(" ")
        )
    }

    /// Waits until every partition's inputs are confirmed; fails after `quiet` without
    /// progress, or at the first refused output. Returns the time from the first record to the
    /// last confirmation.
    async fn wait(&self, quiet: Duration) -> Result<Duration, String> {
        let mut watch = Quiet::new(quiet, Instant::now());
        while !self.is_done() {
            self.check_failures()?;
            if watch.stalled(self.progress(), Instant::now()) {
                return Err(self.stalled_error(quiet));
            }
            // Polling a flag: only the end of the run waits on it, not a record.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.elapsed()
    }

    /// Samples the progress every [`STALL_SAMPLE`] from the first record to the end of the
    /// run, on a thread of its own; the handle returns the longest time without any progress
    /// (a consumer that stops fetching for a while shows here, not only in a lower rate).
    fn watch_stalls(self: &Arc<Self>) -> std::thread::JoinHandle<Duration> {
        let me = self.clone();
        std::thread::spawn(move || {
            // Sampling, not waiting for an event: a clock is what a stall is measured by.
            while me.first.get().is_none() && !me.is_done() {
                std::thread::sleep(Duration::from_millis(1));
            }
            let (mut last, mut since, mut longest) =
                (me.progress(), Instant::now(), Duration::ZERO);
            while !me.is_done() {
                std::thread::sleep(STALL_SAMPLE);
                let now = me.progress();
                if now != last {
                    (last, since) = (now, Instant::now());
                }
                longest = longest.max(since.elapsed());
            }
            longest
        })
    }

    /// The time from the first record to the last confirmation, once done.
    fn elapsed(&self) -> Result<Duration, String> {
        self.check_failures()?;
        let (first, last) = self
            .first
            .get()
            .zip(self.last.get())
            .ok_or("no record finished")?;
        Ok(last.duration_since(*first))
    }
}

/// Runs the variant `--pipeline` names, checks the commits and the output topic, and prints
/// the result lines.
pub(crate) async fn run(args: &Args) -> Result<(), String> {
    let contents = read_contents(args)?;
    let output = &args.output;
    KafkaBroker::new(&args.bootstrap)
        .create_topic(output, contents.partitions().len() as i32)
        .await
        .map_err(|e| format!("cannot create {output}: {e}"))?;
    let confirmed = Arc::new(Confirmed::new(&contents));
    let variant = args.pipeline.as_deref().unwrap_or_default();
    let stalls = confirmed.watch_stalls();
    let (elapsed, committed) = match variant {
        "raw" => raw(args, &contents, confirmed.clone()).await?,
        _ => framework(args, &contents, confirmed.clone()).await?,
    };
    // Done (or failed, and then `is_done` is not set: the error above returned already).
    if let Ok(longest) = stalls.join() {
        println!("longest_stall_ms={}", longest.as_millis());
    }
    if let Some(kb) = crate::peak_rss_kb() {
        println!("peak_rss_kb={kb}");
    }
    // The outputs: at least one per input (more if a record was delivered again).
    let outputs = tokio::task::block_in_place(|| contents::read_in_child(args, output))?;
    println!("output_topic={output} output_{}", outputs.summary());
    if outputs.total() < contents.total() {
        return Err(format!(
            "{output} holds {} records, fewer than the {} inputs",
            outputs.total(),
            contents.total()
        ));
    }
    // Every input finished (its committable offset is at the end of every partition).
    let counts = Counts {
        finished: contents.expected(),
        failed: vec![0; contents.partitions().len()],
    };
    report(
        &format!("pipeline-{variant}"),
        &contents,
        &counts,
        None,
        elapsed,
        &committed,
    )
}

/// One input partition's records in flight: offsets in consume order, each with whether its
/// output is confirmed.
#[derive(Debug, Default)]
struct Lane {
    pending: VecDeque<(i64, bool)>,
}

/// The raw loop's producer context: a confirmation marks its input and stores the offset
/// after the partition's confirmed prefix.
struct Pipeline {
    consumer: Arc<BaseConsumer>,
    topic: String,
    lanes: Vec<Mutex<Lane>>,
    confirmed: Arc<Confirmed>,
}

/// A delivery's opaque: its input's partition and offset in one word (partitions below 2^16,
/// offsets below 2^48), so a send allocates nothing more.
fn pack(partition: i32, offset: i64) -> usize {
    ((partition as usize) << 48) | offset as usize
}

fn unpack(opaque: usize) -> (usize, i64) {
    (opaque >> 48, (opaque & ((1 << 48) - 1)) as i64)
}

impl ClientContext for Pipeline {}

impl ProducerContext for Pipeline {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let (p, offset) = unpack(opaque);
        if let Err((e, _)) = result {
            self.confirmed
                .failed(format!("input partition {p} offset {offset}: {e}"));
            return;
        }
        let Some(lane) = self.lanes.get(p) else {
            return;
        };
        let mut lane = lane.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(i) = lane.pending.binary_search_by_key(&offset, |&(o, _)| o) {
            lane.pending[i].1 = true;
        }
        let mut last = None;
        while let Some(&(o, true)) = lane.pending.front() {
            lane.pending.pop_front();
            last = Some(o);
        }
        if let Some(o) = last {
            // librdkafka commits o + 1.
            if let Err(e) = self.consumer.store_offset(&self.topic, p as i32, o) {
                self.confirmed.failed(format!("store_offset: {e}"));
            }
            self.confirmed.set(p, o + 1);
        }
    }
}

/// The raw variant; returns the time and the group's committed offsets.
async fn raw(
    args: &Args,
    contents: &Contents,
    confirmed: Arc<Confirmed>,
) -> Result<(Duration, Vec<i64>), String> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &args.bootstrap)
        .set(
            "group.id",
            format!("bench-pipeline-raw-{}", std::process::id()),
        )
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000");
    for (k, v) in &args.config {
        config.set(k, v);
    }
    let consumer: Arc<BaseConsumer> = Arc::new(config.create().map_err(|e| e.to_string())?);
    consumer
        .subscribe(&[&args.topic])
        .map_err(|e| e.to_string())?;
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &args.bootstrap)
        .set("partitioner", PARTITIONER);
    for (k, v) in &args.config {
        config.set(k, v);
    }
    let partitions = contents.partitions().len();
    let context = Pipeline {
        consumer: consumer.clone(),
        topic: args.topic.clone(),
        lanes: (0..partitions).map(|_| Mutex::default()).collect(),
        confirmed: confirmed.clone(),
    };
    let producer: ThreadedProducer<Pipeline> = config
        .create_with_context(context)
        .map_err(|e| e.to_string())?;
    let (output, quiet_timeout) = (args.output.clone(), args.quiet_timeout);
    let topic = args.topic.clone();
    tokio::task::spawn_blocking(move || {
        // Per partition, the offset after the last record sent (a record at or before it is a
        // delivery again, which librdkafka makes on tansu: skipped, see `count::Tally`).
        let mut next = vec![i64::MIN; partitions];
        let mut quiet = Quiet::new(quiet_timeout, Instant::now());
        while !confirmed.is_done() {
            confirmed.check_failures()?;
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let p = m.partition() as usize;
                    let Some(next) = next.get_mut(p).filter(|n| m.offset() >= **n) else {
                        continue;
                    };
                    *next = m.offset() + 1;
                    confirmed.started();
                    producer.context().lanes[p]
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .pending
                        .push_back((m.offset(), false));
                    let payload = m.payload().unwrap_or_default();
                    let mut record =
                        BaseRecord::with_opaque_to(&output, pack(m.partition(), m.offset()))
                            .payload(payload);
                    loop {
                        match producer.send::<[u8], [u8]>(record) {
                            Ok(()) => break,
                            Err((
                                rdkafka::error::KafkaError::MessageProduction(
                                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                                ),
                                r,
                            )) => {
                                // The local queue is full: let the producer's thread drain it.
                                std::thread::sleep(Duration::from_millis(1));
                                record = r;
                            }
                            Err((e, _)) => return Err(format!("produce to {output}: {e}")),
                        }
                    }
                    continue;
                }
                Some(Err(e)) => eprintln!("consume error: {e}"),
                None => {}
            }
            // Only when no new record came: the loop's per-record path stays as it was.
            if quiet.stalled(confirmed.progress(), Instant::now()) {
                return Err(confirmed.stalled_error(quiet_timeout));
            }
        }
        let elapsed = confirmed.elapsed()?;
        println!("thread_cpu_ms={}", crate::thread_cpu_ms());
        producer
            .flush(Duration::from_secs(30))
            .map_err(|e| e.to_string())?;
        // Auto commit is periodic; flush what was stored so the check below sees it.
        let _ = consumer.commit_consumer_state(CommitMode::Sync);
        let committed = crate::committed_of(&consumer, &topic, partitions)?;
        Ok::<_, String>((elapsed, committed))
    })
    .await
    .map_err(|e| e.to_string())?
}

/// The ackstream variant; returns the time and the group's committed offsets.
async fn framework(
    args: &Args,
    contents: &Contents,
    confirmed: Arc<Confirmed>,
) -> Result<(Duration, Vec<i64>), String> {
    let mut broker = KafkaBroker::new(&args.bootstrap);
    for (k, v) in &args.config {
        broker = broker.config(k, v);
    }
    let group = format!("bench-pipeline-ackstream-{}", std::process::id());
    let subscriber = broker
        .subscriber(&args.topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .publish_to(&args.output)
        .ordering(args.ordering)
        .config("session.timeout.ms", "6000");
    let subscriber = match args.concurrency {
        Some(k) => subscriber.max_workers(k),
        None => subscriber,
    };
    let c = confirmed.clone();
    subscriber.handle(move |body: Bytes| {
        c.started();
        std::future::ready(body)
    });
    let app = App::new(broker.clone())
        .drain_timeout(Duration::from_secs(30))
        .spawn();
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = watch_committable(app.monitor(), &args.topic, &confirmed, &watching);
    let waited = confirmed.wait(args.quiet_timeout).await;
    watching.store(false, Ordering::Release);
    let _ = watcher.join();
    let elapsed = match waited {
        Ok(elapsed) => elapsed,
        Err(e) => {
            // Best effort: the error is what matters.
            let _ = tokio::time::timeout(Duration::from_secs(10), app.shutdown()).await;
            return Err(e);
        }
    };
    println!("thread_cpu_ms={}", crate::thread_cpu_ms());
    app.shutdown().await.map_err(|e| e.to_string())?; // synchronous commit of what finished
    let committed = crate::committed_offsets(args, &group, contents.partitions().len())?;
    Ok((elapsed, committed))
}

/// Follows the subscriber's committable offsets (the end of each partition's prefix of inputs
/// acked once their outputs were confirmed) from its status, every 2 ms, until `watching` is
/// cleared. Not through an observer: with one installed the framework builds three events per
/// record (delivered, settled, offset stored), which an app without an observer does not pay;
/// raw's equivalent is the atomic store in its callback.
fn watch_committable(
    monitor: ackstream::observe::Monitor,
    topic: &str,
    confirmed: &Arc<Confirmed>,
    watching: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let (topic, confirmed, watching) = (topic.to_owned(), confirmed.clone(), watching.clone());
    std::thread::spawn(move || {
        while watching.load(Ordering::Acquire) && !confirmed.is_done() {
            for subscriber in monitor.sample() {
                for p in subscriber
                    .partitions
                    .iter()
                    .filter(|p| *p.tp.topic == *topic)
                {
                    if let (Ok(i), Some(at)) = (usize::try_from(p.tp.partition), p.committable) {
                        confirmed.set(i, at);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    })
}
