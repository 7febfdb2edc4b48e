//! The consumer driver: one librdkafka consumer per subscriber, its poll thread (records,
//! rebalance and commit callbacks, seeks: see [`poller`](crate::driver::poller)), a committer task, and
//! a feed per assigned partition.

pub(crate) mod budget;
pub(crate) mod feed;
pub(crate) mod inbox;
pub(crate) mod offsets;
pub(crate) mod poller;
pub(crate) mod prefetch;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use ackstream_core::backend::{ConsumerEvent, NoCommit, OffsetStore, RevokeAck, carried};
use ackstream_core::{
    BackendError, BackendErrorKind, OffsetReset, SubscriberConfig, TopicPartition,
};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use crate::driver::budget::Budget;
use crate::driver::feed::KafkaFeed;
use crate::driver::inbox::Inbox;
use crate::driver::offsets::KafkaOffsets;
use crate::driver::poller::{Poller, Wakeup};
use crate::error::kafka_error;
use crate::settings::Settings;

pub(crate) type RdConsumer = BaseConsumer<DriverContext>;

/// The librdkafka settings the commit rule depends on, and the values ackstream needs: it
/// stores and commits each partition's finished prefix itself; librdkafka's automatic offset
/// store and commit would commit what was fetched, finished or not.
pub(crate) const COMMIT_SETTINGS: [(&str, &str); 2] = [
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
];
type EventSender = mpsc::UnboundedSender<ConsumerEvent<KafkaFeed>>;

const METADATA_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an assignment waits for the group's committed offsets and their metadata (the
/// attempt counts handed over); past it, counts restart for this assignment.
const CARRIED_TIMEOUT: Duration = Duration::from_secs(5);

/// How often librdkafka reports statistics unless the user says otherwise (they carry the
/// high watermarks consumer lag is computed from).
const STATISTICS_INTERVAL_MS: &str = "1000";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// librdkafka callbacks, run on the poll thread.
pub(crate) struct DriverContext {
    /// `None` once the consumer is closing: revokes then complete without waiting.
    events: Mutex<Option<EventSender>>,
    me: OnceLock<Weak<RdConsumer>>,
    inboxes: Mutex<HashMap<TopicPartition, Arc<Inbox>>>,
    /// What the inboxes may hold together.
    budget: Arc<Budget>,
    wakeup: Arc<Wakeup>,
    /// Set once a fatal error was reported.
    failed: AtomicBool,
    /// Main-queue events served by the callbacks so far.
    served: AtomicU64,
    /// Rebalances (assignments and revokes) so far: a run of records popped before one must
    /// not be handed to an inbox opened by it.
    rebalances: AtomicU64,
    /// Where the high watermarks of librdkafka's statistics go (for consumer lag).
    offsets: Arc<KafkaOffsets>,
    /// The one topic the consumer subscribed to by name (not a pattern), if it did.
    only_topic: Option<Arc<str>>,
    /// Whether every partition assigned so far is of `only_topic`: then the poll thread need
    /// not read each record's topic back from librdkafka. Cleared for good by an assignment
    /// of another topic's partition (a group leader's own assignor may hand out partitions
    /// of topics the member did not subscribe to).
    one_topic: AtomicBool,
}

impl std::fmt::Debug for DriverContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverContext").finish_non_exhaustive()
    }
}

/// librdkafka's default handling of logs, statistics and errors (what a context that does
/// not override them does), for [`DriverContext`] to delegate to.
struct Defaults;

impl ClientContext for Defaults {}

