//! The registered subscriber, its handler type erased: what a broker keeps and starts.

use std::marker::PhantomData;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::backend::Backend;
use crate::config::SubscriberConfig;
use crate::error::{BackendError, ConfigError};
use crate::event::Observer;
use crate::handler::Handler;
use crate::state::StateMap;

/// What the runtime needs to start one subscriber.
#[derive(Clone, Debug)]
pub(crate) struct StartContext {
    pub(crate) state: StateMap,
    pub(crate) observer: Option<Observer>,
    pub(crate) shutdown: crate::Shutdown,
    pub(crate) drain_timeout: std::time::Duration,
}

/// A registered subscriber, its handler type erased.
pub(crate) trait Subscription<B: Backend>: Send + Sync + 'static {
    fn check(&self, state: &StateMap) -> Result<(), ConfigError>;
    fn start(
        &self,
        backend: Arc<B>,
        ctx: StartContext,
    ) -> BoxFuture<'static, Result<(), BackendError>>;
}

pub(crate) struct HandlerSubscription<H, T> {
    config: Arc<SubscriberConfig>,
    handler: H,
    _marker: PhantomData<fn() -> T>,
}

impl<H, T> HandlerSubscription<H, T> {
    /// The subscription of `handler` under `config`.
    pub(crate) fn new(config: SubscriberConfig, handler: H) -> Self {
        Self {
            config: Arc::new(config),
            handler,
            _marker: PhantomData,
        }
    }
}

impl<B: Backend, H: Handler<T>, T: 'static> Subscription<B> for HandlerSubscription<H, T> {
    fn check(&self, state: &StateMap) -> Result<(), ConfigError> {
        H::check(state)
    }

    fn start(
        &self,
        backend: Arc<B>,
        ctx: StartContext,
    ) -> BoxFuture<'static, Result<(), BackendError>> {
        Box::pin(crate::runtime::run_subscription(
            backend,
            self.config.clone(),
            self.handler.clone(),
            ctx,
        ))
    }
}
