//! `ackstream-bench`: consumer throughput of ackstream's ack policies against a raw rdkafka
//! loop, on the same topic.
//!
//! ```text
//! ackstream-bench --bootstrap HOST:PORT --topic T --count N --produce [--partitions P]
//! ackstream-bench --bootstrap HOST:PORT --topic T --count N --policy POLICY [--concurrency K]
//!                 [--ordering partition|key|unordered] [--handler-sleep-ms MS]
//!                 [--config key=value]...
//! ackstream-bench --amplification [--memory | --bootstrap HOST:PORT --topic T] --count N
//!                 [--policy POLICY] [--concurrency K] [--ordering ORDERING] [--fail-every F]
//! ```
//! `--amplification` counts deliveries per record when the first attempt of one record in F is
//! nacked (see `amplification.rs`).
//! `--concurrency K` is the subscriber's `max_workers(K)`; `--handler-sleep-ms` makes the handler
//! await a timer (accurate to tens of microseconds, see `timer.rs`) standing in for I/O. Records
//! carry 10,000 distinct keys (for `--ordering key`). Framework variants also print
//! `peak_rss_kb=` (the process's peak resident memory).
//! POLICY: `raw` (plain rdkafka loop: `store_offset` per record, auto commit: the physical
//! baseline), `ack_first`, `ack`, `nack_on_error`, `manual` (the handler calls `msg.ack()`).
//! Every variant consumes the N records of T (N as given to `--produce`, which spreads them
//! round-robin over the partitions) from the earliest offset in a fresh consumer group
//! and decodes each as JSON into a small struct. After the N-th record the group's committed
//! offsets are checked to have reached the end of every partition (a synchronous commit at
//! shutdown makes this hold for every policy, `ack_first` included). The last line printed is
//! `msgs_per_s=<number>`, measured from the first record to the N-th.

mod amplification;
mod args;
mod framework;
mod memory;
mod produce;
mod raw;
mod timer;

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::{Deserialize, Serialize};

/// Counts heap allocations (for `--memory`): the system allocator, instrumented.
#[global_allocator]
static GLOBAL: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

/// Heap allocations (and reallocations) so far.
pub(crate) fn alloc_count() -> u64 {
    let stats = GLOBAL.stats();
    (stats.allocations + stats.reallocations) as u64
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

/// Prints the result lines; the last one is what other tools read.
pub(crate) fn report(args: &args::Args, elapsed: Duration, committed: i64) -> Result<(), String> {
    let expected = args.count as i64;
    if committed != expected {
        return Err(format!(
            "committed offsets sum to {committed}, expected {expected}: not every record was committed"
        ));
    }
    let rate = args.count as f64 / elapsed.as_secs_f64();
    println!(
        "policy={} count={} elapsed_s={:.3} committed={committed} (verified: end of every partition)",
        args.policy,
        args.count,
        elapsed.as_secs_f64()
    );
    println!("msgs_per_s={rate:.0}");
    Ok(())
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
    } else if args.memory {
        memory::run(&args).await
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
