//! Topics and partition logs of the in-memory broker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use ackstream_core::{
    BackendError, Headers, OutgoingRecord, Record, RecordPosition, TopicPartition,
};
use bytes::Bytes;
use tokio::sync::watch;

use super::partitioner::partition_for_key;

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug)]
struct Stored {
    key: Option<Bytes>,
    headers: Headers,
    timestamp: i64,
    payload: Bytes,
}

/// One partition: an append-only list of records (offset = index) and delivery counts.
#[derive(Debug)]
pub(super) struct PartitionLog {
    pub(super) tp: TopicPartition,
    records: Mutex<Vec<Stored>>,
    /// The offset the next record will get; watched by readers waiting at the end.
    end: watch::Sender<i64>,
    /// Deliveries per consumer group (`None`: consumers without a group) and offset.
    deliveries: Mutex<HashMap<Option<Arc<str>>, Vec<u32>>>,
}

impl PartitionLog {
    fn new(tp: TopicPartition) -> Self {
        Self {
            tp,
            records: Mutex::new(Vec::new()),
            end: watch::Sender::new(0),
            deliveries: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn end_offset(&self) -> i64 {
        *self.end.borrow()
    }

    pub(super) fn watch_end(&self) -> watch::Receiver<i64> {
        self.end.subscribe()
    }

    fn append(&self, record: &OutgoingRecord) -> i64 {
        let timestamp = record.timestamp.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        });
        let mut records = lock(&self.records);
        records.push(Stored {
            key: record.key.clone(),
            headers: record.headers.clone(),
            timestamp,
            payload: record.payload.clone(),
        });
        let offset = records.len() as i64 - 1;
        self.end.send_replace(offset + 1);
        offset
    }

    /// Copies records `[from, from + max)` into `out` and counts them delivered to `group`.
    pub(super) fn fetch(
        &self,
        from: i64,
        max: usize,
        group: &Option<Arc<str>>,
        out: &mut std::collections::VecDeque<Record>,
    ) -> i64 {
        let records = lock(&self.records);
        let start = from.max(0) as usize;
        let end = records.len().min(start + max);
        for (i, s) in records[start.min(end)..end].iter().enumerate() {
            out.push_back(Record {
                topic: self.tp.topic.clone(),
                partition: self.tp.partition,
                offset: (start + i) as i64,
                key: s.key.clone(),
                headers: s.headers.clone(),
                timestamp: Some(s.timestamp),
                payload: s.payload.clone(),
            });
        }
        drop(records);
        if end > start {
            let mut deliveries = lock(&self.deliveries);
            let counts = deliveries.entry(group.clone()).or_default();
            if counts.len() < end {
                counts.resize(end, 0);
            }
            for c in &mut counts[start..end] {
                *c += 1;
            }
        }
        end as i64
    }

    /// Takes back the delivery counts of records fetched but never handed to a consumer.
    pub(super) fn unfetch(&self, offsets: impl Iterator<Item = i64>, group: &Option<Arc<str>>) {
        let mut deliveries = lock(&self.deliveries);
        if let Some(counts) = deliveries.get_mut(group) {
            for o in offsets {
                if let Some(c) = counts.get_mut(o as usize) {
                    *c = c.saturating_sub(1);
                }
            }
        }
    }

    pub(super) fn delivery_count(&self, group: Option<&str>, offset: i64) -> u32 {
        let key: Option<Arc<str>> = group.map(Arc::from);
        lock(&self.deliveries)
            .get(&key)
            .and_then(|c| c.get(usize::try_from(offset).ok()?).copied())
            .unwrap_or(0)
    }

    pub(super) fn records(&self) -> Vec<Record> {
        let mut out = std::collections::VecDeque::new();
        let records = lock(&self.records);
        for (i, s) in records.iter().enumerate() {
            out.push_back(Record {
                topic: self.tp.topic.clone(),
                partition: self.tp.partition,
                offset: i as i64,
                key: s.key.clone(),
                headers: s.headers.clone(),
                timestamp: Some(s.timestamp),
                payload: s.payload.clone(),
            });
        }
        out.into()
    }
}

