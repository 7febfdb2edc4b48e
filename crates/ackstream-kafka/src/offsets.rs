//! Coalesced commits: the runtime stores committable offsets here on every move (one slot per
//! assigned partition, a lock-free store); they reach Kafka in one asynchronous commit per
//! interval (or per `commit_batch` moves of a partition), and in a synchronous commit on revoke
//! and shutdown. A commit that fails leaves its offsets marked for the next one, so a failure is
//! retried and never taken for success.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use ackstream_core::backend::{OffsetStore, PartitionOffset};
use ackstream_core::{BackendError, TopicPartition};
use futures_util::future::BoxFuture;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Notify;

use crate::consumer::RdConsumer;

/// No offset stored yet.
const NONE: i64 = -1;

/// One partition's latest committable offset. Written by its partition's settles (a plain
/// atomic store: no lock, no cache line shared with other partitions), read by the committer.
#[derive(Debug)]
struct Slot {
    offset: AtomicI64,
    /// Moves since the last commit took this slot.
    moves: AtomicUsize,
    batch: usize,
    batch_full: Arc<Notify>,
    /// Attempt counts handed over to the partition's next owner, as commit metadata (every
    /// commit carries it: Kafka replaces a partition's metadata with each commit), and how
    /// often it changed.
    carried: Mutex<Option<Arc<str>>>,
    carried_version: AtomicUsize,
}

impl PartitionOffset for Slot {
    fn store(&self, offset: i64) {
        self.offset.store(offset, Ordering::Release);
        if self.moves.fetch_add(1, Ordering::Relaxed) + 1 == self.batch {
            self.batch_full.notify_one();
        }
    }

    fn carry_attempts(&self, offset: i64, attempts: &[(i64, u32)]) {
        let text = ackstream_core::backend::carried::encode(attempts);
        *self.carried.lock().unwrap_or_else(|p| p.into_inner()) = Some(text.into());
        self.carried_version.fetch_add(1, Ordering::Release);
        // Nothing may be stored yet (a nack of the first record): commit where reading began.
        self.offset.fetch_max(offset, Ordering::AcqRel);
        self.batch_full.notify_one();
    }
}

#[derive(Debug)]
struct Entry {
    slot: Arc<Slot>,
    /// The offset last handed to a commit (`NONE` after a failure, so it is sent again).
    sent: i64,
    /// The slot's `carried_version` last handed to a commit.
    sent_carried: usize,
}

/// The committable offsets of one consumer.
#[derive(Debug)]
pub(crate) struct KafkaOffsets {
    consumer: OnceLock<Weak<RdConsumer>>,
    entries: Mutex<HashMap<TopicPartition, Entry>>,
    batch: usize,
    /// How long a synchronous commit waits for the broker.
    sync_timeout: std::time::Duration,
    /// Woken when one partition accumulated `batch` moves.
    pub(crate) batch_full: Arc<Notify>,
}

impl KafkaOffsets {
    pub(crate) fn new(batch: usize, sync_timeout: std::time::Duration) -> Self {
        Self {
            consumer: OnceLock::new(),
            entries: Mutex::new(HashMap::new()),
            batch,
            sync_timeout,
            batch_full: Arc::new(Notify::new()),
        }
    }

    pub(crate) fn attach(&self, consumer: &Arc<RdConsumer>) {
        let _ = self.consumer.set(Arc::downgrade(consumer));
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<TopicPartition, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The offsets to commit (moved ones, or all), marked sent.
    fn take(&self, all: bool) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for (tp, entry) in self.entries().iter_mut() {
            entry.slot.moves.store(0, Ordering::Relaxed);
            let version = entry.slot.carried_version.load(Ordering::Acquire);
            let offset = entry.slot.offset.load(Ordering::Acquire);
            if offset != NONE && (all || offset != entry.sent || version != entry.sent_carried) {
                entry.sent = offset;
                entry.sent_carried = version;
                let _ = tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(offset));
                let carried = entry.slot.carried.lock().unwrap_or_else(|p| p.into_inner());
                if let (Some(text), Some(mut e)) = (
                    carried.as_ref(),
                    tpl.find_partition(&tp.topic, tp.partition),
                ) {
                    e.set_metadata(&**text);
                }
            }
        }
        tpl
    }

    /// Marks the offsets of a failed commit for the next commit (unless they moved meanwhile,
    /// in which case they are sent anyway).
    fn mark_failed(&self, tpl: &TopicPartitionList) {
        let mut entries = self.entries();
        for e in tpl.elements() {
            if let Offset::Offset(o) = e.offset()
                && let Some(entry) = entries.get_mut(&TopicPartition::new(e.topic(), e.partition()))
                && entry.sent == o
            {
                entry.sent = NONE;
            }
        }
    }

    /// Sends an asynchronous commit of every moved offset (the result arrives in
    /// [`on_commit_result`](Self::on_commit_result)).
    pub(crate) fn commit_async(&self) {
        let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else {
            return;
        };
        let tpl = self.take(false);
        if tpl.count() == 0 {
            return;
        }
        if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
            tracing::warn!(error = %e, "commit could not be sent; retrying with the next one");
            self.mark_failed(&tpl);
        }
    }

    /// librdkafka's commit callback (for asynchronous and synchronous commits).
    pub(crate) fn on_commit_result(&self, result: KafkaResult<()>, tpl: &TopicPartitionList) {
        if let Err(e) = result {
            tracing::warn!(error = %e, "commit failed; the offsets will be committed again");
            self.mark_failed(tpl);
        }
    }

    async fn commit_sync(&self) -> Result<(), BackendError> {
        let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else {
            return Err(BackendError::new("consumer closed before its commit"));
        };
        let tpl = self.take(true);
        if tpl.count() == 0 {
            return Ok(());
        }
        let sent = tpl.clone();
        // librdkafka's synchronous commit has no timeout: with no group coordinator reachable
        // it waits for one forever. So it runs on a thread of its own, and the wait is bounded;
        // past it the offsets stay marked for the next commit (a restart redelivers the
        // records after the last confirmed commit; nothing is lost). A plain thread, not
        // `spawn_blocking`: the runtime would wait for a stuck blocking task when it shuts down.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("ackstream-kafka-commit".into())
            .spawn(move || {
                let _ = tx.send(consumer.commit(&sent, CommitMode::Sync));
            })
            .map_err(|e| BackendError::with_source("cannot start the commit thread", e))?;
        let failed = |e: BackendError| {
            self.mark_failed(&tpl);
            e
        };
        match tokio::time::timeout(self.sync_timeout, rx).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(failed(BackendError::with_source(
                "synchronous commit failed",
                e,
            ))),
            Ok(Err(_)) => Err(failed(BackendError::new(
                "commit thread ended without a result",
            ))),
            Err(_) => Err(failed(BackendError::new(format!(
                "synchronous commit not confirmed within {:?} (no group coordinator reachable?)",
                self.sync_timeout
            )))),
        }
    }
}

