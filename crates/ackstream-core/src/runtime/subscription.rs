//! The registered subscriber, its handler type erased: what a broker keeps and starts.

use std::marker::PhantomData;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::batch::Batches;
use crate::backend::Backend;
use crate::config::SubscriberConfig;
use crate::error::{BackendError, ConfigError};
use crate::event::Observer;
use crate::handler::Handler;
use crate::handler::batch::BatchHandler;
use crate::handler::service::{HandlerService, Layers};
use crate::state::StateMap;

/// What the runtime needs to start one subscriber.
#[derive(Clone, Debug)]
pub(crate) struct StartContext {
    pub(crate) state: StateMap,
    pub(crate) observer: Option<Observer>,
    pub(crate) shutdown: crate::Shutdown,
    pub(crate) drain_timeout: std::time::Duration,
    /// The broker's layers, outside each subscriber's own.
    pub(crate) layers: Layers,
    /// This subscriber's status (each subscriber is started with its own).
    pub(crate) status: Arc<crate::status::SubscriberStatus>,
    /// The broker's tracing, if any.
    pub(crate) tracing: Option<crate::trace::Tracing>,
    /// Whether handler durations are sampled.
    pub(crate) timed: bool,
    /// The broker's publish counts.
    pub(crate) publishes: Arc<crate::status::PublishStatus>,
}

/// A registered subscriber, its handler type erased.
pub(crate) trait Subscription<B: Backend>: Send + Sync + 'static {
    /// The topics it reads (prefixes applied).
    fn topics(&self) -> &[String];
    /// Its consumer group, if any.
    fn group(&self) -> Option<&str>;
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
    layers: Layers,
    _marker: PhantomData<fn() -> T>,
}

impl<H, T> HandlerSubscription<H, T> {
    /// The subscription of `handler` under `config`.
    pub(crate) fn new(config: SubscriberConfig, handler: H, layers: Layers) -> Self {
        Self {
            config: Arc::new(config),
            handler,
            layers,
            _marker: PhantomData,
        }
    }
}

impl<B: Backend, H: Handler<T>, T: 'static> Subscription<B> for HandlerSubscription<H, T> {
    fn topics(&self) -> &[String] {
        &self.config.topics
    }

    fn group(&self) -> Option<&str> {
        self.config.group_id.as_deref()
    }

    fn check(&self, state: &StateMap) -> Result<(), ConfigError> {
        H::check(state)
    }

    fn start(
        &self,
        backend: Arc<B>,
        ctx: StartContext,
    ) -> BoxFuture<'static, Result<(), BackendError>> {
        let service = HandlerService::new(self.handler.clone(), ctx.state.clone());
        let config = self.config.clone();
        if self.layers.is_empty() && ctx.layers.is_empty() {
            // No layers: the handler itself, unboxed (the per-record path stays direct).
            return Box::pin(super::run_subscription(
                backend,
                config,
                service,
                ctx,
                super::spawn_partition,
            ));
        }
        let mut layers = self.layers.clone();
        layers.extend(&ctx.layers);
        let service = layers.wrap(service);
        Box::pin(super::run_subscription(
            backend,
            config,
            service,
            ctx,
            super::spawn_partition,
        ))
    }
}

/// A registered batch subscriber.
pub(crate) struct BatchSubscription<H, T> {
    config: Arc<SubscriberConfig>,
    handler: H,
    max_records: usize,
    max_wait: std::time::Duration,
    _marker: PhantomData<fn() -> T>,
}

impl<H, T> BatchSubscription<H, T> {
    /// The subscription of batch `handler` under `config`.
    pub(crate) fn new(
        config: SubscriberConfig,
        handler: H,
        max_records: usize,
        max_wait: std::time::Duration,
    ) -> Self {
        Self {
            config: Arc::new(config),
            handler,
            max_records,
            max_wait,
            _marker: PhantomData,
        }
    }
}

impl<B: Backend, H: BatchHandler<T>, T: 'static> Subscription<B> for BatchSubscription<H, T> {
    fn topics(&self) -> &[String] {
        &self.config.topics
    }

    fn group(&self) -> Option<&str> {
        self.config.group_id.as_deref()
    }

    fn check(&self, state: &StateMap) -> Result<(), ConfigError> {
        H::check(state)
    }

    fn start(
        &self,
        backend: Arc<B>,
        ctx: StartContext,
    ) -> BoxFuture<'static, Result<(), BackendError>> {
        let batches = Batches {
            handler: self.handler.clone(),
            state: ctx.state.clone(),
            max_records: self.max_records,
            max_wait: self.max_wait,
            _marker: PhantomData,
        };
        Box::pin(super::run_subscription(
            backend,
            self.config.clone(),
            batches,
            ctx,
            super::batch::spawn,
        ))
    }
}