/// Every callback counts itself in `served`, so the poll thread knows whether a poll of the
/// main queue served an event (rdkafka's `poll` returns `None` both for "empty" and for "an
/// event was served by a callback") and drains the queue until it is empty.
impl ClientContext for DriverContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.served.fetch_add(1, Ordering::Relaxed);
        Defaults.log(level, fac, log_message);
    }

    fn stats_raw(&self, statistics: &[u8]) {
        self.served.fetch_add(1, Ordering::Relaxed);
        match serde_json::from_slice::<rdkafka::Statistics>(statistics) {
            Ok(stats) => self.offsets.saw_high_watermarks(&stats),
            Err(e) => tracing::debug!(error = %e, "unreadable librdkafka statistics"),
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.served.fetch_add(1, Ordering::Relaxed);
        Defaults.error(error, reason);
    }
}

impl ConsumerContext for DriverContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.served.fetch_add(1, Ordering::Relaxed);
        self.rebalances.fetch_add(1, Ordering::Release);
        match rebalance {
            Rebalance::Assign(tpl) => self.assigned(tpl),
            Rebalance::Revoke(tpl) => self.revoked(tpl, consumer.assignment_lost()),
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }

    /// Only counted: every commit is made by the offsets' commit thread, which takes its
    /// result from the commit call itself, in commit order (librdkafka's callbacks for them
    /// come later, on this thread, interleaved with newer results).
    fn commit_callback(&self, _: rdkafka::error::KafkaResult<()>, _: &TopicPartitionList) {
        self.served.fetch_add(1, Ordering::Relaxed);
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| TopicPartition::new(e.topic(), e.partition()))
        .collect()
}

impl DriverContext {
    fn sender(&self) -> Option<EventSender> {
        lock(&self.events).clone()
    }

    /// After an error from librdkafka: if the client has a fatal error (it cannot be used any
    /// more), ends the subscriber with it, once. `true` if so.
    pub(crate) fn check_fatal(&self, consumer: &RdConsumer) -> bool {
        let Some((code, reason)) = consumer.client().fatal_error() else {
            return false;
        };
        if !self.failed.swap(true, Ordering::AcqRel) {
            tracing::error!(?code, %reason, "fatal Kafka client error; the subscriber stops");
            if let Some(events) = self.sender() {
                let error =
                    BackendError::new(format!("fatal Kafka client error ({code:?}): {reason}"))
                        .with_kind(BackendErrorKind::Fatal);
                let _ = events.send(ConsumerEvent::Failed(error));
            }
        }
        true
    }

    /// Opens an inbox for each new partition and hands their feeds to the runtime.
    fn assigned(&self, tpl: &TopicPartitionList) {
        let tps = partitions(tpl);
        // Before any record of these partitions can be popped: the callback runs in the poll
        // thread's own poll.
        if let Some(only) = &self.only_topic
            && let Some(foreign) = tps.iter().find(|tp| *tp.topic != **only)
            && self.one_topic.swap(false, Ordering::AcqRel)
        {
            tracing::warn!(
                subscribed = %only,
                assigned = %foreign.topic,
                "assigned a partition of a topic this consumer did not subscribe to"
            );
        }
        let carried = self.carried(&tps);
        let feeds = self.open(tps, carried);
        if let Some(events) = self.sender() {
            let _ = events.send(ConsumerEvent::Assigned(feeds));
        }
    }

