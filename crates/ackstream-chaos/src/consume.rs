//! `consume`: the consumer under test. It logs each processed id before the record is settled,
//! so the log is a lower bound of what was processed whatever moment the process dies at. With
//! `--output OUT` it logs nothing and returns the id instead, published to OUT (`publish_to`):
//! the input is acked only once the broker confirmed its output, so OUT is that lower bound.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use ackstream::kafka::KafkaBroker;
use ackstream::prelude::*;

use crate::ChaosRecord;
use crate::args::Args;

/// The policy, concurrency and ordering issue 5 puts under test.
const WORKERS: usize = 16;

/// Append-only log of processed ids, one `write` per id: the kernel has it once `write`
/// returns, so a kill -9 right after cannot lose it.
#[derive(Debug)]
struct ProcessedLog(File);

impl ProcessedLog {
    fn record(&self, id: u64) -> std::io::Result<()> {
        (&self.0).write_all(format!("{id}\n").as_bytes())
    }
}

pub(crate) async fn run(a: &Args) -> Result<(), String> {
    // What the runtime does around rebalances and failures, to the member's own output file.
    let filter =
        std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,ackstream_core::runtime=debug".into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    let bootstrap = Args::required(&a.bootstrap, "--bootstrap")?;
    let topic = Args::required(&a.topic, "--topic")?;
    let group = Args::required(&a.group, "--group")?;
    let (work, fail_every) = (Duration::from_millis(a.work_ms), a.fail_every);

    // tansu joins a group in about half the session timeout; a killed member is noticed after it.
    let mut broker = KafkaBroker::new(bootstrap)
        .config("session.timeout.ms", "2000")
        .config("heartbeat.interval.ms", "500");
    // librdkafka's own debug contexts (e.g. `cgrp`), for diagnosing a run.
    if let Ok(contexts) = std::env::var("CHAOS_RDKAFKA_DEBUG") {
        broker = broker.config("debug", contexts);
    }
    // Other librdkafka settings, `key=value` separated by spaces, for experiments.
    for kv in std::env::var("CHAOS_RDKAFKA_CONFIG")
        .unwrap_or_default()
        .split_whitespace()
    {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("CHAOS_RDKAFKA_CONFIG: {kv:?} is not key=value"))?;
        broker = broker.config(k, v);
    }
    let subscriber = broker
        .subscriber(topic)
        .group_id(group)
        .auto_offset_reset(OffsetReset::Earliest)
        .ack_policy(AckPolicy::NackOnError)
        .max_workers(WORKERS)
        .ordering(KeepOrder::Key);
    if !a.output.is_empty() {
        subscriber.publish_to(&a.output).handle(
            move |Json(r): Json<ChaosRecord>, Key(key), Attempt(attempt)| async move {
                tokio::time::sleep(work).await; // stands in for the handler's I/O
                if r.id % fail_every == 0 && attempt == 1 {
                    return Err(HandlerError::from("injected failure on a first attempt"));
                }
                // Published (under the input's key) before the input is acked.
                let output = Response::new(Json(ChaosRecord { id: r.id }));
                Ok(match key {
                    Some(key) => output.key(key),
                    None => output,
                })
            },
        );
    } else {
        let path = Args::required(&a.log, "--log")?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("{path}: {e}"))?;
        let log = Arc::new(ProcessedLog(file));
        subscriber.handle(move |Json(r): Json<ChaosRecord>, Attempt(attempt)| {
            let log = log.clone();
            async move {
                tokio::time::sleep(work).await; // stands in for the handler's I/O
                if r.id % fail_every == 0 && attempt == 1 {
                    return Err(HandlerError::from("injected failure on a first attempt"));
                }
                // Logged before the handler returns, hence before the record is acked.
                log.record(r.id)?;
                Ok(())
            }
        });
    }
    App::new(broker)
        .drain_timeout(Duration::from_secs(10))
        .run()
        .await
        .map_err(|e| e.to_string())
}
