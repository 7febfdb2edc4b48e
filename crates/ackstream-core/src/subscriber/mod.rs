//! Subscribers: which topics, which group, which policy, which handler.

mod batch;

pub use batch::BatchSubscriberBuilder;

use std::sync::Arc;

use crate::AckPolicy;
use crate::backend::Backend;
use crate::config::{DEFAULT_DECODE_ATTEMPTS, OffsetReset, SubscriberConfig};
use crate::error::ConfigError;
use crate::handler::Handler;
use crate::handler::service::{BoxMessageService, Layers, MessageService};
use crate::ordering::KeepOrder;
use crate::runtime::subscription::{HandlerSubscription, Subscription};

/// Where a subscriber is registered in the end: its broker (a
/// [`BrokerCore`](crate::BrokerCore)), which supplies the defaults and the backend's checks.
pub(crate) trait Registry<B: Backend>: Send + Sync {
    /// The policy of a subscriber that chooses none.
    fn default_ack_policy(&self) -> AckPolicy;
    /// The backend's objections to a subscriber's settings.
    fn check(&self, config: &SubscriberConfig) -> Result<(), ConfigError>;
    /// Keeps a registered subscriber, to be started with the broker's others.
    fn register(&self, subscription: Arc<dyn Subscription<B>>);
}

/// Where a subscriber is declared: a broker registers it at once; a
/// [`Router`](crate::Router) keeps it until it is included in a broker, which adds the
/// router's prefix and shared settings.
pub(crate) trait Declare<B: Backend>: Send + Sync + 'static {
    /// Takes a declared subscriber.
    fn declare(&self, declared: Declared<B>) -> Result<(), ConfigError>;
    /// The policy a subscriber declared here gets if it chooses none (as far as known here).
    fn default_ack_policy(&self) -> AckPolicy;
}

/// Settings a subscriber takes from the routers it was declared in, where it sets none itself.
#[derive(Clone, Debug, Default)]
pub(crate) struct Inherited {
    /// Put before each of the subscriber's topics.
    pub(crate) prefix: String,
    pub(crate) group_id: Option<String>,
    pub(crate) ack_policy: Option<AckPolicy>,
    pub(crate) ordering: Option<KeepOrder>,
    /// Outside the subscriber's own layers.
    pub(crate) layers: Layers,
}

impl Inherited {
    /// These settings inside `outer`'s: `outer`'s prefix first, these settings where both set
    /// one, `outer`'s layers outside these.
    pub(crate) fn within(&self, outer: &Inherited) -> Inherited {
        let mut layers = self.layers.clone();
        layers.extend(&outer.layers);
        Inherited {
            prefix: format!("{}{}", outer.prefix, self.prefix),
            group_id: self.group_id.clone().or_else(|| outer.group_id.clone()),
            ack_policy: self.ack_policy.or(outer.ack_policy),
            ordering: self.ordering.or(outer.ordering),
            layers,
        }
    }
}

/// The registration of a declared subscriber, with its handler, for when its registry (and
/// what it inherits) is known.
type Registration<B> =
    Box<dyn FnOnce(&dyn Registry<B>, &Inherited) -> Result<(), ConfigError> + Send + Sync>;

/// A declared subscriber: its topics (before any prefix) and its registration.
pub(crate) struct Declared<B: Backend> {
    pub(crate) topics: Vec<String>,
    pub(crate) register: Registration<B>,
}

impl<B: Backend> std::fmt::Debug for Declared<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Declared")
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

