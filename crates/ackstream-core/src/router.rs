//! Routers: subscribers declared before (and apart from) a broker, with a topic prefix and
//! settings they share, included into a broker in one call.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::backend::Backend;
use crate::config::SubscriberConfig;
use crate::error::ConfigError;
use crate::handler::service::{BoxMessageService, MessageService};
use crate::ordering::KeepOrder;
use crate::policy::AckPolicy;
use crate::runtime::subscription::Subscription;
use crate::state::StateMap;
use crate::subscriber::{Declare, Declared, Inherited, Registry, SubscriberBuilder};

/// A group of subscribers declared without a broker: a topic prefix, and a group, ack policy,
/// ordering, layers and state they share. Each subscriber's own settings win over the router's;
/// the router's layers run outside the subscriber's. Routers nest
/// ([`include_router`](Self::include_router)): prefixes add up, the inner router's settings win,
/// the outer router's layers run outside. Nothing is registered until the router is included in
/// a broker ([`Broker::include_router`](crate::Broker::include_router)); that is when each
/// subscriber's settings are checked.
///
/// ```
/// use ackstream_core::{AckPolicy, KeepOrder, Router};
/// # fn declare<B: ackstream_core::backend::Backend>() -> Router<B> {
/// let orders = Router::new()
///     .prefix("orders.")
///     .group_id("billing")
///     .ack_policy(AckPolicy::NackOnError)
///     .ordering(KeepOrder::Key);
/// orders.subscriber("created").handle(|body: String| async move { println!("{body}") });
/// orders
///     .subscriber("cancelled")
///     .max_workers(4) // its own setting, beside the shared ones
///     .handle(|body: String| async move { println!("{body}") });
/// assert_eq!(orders.topics(), ["orders.created", "orders.cancelled"]);
/// # orders }
/// ```
pub struct Router<B: Backend> {
    inner: Arc<Mutex<Inner<B>>>,
}

/// Gives one value of the router's state to the broker's.
pub(crate) type GiveState = Arc<dyn Fn(&mut StateMap) + Send + Sync>;

struct Inner<B: Backend> {
    shared: Inherited,
    declared: Vec<Declared<B>>,
    state: Vec<GiveState>,
    /// Set once the router was included (in a broker or another router): what is declared
    /// through it afterwards would never be registered, so it is refused.
    included: bool,
}

fn lock<B: Backend>(inner: &Mutex<Inner<B>>) -> MutexGuard<'_, Inner<B>> {
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where a router's subscriber builders declare: the router's own storage, shared with them.
struct Handle<B: Backend>(Arc<Mutex<Inner<B>>>);

impl<B: Backend> fmt::Debug for Router<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner();
        f.debug_struct("Router")
            .field("prefix", &inner.shared.prefix)
            .field("subscribers", &inner.declared.len())
            .finish_non_exhaustive()
    }
}

