//! Brokers: the user-facing handle (`subscriber`, `publish`, state, defaults), shared by every
//! backend through [`BrokerCore`].

use std::fmt;
use std::future::IntoFuture;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::Shutdown;
use bytes::Bytes;
use futures_util::future::BoxFuture;

use crate::AckPolicy;
use crate::backend::Backend;
use crate::config::SubscriberConfig;
use crate::error::{BackendError, ConfigError};
use crate::event::{Event, Observer};
use crate::handler::service::{BoxMessageService, Layers, MessageService};
use crate::publish::Publisher;
use crate::record::{Header, OutgoingRecord, RecordPosition};
use crate::router::Router;
use crate::runtime::subscription::{StartContext, Subscription};
use crate::state::StateMap;
use crate::status::{PublishSnapshot, PublishStatus, SubscriberStatus};
use crate::subscriber::{Declare, Declared, Inherited, Registry, SubscriberBuilder};
use crate::trace::{self, Tracing};
use tracing::Instrument;

/// The machinery every broker shares: its backend and its registered subscribers.
pub struct BrokerCore<B: Backend> {
    backend: Arc<B>,
    inner: Mutex<Inner<B>>,
}

struct Inner<B: Backend> {
    subscriptions: Vec<Arc<dyn Subscription<B>>>,
    /// One per subscription, in the same order.
    statuses: Vec<Arc<SubscriberStatus>>,
    state: StateMap,
    default_policy: AckPolicy,
    observers: Vec<Observer>,
    /// Layers around every subscriber's own (see [`Broker::layer`]).
    layers: Layers,
    /// Spans and trace propagation (see [`Broker::trace`]).
    tracing: Option<Tracing>,
    /// Whether handler durations are sampled (see [`Runnable::time_handlers`]).
    timed: bool,
    /// What this broker's publishes did.
    publishes: Arc<PublishStatus>,
}

impl<B: Backend> fmt::Debug for BrokerCore<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner();
        f.debug_struct("BrokerCore")
            .field("subscribers", &inner.subscriptions.len())
            .field("state", &inner.state)
            .field("default_policy", &inner.default_policy)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> BrokerCore<B> {
    /// A broker core over a backend.
    pub fn new(backend: B) -> Self {
        Self {
            backend: Arc::new(backend),
            inner: Mutex::new(Inner {
                subscriptions: Vec::new(),
                statuses: Vec::new(),
                state: StateMap::new(),
                default_policy: AckPolicy::default(),
                observers: Vec::new(),
                layers: Layers::default(),
                tracing: None,
                timed: false,
                publishes: Arc::default(),
            }),
        }
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<B> {
        &self.backend
    }

    fn inner(&self) -> MutexGuard<'_, Inner<B>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn observer(inner: &Inner<B>) -> Option<Observer> {
        match inner.observers.as_slice() {
            [] => None,
            [one] => Some(one.clone()),
            many => {
                let many = many.to_vec();
                Some(Observer::new(move |e: &Event| {
                    for o in &many {
                        o.emit(e);
                    }
                }))
            }
        }
    }
}

impl<B: Backend> Declare<B> for BrokerCore<B> {
    fn declare(&self, declared: Declared<B>) -> Result<(), ConfigError> {
        (declared.register)(self, &Inherited::default())
    }

    fn default_ack_policy(&self) -> AckPolicy {
        self.inner().default_policy
    }
}

impl<B: Backend> Registry<B> for BrokerCore<B> {
    fn default_ack_policy(&self) -> AckPolicy {
        self.inner().default_policy
    }

    fn check(&self, config: &SubscriberConfig) -> Result<(), ConfigError> {
        self.backend.check_subscriber(config)
    }

    fn register(&self, subscription: Arc<dyn Subscription<B>>) {
        let status = SubscriberStatus::new(
            subscription.topics().to_vec(),
            subscription.group().map(str::to_owned),
        );
        let mut inner = self.inner();
        inner.subscriptions.push(subscription);
        inner.statuses.push(Arc::new(status));
    }
}