/// Configures a subscriber; finish with [`handle`](Self::handle). Created by
/// [`Broker::subscriber`](crate::Broker::subscriber).
///
/// The FastStream spellings are sugar for [`ack_policy`](Self::ack_policy):
/// `.auto_commit(false)` is `NackOnError`, `.auto_commit(true)` is `AckFirst`, `.no_ack(true)`
/// is `Manual`. Giving two of them is an error, as is a committing policy without a group.
#[must_use = "a subscriber does nothing until .handle(..) registers it"]
pub struct SubscriberBuilder<B: Backend> {
    declare: Arc<dyn Declare<B>>,
    topics: Vec<String>,
    group_id: Option<String>,
    offset_reset: OffsetReset,
    choices: Vec<(&'static str, AckPolicy)>,
    max_attempts: Option<u32>,
    max_decode_attempts: u32,
    retry_backoff: crate::Backoff,
    manual_cumulative: bool,
    max_workers: Option<usize>,
    ordering: Option<KeepOrder>,
    dead_letter_topic: Option<String>,
    publish_to: Vec<String>,
    no_reply: bool,
    buffer: crate::BufferBudget,
    settings: Vec<(String, String)>,
    layers: Layers,
}

impl<B: Backend> std::fmt::Debug for SubscriberBuilder<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriberBuilder")
            .field("topics", &self.topics)
            .field("group_id", &self.group_id)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> SubscriberBuilder<B> {
    pub(crate) fn new(declare: Arc<dyn Declare<B>>, topics: Vec<String>) -> Self {
        Self {
            declare,
            topics,
            group_id: None,
            offset_reset: OffsetReset::default(),
            choices: Vec::new(),
            max_attempts: None,
            max_decode_attempts: DEFAULT_DECODE_ATTEMPTS,
            retry_backoff: crate::Backoff::default(),
            manual_cumulative: false,
            max_workers: None,
            ordering: None,
            dead_letter_topic: None,
            publish_to: Vec::new(),
            no_reply: false,
            buffer: crate::BufferBudget::default(),
            settings: Vec::new(),
            layers: Layers::default(),
        }
    }

    /// Consumer group: members of one group split the partitions and share committed offsets.
    pub fn group_id(mut self, group: impl Into<String>) -> Self {
        self.group_id = Some(group.into());
        self
    }

    /// Where to start without a committed offset (default: latest, as Kafka).
    pub fn auto_offset_reset(mut self, reset: OffsetReset) -> Self {
        self.offset_reset = reset;
        self
    }

    fn choose(mut self, setting: &'static str, policy: AckPolicy) -> Self {
        self.choices.retain(|(s, _)| *s != setting);
        self.choices.push((setting, policy));
        self
    }

    /// When the framework settles records (default: the broker's default, `AckFirst` unless set).
    pub fn ack_policy(self, policy: AckPolicy) -> Self {
        self.choose("ack_policy", policy)
    }

    /// FastStream's `auto_commit`: `true` is `AckFirst`, `false` is `NackOnError`.
    pub fn auto_commit(self, auto_commit: bool) -> Self {
        let policy = if auto_commit {
            AckPolicy::AckFirst
        } else {
            AckPolicy::NackOnError
        };
        self.choose("auto_commit", policy)
    }

    /// FastStream's `no_ack`: `true` is `Manual`; `false` chooses nothing.
    pub fn no_ack(self, no_ack: bool) -> Self {
        if no_ack {
            self.choose("no_ack", AckPolicy::Manual)
        } else {
            self
        }
    }

    /// After this many deliveries of a record, a nack rejects it instead (at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// Deliveries of an undecodable record before it is rejected under `NackOnError`
    /// (default [`DEFAULT_DECODE_ATTEMPTS`]; `max_attempts`, when set, takes precedence).
    pub fn max_decode_attempts(mut self, attempts: u32) -> Self {
        self.max_decode_attempts = attempts;
        self
    }

    /// The wait before a failed record is delivered again under `NackOnError` (a handler
    /// error or panic, a decode failure), so a record that always fails cannot spin a core.
    /// Default: [`Backoff::default`](crate::Backoff) (100 ms doubling to 30 s);
    /// [`Backoff::none`](crate::Backoff::none) turns it off. An explicit nack keeps its own
    /// delay.
    pub fn retry_backoff(mut self, backoff: crate::Backoff) -> Self {
        self.retry_backoff = backoff;
        self
    }

    /// What this subscriber may hold of records read ahead of its handler, over all the
    /// partitions assigned to it, however many (default:
    /// [`BufferBudget::default`](crate::BufferBudget), 64 MiB or 100,000 records). A slow
    /// partition keeps a share of it; the others keep theirs.
    ///
    /// ```
    /// # use ackstream_core::BufferBudget;
    /// # fn f(broker: &impl ackstream_core::Broker) {
    /// broker
    ///     .subscriber("clicks")
    ///     .group_id("sessions")
    ///     .buffer(BufferBudget::new(16 * 1024 * 1024, 20_000))
    ///     .handle(|body: String| async move {});
    /// # }
    /// ```
    pub fn buffer(mut self, budget: crate::BufferBudget) -> Self {
        self.buffer = budget;
        self
    }

    /// Manual policy: let an ack also finish earlier records whose handlers returned without
    /// settling (Kafka's cumulative commit). Off by default: an unsettled record holds the commit.
    pub fn manual_cumulative(mut self, cumulative: bool) -> Self {
        self.manual_cumulative = cumulative;
        self
    }

    /// Handles up to `n` records of this subscriber at once, over all its partitions (FastStream's
    /// `max_workers`). Valid with every policy: whatever order handlers finish in, a partition is
    /// committed only up to its first unfinished record. Which records may overlap is set by
    /// [`ordering`](Self::ordering).
    ///
    /// Without it, each partition handles one record at a time and partitions run side by side.
    /// Records in flight and waiting are bounded by `n` per partition; a partition at its bound
    /// reads nothing more (its records stay with the backend, which stops fetching them).
    ///
    /// ```
    /// # use ackstream_core::KeepOrder;
    /// # fn f(broker: &impl ackstream_core::Broker) {
    /// broker
    ///     .subscriber("orders")
    ///     .group_id("billing")
    ///     .auto_commit(false)
    ///     .max_workers(64)
    ///     .ordering(KeepOrder::Key)
    ///     .handle(|body: String| async move { /* an HTTP call, a database write */ });
    /// # }
    /// ```
    pub fn max_workers(mut self, n: usize) -> Self {
        self.max_workers = Some(n);
        self
    }

    /// Another name for [`max_workers`](Self::max_workers).
    pub fn concurrency(self, n: usize) -> Self {
        self.max_workers(n)
    }

    /// Which records of a partition may be handled at the same time (default
    /// [`KeepOrder::Partition`]).
    pub fn ordering(mut self, ordering: KeepOrder) -> Self {
        self.ordering = Some(ordering);
        self
    }

    /// Publishes every rejected record to `topic` (with headers naming where it came from, its
    /// attempt and the last error: see [`dead_letter`](crate::dead_letter)) before committing
    /// past it. A record rejected because it ran out of attempts (`max_attempts`) goes there
    /// too. If the publish fails, the record is nacked instead: it stays uncommitted and is
    /// delivered again, so nothing is dropped.
    pub fn dead_letter_topic(mut self, topic: impl Into<String>) -> Self {
        self.dead_letter_topic = Some(topic.into());
        self
    }

    /// Publishes the handler's return value to `topic` (call it again for more topics): see
    /// [`response`](crate::response) for what a handler may return. The input is acked only
    /// once the broker confirmed the output on every topic; if a publish fails, the input is
    /// nacked after the failure backoff, so nothing is committed past it. A crash between the
    /// publish and the commit publishes the output again: a duplicate, never a loss.
    ///
    /// Under `AckFirst` the input is acked before the handler runs, so an output that fails to
    /// publish is only logged (at most once). Under `Manual`, an ack the handler made itself
    /// is not held back; a record the handler left unsettled is nacked if its output fails.
    ///
    /// ```
    /// # use ackstream_core::{AckPolicy, Broker};
    /// # fn f(broker: &impl Broker) {
    /// broker
    ///     .subscriber("orders")
    ///     .group_id("billing")
    ///     .ack_policy(AckPolicy::NackOnError)
    ///     .publish_to("invoices")
    ///     .handle(|order: String| async move { format!("invoice for {order}") });
    /// # }
    /// ```
    pub fn publish_to(mut self, topic: impl Into<String>) -> Self {
        self.publish_to.push(topic.into());
        self
    }

    /// Whether to leave out replies: by default a return value also goes to the topic an
    /// input names in its `reply_to` header, with the input's `correlation_id`.
    pub fn no_reply(mut self, no_reply: bool) -> Self {
        self.no_reply = no_reply;
        self
    }

    /// How long the group waits for a silent member before reassigning its partitions
    /// (Kafka's `session.timeout.ms`; the in-memory broker has no sessions).
    pub fn session_timeout(self, timeout: std::time::Duration) -> Self {
        self.config("session.timeout.ms", timeout.as_millis().to_string())
    }

    /// How often the member tells the group it is alive (Kafka's `heartbeat.interval.ms`).
    pub fn heartbeat_interval(self, interval: std::time::Duration) -> Self {
        self.config("heartbeat.interval.ms", interval.as_millis().to_string())
    }

    /// A backend setting passed through as given (for Kafka, any librdkafka consumer setting,
    /// e.g. `session.timeout.ms`).
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((key.into(), value.into()));
        self
    }

