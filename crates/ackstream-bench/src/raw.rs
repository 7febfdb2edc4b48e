//! `raw`: the physical baseline, a plain rdkafka loop: decode, `store_offset`, auto commit.
//!
//! A record that does not decode as an `Order` is counted as failed and its offset stored all
//! the same (the loop gives up on it, as the `ack` policy does). A record at or before the
//! last one of its partition is a delivery again (librdkafka makes them on tansu, see
//! `contents.rs`) and is skipped, as the framework's offset tracker refuses it.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{ClientConfig, Message};

use crate::args::Args;
use crate::count::{Quiet, Tally, quiet_error};
use crate::{Order, read_contents, report};

/// Consumes every record of the topic (as [`read_contents`] found them) in a fresh group,
/// then checks the group's committed offsets and prints the result lines.
pub(crate) async fn run(args: &Args) -> Result<(), String> {
    let contents = read_contents(args)?;
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &args.bootstrap)
        .set("group.id", format!("bench-raw-{}", std::process::id()))
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000");
    for (k, v) in &args.config {
        config.set(k, v);
    }
    let consumer: BaseConsumer = config.create().map_err(|e| e.to_string())?;
    consumer
        .subscribe(&[&args.topic])
        .map_err(|e| e.to_string())?;
    let topic = args.topic.clone();
    let quiet_timeout = args.quiet_timeout;
    let expected = contents.clone();
    let (elapsed, counts, first_failure, committed) = tokio::task::spawn_blocking(move || {
        let mut tally = Tally::new(expected.expected());
        let mut quiet = Quiet::new(quiet_timeout, Instant::now());
        let mut first = None;
        let mut first_failure = None;
        while !tally.is_done() {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) if tally.first_delivery(m.partition(), m.offset()) => {
                    let decoded = serde_json::from_slice::<Order>(m.payload().unwrap_or_default());
                    let failed = decoded.is_err();
                    match decoded {
                        Ok(order) => {
                            std::hint::black_box(order);
                        }
                        Err(e) => {
                            first_failure.get_or_insert_with(|| {
                                format!("partition {} offset {}: {e}", m.partition(), m.offset())
                            });
                        }
                    }
                    consumer
                        .store_offset_from_message(&m)
                        .map_err(|e| e.to_string())?;
                    first.get_or_insert_with(Instant::now);
                    tally.finish(m.partition(), failed);
                    continue;
                }
                Some(Ok(_)) | None => {}
                Some(Err(e)) => eprintln!("consume error: {e}"),
            }
            // Only when no new record came: the loop's per-record path stays as it was.
            if quiet.stalled(tally.counts().total(), Instant::now()) {
                return Err(quiet_error(quiet_timeout, &expected, tally.counts()));
            }
        }
        let elapsed = first.map_or(Duration::ZERO, |f| f.elapsed());
        // Auto commit is periodic; flush what was stored so the check below sees it.
        let _ = consumer.commit_consumer_state(CommitMode::Sync);
        let committed = crate::committed_of(&consumer, &topic, tally.counts().finished.len())?;
        Ok::<_, String>((elapsed, tally.counts().clone(), first_failure, committed))
    })
    .await
    .map_err(|e| e.to_string())??;
    if let Some(kb) = crate::peak_rss_kb() {
        println!("peak_rss_kb={kb}");
    }
    report(
        &args.policy,
        &contents,
        &counts,
        first_failure.as_deref(),
        elapsed,
        &committed,
    )
}