/// A broker whose subscribers an [`App`](https://docs.rs/ackstream) can run, with its handler
/// types erased. Implemented for every [`BrokerCore`].
pub trait Runnable: Send + Sync + 'static {
    /// Checks every subscriber's handler against the broker's state.
    fn check(&self) -> Result<(), ConfigError>;

    /// One future per subscriber: each consumes until `shutdown` fires, then drains its
    /// in-flight handlers (at most `drain_timeout`), commits and leaves its group.
    fn start(
        &self,
        shutdown: &Shutdown,
        drain_timeout: Duration,
    ) -> Vec<BoxFuture<'static, Result<(), BackendError>>>;

    /// Each subscriber's live status, in the order they were registered (the same objects
    /// across starts).
    fn statuses(&self) -> Vec<Arc<SubscriberStatus>>;

    /// Samples handler durations from the next start on (one delivery in
    /// [`SAMPLE_EVERY`](crate::event::SAMPLE_EVERY)), for a duration histogram.
    fn time_handlers(&self);

    /// What the broker's publishes did so far.
    fn publishes(&self) -> PublishSnapshot;
}

impl<B: Backend> Runnable for BrokerCore<B> {
    fn check(&self) -> Result<(), ConfigError> {
        let inner = self.inner();
        inner
            .subscriptions
            .iter()
            .try_for_each(|s| s.check(&inner.state))
    }

    fn start(
        &self,
        shutdown: &Shutdown,
        drain_timeout: Duration,
    ) -> Vec<BoxFuture<'static, Result<(), BackendError>>> {
        let inner = self.inner();
        let ctx = StartContext {
            state: inner.state.clone(),
            observer: Self::observer(&inner),
            shutdown: shutdown.clone(),
            drain_timeout,
            layers: inner.layers.clone(),
            status: Arc::new(SubscriberStatus::new(Vec::new(), None)),
            tracing: inner.tracing.clone(),
            timed: inner.timed,
            publishes: inner.publishes.clone(),
        };
        inner
            .subscriptions
            .iter()
            .zip(&inner.statuses)
            .map(|(s, status)| {
                let ctx = StartContext {
                    status: status.clone(),
                    ..ctx.clone()
                };
                s.start(self.backend.clone(), ctx)
            })
            .collect()
    }

    fn statuses(&self) -> Vec<Arc<SubscriberStatus>> {
        self.inner().statuses.clone()
    }

    fn time_handlers(&self) {
        self.inner().timed = true;
    }

    fn publishes(&self) -> PublishSnapshot {
        self.inner().publishes.snapshot()
    }
}

