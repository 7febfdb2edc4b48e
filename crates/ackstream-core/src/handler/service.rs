//! The seam for middleware: a registered handler is a [`tower::Service`](Service) over the
//! message, whose response is the delivery's [`Outcome`].
//!
//! The runtime calls the subscriber's service for each delivery and hands the outcome to the
//! ack policy. The policy is not a layer the user stacks: it wraps the whole stack from outside,
//! inside the panic guard, so whatever a middleware does (answer without calling the handler,
//! fail, panic, time out) the record is still settled as the policy says.
//!
//! Without layers the service is the handler itself ([`HandlerService`], no boxing); with
//! layers it is a [`BoxMessageService`], each layer wrapping what was added before it.

use std::convert::Infallible;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use tower_layer::Layer;
use tower_service::Service;

use super::Handler;
use crate::message::KafkaMessage;
use crate::outcome::Outcome;
use crate::state::StateMap;

/// What the runtime can call for each delivery: a cloneable `Service` from the message to
/// its [`Outcome`] that never errors (a failure is an outcome). Implemented for every such
/// service.
pub trait MessageService:
    Service<KafkaMessage, Response = Outcome, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> MessageService for S where
    S: Service<KafkaMessage, Response = Outcome, Error = Infallible, Future: Send + 'static>
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// Calls `service` for `msg` as tower's contract asks: made ready first, then called once.
/// What the runtime does for each delivery, and what a middleware does to run the rest of its
/// stack.
pub async fn call_when_ready<S>(service: &mut S, msg: KafkaMessage) -> Outcome
where
    S: Service<KafkaMessage, Response = Outcome, Error = Infallible>,
{
    let Ok(()) = std::future::poll_fn(|cx| service.poll_ready(cx)).await;
    let Ok(outcome) = service.call(msg).await;
    outcome
}

/// A handler as a service: extracts the arguments from the message (with the broker's state)
/// and calls the handler.
pub struct HandlerService<H, T> {
    handler: H,
    state: StateMap,
    _marker: PhantomData<fn() -> T>,
}

impl<H: Clone, T> Clone for HandlerService<H, T> {
    fn clone(&self) -> Self {
        Self {
            handler: self.handler.clone(),
            state: self.state.clone(),
            _marker: PhantomData,
        }
    }
}

impl<H, T> fmt::Debug for HandlerService<H, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerService").finish_non_exhaustive()
    }
}

impl<H, T> HandlerService<H, T> {
    /// The service of `handler`, its `State` extractors reading `state`.
    pub fn new(handler: H, state: StateMap) -> Self {
        Self {
            handler,
            state,
            _marker: PhantomData,
        }
    }
}

impl<H: Handler<T>, T: 'static> Service<KafkaMessage> for HandlerService<H, T> {
    type Response = Outcome;
    type Error = Infallible;
    type Future = InfallibleFuture<H::Future>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, msg: KafkaMessage) -> Self::Future {
        InfallibleFuture {
            inner: self.handler.call(&msg, &self.state),
        }
    }
}

pin_project_lite::pin_project! {
    /// A future of an outcome, as a service's `Result<Outcome, Infallible>`.
    #[derive(Debug)]
    pub struct InfallibleFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F: Future<Output = Outcome>> Future for InfallibleFuture<F> {
    type Output = Result<Outcome, Infallible>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx).map(Ok)
    }
}

/// Any [`MessageService`], boxed: what layers wrap, so a subscriber's type does not grow with
/// its stack.
pub struct BoxMessageService(Box<dyn CloneService>);

trait CloneService: Send + Sync {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>>;
    fn call(&mut self, msg: KafkaMessage) -> BoxFuture<'static, Result<Outcome, Infallible>>;
    fn clone_box(&self) -> Box<dyn CloneService>;
}

impl<S: MessageService> CloneService for S {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::poll_ready(self, cx)
    }

    fn call(&mut self, msg: KafkaMessage) -> BoxFuture<'static, Result<Outcome, Infallible>> {
        Box::pin(Service::call(self, msg))
    }

    fn clone_box(&self) -> Box<dyn CloneService> {
        Box::new(self.clone())
    }
}

impl BoxMessageService {
    /// Boxes `service`.
    pub fn new<S: MessageService>(service: S) -> Self {
        Self(Box::new(service))
    }
}

impl Clone for BoxMessageService {
    fn clone(&self) -> Self {
        Self(self.0.clone_box())
    }
}

impl fmt::Debug for BoxMessageService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BoxMessageService")
    }
}

impl Service<KafkaMessage> for BoxMessageService {
    type Response = Outcome;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Outcome, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, msg: KafkaMessage) -> Self::Future {
        self.0.call(msg)
    }
}

/// A stack of layers, applied in the order they were added: each wraps the ones before it, so
/// the last added runs first (outermost), as with axum's `Router::layer`.
#[derive(Clone, Default)]
pub struct Layers(Vec<Arc<dyn Fn(BoxMessageService) -> BoxMessageService + Send + Sync>>);

impl fmt::Debug for Layers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Layers").field(&self.0.len()).finish()
    }
}

impl Layers {
    /// Adds `layer` outside the ones already there.
    pub fn push<L>(&mut self, layer: L)
    where
        L: Layer<BoxMessageService> + Send + Sync + 'static,
        L::Service: MessageService,
    {
        self.0.push(Arc::new(move |inner| {
            BoxMessageService::new(layer.layer(inner))
        }));
    }

    /// Adds every layer of `outer` outside these.
    pub fn extend(&mut self, outer: &Layers) {
        self.0.extend(outer.0.iter().cloned());
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `service` wrapped in every layer.
    pub fn wrap<S: MessageService>(&self, service: S) -> BoxMessageService {
        self.0
            .iter()
            .fold(BoxMessageService::new(service), |inner, layer| layer(inner))
    }
}