impl OffsetStore for KafkaOffsets {
    fn partition(&self, tp: &TopicPartition) -> Arc<dyn PartitionOffset> {
        let slot = Arc::new(Slot {
            offset: AtomicI64::new(NONE),
            moves: AtomicUsize::new(0),
            batch: self.batch,
            batch_full: self.batch_full.clone(),
            carried: Mutex::new(None),
            carried_version: AtomicUsize::new(0),
        });
        let entry = Entry {
            slot: slot.clone(),
            sent: NONE,
            sent_carried: 0,
        };
        // A partition assigned again gets a fresh slot: nothing stored during its previous
        // assignment is committed on its behalf.
        self.entries().insert(tp.clone(), entry);
        slot
    }

    fn commit(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(self.commit_sync())
    }

    fn release(&self, partitions: &[TopicPartition]) {
        let mut entries = self.entries();
        for tp in partitions {
            entries.remove(tp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets_of(tpl: &TopicPartitionList) -> Vec<(i32, i64)> {
        tpl.elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_sent_offset_is_not_sent_again_until_it_moves() {
        let offsets = KafkaOffsets::new(100, std::time::Duration::from_secs(1));
        let slot = offsets.partition(&TopicPartition::new("t", 0));
        slot.store(5);
        assert_eq!(offsets_of(&offsets.take(false)), [(0, 5)]);
        assert_eq!(offsets_of(&offsets.take(false)), []);
        slot.store(7);
        assert_eq!(offsets_of(&offsets.take(false)), [(0, 7)]);
    }

    #[test]
    fn a_failed_commit_is_sent_again_by_the_next_one() {
        let offsets = KafkaOffsets::new(100, std::time::Duration::from_secs(1));
        let slot = offsets.partition(&TopicPartition::new("t", 0));
        slot.store(5);
        let failed = offsets.take(false);
        offsets.on_commit_result(Err(rdkafka::error::KafkaError::Canceled), &failed);
        assert_eq!(offsets_of(&offsets.take(false)), [(0, 5)]);
    }

    #[test]
    fn a_failure_of_an_older_commit_does_not_resend_a_newer_offset_twice() {
        let offsets = KafkaOffsets::new(100, std::time::Duration::from_secs(1));
        let slot = offsets.partition(&TopicPartition::new("t", 0));
        slot.store(5);
        let older = offsets.take(false);
        slot.store(9);
        assert_eq!(offsets_of(&offsets.take(false)), [(0, 9)]);
        offsets.on_commit_result(Err(rdkafka::error::KafkaError::Canceled), &older);
        assert_eq!(offsets_of(&offsets.take(false)), []);
    }

    #[test]
    fn carried_attempts_go_with_every_commit_from_then_on() {
        let offsets = KafkaOffsets::new(100, std::time::Duration::from_secs(1));
        let slot = offsets.partition(&TopicPartition::new("t", 0));
        slot.store(5);
        let metadata = |tpl: &TopicPartitionList| {
            tpl.elements()
                .iter()
                .map(|e| e.metadata().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(metadata(&offsets.take(false)), [""]);
        // A nack at the committable offset: the offset did not move, the commit is sent anyway.
        slot.carry_attempts(5, &[(5, 2)]);
        assert_eq!(metadata(&offsets.take(false)), ["ackstream.attempts=5:2"]);
        slot.store(6);
        assert_eq!(metadata(&offsets.take(false)), ["ackstream.attempts=5:2"]);
    }

    #[test]
    fn a_nack_before_anything_was_stored_commits_where_reading_began() {
        let offsets = KafkaOffsets::new(100, std::time::Duration::from_secs(1));
        let slot = offsets.partition(&TopicPartition::new("t", 0));
        slot.carry_attempts(3, &[(3, 1)]);
        assert_eq!(offsets_of(&offsets.take(false)), [(0, 3)]);
    }

    #[test]
    fn a_released_partition_is_not_committed() {
        let offsets = KafkaOffsets::new(100, std::time::Duration::from_secs(1));
        let tp = TopicPartition::new("t", 0);
        offsets.partition(&tp).store(5);
        offsets.release(std::slice::from_ref(&tp));
        assert_eq!(offsets_of(&offsets.take(true)), []);
    }
}
