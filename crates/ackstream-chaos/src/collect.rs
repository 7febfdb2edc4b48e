//! Reading an output topic: `collect` follows it and logs each id it finds (the `pipeline`
//! scenario's progress, in the same log format `check --seen` reads), and [`read_to_end`] reads
//! it to its end once (the scenario's final check).
//!
//! Both read every partition from the beginning with a plain consumer (no group). librdkafka on
//! tansu delivers some records again (see `ackstream-bench`'s `contents.rs`): a record at or
//! before the last offset read of its partition is such a delivery and counts for nothing, so
//! every record of the topic counts once, and an id published twice counts twice.

use std::fs::OpenOptions;
use std::io::Write;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::ChaosRecord;
use crate::args::Args;

/// A read ends this long after every partition reported its end without anything new...
const GRACE: Duration = Duration::from_millis(500);
/// ...or, when an end is never reported (tansu's high watermark can lag), this long without a
/// new record.
const IDLE: Duration = Duration::from_secs(3);
/// A read that finds nothing at all gives up after this long.
const NOTHING: Duration = Duration::from_secs(60);

/// A plain consumer assigned every partition of `topic` from the beginning, reporting ends.
fn reader(bootstrap: &str, topic: &str) -> Result<(BaseConsumer, usize), String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        // librdkafka refuses `assign` without a group id; this consumer never joins or commits.
        .set("group.id", "ackstream-chaos-read")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .map_err(|e| e.to_string())?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .map_err(|e| e.to_string())?;
    let partitions = metadata
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len());
    if partitions == 0 {
        return Err(format!("topic {topic} does not exist"));
    }
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .map_err(|e| e.to_string())?;
    }
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    Ok((consumer, partitions))
}

/// Per partition, the offset after the last record read: whether a record is new.
struct Positions(Vec<i64>);

impl Positions {
    fn is_new(&mut self, partition: i32, offset: i64) -> bool {
        match usize::try_from(partition)
            .ok()
            .and_then(|p| self.0.get_mut(p))
        {
            Some(next) if offset >= *next => {
                *next = offset + 1;
                true
            }
            _ => false,
        }
    }
}

/// The id an output record carries.
fn id_of(m: &BorrowedMessage<'_>) -> Result<u64, String> {
    let payload = m.payload().unwrap_or_default();
    serde_json::from_slice::<ChaosRecord>(payload)
        .map(|r| r.id)
        .map_err(|e| {
            format!(
                "output at partition {} offset {} is not a record: {e}",
                m.partition(),
                m.offset()
            )
        })
}

/// `collect`: follows `--topic` and appends each new record's id to `--log` (one `write` per
/// id), until SIGTERM.
pub(crate) async fn run(a: &Args) -> Result<(), String> {
    let bootstrap = Args::required(&a.bootstrap, "--bootstrap")?.to_owned();
    let topic = Args::required(&a.topic, "--topic")?.to_owned();
    let path = Args::required(&a.log, "--log")?;
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("{path}: {e}"))?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping = stop.clone();
    let reading = tokio::task::spawn_blocking(move || {
        let (consumer, partitions) = reader(&bootstrap, &topic)?;
        let mut positions = Positions(vec![i64::MIN; partitions]);
        while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) if positions.is_new(m.partition(), m.offset()) => {
                    log.write_all(format!("{}\n", id_of(&m)?).as_bytes())
                        .map_err(|e| e.to_string())?;
                }
                Some(Ok(_) | Err(KafkaError::PartitionEOF(_))) | None => {}
                Some(Err(e)) => eprintln!("collect: {e}"),
            }
        }
        Ok::<(), String>(())
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    reading.await.map_err(|e| e.to_string())?
}

/// Reads `topic` to its end and returns the id of each record, in the log's format (one line
/// per record). Blocks.
pub(crate) fn read_to_end(bootstrap: &str, topic: &str) -> Result<String, String> {
    let (consumer, partitions) = reader(bootstrap, topic)?;
    let mut positions = Positions(vec![i64::MIN; partitions]);
    let mut at_end = vec![false; partitions];
    let mut ids = String::new();
    let start = Instant::now();
    let mut news: Option<Instant> = None;
    loop {
        let event = consumer.poll(Duration::from_millis(50));
        let now = Instant::now();
        match event {
            Some(Ok(m)) if positions.is_new(m.partition(), m.offset()) => {
                ids.push_str(&format!("{}\n", id_of(&m)?));
                if let Some(e) = at_end.get_mut(m.partition() as usize) {
                    *e = false;
                }
                news = Some(now);
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                if let Some(e) = at_end.get_mut(p as usize).filter(|e| !**e) {
                    *e = true;
                    news = Some(now);
                }
            }
            Some(Ok(_)) | None => {}
            Some(Err(e)) => eprintln!("reading {topic}: {e}"),
        }
        let quiet = news.map(|t| now.duration_since(t));
        match quiet {
            Some(q) if q >= IDLE || (q >= GRACE && at_end.iter().all(|&e| e)) => break,
            None if now.duration_since(start) >= NOTHING => {
                return Err(format!("reading {topic}: nothing for {NOTHING:?}"));
            }
            _ => {}
        }
    }
    Ok(ids)
}
