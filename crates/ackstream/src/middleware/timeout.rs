//! A per-record time limit.

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Duration;

use ackstream_core::{BoxMessageService, HandlerError, KafkaMessage, Outcome};
use futures_util::future::BoxFuture;
use tower_layer::Layer;
use tower_service::Service;

/// A record whose handler (with the layers inside this one) has not finished within the limit
/// has failed: the handler is cancelled and the policy decides, as for any failure (under
/// `NackOnError`, redelivered after the failure backoff). Settles the handler made before it
/// was cancelled stand; a reject still publishing its dead letter when the limit hits becomes a
/// nack (the record comes back, nothing is committed past it).
///
/// ```
/// use std::time::Duration;
/// use ackstream::middleware::Timeout;
/// use ackstream::prelude::*;
/// use ackstream::memory::MemoryBroker;
///
/// let broker = MemoryBroker::new();
/// broker
///     .subscriber("orders")
///     .group_id("billing")
///     .ack_policy(AckPolicy::NackOnError)
///     .layer(Timeout::new(Duration::from_secs(5)))
///     .handle(|body: String| async move { println!("{body}") });
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Timeout {
    limit: Duration,
}

impl Timeout {
    /// A time limit of `limit` per record.
    pub fn new(limit: Duration) -> Self {
        Self { limit }
    }
}

impl Layer<BoxMessageService> for Timeout {
    type Service = TimeoutService;

    fn layer(&self, inner: BoxMessageService) -> TimeoutService {
        TimeoutService {
            limit: self.limit,
            inner,
        }
    }
}

/// The service [`Timeout`] wraps around the rest of the stack.
#[derive(Clone, Debug)]
pub struct TimeoutService {
    limit: Duration,
    inner: BoxMessageService,
}

impl Service<KafkaMessage> for TimeoutService {
    type Response = Outcome;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Outcome, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, msg: KafkaMessage) -> Self::Future {
        let limit = self.limit;
        let run = self.inner.call(msg);
        Box::pin(async move {
            match tokio::time::timeout(limit, run).await {
                Ok(outcome) => outcome,
                Err(_) => Ok(Outcome::Failed(HandlerError::from(format!(
                    "timed out after {limit:?}"
                )))),
            }
        })
    }
}
