//! Coalesced commits: the runtime stores committable offsets here on every move (one slot per
//! assigned partition, a lock-free store); they reach Kafka in one commit per interval (or per
//! `commit_batch` moves of a partition), and in a commit the runtime waits for on revoke and
//! shutdown (and `msg.commit()`). A commit that fails leaves its offsets marked for the next
//! one, so a failure is retried and never taken for success.
//!
//! Every commit of a consumer is made by one thread of its own, one at a time, each waiting for
//! the broker's answer before the next is sent (see [`KafkaOffsets::attach`]):
//! - **bounded threads**: however many callers wait for a commit (and however long the group
//!   coordinator is gone), one thread serves them; requests that wait meanwhile are coalesced
//!   into the next commit, which takes every offset stored by then. Callers wait at most the
//!   commit timeout (librdkafka's synchronous commit has none: without a coordinator it waits
//!   for one forever).
//! - **order**: an older commit cannot land after a newer one (as an asynchronous commit that
//!   librdkafka retries internally could), so the offset that ends up committed is the last
//!   one stored. In particular the final commit of a revoke or a shutdown is sent only once
//!   every earlier commit of the consumer has been answered, and nothing of a partition is
//!   sent after its release. Should a confirmation still show the broker below what was
//!   confirmed before (a success for an offset lower than one already confirmed), the
//!   partition's stored offset is sent again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak, mpsc};

use ackstream_core::backend::{OffsetStore, PartitionOffset};
use ackstream_core::{BackendError, TopicPartition};
use futures_util::future::BoxFuture;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Notify;

use crate::driver::RdConsumer;
use crate::error::kafka_error;

/// No offset stored yet.
const NONE: i64 = -1;

/// The name of a consumer's commit thread.
pub(crate) const COMMIT_THREAD: &str = "ackstream-commit";

/// A request to the commit thread.
#[derive(Debug)]
struct Request {
    /// Commit every stored offset (a commit someone waits for), not only those that moved.
    all: bool,
    /// Where the result goes (`None`: a coalesced commit nobody waits for).
    reply: Option<tokio::sync::oneshot::Sender<KafkaResult<()>>>,
}

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
    /// The highest offset a commit was confirmed for (`NONE`: none yet).
    confirmed: i64,
}

/// The committable offsets of one consumer.
#[derive(Debug)]
pub(crate) struct KafkaOffsets {
    consumer: OnceLock<Weak<RdConsumer>>,
    entries: Mutex<HashMap<TopicPartition, Entry>>,
    batch: usize,
    /// How long a synchronous commit waits for the broker.
    sync_timeout: std::time::Duration,
    /// Woken when one partition accumulated `batch` moves (or must be sent again).
    pub(crate) batch_full: Arc<Notify>,
    /// Requests to the commit thread (set by `attach`).
    requests: OnceLock<Mutex<mpsc::Sender<Request>>>,
    /// A coalesced commit is queued for the commit thread and not taken yet: another would
    /// add nothing.
    coalesced_queued: AtomicBool,
    /// Each partition's high watermark, from librdkafka's latest statistics.
    high_watermarks: Mutex<HashMap<TopicPartition, i64>>,
    /// Commits answered so far: confirmed, and failed.
    commits_ok: AtomicU64,
    commits_failed: AtomicU64,
}

impl KafkaOffsets {
    pub(crate) fn new(batch: usize, sync_timeout: std::time::Duration) -> Self {
        Self {
            consumer: OnceLock::new(),
            entries: Mutex::new(HashMap::new()),
            batch,
            sync_timeout,
            batch_full: Arc::new(Notify::new()),
            requests: OnceLock::new(),
            coalesced_queued: AtomicBool::new(false),
            high_watermarks: Mutex::new(HashMap::new()),
            commits_ok: AtomicU64::new(0),
            commits_failed: AtomicU64::new(0),
        }
    }

    /// Attaches the consumer and, if it `commits` (it has a group), starts the commit thread,
    /// which makes every commit of this consumer, one at a time (see the module docs). The
    /// thread holds neither the consumer nor the offsets between commits, and ends once the
    /// offsets are dropped.
    pub(crate) fn attach(
        self: &Arc<Self>,
        consumer: &Arc<RdConsumer>,
        commits: bool,
    ) -> std::io::Result<()> {
        let _ = self.consumer.set(Arc::downgrade(consumer));
        if !commits {
            return Ok(());
        }
        let (tx, rx) = mpsc::channel();
        let offsets = Arc::downgrade(self);
        std::thread::Builder::new()
            .name(COMMIT_THREAD.into())
            .spawn(move || serve_commits(&offsets, &rx))?;
        let _ = self.requests.set(Mutex::new(tx));
        Ok(())
    }

