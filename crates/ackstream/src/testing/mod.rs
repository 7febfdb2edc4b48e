//! Helpers for testing handlers and services: a [`Recorder`] of the runtime's events that a
//! test awaits instead of sleeping (assignments, settles, stored offsets), and, for short
//! imports, the in-memory broker ([`MemoryBroker`], from [`memory`](crate::memory)).
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

mod recorder;

pub use crate::memory::{MemoryBroker, murmur2, partition_for_key};
pub use recorder::{EVENT_TIMEOUT, Recorder};
