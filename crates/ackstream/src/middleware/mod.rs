//! Middleware: layers around a subscriber's handler.
//!
//! A registered handler is a [`tower::Service`](tower_service::Service) from the
//! [`KafkaMessage`](crate::KafkaMessage) to its [`Outcome`](crate::Outcome); any
//! [`tower::Layer`](tower_layer::Layer) over it is a middleware. Add one to a subscriber with
//! [`SubscriberBuilder::layer`](crate::SubscriberBuilder::layer), or to every subscriber of a
//! broker with [`Broker::layer`](crate::Broker::layer).
//!
//! **Order.** Each `.layer(..)` wraps everything added before it, so the last one added runs
//! first; the broker's layers run outside the subscriber's. For
//! `broker.layer(a)` and `subscriber.layer(b).layer(c)`, a record goes through `a`, `c`, `b`,
//! then the handler, and the outcome comes back through `b`, `c`, `a`.
//!
//! **Settlement stays outside.** The ack policy wraps the whole stack, inside the panic guard:
//! a middleware that answers without calling the handler gets its outcome settled by the policy
//! (an `Ok`-like [`Outcome::Success`](crate::Outcome::Success) is an ack under `NackOnError`), a
//! middleware that panics is a handler failure, and a record a middleware drops unsettled
//! under `Manual` holds the commit back as any unsettled record does.
//!
//! Shipped here: [`from_fn`] (a middleware written as an async function, as axum's),
//! [`Timeout`] (a record past its time has failed) and [`ConcurrencyLimit`] (at most `n`
//! records at once, shared by every subscriber the same limit is given to).

mod concurrency;
mod from_fn;
mod timeout;

pub use concurrency::{ConcurrencyLimit, ConcurrencyLimitService};
pub use from_fn::{FromFn, FromFnLayer, Next, from_fn};
pub use timeout::{Timeout, TimeoutService};
