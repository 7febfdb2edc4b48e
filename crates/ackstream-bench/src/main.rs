//! `ackstream-bench`: consumer throughput of ackstream's ack policies against a raw rdkafka
//! loop, on the same topic.
//!
//! ```text
//! ackstream-bench --bootstrap HOST:PORT --topic T --count N --produce [--partitions P] [--keyed]
//! ackstream-bench --bootstrap HOST:PORT --topic T [--count N] --policy POLICY [--concurrency K]
//!                 [--ordering partition|key|unordered] [--handler-sleep-ms MS]
//!                 [--quiet-timeout-s S] [--config key=value]...
//! ackstream-bench --bootstrap HOST:PORT --topic T --read-contents [--quiet-timeout-s S]
//! ackstream-bench --amplification [--memory | --bootstrap HOST:PORT --topic T] --count N
//!                 [--policy POLICY] [--concurrency K] [--ordering ORDERING] [--fail-every F]
//! ackstream-bench --bootstrap HOST:PORT --topic T [--count N] --pipeline raw|ackstream
//!                 --output OUT [--concurrency K] [--ordering ORDERING] [--config key=value]...
//! ```
//! `--pipeline raw|ackstream --output OUT` publishes each record's payload to OUT and counts an
//! input only once its output is confirmed (see `pipeline.rs`).
//! `--amplification` counts deliveries per record when the first attempt of one record in F is
//! nacked (see `amplification.rs`).
//! `--concurrency K` is the subscriber's `max_workers(K)`; `--handler-sleep-ms` makes the handler
//! await a timer (accurate to tens of microseconds, see `timer.rs`) standing in for I/O. Records
//! carry 10,000 distinct keys (for `--ordering key`). Framework variants also print
//! `peak_rss_kb=` (the process's peak resident memory).
//! POLICY: `raw` (plain rdkafka loop: `store_offset` per record, auto commit: the physical
//! baseline), `ack_first`, `ack`, `nack_on_error`, `manual` (the handler calls `msg.ack()`).
//! Every variant counts what it consumed, not what it assumes: before timing starts, a plain
//! consumer in a child process (`--read-contents`) reads every partition of T to its end
//! (`contents.rs`: not ListOffsets, which tansu answers wrong), and the run prints
//! `topic=.. partitions=.. records=.. per_partition=..`; `--count N`, if given, must be that
//! total. Then the variant consumes T from the earliest offset in a fresh consumer group and
//! decodes each record as JSON into a small struct (`--produce` writes them; `--keyed` lets the
//! key choose the partition, so partitions differ). A record that does not decode counts as
//! finished once the variant has given up on it (raw: at once; a policy: when the framework
//! settles it, after `DEFAULT_DECODE_ATTEMPTS` deliveries under `nack_on_error`). When every
//! partition has finished its records the group's committed offsets are checked to have
//! reached the end of every partition (a synchronous commit at shutdown makes this hold for
//! every policy, `ack_first` included). The last lines printed are `policy=.. count=..
//! decode_failures=.. elapsed_s=.. committed=..` (with a warning on stderr naming the first
//! record that did not decode, if any) and `msgs_per_s=<number>`, measured from the first
//! record to the last. A run in which no record finishes for `--quiet-timeout-s` (default 30)
//! ends with exit code 1 and an error giving, per partition, the records counted against the
//! records found.

mod amplification;
mod args;
mod contents;
mod count;
mod framework;
mod memory;
mod pipeline;
mod produce;
mod raw;
mod timer;

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::{Deserialize, Serialize};

/// The system allocator, counting allocations only once `--memory` turned counting on
/// ([`count_allocations`]). Counting adds an atomic add on one shared counter per allocation;
/// on in every mode, it would make allocations contend across threads, which no application
/// pays, and the Kafka benches would charge it to the framework (which allocates in Rust) and
/// not to raw librdkafka (which allocates in C, past this allocator).
#[global_allocator]
static GLOBAL: taktora_bounded_alloc::CountingAllocator =
    taktora_bounded_alloc::CountingAllocator::new();

/// Turns allocation counting on for the rest of the process.
pub(crate) fn count_allocations() {
    GLOBAL.set_tracking(true);
}

/// Heap allocations (and reallocations) counted so far.
pub(crate) fn alloc_count() -> u64 {
    GLOBAL.alloc_count() as u64
}

/// The benchmark's record: about 100 bytes of JSON.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Order {
    id: u64,
    customer: String,
    amount_cents: u64,
    currency: String,
    status: String,
}

impl Order {
    fn new(id: u64) -> Self {
        Self {
            id,
            customer: format!("customer-{:08}", id % 100_000),
            amount_cents: id * 7 % 100_000,
            currency: "EUR".into(),
            status: "confirmed".into(),
        }
    }
}

/// Number of partitions of `topic`, from the broker's metadata.
pub(crate) fn partition_count(args: &args::Args) -> Result<i32, String> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &args.bootstrap);
    let consumer: BaseConsumer = config.create().map_err(|e| e.to_string())?;
    let metadata = consumer
        .fetch_metadata(Some(&args.topic), Duration::from_secs(30))
        .map_err(|e| e.to_string())?;
    metadata
        .topics()
        .first()
        .map(|t| t.partitions().len() as i32)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("topic {} does not exist", args.topic))
}