    /// Wraps this subscriber's handler in `layer`: any [`tower_layer::Layer`] over the message
    /// service, such as `ackstream::middleware::from_fn(..)` or a per-record timeout. Each
    /// layer wraps the ones added before it, so the last added runs first; the broker's layers
    /// run outside all of them. The ack policy wraps the whole stack: whatever a layer does
    /// (answer without calling the handler, fail, panic), the record is settled as the policy
    /// says.
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: tower_layer::Layer<BoxMessageService> + Send + Sync + 'static,
        L::Service: MessageService,
    {
        self.layers.push(layer);
        self
    }

    /// Resolves the settings, or says what is wrong with them.
    pub fn build_config(&self) -> Result<SubscriberConfig, ConfigError> {
        self.build_config_with(self.declare.default_ack_policy())
    }

    /// Resolves the settings with `default_policy` for a subscriber that chooses none.
    fn build_config_with(
        &self,
        default_policy: AckPolicy,
    ) -> Result<SubscriberConfig, ConfigError> {
        if self.topics.is_empty() {
            return Err(ConfigError::NoTopics);
        }
        if let Some(t) = self.topics.iter().find(|t| t.is_empty()) {
            return Err(ConfigError::InvalidSetting {
                setting: "topic",
                reason: format!("empty topic name in {t:?}"),
            });
        }
        let topics = self.topics.join(",");
        if let [(first, p1), (second, p2), ..] = self.choices.as_slice() {
            return Err(ConfigError::ConflictingPolicy {
                topics,
                first: format!("{first} ({p1:?})"),
                second: format!("{second} ({p2:?})"),
            });
        }
        let ack_policy = self.choices.first().map_or(default_policy, |(_, p)| *p);
        if self.group_id.as_deref() == Some("") {
            return Err(ConfigError::InvalidSetting {
                setting: "group_id",
                reason: "empty group id".into(),
            });
        }
        if ack_policy.needs_group() && self.group_id.is_none() {
            return Err(ConfigError::PolicyNeedsGroup {
                topics,
                policy: ack_policy,
            });
        }
        if self.max_attempts == Some(0) || self.max_decode_attempts == 0 {
            return Err(ConfigError::InvalidSetting {
                setting: "max_attempts",
                reason: "a record needs at least one attempt".into(),
            });
        }
        if let Some(dlq) = &self.dead_letter_topic
            && (dlq.is_empty() || self.topics.contains(dlq))
        {
            return Err(ConfigError::InvalidSetting {
                setting: "dead_letter_topic",
                reason: format!("{dlq:?} is empty or one of the subscriber's own topics"),
            });
        }
        if let Some(out) = self
            .publish_to
            .iter()
            .find(|t| t.is_empty() || self.topics.contains(t))
        {
            return Err(ConfigError::InvalidSetting {
                setting: "publish_to",
                reason: format!(
                    "{out:?} is empty or one of the subscriber's own topics (each output would be consumed again)"
                ),
            });
        }
        if self.max_workers == Some(0) {
            return Err(ConfigError::InvalidSetting {
                setting: "max_workers",
                reason: "at least one worker is needed".into(),
            });
        }
        if self.manual_cumulative && ack_policy != AckPolicy::Manual {
            return Err(ConfigError::InvalidSetting {
                setting: "manual_cumulative",
                reason: format!("only applies to AckPolicy::Manual, not {ack_policy:?}"),
            });
        }
        Ok(SubscriberConfig {
            topics: self.topics.clone(),
            group_id: self.group_id.clone(),
            offset_reset: self.offset_reset,
            ack_policy,
            max_attempts: self.max_attempts,
            max_decode_attempts: self.max_decode_attempts,
            retry_backoff: self.retry_backoff,
            manual_cumulative: self.manual_cumulative,
            max_workers: self.max_workers,
            ordering: self.ordering.unwrap_or(KeepOrder::Partition),
            dead_letter_topic: self.dead_letter_topic.clone(),
            publish_to: self.publish_to.clone(),
            replies: !self.no_reply,
            buffer: self.buffer,
            settings: self.settings.clone(),
            reads_headers: true,
        })
    }

