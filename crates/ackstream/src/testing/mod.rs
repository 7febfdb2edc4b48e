//! Helpers for testing handlers and services: the test-broker assertions.
//!
//! - [`Calls`]: what one subscriber received. A layer (`.layer(calls.layer())`) records every
//!   call: payload, key, headers, topic, partition, offset, attempt, what the handler returned
//!   ([`Returned`]) and, for a recorder made with [`Calls::attach`], how the delivery was
//!   settled. [`wait_calls`](Calls::wait_calls) and [`wait_settled`](Calls::wait_settled)
//!   await them, and FastStream-like (Python `mock`-like) assertions check them:
//!   [`assert_called_once_with`](Calls::assert_called_once_with),
//!   [`assert_called_with`](Calls::assert_called_with),
//!   [`assert_any_call`](Calls::assert_any_call),
//!   [`assert_called_once`](Calls::assert_called_once),
//!   [`assert_not_called`](Calls::assert_not_called), and the `_json` variants. A failing one
//!   shows the expected and the actual payload, and lists the calls. A layer works on every
//!   broker, so these work on Kafka too; a subscriber with a `Calls` layer on an output topic
//!   is how a test sees on Kafka what a service published.
//! - On the in-memory broker ([`MemoryBroker`], from [`memory`](crate::memory)): the records
//!   published to a topic ([`MemoryBroker::published`], decoded with
//!   [`MemoryBroker::published_json`]) and a group's committed offsets
//!   ([`MemoryBroker::committed_now`], [`MemoryBroker::wait_committed`]).
//! - [`Recorder`]: every runtime event of a broker (assignments, deliveries, settles, stored
//!   offsets), for a test to await instead of sleeping.
//!
//! ```
//! use ackstream::prelude::*;
//! use ackstream::testing::{Calls, EVENT_TIMEOUT, MemoryBroker, Returned};
//! use ackstream::{Backoff, Disposition};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), ackstream::BoxError> {
//! let broker = MemoryBroker::new();
//! broker.publish("orders", "book").key("customer-1").await?;
//! let calls = Calls::attach(&broker); // also hears how each delivery was settled
//! broker
//!     .subscriber("orders")
//!     .group_id("billing")
//!     .auto_offset_reset(OffsetReset::Earliest)
//!     .ack_policy(AckPolicy::NackOnError)
//!     .retry_backoff(Backoff::none())
//!     .layer(calls.layer())
//!     .handle(|_: String, Attempt(attempt): Attempt| async move {
//!         if attempt == 1 {
//!             return Err(HandlerError::from("the stock service is down"));
//!         }
//!         Ok(())
//!     });
//! let app = App::new(broker.clone()).spawn();
//!
//! // The failed first attempt, then its redelivery: two calls, both settled.
//! let seen = calls.wait_settled(2, EVENT_TIMEOUT).await;
//! assert_eq!(seen[0].attempt, 1);
//! assert_eq!(seen[0].returned, Returned::Failed("the stock service is down".into()));
//! assert_eq!(seen[0].settle, Some(Disposition::Nack { delay: None }));
//! assert_eq!(seen[1].attempt, 2);
//! assert_eq!(seen[1].settle, Some(Disposition::Ack));
//! assert_eq!(seen[1].key.as_deref(), Some(&b"customer-1"[..]));
//! calls.assert_called_with("book"); // the last call's payload
//! assert_eq!(calls.call_count(), 2);
//!
//! broker.wait_committed("billing", "orders", 1).await;
//! assert_eq!(broker.committed_now("billing", "orders", 0), Some(1));
//! app.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! A failing assertion says what it expected and what it got:
//!
//! ```text
//! the last call's payload differs
//!   expected: "book!"
//!     actual: "book"
//! 2 calls:
//!   1. orders/0@0 attempt 1 key "customer-1" payload "book" returned Failed("the stock service is down") settled Nack { delay: None }
//!   2. orders/0@0 attempt 2 key "customer-1" payload "book" returned Success settled Ack
//! ```
//!
//! [`Recorder`] waits for events:
//!
//! ```
//! use ackstream::prelude::*;
//! use ackstream::testing::{MemoryBroker, Recorder};
//! use ackstream::{Disposition, TopicPartition};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), ackstream::BoxError> {
//! let broker = MemoryBroker::new();
//! let recorder = Recorder::attach(&broker);
//! broker.publish("orders", "hello").partition(0).await?;
//! broker
//!     .subscriber("orders")
//!     .group_id("billing")
//!     .auto_offset_reset(OffsetReset::Earliest)
//!     .auto_commit(false)
//!     .handle(|_: String| async {});
//! let app = App::new(broker.clone()).spawn();
//! let tp = TopicPartition::new("orders", 0);
//! recorder.wait_for("the record settled", |r| r.is_settled(&tp, 0)).await;
//! assert_eq!(recorder.settles(&tp, 0), [Disposition::Ack]);
//! app.shutdown().await?;
//! # Ok(())
//! # }
//! ```

mod calls;
mod recorder;

pub use crate::memory::{MemoryBroker, murmur2, partition_for_key};
pub use calls::{Call, Calls, CallsLayer, CallsService, Returned};
pub use recorder::{EVENT_TIMEOUT, Recorder};
