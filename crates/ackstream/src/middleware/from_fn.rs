//! A middleware written as an async function of the message and the rest of the stack.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::task::{Context, Poll};

use ackstream_core::{BoxMessageService, KafkaMessage, Outcome, call_when_ready};
use futures_util::future::BoxFuture;
use tower_layer::Layer;
use tower_service::Service;

/// A middleware from an async function: `f(msg, next)` runs for each record and decides
/// whether (and when) to call `next.run(msg)`, the rest of the stack.
///
/// ```
/// use ackstream::middleware::{Next, from_fn};
/// use ackstream::{KafkaMessage, Outcome};
///
/// let log = from_fn(|msg: KafkaMessage, next: Next| async move {
///     let offset = msg.offset();
///     let outcome = next.run(msg).await;
///     tracing::info!(offset, ?outcome, "handled");
///     outcome
/// });
/// # let _ = log;
/// ```
pub fn from_fn<F, Fut>(f: F) -> FromFnLayer<F>
where
    F: Fn(KafkaMessage, Next) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    FromFnLayer { f }
}

/// The layer [`from_fn`] makes.
#[derive(Clone)]
pub struct FromFnLayer<F> {
    f: F,
}

impl<F> fmt::Debug for FromFnLayer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FromFnLayer").finish_non_exhaustive()
    }
}

impl<F: Clone> Layer<BoxMessageService> for FromFnLayer<F> {
    type Service = FromFn<F>;

    fn layer(&self, inner: BoxMessageService) -> FromFn<F> {
        FromFn {
            f: self.f.clone(),
            inner,
        }
    }
}

/// The service [`from_fn`] wraps around the rest of the stack.
#[derive(Clone)]
pub struct FromFn<F> {
    f: F,
    inner: BoxMessageService,
}

impl<F> fmt::Debug for FromFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FromFn").finish_non_exhaustive()
    }
}

impl<F, Fut> Service<KafkaMessage> for FromFn<F>
where
    F: Fn(KafkaMessage, Next) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    type Response = Outcome;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Outcome, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The rest of the stack is made ready when `next.run` is called.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, msg: KafkaMessage) -> Self::Future {
        let next = Next {
            inner: self.inner.clone(),
        };
        let future = (self.f)(msg, next);
        Box::pin(async move { Ok(future.await) })
    }
}

/// The rest of the stack, for a [`from_fn`] middleware to call.
pub struct Next {
    inner: BoxMessageService,
}

impl fmt::Debug for Next {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Next").finish_non_exhaustive()
    }
}

impl Next {
    /// Runs the rest of the stack (inner layers, then the handler) for `msg`.
    pub async fn run(mut self, msg: KafkaMessage) -> Outcome {
        call_when_ready(&mut self.inner, msg).await
    }
}