/// What every broker offers: declare subscribers, publish, give state, observe.
///
/// Implemented by `MemoryBroker` (`ackstream::testing`) and `KafkaBroker` (`ackstream-kafka`).
/// The broker is a cheap handle: clones share the same subscribers and state.
pub trait Broker: Clone + Send + Sync + 'static {
    /// The backend behind this broker.
    type Backend: Backend;

    /// The shared machinery (what backends implement the broker with). Hidden from the docs:
    /// it is how a backend crate builds a broker, not something an application calls.
    #[doc(hidden)]
    fn core(&self) -> &Arc<BrokerCore<Self::Backend>>;

    /// Starts declaring a subscriber to one topic.
    fn subscriber(&self, topic: impl Into<String>) -> SubscriberBuilder<Self::Backend> {
        SubscriberBuilder::new(self.core().clone(), vec![topic.into()])
    }

    /// Starts declaring a subscriber to several topics (one consumer, one group).
    fn subscriber_to<I, T>(&self, topics: I) -> SubscriberBuilder<Self::Backend>
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        SubscriberBuilder::new(
            self.core().clone(),
            topics.into_iter().map(Into::into).collect(),
        )
    }

    /// The topics this broker's subscribers read, with router prefixes applied, in the order
    /// they were registered (a topic read by several subscribers appears once for each).
    fn subscribed_topics(&self) -> Vec<String> {
        let inner = self.core().inner();
        inner
            .subscriptions
            .iter()
            .flat_map(|s| s.topics().iter().cloned())
            .collect()
    }

    /// Registers every subscriber of `router` (and of the routers nested in it) with this
    /// broker, with the router's prefix and shared settings, and gives the router's state to
    /// the broker; or returns why a subscriber's settings cannot work.
    fn try_include_router(&self, router: Router<Self::Backend>) -> Result<(), ConfigError> {
        let core = self.core();
        let state = router.register_into(&**core)?;
        let mut inner = core.inner();
        for give in state {
            give(&mut inner.state);
        }
        Ok(())
    }

    /// Registers every subscriber of `router` with this broker (see
    /// [`try_include_router`](Self::try_include_router)).
    ///
    /// # Panics
    /// If a subscriber's settings cannot work, as [`SubscriberBuilder::handle`] does.
    #[track_caller]
    fn include_router(&self, router: Router<Self::Backend>) {
        if let Err(e) = self.try_include_router(router) {
            panic!("{e}");
        }
    }

    /// Starts publishing `payload` to `topic`; add a key, headers or a partition, then `.await`.
    fn publish(&self, topic: impl AsRef<str>, payload: impl Into<Bytes>) -> Publish<Self::Backend> {
        let (tracing, publishes) = {
            let inner = self.core().inner();
            (inner.tracing.clone(), inner.publishes.clone())
        };
        Publish {
            backend: self.core().backend().clone(),
            record: OutgoingRecord::new(topic, payload),
            tracing,
            publishes,
        }
    }

    /// A publisher to `topic`: cloneable, with defaults (key, headers, partition), for `main`
    /// and for handlers (as state).
    fn publisher(&self, topic: impl Into<String>) -> Publisher<Self::Backend> {
        let (tracing, publishes) = {
            let inner = self.core().inner();
            (inner.tracing.clone(), inner.publishes.clone())
        };
        Publisher::new(
            self.core().backend().clone(),
            topic.into(),
            tracing,
            publishes,
        )
    }

    /// Starts publishing `value` as JSON to `topic`.
    #[cfg(feature = "json")]
    fn publish_json<T: serde::Serialize + ?Sized>(
        &self,
        topic: impl AsRef<str>,
        value: &T,
    ) -> Result<Publish<Self::Backend>, serde_json::Error> {
        Ok(self.publish(topic, serde_json::to_vec(value)?))
    }

    /// Gives handlers a value of type `T`, reachable through the `State<T>` extractor.
    #[must_use]
    fn with_state<T: Clone + Send + Sync + 'static>(self, value: T) -> Self {
        self.core().inner().state.insert(value);
        self
    }

    /// The ack policy of subscribers that do not choose one (applies to subscribers declared
    /// afterwards). Default: `AckFirst`.
    #[must_use]
    fn with_default_ack_policy(self, policy: AckPolicy) -> Self {
        self.core().inner().default_policy = policy;
        self
    }

    /// Wraps every subscriber of this broker in `layer` (a [`tower_layer::Layer`] over the
    /// message service), outside the subscriber's own layers. Applies to runs started
    /// afterwards. The ack policy still wraps the whole stack: a layer cannot keep a record from
    /// being settled.
    #[must_use]
    fn layer<L>(self, layer: L) -> Self
    where
        L: tower_layer::Layer<BoxMessageService> + Send + Sync + 'static,
        L::Service: MessageService,
    {
        self.core().inner().layers.push(layer);
        self
    }

    /// Traces this broker's subscribers and publishes: a span per delivered record and per
    /// publish after OpenTelemetry's messaging conventions, and trace context in headers when
    /// `tracing` has a propagator (see [`trace`](crate::trace)). Applies to subscribers
    /// started, and publishers made, after the call.
    fn trace(&self, tracing: Tracing) {
        self.core().inner().tracing = Some(tracing);
    }

    /// Calls `f` with every [`Event`] of this broker's subscribers (deliveries, settles,
    /// stored offsets, assignments). Applies to runs started afterwards.
    fn observe(&self, f: impl Fn(&Event) + Send + Sync + 'static) {
        self.core().inner().observers.push(Observer::new(f));
    }
}

/// A record being published; `.await` it to send. Created by [`Broker::publish`].
#[must_use = "a publish does nothing until awaited"]
pub struct Publish<B: Backend> {
    backend: Arc<B>,
    record: OutgoingRecord,
    tracing: Option<Tracing>,
    publishes: Arc<PublishStatus>,
}

impl<B: Backend> fmt::Debug for Publish<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Publish").field(&self.record).finish()
    }
}

impl<B: Backend> Publish<B> {
    /// Sets the key (with no explicit partition, the key chooses it: murmur2, as Kafka).
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.record.key = Some(key.into());
        self
    }

    /// Adds a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.record.headers.push(Header {
            key: key.into(),
            value: Some(value.into()),
        });
        self
    }

    /// Sends to this partition, whatever the key.
    pub fn partition(mut self, partition: i32) -> Self {
        self.record.partition = Some(partition);
        self
    }
}

impl<B: Backend> IntoFuture for Publish<B> {
    type Output = Result<RecordPosition, BackendError>;
    type IntoFuture = BoxFuture<'static, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        let mut record = self.record;
        let span = trace::sending(self.tracing.as_ref(), &mut record);
        let (backend, publishes) = (self.backend, self.publishes);
        Box::pin(async move { publishes.count(backend.publish(record)).await }.instrument(span))
    }
}