    /// The attempt counts the group's commits of `tps` carry (see
    /// [`PartitionOffset::carry_attempts`](ackstream_core::backend::PartitionOffset)), of
    /// records not below the committed offsets. Empty on failure: a count lost is only a count
    /// restarted.
    fn carried(&self, tps: &[TopicPartition]) -> HashMap<TopicPartition, Vec<(i64, u32)>> {
        let Some(consumer) = self.me.get().and_then(Weak::upgrade) else {
            return HashMap::new();
        };
        let mut tpl = TopicPartitionList::new();
        for tp in tps {
            tpl.add_partition(&tp.topic, tp.partition);
        }
        let committed = match consumer.committed_offsets(tpl, CARRIED_TIMEOUT) {
            Ok(committed) => committed,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read committed offsets; attempt counts restart");
                return HashMap::new();
            }
        };
        committed
            .elements()
            .iter()
            .filter_map(|e| {
                let Offset::Offset(at) = e.offset() else {
                    return None;
                };
                let attempts: Vec<(i64, u32)> = carried::decode(e.metadata())
                    .into_iter()
                    .filter(|&(offset, _)| offset >= at)
                    .collect();
                let tp = TopicPartition::new(e.topic(), e.partition());
                (!attempts.is_empty()).then_some((tp, attempts))
            })
            .collect()
    }

    fn open(
        &self,
        tps: Vec<TopicPartition>,
        mut carried: HashMap<TopicPartition, Vec<(i64, u32)>>,
    ) -> Vec<KafkaFeed> {
        let mut inboxes = lock(&self.inboxes);
        let mut feeds = Vec::with_capacity(tps.len());
        let mut replaced = Vec::new();
        for tp in tps {
            let inbox = Arc::new(Inbox::new(tp.clone(), self.budget.clone()));
            let attempts = carried.remove(&tp).unwrap_or_default();
            if let Some(old) = inboxes.insert(tp, inbox.clone()) {
                old.close();
                replaced.push(old);
            }
            feeds.push(KafkaFeed::new(inbox, self.wakeup.clone()).with_carried(attempts));
        }
        drop(inboxes);
        self.unpause(&replaced);
        self.wakeup.wake();
        feeds
    }

    /// The open inbox of a partition, if it is assigned.
    pub(crate) fn inbox(&self, tp: &TopicPartition) -> Option<Arc<Inbox>> {
        lock(&self.inboxes).get(tp).cloned()
    }

    /// Resumes the partitions of ended assignments that the poll thread had paused at the
    /// budget's limit: librdkafka keeps an application's pause across assignments, so left
    /// paused, a partition assigned again would never be fetched.
    fn unpause(&self, ended: &[Arc<Inbox>]) {
        let Some(consumer) = self.me.get().and_then(Weak::upgrade) else {
            return;
        };
        for inbox in ended {
            if inbox
                .paused
                .swap(false, std::sync::atomic::Ordering::AcqRel)
            {
                crate::driver::poller::pause(&consumer, &inbox.tp, false);
            }
        }
    }

    /// How many main-queue events the callbacks have served so far.
    pub(crate) fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Whether all records come from the one topic subscribed to (see `one_topic`). Read for
    /// every record: the flag is written only on an assignment of a foreign topic.
    pub(crate) fn one_topic(&self) -> bool {
        self.one_topic.load(Ordering::Acquire)
    }

    /// How many rebalances the callbacks have seen so far.
    pub(crate) fn rebalances(&self) -> u64 {
        self.rebalances.load(Ordering::Acquire)
    }

    /// Blocks the rebalance until the runtime has drained the partitions and committed; or,
    /// if the assignment was `lost` (another member may own the partitions already), until it
    /// has fenced them, which it does at once, without a drain or a commit.
    fn revoked(&self, tpl: &TopicPartitionList, lost: bool) {
        let tps = partitions(tpl);
        if let Some(events) = self.sender() {
            let (ack, done) = RevokeAck::new();
            let event = if lost {
                tracing::warn!(partitions = ?tps, "assignment lost (session expired, poll interval exceeded or fenced)");
                ConsumerEvent::Lost(tps.clone(), ack)
            } else {
                ConsumerEvent::Revoked(tps.clone(), ack)
            };
            if events.send(event).is_ok() {
                let _ = done.blocking_recv();
            }
        }
        let mut inboxes = lock(&self.inboxes);
        let mut ended = Vec::new();
        for tp in &tps {
            if let Some(inbox) = inboxes.remove(tp) {
                inbox.close();
                ended.push(inbox);
            }
        }
        drop(inboxes);
        self.unpause(&ended);
    }
}

