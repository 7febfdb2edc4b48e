//! Coalesced commits: the runtime stores committable offsets here on every move; they reach
//! Kafka in one asynchronous commit per interval (or per `commit_batch` moves), and in a
//! synchronous commit on revoke and shutdown. A commit that fails leaves its offsets marked for
//! the next one, so a failure is retried and never taken for success.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use ackstream_core::backend::OffsetStore;
use ackstream_core::{BackendError, TopicPartition};
use futures_util::future::BoxFuture;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Notify;

use crate::consumer::RdConsumer;

/// FNV-1a: partitions are few and keys are trusted, so a cheap hash beats SipHash on the
/// per-record store path.
#[derive(Debug, Default, Clone, Copy)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type Slots = HashMap<TopicPartition, Slot, std::hash::BuildHasherDefault<Fnv>>;

#[derive(Debug, Clone, Copy)]
struct Slot {
    offset: i64,
    dirty: bool,
}

/// The committable offsets of one consumer.
#[derive(Debug)]
pub(crate) struct KafkaOffsets {
    consumer: OnceLock<Weak<RdConsumer>>,
    slots: Mutex<Slots>,
    moves: AtomicUsize,
    batch: usize,
    /// Woken when `batch` moves accumulated.
    pub(crate) batch_full: Notify,
}

impl KafkaOffsets {
    pub(crate) fn new(batch: usize) -> Self {
        Self {
            consumer: OnceLock::new(),
            slots: Mutex::new(Slots::default()),
            moves: AtomicUsize::new(0),
            batch,
            batch_full: Notify::new(),
        }
    }

    pub(crate) fn attach(&self, consumer: &Arc<RdConsumer>) {
        let _ = self.consumer.set(Arc::downgrade(consumer));
    }

    fn slots(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The offsets to commit (dirty ones, or all), marked clean.
    fn take(&self, all: bool) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        let mut slots = self.slots();
        for (tp, slot) in slots.iter_mut() {
            if all || slot.dirty {
                slot.dirty = false;
                let _ =
                    tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(slot.offset));
            }
        }
        self.moves.store(0, Ordering::Relaxed);
        tpl
    }

    /// Marks the offsets of a failed commit for the next commit (unless they moved meanwhile,
    /// in which case they are dirty already).
    fn mark_failed(&self, tpl: &TopicPartitionList) {
        let mut slots = self.slots();
        for e in tpl.elements() {
            if let Offset::Offset(o) = e.offset()
                && let Some(slot) = slots.get_mut(&TopicPartition::new(e.topic(), e.partition()))
                && slot.offset == o
            {
                slot.dirty = true;
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
        let result = tokio::task::spawn_blocking(move || consumer.commit(&sent, CommitMode::Sync))
            .await
            .map_err(|e| BackendError::with_source("commit task failed", e))?;
        result.map_err(|e| {
            self.mark_failed(&tpl);
            BackendError::with_source("synchronous commit failed", e)
        })
    }
}

impl OffsetStore for KafkaOffsets {
    fn store(&self, tp: &TopicPartition, offset: i64) {
        {
            let mut slots = self.slots();
            match slots.get_mut(tp) {
                Some(slot) => {
                    *slot = Slot {
                        offset,
                        dirty: true,
                    }
                }
                None => {
                    slots.insert(
                        tp.clone(),
                        Slot {
                            offset,
                            dirty: true,
                        },
                    );
                }
            }
        }
        if self.moves.fetch_add(1, Ordering::Relaxed) + 1 == self.batch {
            self.batch_full.notify_one();
        }
    }

    fn commit(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(self.commit_sync())
    }

    fn release(&self, partitions: &[TopicPartition]) {
        let mut slots = self.slots();
        for tp in partitions {
            slots.remove(tp);
        }
    }
}