    fn request(&self, request: Request) -> Result<(), BackendError> {
        let sent = self
            .requests
            .get()
            .map(|tx| tx.lock().unwrap_or_else(|p| p.into_inner()).send(request));
        match sent {
            Some(Ok(())) => Ok(()),
            _ => Err(BackendError::new("the commit thread is not running")),
        }
    }

    /// Makes one commit (on the commit thread) for the requests in `batch`, and answers them.
    fn serve(&self, batch: Vec<Request>) {
        // Before taking the offsets: a coalesced request made from now on is queued again.
        self.coalesced_queued.store(false, Ordering::Release);
        let all = batch.iter().any(|r| r.all);
        let result = self.commit_now(all);
        for request in batch {
            if let Some(reply) = request.reply {
                let _ = reply.send(result.clone());
            }
        }
    }

    /// Commits (moved offsets, or all) and waits for the broker's answer.
    fn commit_now(&self, all: bool) -> KafkaResult<()> {
        let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else {
            return Err(KafkaError::Canceled);
        };
        let tpl = self.take(all);
        if tpl.count() == 0 {
            return Ok(());
        }
        let result = consumer.commit(&tpl, CommitMode::Sync);
        self.on_commit_result(result.clone(), &tpl);
        result
    }

    /// Whether any partition has an offset stored (something a commit would send).
    fn anything_stored(&self) -> bool {
        self.entries()
            .values()
            .any(|e| e.slot.offset.load(Ordering::Acquire) != NONE)
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

    /// Notes confirmed offsets. A confirmation below one already confirmed for the same
    /// partition means an older commit landed after a newer one, so the broker may now be
    /// below what is stored: the partition's stored offset is sent again, soon.
    fn mark_confirmed(&self, tpl: &TopicPartitionList) {
        let mut entries = self.entries();
        let mut resend = false;
        for e in tpl.elements() {
            if let Offset::Offset(o) = e.offset()
                && let Some(entry) = entries.get_mut(&TopicPartition::new(e.topic(), e.partition()))
            {
                if o < entry.confirmed {
                    tracing::warn!(
                        topic = e.topic(),
                        partition = e.partition(),
                        offset = o,
                        confirmed = entry.confirmed,
                        "an older commit landed after a newer one; committing the stored offset again"
                    );
                    entry.sent = NONE;
                    entry.confirmed = o;
                    resend = true;
                } else {
                    entry.confirmed = o;
                }
            }
        }
        drop(entries);
        if resend {
            self.batch_full.notify_one();
        }
    }

    /// Asks the commit thread for a commit of every moved offset, unless one is queued already.
    pub(crate) fn commit_async(&self) {
        if self.coalesced_queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let request = Request {
            all: false,
            reply: None,
        };
        if let Err(e) = self.request(request) {
            self.coalesced_queued.store(false, Ordering::Release);
            tracing::warn!(error = %e, "commit could not be sent; retrying with the next one");
        }
    }

    /// The result of a commit, as the commit thread gets it.
    fn on_commit_result(&self, result: KafkaResult<()>, tpl: &TopicPartitionList) {
        match result {
            Ok(()) => {
                self.commits_ok.fetch_add(1, Ordering::Relaxed);
                self.mark_confirmed(tpl);
            }
            Err(e) => {
                self.commits_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "commit failed; the offsets will be committed again");
                self.mark_failed(tpl);
            }
        }
    }

    /// Commits every stored offset and waits for the broker's answer, at most the commit
    /// timeout. Past it the commit goes on on the commit thread, and its offsets are sent again
    /// if it fails; the records after the last confirmed commit are delivered again after a
    /// restart, so nothing is lost.
    async fn commit_sync(&self) -> Result<(), BackendError> {
        if !self.anything_stored() {
            return Ok(());
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.request(Request {
            all: true,
            reply: Some(tx),
        })?;
        match tokio::time::timeout(self.sync_timeout, rx).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(kafka_error("synchronous commit failed", e)),
            Ok(Err(_)) => Err(BackendError::new("commit thread ended without a result")),
            Err(_) => Err(BackendError::new(format!(
                "synchronous commit not confirmed within {:?} (no group coordinator reachable?)",
                self.sync_timeout
            ))),
        }
    }
}

