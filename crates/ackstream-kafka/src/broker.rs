//! `KafkaBroker`: the user-facing handle.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ackstream_core::backend::DeliveryCallback;
use ackstream_core::{
    Admin, BackendError, Broker, BrokerCore, ConfigError, OutgoingRecord, RecordPosition,
    SubscriberConfig,
};
use tokio::sync::OnceCell;

use crate::driver::KafkaConsumer;
use crate::settings::Settings;

/// The Kafka backend: makes consumers (one per subscriber) and a shared producer.
pub struct KafkaBackend {
    pub(crate) settings: Mutex<Settings>,
    producer: OnceCell<crate::producer::Producer>,
}

impl std::fmt::Debug for KafkaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBackend")
            .field("settings", &self.settings())
            .finish_non_exhaustive()
    }
}

impl KafkaBackend {
    pub(crate) fn settings(&self) -> Settings {
        self.settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) async fn producer(&self) -> Result<&crate::producer::Producer, BackendError> {
        self.producer
            .get_or_try_init(|| async { crate::producer::create(&self.settings()) })
            .await
    }
}

impl ackstream_core::backend::Backend for KafkaBackend {
    type Consumer = KafkaConsumer;

    async fn consumer(&self, config: &SubscriberConfig) -> Result<KafkaConsumer, BackendError> {
        KafkaConsumer::start(&self.settings(), config).await
    }

    /// Refuses a subscriber that commits (it has a group) with librdkafka's auto commit or
    /// automatic offset store turned on, on the subscriber or the broker: ackstream commits
    /// each partition's finished prefix itself, and those would commit records that are not
    /// finished (`enable.auto.commit` and `enable.auto.offset.store`).
    fn check_subscriber(&self, config: &SubscriberConfig) -> Result<(), ConfigError> {
        if config.group_id.is_none() {
            return Ok(());
        }
        let settings = self.settings();
        let given = settings.extra.iter().chain(&config.settings);
        for (key, value) in given {
            let Some(&(setting, required)) = crate::driver::COMMIT_SETTINGS
                .iter()
                .find(|(k, _)| k == key)
            else {
                continue;
            };
            if !value.trim().eq_ignore_ascii_case(required) {
                return Err(ConfigError::InvalidSetting {
                    setting,
                    reason: format!(
                        "{value:?} given for subscriber to {} (policy {:?}); ackstream commits \
                         each partition's finished prefix itself and needs {setting}={required}: \
                         librdkafka's automatic commits would commit records that are not \
                         finished. Remove the setting",
                        config.topics_label(),
                        config.ack_policy
                    ),
                });
            }
        }
        Ok(())
    }

    async fn publish(&self, record: OutgoingRecord) -> Result<RecordPosition, BackendError> {
        crate::producer::publish(self.producer().await?, record).await
    }

    /// Hands the record to librdkafka; its delivery report calls `done` on the producer's
    /// polling thread.
    async fn publish_then(self: Arc<Self>, record: OutgoingRecord, done: DeliveryCallback) {
        match self.producer().await {
            Ok(producer) => crate::producer::enqueue(producer, record, done).await,
            Err(e) => done.call(Err(e)),
        }
    }

    /// Hands the record to librdkafka if its queue has room and the producer is made.
    fn try_publish_then(
        &self,
        record: OutgoingRecord,
        done: DeliveryCallback,
    ) -> Result<(), (OutgoingRecord, DeliveryCallback)> {
        match self.producer.get() {
            Some(producer) => crate::producer::try_enqueue(producer, record, done),
            None => Err((record, done)),
        }
    }
}

/// A Kafka cluster, reached through librdkafka. Cheap to clone; clones share subscribers.
///
/// Settings for every client it makes go through [`config`](Self::config) (any librdkafka
/// setting: SASL, SSL, tuning); per-subscriber consumer settings through the subscriber's
/// `.config(..)` (e.g. `session.timeout.ms`).
#[derive(Debug, Clone)]
pub struct KafkaBroker {
    core: Arc<BrokerCore<KafkaBackend>>,
}

impl Broker for KafkaBroker {
    type Backend = KafkaBackend;

    fn core(&self) -> &Arc<BrokerCore<KafkaBackend>> {
        &self.core
    }
}

/// Default interval between coalesced commits.
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_millis(1000);
/// Default number of offset moves that triggers a commit before the interval.
pub const DEFAULT_COMMIT_BATCH: usize = 10_000;
/// Default bound on a synchronous commit's wait for the broker (on revoke and shutdown).
pub const DEFAULT_COMMIT_TIMEOUT: Duration = Duration::from_secs(15);

impl KafkaBroker {
    /// A broker reached at `bootstrap` (`host:port[,host:port…]`).
    pub fn new(bootstrap: impl Into<String>) -> Self {
        let settings = Settings {
            bootstrap: bootstrap.into(),
            client_id: None,
            extra: Vec::new(),
            commit_interval: DEFAULT_COMMIT_INTERVAL,
            commit_batch: DEFAULT_COMMIT_BATCH,
            commit_timeout: DEFAULT_COMMIT_TIMEOUT,
        };
        Self {
            core: Arc::new(BrokerCore::new(KafkaBackend {
                settings: Mutex::new(settings),
                producer: OnceCell::new(),
            })),
        }
    }

    fn update(self, f: impl FnOnce(&mut Settings)) -> Self {
        f(&mut self
            .core
            .backend()
            .settings
            .lock()
            .unwrap_or_else(|p| p.into_inner()));
        self
    }

    /// The `client.id` of every client.
    #[must_use]
    pub fn client_id(self, id: impl Into<String>) -> Self {
        let id = id.into();
        self.update(|s| s.client_id = Some(id))
    }

    /// Any librdkafka setting, for every client this broker makes (consumers and producer).
    #[must_use]
    pub fn config(self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let (k, v) = (key.into(), value.into());
        self.update(|s| s.extra.push((k, v)))
    }

    /// How often moved offsets are committed (asynchronously). Default [`DEFAULT_COMMIT_INTERVAL`].
    #[must_use]
    pub fn commit_interval(self, interval: Duration) -> Self {
        self.update(|s| s.commit_interval = interval)
    }

    /// After this many offset moves a commit is sent before the interval ends. Default
    /// [`DEFAULT_COMMIT_BATCH`].
    #[must_use]
    pub fn commit_batch(self, moves: usize) -> Self {
        self.update(|s| s.commit_batch = moves.max(1))
    }

    /// How long a synchronous commit (on revoke and on shutdown) waits for the broker's answer.
    /// librdkafka's own would wait forever while no group coordinator is reachable; past this
    /// bound the commit is reported failed, and its offsets stay uncommitted (their records are
    /// delivered again after a restart). Default [`DEFAULT_COMMIT_TIMEOUT`].
    #[must_use]
    pub fn commit_timeout(self, timeout: Duration) -> Self {
        self.update(|s| s.commit_timeout = timeout)
    }
}

impl Admin for KafkaBroker {
    async fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), BackendError> {
        crate::admin::create_topic(&self.core.backend().settings(), topic, partitions).await
    }

    async fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> Result<Option<i64>, BackendError> {
        crate::admin::committed_offset(&self.core.backend().settings(), group, topic, partition)
            .await
    }
}