/// A topic: its partitions.
#[derive(Debug)]
pub(super) struct Topic {
    pub(super) partitions: Vec<Arc<PartitionLog>>,
    round_robin: std::sync::atomic::AtomicUsize,
}

impl Topic {
    fn new(name: &str, partitions: i32) -> Self {
        let name: Arc<str> = Arc::from(name);
        Self {
            partitions: (0..partitions)
                .map(|p| Arc::new(PartitionLog::new(TopicPartition::new(name.clone(), p))))
                .collect(),
            round_robin: Default::default(),
        }
    }

    pub(super) fn append(&self, record: &OutgoingRecord) -> Result<RecordPosition, BackendError> {
        let n = self.partitions.len() as i32;
        let partition = match (record.partition, &record.key) {
            (Some(p), _) if (0..n).contains(&p) => p,
            (Some(p), _) => {
                return Err(BackendError::new(format!(
                    "topic {} has {n} partitions; partition {p} does not exist",
                    record.topic
                ))
                .with_kind(ackstream_core::BackendErrorKind::Invalid));
            }
            (None, Some(key)) => partition_for_key(key, n),
            (None, None) => {
                let next = self
                    .round_robin
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                (next % self.partitions.len()) as i32
            }
        };
        let offset = self.partitions[partition as usize].append(record);
        Ok(RecordPosition { partition, offset })
    }
}

/// All topics, created explicitly or on first use.
#[derive(Debug)]
pub(super) struct Topics {
    topics: Mutex<HashMap<String, Arc<Topic>>>,
    pub(super) default_partitions: std::sync::atomic::AtomicI32,
}

impl Topics {
    pub(super) fn new() -> Self {
        Self {
            topics: Mutex::new(HashMap::new()),
            default_partitions: std::sync::atomic::AtomicI32::new(1),
        }
    }

    pub(super) fn create(&self, name: &str, partitions: i32) -> Result<Arc<Topic>, BackendError> {
        if partitions < 1 {
            return Err(BackendError::new(format!(
                "topic {name}: a topic needs at least one partition, not {partitions}"
            )));
        }
        check_topic_name(name)?;
        let mut topics = lock(&self.topics);
        if let Some(t) = topics.get(name) {
            if t.partitions.len() as i32 != partitions {
                return Err(BackendError::new(format!(
                    "topic {name} already exists with {} partitions",
                    t.partitions.len()
                )));
            }
            return Ok(t.clone());
        }
        let topic = Arc::new(Topic::new(name, partitions));
        topics.insert(name.to_owned(), topic.clone());
        Ok(topic)
    }

    /// The topic, created with the default partition count if it does not exist (as Kafka's
    /// `auto.create.topics.enable`).
    pub(super) fn get_or_create(&self, name: &str) -> Result<Arc<Topic>, BackendError> {
        if let Some(t) = self.get(name) {
            return Ok(t);
        }
        let n = self
            .default_partitions
            .load(std::sync::atomic::Ordering::Relaxed);
        self.create(name, n)
    }

    pub(super) fn get(&self, name: &str) -> Option<Arc<Topic>> {
        lock(&self.topics).get(name).cloned()
    }

    pub(super) fn partition(&self, topic: &str, partition: i32) -> Option<Arc<PartitionLog>> {
        self.get(topic)?
            .partitions
            .get(usize::try_from(partition).ok()?)
            .cloned()
    }
}

/// Kafka's rules for topic names: 1 to 249 characters of `a-z A-Z 0-9 . _ -`, not `.` or `..`.
fn check_topic_name(name: &str) -> Result<(), BackendError> {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty()
        || name.len() > 249
        || name == "."
        || name == ".."
        || !name.chars().all(legal)
    {
        return Err(BackendError::new(format!(
            "invalid topic name {name:?}: Kafka allows 1 to 249 characters of a-z, A-Z, 0-9, '.', '_' and '-'"
        ))
        .with_kind(ackstream_core::BackendErrorKind::Invalid));
    }
    Ok(())
}