impl<B: Backend> Default for Router<B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<B: Backend> Router<B> {
    /// An empty router: no prefix, nothing shared.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                shared: Inherited::default(),
                declared: Vec::new(),
                state: Vec::new(),
                included: false,
            })),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner<B>> {
        lock(&self.inner)
    }

    fn handle(&self) -> Arc<Handle<B>> {
        Arc::new(Handle(self.inner.clone()))
    }

    /// Puts `prefix` before the topic of every subscriber of this router (`"orders."` and
    /// `"created"` make `"orders.created"`).
    #[must_use]
    pub fn prefix(self, prefix: impl Into<String>) -> Self {
        self.inner().shared.prefix = prefix.into();
        self
    }

    /// The consumer group of subscribers that set none.
    #[must_use]
    pub fn group_id(self, group: impl Into<String>) -> Self {
        self.inner().shared.group_id = Some(group.into());
        self
    }

    /// The ack policy of subscribers that choose none (before the broker's default).
    #[must_use]
    pub fn ack_policy(self, policy: AckPolicy) -> Self {
        self.inner().shared.ack_policy = Some(policy);
        self
    }

    /// The ordering of subscribers that set none.
    #[must_use]
    pub fn ordering(self, ordering: KeepOrder) -> Self {
        self.inner().shared.ordering = Some(ordering);
        self
    }

    /// Wraps every subscriber of this router in `layer`, outside the subscriber's own layers
    /// (and inside the broker's).
    #[must_use]
    pub fn layer<L>(self, layer: L) -> Self
    where
        L: tower_layer::Layer<BoxMessageService> + Send + Sync + 'static,
        L::Service: MessageService,
    {
        self.inner().shared.layers.push(layer);
        self
    }

    /// Gives handlers a value of type `T` (the `State<T>` extractor). State is the broker's:
    /// including the router gives the value to the broker, for every handler.
    #[must_use]
    pub fn with_state<T: Clone + Send + Sync + 'static>(self, value: T) -> Self {
        self.inner()
            .state
            .push(Arc::new(move |state: &mut StateMap| {
                state.insert(value.clone());
            }));
        self
    }

    /// Starts declaring a subscriber of this router to `topic` (the prefix is added).
    pub fn subscriber(&self, topic: impl Into<String>) -> SubscriberBuilder<B> {
        SubscriberBuilder::new(self.handle(), vec![topic.into()])
    }

    /// Starts declaring a subscriber of this router to several topics (one consumer, one group).
    pub fn subscriber_to<I, T>(&self, topics: I) -> SubscriberBuilder<B>
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        SubscriberBuilder::new(self.handle(), topics.into_iter().map(Into::into).collect())
    }

    /// Nests `router` in this one: its subscribers become this router's, their topics prefixed
    /// by this router's prefix and then their own router's.
    #[must_use]
    pub fn include_router(self, router: Router<B>) -> Self {
        let (shared, declared, state) = router.take();
        let mut inner = self.inner();
        inner.state.extend(state);
        for d in declared {
            let shared = shared.clone();
            let topics = d
                .topics
                .iter()
                .map(|t| format!("{}{t}", shared.prefix))
                .collect();
            let register = d.register;
            inner.declared.push(Declared {
                topics,
                register: Box::new(move |registry, outer| {
                    register(registry, &shared.within(outer))
                }),
            });
        }
        drop(inner);
        self
    }

    /// The topics of this router's subscribers, with the prefixes applied: what they will
    /// consume once the router is included (its own prefix included; a router it is nested
    /// in adds its own).
    pub fn topics(&self) -> Vec<String> {
        let inner = self.inner();
        inner
            .declared
            .iter()
            .flat_map(|d| {
                d.topics
                    .iter()
                    .map(|t| format!("{}{t}", inner.shared.prefix))
            })
            .collect()
    }

    /// Everything declared, leaving the router empty.
    fn take(&self) -> (Inherited, Vec<Declared<B>>, Vec<GiveState>) {
        let mut inner = self.inner();
        inner.included = true;
        let declared = std::mem::take(&mut inner.declared);
        let state = std::mem::take(&mut inner.state);
        (inner.shared.clone(), declared, state)
    }

    /// Checks every subscriber of the router against `registry` (a broker's) and, only if all
    /// of them can work, registers them all and returns the router's state for the broker:
    /// a router that cannot be included leaves the broker as it was.
    pub(crate) fn register_into(
        self,
        registry: &dyn Registry<B>,
    ) -> Result<Vec<GiveState>, ConfigError> {
        let (shared, declared, state) = self.take();
        let staged = Staged {
            registry,
            checked: Mutex::new(Vec::new()),
        };
        for d in declared {
            (d.register)(&staged, &shared)?;
        }
        let checked = staged
            .checked
            .into_inner()
            .unwrap_or_else(|p| p.into_inner());
        for subscription in checked {
            registry.register(subscription);
        }
        Ok(state)
    }
}

/// A registry that checks like the broker's and keeps what it is given, so a router's
/// subscribers are registered all together or not at all.
struct Staged<'a, B: Backend> {
    registry: &'a dyn Registry<B>,
    checked: Mutex<Vec<Arc<dyn Subscription<B>>>>,
}

impl<B: Backend> Registry<B> for Staged<'_, B> {
    fn default_ack_policy(&self) -> AckPolicy {
        self.registry.default_ack_policy()
    }

    fn check(&self, config: &SubscriberConfig) -> Result<(), ConfigError> {
        self.registry.check(config)
    }

    fn register(&self, subscription: Arc<dyn Subscription<B>>) {
        self.checked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(subscription);
    }
}

impl<B: Backend> Declare<B> for Handle<B> {
    fn declare(&self, declared: Declared<B>) -> Result<(), ConfigError> {
        let mut inner = lock(&self.0);
        if inner.included {
            return Err(ConfigError::InvalidSetting {
                setting: "router",
                reason: format!(
                    "subscriber to {} declared through a router already included; declare \
                     subscribers before including their router",
                    declared.topics.join(",")
                ),
            });
        }
        // Checked when the router is included, against the broker it is included in.
        inner.declared.push(declared);
        Ok(())
    }

    fn default_ack_policy(&self) -> AckPolicy {
        lock(&self.0).shared.ack_policy.unwrap_or_default()
    }
}
