//! `--produce`: create the topic and fill it with N JSON records, as fast as librdkafka goes.
//!
//! Record `id` has key `id % 10000`. By default it goes to partition `id % P` (an even spread);
//! with `--keyed` the key chooses the partition (librdkafka's default partitioner, as any keyed
//! producer would), so partitions hold different numbers of records.

use std::time::{Duration, Instant};

use ackstream::Admin;
use ackstream::kafka::KafkaBroker;
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::Order;
use crate::args::Args;

/// Creates the topic and fills it; prints one line saying what was produced.
pub(crate) async fn run(args: &Args) -> Result<(), String> {
    let count = args.count();
    KafkaBroker::new(&args.bootstrap)
        .create_topic(&args.topic, args.partitions)
        .await
        .map_err(|e| e.to_string())?;
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &args.bootstrap)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000");
    let producer: ThreadedProducer<DefaultProducerContext> =
        config.create().map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut bytes = 0usize;
    for id in 0..count {
        let payload = serde_json::to_vec(&Order::new(id)).map_err(|e| e.to_string())?;
        bytes += payload.len();
        let key = (id % 10_000).to_string();
        let mut record = BaseRecord::<String, Vec<u8>>::to(&args.topic)
            .key(&key)
            .payload(&payload);
        if !args.keyed {
            record = record.partition((id % args.partitions as u64) as i32);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    // queue full: let the background thread drain it
                    std::thread::sleep(Duration::from_millis(1));
                    record = r;
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .map_err(|e| e.to_string())?;
    let elapsed = start.elapsed();
    println!(
        "produced {count} records ({} bytes each on average) to {} with {} partitions ({}) in {:.2}s",
        bytes / count.max(1) as usize,
        args.topic,
        args.partitions,
        if args.keyed {
            "keyed: the key chooses the partition"
        } else {
            "round-robin"
        },
        elapsed.as_secs_f64()
    );
    Ok(())
}
