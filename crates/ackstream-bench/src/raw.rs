//! `raw`: the physical baseline, a plain rdkafka loop: decode, `store_offset`, auto commit.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{ClientConfig, Message, Offset};

use crate::args::Args;
use crate::{Order, partition_count, report};

pub(crate) async fn run(args: &Args) -> Result<(), String> {
    let partitions = partition_count(args)?;
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
    let count = args.count;
    let topic = args.topic.clone();
    tokio::task::spawn_blocking(move || {
        let mut seen = 0u64;
        let mut first = None;
        while seen < count {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let order: Order = serde_json::from_slice(m.payload().unwrap_or_default())
                        .map_err(|e| e.to_string())?;
                    std::hint::black_box(order);
                    consumer
                        .store_offset_from_message(&m)
                        .map_err(|e| e.to_string())?;
                    first.get_or_insert_with(Instant::now);
                    seen += 1;
                }
                Some(Err(e)) => eprintln!("consume error: {e}"),
                None => {}
            }
        }
        let elapsed = first.map_or(Duration::ZERO, |f| f.elapsed());
        // Auto commit is periodic; flush what was stored so the check below sees it.
        let _ = consumer.commit_consumer_state(CommitMode::Sync);
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(&topic, p);
        }
        let committed = consumer
            .committed_offsets(tpl, Duration::from_secs(30))
            .map_err(|e| e.to_string())?;
        let sum: i64 = committed
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            })
            .sum();
        Ok::<_, String>((elapsed, sum))
    })
    .await
    .map_err(|e| e.to_string())?
    .and_then(|(elapsed, committed)| report(args, elapsed, committed))
}