/// One subscriber's Kafka consumer.
pub struct KafkaConsumer {
    consumer: Option<Arc<RdConsumer>>,
    events: mpsc::UnboundedReceiver<ConsumerEvent<KafkaFeed>>,
    offsets: Arc<dyn OffsetStore>,
    stop: Arc<AtomicBool>,
    poller: Option<JoinHandle<()>>,
    committer: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for KafkaConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConsumer").finish_non_exhaustive()
    }
}

impl KafkaConsumer {
    pub(crate) async fn start(
        settings: &Settings,
        config: &SubscriberConfig,
    ) -> Result<Self, BackendError> {
        let reset = match config.offset_reset {
            OffsetReset::Earliest => "earliest",
            OffsetReset::Latest => "latest",
        };
        let mut overrides: Vec<(String, String)> = vec![("auto.offset.reset".into(), reset.into())];
        // librdkafka refuses `assign` without a group id, so a group-less consumer gets one it
        // never joins (it does not subscribe) and never commits to.
        let group = config.group_id.as_deref().unwrap_or("ackstream-no-group");
        overrides.push(("group.id".into(), group.into()));
        let given = settings.extra.iter().chain(&config.settings);
        overrides.extend(crate::driver::prefetch::defaults_unless_given(
            given.map(|(k, _)| k.as_str()),
            config.buffer,
        ));
        // Statistics once a second carry each partition's high watermark (consumer lag);
        // a user's own interval (or 0, none) wins.
        let given_stats = settings
            .extra
            .iter()
            .chain(&config.settings)
            .any(|(k, _)| k == "statistics.interval.ms");
        if !given_stats {
            overrides.push((
                "statistics.interval.ms".into(),
                STATISTICS_INTERVAL_MS.into(),
            ));
        }
        overrides.extend(config.settings.iter().cloned());
        // Last, so nothing given overrides them (a subscriber that commits is refused at
        // registration if it tries: see `KafkaBackend::check_subscriber`).
        overrides.extend(
            COMMIT_SETTINGS
                .iter()
                .map(|&(k, v)| (k.to_owned(), v.to_owned())),
        );
        let (tx, rx) = mpsc::unbounded_channel();
        let offsets = Arc::new(KafkaOffsets::new(
            settings.commit_batch,
            settings.commit_timeout,
        ));
        let wakeup = Arc::new(Wakeup::default());
        // A name starting with `^` is a pattern, which librdkafka matches against every topic.
        let only_topic = match &config.topics[..] {
            [topic] if !topic.starts_with('^') => Some(Arc::<str>::from(topic.as_str())),
            _ => None,
        };
        let context = DriverContext {
            events: Mutex::new(Some(tx.clone())),
            me: OnceLock::new(),
            inboxes: Mutex::new(HashMap::new()),
            budget: Arc::new(Budget::new(crate::driver::prefetch::inbox_part(
                config.buffer,
            ))),
            wakeup: wakeup.clone(),
            failed: AtomicBool::new(false),
            served: AtomicU64::new(0),
            rebalances: AtomicU64::new(0),
            offsets: offsets.clone(),
            one_topic: AtomicBool::new(only_topic.is_some()),
            only_topic,
        };
        let mut consumer: RdConsumer = settings
            .client_config(&overrides)
            .create_with_context(context)
            .map_err(|e| kafka_error("cannot create Kafka consumer", e))?;
        // Callbacks and stray records on the main queue wake the poll thread too.
        let wake = wakeup.clone();
        consumer.set_nonempty_callback(move || wake.wake());
        let consumer = Arc::new(consumer);
        let _ = consumer.context().me.set(Arc::downgrade(&consumer));
        offsets
            .attach(&consumer, config.group_id.is_some())
            .map_err(|e| BackendError::with_source("cannot start the commit thread", e))?;

        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        let store: Arc<dyn OffsetStore> = if config.group_id.is_some() {
            consumer
                .subscribe(&topics)
                .map_err(|e| kafka_error("cannot subscribe", e))?;
            offsets.clone()
        } else {
            assign_all(&consumer, &config.topics, config.offset_reset, &tx).await?;
            Arc::new(NoCommit)
        };
        drop(tx);

        let stop = Arc::new(AtomicBool::new(false));
        let poller = {
            let poller = Poller::new(
                consumer.clone(),
                wakeup.clone(),
                stop.clone(),
                config.reads_headers,
            );
            std::thread::Builder::new()
                .name("ackstream-kafka-poll".into())
                .spawn(move || poller.run())
                .map_err(|e| BackendError::with_source("cannot start poll thread", e))?
        };
        let committer = config.group_id.as_ref().map(|_| {
            let (offsets, interval) = (offsets.clone(), settings.commit_interval);
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(interval) => {}
                        () = offsets.batch_full.notified() => {}
                    }
                    offsets.commit_async();
                }
            })
        });
        Ok(Self {
            consumer: Some(consumer),
            events: rx,
            offsets: store,
            stop,
            poller: Some(poller),
            committer,
        })
    }

    fn shut(&mut self) {
        if let Some(c) = &self.consumer {
            lock(&c.context().events).take();
        }
        // Close, then drop what is queued: a revoke waiting in the poll thread for its ack is
        // released when the ack is dropped, and sends after `close` fail instead of waiting.
        self.events.close();
        while self.events.try_recv().is_ok() {}
        self.stop.store(true, Ordering::Release);
        if let Some(c) = self.committer.take() {
            c.abort();
        }
    }
}

