//! The ackstream variants: a `KafkaBroker` subscriber with the chosen policy.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ackstream::prelude::*;
use ackstream_kafka::KafkaBroker;
use tokio::sync::Notify;

use crate::args::Args;
use crate::{Order, partition_count, report};

/// A counter on its own cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded(AtomicU64);

/// Counts handled records and timestamps the first and the N-th. Counters are per partition
/// (a partition is handled by one task at a time), so the count costs the handler no shared
/// cache line, as the raw loop's local counter costs it none.
#[derive(Debug)]
struct Progress {
    /// Records each partition holds (the producer spreads ids round-robin).
    share: Vec<u64>,
    seen: Vec<Padded>,
    partitions_done: AtomicU64,
    first: OnceLock<Instant>,
    last: OnceLock<Instant>,
    done: Notify,
}

impl Progress {
    fn new(count: u64, partitions: i32) -> Self {
        let p = partitions as u64;
        Self {
            share: (0..p)
                .map(|i| count / p + u64::from(i < count % p))
                .collect(),
            seen: (0..p).map(|_| Padded::default()).collect(),
            partitions_done: AtomicU64::new(0),
            first: OnceLock::new(),
            last: OnceLock::new(),
            done: Notify::new(),
        }
    }

    fn record(&self, partition: i32) {
        if self.first.get().is_none() {
            let _ = self.first.set(Instant::now());
        }
        let p = partition as usize;
        if self.seen[p].0.fetch_add(1, Ordering::Relaxed) + 1 == self.share[p]
            && self.partitions_done.fetch_add(1, Ordering::AcqRel) + 1 == self.share.len() as u64
        {
            let _ = self.last.set(Instant::now());
            self.done.notify_one();
        }
    }
}

/// The subscriber every framework variant runs: from the earliest offset, with `policy` and the
/// ordering and worker count of `args`, and a 6 s session.
pub(crate) fn subscriber<B: Broker>(
    broker: &B,
    topic: &str,
    group: &str,
    policy: AckPolicy,
    args: &Args,
) -> ackstream::SubscriberBuilder<B::Backend> {
    let subscriber = broker
        .subscriber(topic)
        .group_id(group)
        .auto_offset_reset(OffsetReset::Earliest)
        .ack_policy(policy)
        .ordering(args.ordering)
        .config("session.timeout.ms", "6000");
    match args.concurrency {
        Some(k) => subscriber.max_workers(k),
        None => subscriber,
    }
}

pub(crate) async fn run(args: &Args) -> Result<(), String> {
    let partitions = partition_count(args)?;
    let policy: AckPolicy = args.policy.parse()?;
    let mut broker = KafkaBroker::new(&args.bootstrap);
    for (k, v) in &args.config {
        broker = broker.config(k, v);
    }
    let group = format!("bench-{}-{}", args.policy, std::process::id());
    let progress = Arc::new(Progress::new(args.count, partitions));
    let subscriber = subscriber(&broker, &args.topic, &group, policy, args);
    let p = progress.clone();
    if let Some(io) = args.handler_sleep {
        // Stands in for an I/O call: counted when it completes.
        subscriber.handle(move |Json(order): Json<Order>, msg: KafkaMessage| {
            std::hint::black_box(order);
            let p = p.clone();
            async move {
                crate::timer::sleep(io).await;
                if policy == AckPolicy::Manual {
                    msg.ack().await?;
                }
                p.record(msg.partition());
                Ok::<(), HandlerError>(())
            }
        });
    } else if policy == AckPolicy::Manual {
        subscriber.handle(move |Json(order): Json<Order>, msg: KafkaMessage| {
            std::hint::black_box(order);
            p.record(msg.partition());
            async move {
                msg.ack().await?;
                Ok::<(), HandlerError>(())
            }
        });
    } else {
        // Like the raw loop, this handler never looks at headers, so they are not decoded.
        subscriber.handle(move |Json(order): Json<Order>, Partition(partition)| {
            std::hint::black_box(order);
            p.record(partition);
            std::future::ready(())
        });
    }
    let app = App::new(broker.clone())
        .drain_timeout(Duration::from_secs(30))
        .spawn();
    progress.done.notified().await;
    app.shutdown().await.map_err(|e| e.to_string())?; // synchronous commit of what finished
    let elapsed = progress
        .last
        .get()
        .unwrap()
        .duration_since(*progress.first.get().unwrap());
    let mut committed = 0;
    for partition in 0..partitions {
        committed += broker
            .committed_offset(&group, &args.topic, partition)
            .await
            .map_err(|e| e.to_string())?
            .unwrap_or(0);
    }
    if let Some(kb) = peak_rss_kb() {
        println!("peak_rss_kb={kb}");
    }
    report(args, elapsed, committed)
}

/// The process's peak resident memory (Linux `VmHWM`).
fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