/// The committed offset of each of `partitions` partitions of `topic` for the consumer's
/// group (0 where none), in one request.
pub(crate) fn committed_of<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partitions: usize,
) -> Result<Vec<i64>, String> {
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions as i32 {
        tpl.add_partition(topic, p);
    }
    let list = consumer
        .committed_offsets(tpl, Duration::from_secs(30))
        .map_err(|e| e.to_string())?;
    let mut committed = vec![0; partitions];
    for e in list.elements() {
        if let (rdkafka::Offset::Offset(o), Some(c)) =
            (e.offset(), committed.get_mut(e.partition() as usize))
        {
            *c = o;
        }
    }
    Ok(committed)
}

/// `group`'s committed offsets of `--topic` (see [`committed_of`]).
pub(crate) fn committed_offsets(
    args: &args::Args,
    group: &str,
    partitions: usize,
) -> Result<Vec<i64>, String> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &args.bootstrap)
        .set("group.id", group);
    let consumer: BaseConsumer = config.create().map_err(|e| e.to_string())?;
    tokio::task::block_in_place(|| committed_of(&consumer, &args.topic, partitions))
}

/// The process's peak resident memory (Linux `VmHWM`).
pub(crate) fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The CPU time each of the process's threads used so far, summed by thread name, in ms,
/// largest first (Linux `/proc/self/task`, 100 ticks a second), taken when a run ends and
/// before its clients are dropped: where its time went, beside its rate.
pub(crate) fn thread_cpu_ms() -> String {
    let mut by_name: std::collections::BTreeMap<String, u64> = Default::default();
    let tasks = std::fs::read_dir("/proc/self/task").into_iter().flatten();
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ...`: utime and stime are fields 14 and 15, in clock ticks.
        let Some((name, rest)) = stat.split_once(" (").and_then(|(_, r)| r.rsplit_once(") "))
        else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
            .sum();
        *by_name.entry(name.to_owned()).or_default() += ticks * 10;
    }
    let mut all: Vec<_> = by_name.into_iter().filter(|(_, ms)| *ms > 0).collect();
    all.sort_by_key(|(_, ms)| std::cmp::Reverse(*ms));
    all.iter()
        .map(|(name, ms)| format!("{}:{ms}", name.replace(' ', "_")))
        .collect::<Vec<_>>()
        .join(",")
}

/// Prints the result lines of a consuming run, after checking that `committed` (the group's
/// committed offset per partition, 0 where none) reached the end of every partition. The last
/// line is what other tools read. `first_failure` describes the first record that did not
/// decode, if any did.
pub(crate) fn report(
    policy: &str,
    contents: &contents::Contents,
    counts: &count::Counts,
    first_failure: Option<&str>,
    elapsed: Duration,
    committed: &[i64],
) -> Result<(), String> {
    contents.check_committed(committed)?;
    let records = counts.total();
    let failed = counts.failed_total();
    if failed > 0 {
        eprintln!(
            "warning: {failed} of {records} records did not decode as the bench's Order \
             (the figures include them); first: {}",
            first_failure.unwrap_or("?")
        );
    }
    let rate = records as f64 / elapsed.as_secs_f64();
    println!(
        "policy={policy} count={records} decode_failures={failed} elapsed_s={:.3} committed={} \
         (verified: end of every partition)",
        elapsed.as_secs_f64(),
        committed.iter().sum::<i64>()
    );
    println!("msgs_per_s={rate:.0}");
    Ok(())
}

/// Reads `--topic` to its end (before timing starts, in a child process: see `contents.rs`),
/// checks it against `--count` and prints what it holds.
pub(crate) fn read_contents(args: &args::Args) -> Result<contents::Contents, String> {
    let start = std::time::Instant::now();
    let contents = tokio::task::block_in_place(|| contents::read_in_child(args, &args.topic))?;
    contents.check_count(args.count)?;
    println!(
        "topic={} partitions={} {} read_s={:.3}",
        args.topic,
        contents.partitions().len(),
        contents.summary(),
        start.elapsed().as_secs_f64()
    );
    Ok(contents)
}

/// `app` with observability on, as `--observe` asks: spans (nobody listening: the cost of
/// their existence, no exporter) and the HTTP endpoint (metrics sampled, durations timed).
fn observed(
    app: ackstream::App,
    broker: &impl ackstream::Broker,
    args: &args::Args,
) -> ackstream::App {
    if !args.observe {
        return app;
    }
    if args.traced {
        listen_with_opentelemetry();
        broker.trace(ackstream::observe::otel::tracing());
    } else {
        broker.trace(ackstream::trace::Tracing::spans());
    }
    app.http("127.0.0.1:0")
}

/// Installs, for the whole process, an OpenTelemetry tracer with no exporter behind
/// `tracing-opentelemetry`: every span is built and recorded by the SDK, then dropped.
fn listen_with_opentelemetry() {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("ackstream-bench"));
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
        .expect("the bench installs its only subscriber once");
}

fn main() {
    // Worker threads of the async runtime (default: tokio's, one per core).
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = std::env::var("ACKSTREAM_BENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        runtime.worker_threads(n);
    }
    let runtime = runtime.enable_all().build().expect("tokio runtime");
    runtime.block_on(run());
}

async fn run() {
    let args = match args::Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}\n\n{}", args::USAGE);
            std::process::exit(2);
        }
    };
    let result = if args.amplification && args.memory {
        amplification::run_memory(&args).await
    } else if args.amplification {
        amplification::run_kafka(&args).await
    } else if args.read_contents {
        contents::run_child(&args)
    } else if args.memory {
        memory::run(&args).await
    } else if args.pipeline.is_some() {
        pipeline::run(&args).await
    } else if args.produce {
        produce::run(&args).await
    } else if args.policy == "raw" {
        raw::run(&args).await
    } else {
        framework::run(&args).await
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