/// The commit thread: one commit at a time, for every request waiting when it starts.
fn serve_commits(offsets: &Weak<KafkaOffsets>, requests: &mpsc::Receiver<Request>) {
    while let Ok(first) = requests.recv() {
        let mut batch = vec![first];
        batch.extend(requests.try_iter());
        let Some(offsets) = offsets.upgrade() else {
            return;
        };
        offsets.serve(batch);
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
            confirmed: NONE,
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

    fn high_watermark(&self, tp: &TopicPartition) -> Option<i64> {
        let marks = self
            .high_watermarks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        marks.get(tp).copied()
    }

    fn confirmed(&self, tp: &TopicPartition) -> Option<i64> {
        let confirmed = self.entries().get(tp)?.confirmed;
        (confirmed != NONE).then_some(confirmed)
    }

    fn commits(&self) -> Option<(u64, u64)> {
        Some((
            self.commits_ok.load(Ordering::Relaxed),
            self.commits_failed.load(Ordering::Relaxed),
        ))
    }
}

impl KafkaOffsets {
    /// Keeps the high watermarks of a statistics report (librdkafka reports -1001 for a
    /// partition it has not fetched yet: those are skipped).
    pub(crate) fn saw_high_watermarks(&self, stats: &rdkafka::Statistics) {
        let mut marks = self
            .high_watermarks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (topic, t) in &stats.topics {
            for (&partition, p) in &t.partitions {
                if partition >= 0 && p.hi_offset >= 0 {
                    marks.insert(TopicPartition::new(topic.as_str(), partition), p.hi_offset);
                }
            }
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
    fn an_older_commit_confirmed_after_a_newer_one_sends_the_stored_offset_again() {
        let offsets = KafkaOffsets::new(100, std::time::Duration::from_secs(1));
        let slot = offsets.partition(&TopicPartition::new("t", 0));
        slot.store(5);
        let older = offsets.take(false);
        slot.store(9);
        let newer = offsets.take(false);
        offsets.on_commit_result(Ok(()), &newer);
        assert_eq!(offsets_of(&offsets.take(false)), [], "9 is confirmed");
        // The older commit, retried, lands last: the broker is at 5 now.
        offsets.on_commit_result(Ok(()), &older);
        assert_eq!(
            offsets_of(&offsets.take(false)),
            [(0, 9)],
            "the last stored offset is sent again"
        );
    }

    #[test]
    fn confirmations_in_commit_order_send_nothing_again() {
        let offsets = KafkaOffsets::new(100, std::time::Duration::from_secs(1));
        let slot = offsets.partition(&TopicPartition::new("t", 0));
        slot.store(5);
        let older = offsets.take(false);
        slot.store(9);
        let newer = offsets.take(false);
        offsets.on_commit_result(Ok(()), &older);
        offsets.on_commit_result(Ok(()), &newer);
        assert_eq!(offsets_of(&offsets.take(false)), []);
        // The same offset confirmed twice is no regression either.
        offsets.on_commit_result(Ok(()), &newer);
        assert_eq!(offsets_of(&offsets.take(false)), []);
    }

    #[test]
    fn an_older_confirmation_of_another_assignment_changes_nothing() {
        let offsets = KafkaOffsets::new(100, std::time::Duration::from_secs(1));
        let tp = TopicPartition::new("t", 0);
        let slot = offsets.partition(&tp);
        slot.store(9);
        let first = offsets.take(false);
        offsets.on_commit_result(Ok(()), &first);
        // Assigned again (after another member committed further): a fresh slot.
        let slot = offsets.partition(&tp);
        slot.store(20);
        let second = offsets.take(false);
        offsets.on_commit_result(Ok(()), &second);
        assert_eq!(offsets_of(&offsets.take(false)), []);
    }

    #[test]
    fn without_a_commit_thread_a_commit_is_an_error_not_a_success() {
        let offsets = KafkaOffsets::new(100, std::time::Duration::from_secs(1));
        offsets.partition(&TopicPartition::new("t", 0)).store(5);
        let result = futures_util::FutureExt::now_or_never(offsets.commit_sync())
            .expect("no commit thread: fails at once");
        assert!(result.is_err());
        // Nothing stored: nothing to wait for.
        let empty = KafkaOffsets::new(100, std::time::Duration::from_secs(1));
        let result = futures_util::FutureExt::now_or_never(empty.commit_sync());
        assert!(matches!(result, Some(Ok(()))));
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