/// A consumer without a group reads every partition of its topics.
async fn assign_all(
    consumer: &Arc<RdConsumer>,
    topics: &[String],
    reset: OffsetReset,
    events: &EventSender,
) -> Result<(), BackendError> {
    let c = consumer.clone();
    let topics = topics.to_vec();
    let tps = tokio::task::spawn_blocking(move || {
        let mut tps = Vec::new();
        for topic in &topics {
            let metadata = c
                .fetch_metadata(Some(topic), METADATA_TIMEOUT)
                .map_err(|e| kafka_error(format!("no metadata for {topic}"), e))?;
            let t = metadata
                .topics()
                .first()
                .filter(|t| t.error().is_none() && !t.partitions().is_empty())
                .ok_or_else(|| BackendError::new(format!("topic {topic} does not exist")))?;
            tps.extend(
                t.partitions()
                    .iter()
                    .map(|p| TopicPartition::new(topic.as_str(), p.id())),
            );
        }
        Ok::<_, BackendError>(tps)
    })
    .await
    .map_err(|e| BackendError::with_source("metadata task failed", e))??;
    let start = match reset {
        OffsetReset::Earliest => Offset::Beginning,
        OffsetReset::Latest => Offset::End,
    };
    let mut tpl = TopicPartitionList::new();
    for tp in &tps {
        tpl.add_partition_offset(&tp.topic, tp.partition, start)
            .map_err(|e| BackendError::with_source("bad partition", e))?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| kafka_error("cannot assign partitions", e))?;
    let feeds = consumer.context().open(tps, HashMap::new());
    let _ = events.send(ConsumerEvent::Assigned(feeds));
    Ok(())
}

impl ackstream_core::backend::Consumer for KafkaConsumer {
    type Partition = KafkaFeed;

    async fn next_event(&mut self) -> Option<ConsumerEvent<KafkaFeed>> {
        self.events.recv().await
    }

    fn offset_store(&self) -> Arc<dyn OffsetStore> {
        self.offsets.clone()
    }

    async fn close(mut self) {
        self.shut();
        let poller = self.poller.take();
        let consumer = self.consumer.take();
        // Joining the poll thread and dropping the consumer block (leaving the group waits for
        // the broker), so they run off the async workers.
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(p) = poller {
                let _ = p.join();
            }
            if let Some(c) = consumer {
                c.unsubscribe();
                drop(c);
            }
        })
        .await;
    }
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        self.shut();
    }
}