    /// Registers `handler` for this subscriber, or returns why the settings cannot work.
    pub fn try_handle<T: 'static, H: Handler<T>>(self, handler: H) -> Result<(), ConfigError> {
        let declare = self.declare.clone();
        let topics = self.topics.clone();
        declare.declare(Declared {
            topics,
            register: Box::new(move |registry: &dyn Registry<B>, inherited: &Inherited| {
                self.inherit(inherited).register(registry, handler)
            }),
        })
    }

    /// This subscriber with what it inherits from its routers: the prefix on its topics, and
    /// the shared settings it does not set itself.
    fn inherit(mut self, inherited: &Inherited) -> Self {
        if !inherited.prefix.is_empty() {
            for topic in &mut self.topics {
                topic.insert_str(0, &inherited.prefix);
            }
        }
        if self.group_id.is_none() {
            self.group_id.clone_from(&inherited.group_id);
        }
        if self.choices.is_empty()
            && let Some(policy) = inherited.ack_policy
        {
            self.choices.push(("the router's ack_policy", policy));
        }
        self.ordering = self.ordering.or(inherited.ordering);
        self.layers.extend(&inherited.layers);
        self
    }

    fn register<T: 'static, H: Handler<T>>(
        self,
        registry: &dyn Registry<B>,
        handler: H,
    ) -> Result<(), ConfigError> {
        let default_policy = registry.default_ack_policy();
        let mut config = self.build_config_with(default_policy)?;
        registry.check(&config)?;
        // Dead letters carry the record's headers along; outputs its correlation id, replies
        // read its `reply_to`.
        config.reads_headers = H::READS_HEADERS
            || config.dead_letter_topic.is_some()
            || !config.publish_to.is_empty()
            || (config.replies && H::OUTPUTS);
        registry.register(Arc::new(HandlerSubscription::new(
            config,
            handler,
            self.layers,
        )));
        Ok(())
    }

    /// Registers `handler` for this subscriber.
    ///
    /// # Panics
    /// If the settings cannot work (a committing policy without a group, two policy choices, …):
    /// a configuration mistake is reported when the subscriber is declared, before anything is
    /// consumed. Use [`try_handle`](Self::try_handle) to get the error as a value.
    #[track_caller]
    pub fn handle<T: 'static, H: Handler<T>>(self, handler: H) {
        if let Err(e) = self.try_handle(handler) {
            panic!("{e}");
        }
    }
}
