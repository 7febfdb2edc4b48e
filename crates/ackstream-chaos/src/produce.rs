//! `produce`: create the topic and write ids 0..N, keyed, each confirmed by the broker; with
//! `--output OUT`, create OUT too (empty, as many partitions), for `consume --output`.

use std::time::Duration;

use ackstream::Admin;
use ackstream::kafka::KafkaBroker;
use std::sync::atomic::{AtomicU64, Ordering};

use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext};

use crate::ChaosRecord;
use crate::args::Args;

/// Keys cycle through this many values, so key ordering has work to do in every partition.
const KEYS: u64 = 1000;

/// Counts records the broker did not take (the default context ignores them).
#[derive(Debug, Default)]
struct Failures(AtomicU64);

impl ClientContext for Failures {}

impl ProducerContext for Failures {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, (): ()) {
        if let Err((e, _)) = result {
            eprintln!("delivery failed: {e}");
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

pub(crate) async fn run(a: &Args) -> Result<(), String> {
    let bootstrap = Args::required(&a.bootstrap, "--bootstrap")?;
    let topic = Args::required(&a.topic, "--topic")?;
    let admin = KafkaBroker::new(bootstrap);
    admin
        .create_topic(topic, a.partitions)
        .await
        .map_err(|e| e.to_string())?;
    if !a.output.is_empty() {
        admin
            .create_topic(&a.output, a.partitions)
            .await
            .map_err(|e| format!("{}: {e}", a.output))?;
    }
    let producer: ThreadedProducer<Failures> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .create_with_context(Failures::default())
        .map_err(|e| e.to_string())?;
    for id in 0..a.count {
        let payload = serde_json::to_vec(&ChaosRecord { id }).map_err(|e| e.to_string())?;
        let key = (id % KEYS).to_string();
        let mut record = BaseRecord::<String, Vec<u8>>::to(topic)
            .key(&key)
            .payload(&payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    // The local queue is full: let the producer's thread drain it.
                    std::thread::sleep(Duration::from_millis(1));
                    record = r;
                }
            }
        }
    }
    // flush fails if any record could not be delivered within the timeout.
    producer
        .flush(Duration::from_secs(120))
        .map_err(|e| format!("not every record was confirmed: {e}"))?;
    let failed = producer.context().0.load(Ordering::Relaxed);
    if failed != 0 {
        return Err(format!("{failed} records were not delivered"));
    }
    println!("produced {} records to {topic}", a.count);
    Ok(())
}
