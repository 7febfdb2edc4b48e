//! Routers: subscribers declared before (and apart from) a broker, with a topic prefix and
//! settings they share, included into a broker in one call.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::backend::Backend;
use crate::error::ConfigError;
use crate::handler::service::{BoxMessageService, MessageService};
use crate::ordering::KeepOrder;
use crate::policy::AckPolicy;
use crate::state::StateMap;
use crate::subscriber::{Declare, Declared, Inherited, SubscriberBuilder};

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
type GiveState = Arc<dyn Fn(&mut StateMap) + Send + Sync>;

struct Inner<B: Backend> {
    shared: Inherited,
    declared: Vec<Declared<B>>,
    state: Vec<GiveState>,
}

impl<B: Backend> Clone for Router<B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

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
            })),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner<B>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
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
        SubscriberBuilder::new(Arc::new(self.clone()), vec![topic.into()])
    }

    /// Starts declaring a subscriber of this router to several topics (one consumer, one group).
    pub fn subscriber_to<I, T>(&self, topics: I) -> SubscriberBuilder<B>
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        SubscriberBuilder::new(
            Arc::new(self.clone()),
            topics.into_iter().map(Into::into).collect(),
        )
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
        let declared = std::mem::take(&mut inner.declared);
        let state = std::mem::take(&mut inner.state);
        (inner.shared.clone(), declared, state)
    }

    /// Registers every subscriber of the router with `registry` (a broker's), after giving
    /// the router's state to `state`. Stops at the first subscriber whose settings cannot work.
    pub(crate) fn register_into(
        &self,
        registry: &dyn crate::subscriber::Registry<B>,
        state: &mut StateMap,
    ) -> Result<(), ConfigError> {
        let (shared, declared, state_fns) = self.take();
        for f in state_fns {
            f(state);
        }
        for d in declared {
            (d.register)(registry, &shared)?;
        }
        Ok(())
    }
}

impl<B: Backend> Declare<B> for Router<B> {
    fn declare(&self, declared: Declared<B>) -> Result<(), ConfigError> {
        // Checked when the router is included, against the broker it is included in.
        self.inner().declared.push(declared);
        Ok(())
    }

    fn default_ack_policy(&self) -> AckPolicy {
        self.inner().shared.ack_policy.unwrap_or_default()
    }
}
