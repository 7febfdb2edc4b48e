//! A limit on records in flight, shared by the subscribers it is given to.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use ackstream_core::{BoxMessageService, KafkaMessage, Outcome};
use futures_util::future::BoxFuture;
use tokio::sync::Semaphore;
use tower_layer::Layer;
use tower_service::Service;

/// At most `n` records at once in the layers inside this one (and their handlers), over every
/// subscriber given a clone of the same limit: a way to bound the load several subscribers put
/// on one downstream (a database pool, an API quota). A record waiting for its turn is in
/// flight (unfinished, so not committed past) and counts toward its subscriber's
/// `max_workers`.
///
/// ```
/// use ackstream::middleware::ConcurrencyLimit;
/// use ackstream::prelude::*;
/// use ackstream::memory::MemoryBroker;
///
/// let broker = MemoryBroker::new();
/// let database = ConcurrencyLimit::new(4);
/// for topic in ["orders", "refunds"] {
///     broker
///         .subscriber(topic)
///         .group_id("ledger")
///         .ack_policy(AckPolicy::NackOnError)
///         .max_workers(8)
///         .layer(database.clone())
///         .handle(|body: String| async move { println!("{body}") });
/// }
/// ```
#[derive(Clone, Debug)]
pub struct ConcurrencyLimit {
    permits: Arc<Semaphore>,
}

impl ConcurrencyLimit {
    /// A limit of `n` records at once (at least one).
    pub fn new(n: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(n.max(1))),
        }
    }

    /// Records that may start now.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }
}

impl Layer<BoxMessageService> for ConcurrencyLimit {
    type Service = ConcurrencyLimitService;

    fn layer(&self, inner: BoxMessageService) -> ConcurrencyLimitService {
        ConcurrencyLimitService {
            permits: self.permits.clone(),
            inner,
        }
    }
}

/// The service [`ConcurrencyLimit`] wraps around the rest of the stack.
#[derive(Clone, Debug)]
pub struct ConcurrencyLimitService {
    permits: Arc<Semaphore>,
    inner: BoxMessageService,
}

impl Service<KafkaMessage> for ConcurrencyLimitService {
    type Response = Outcome;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Outcome, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, msg: KafkaMessage) -> Self::Future {
        let permits = self.permits.clone();
        // The service made ready by `poll_ready` is the one called (tower's contract: readiness
        // is not cloned); a fresh clone takes its place for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            // The semaphore is never closed.
            let _permit = permits.acquire_owned().await;
            inner.call(msg).await
        })
    }
}
