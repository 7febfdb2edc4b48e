//! # ackstream
//!
//! Event-driven services on Apache Kafka, with acknowledgement you can trust. A handler is a
//! plain `async fn`; ackstream consumes, decodes, calls it, and then settles the record (ack,
//! nack or reject) according to the policy you chose, committing only offsets whose records
//! were processed. FastStream's model, in Rust.
//!
//! ```
//! use ackstream::prelude::*;
//! use ackstream::memory::MemoryBroker;
//!
//! async fn base_handler(body: String, msg: KafkaMessage) -> Result<(), HandlerError> {
//!     if body == "retry" {
//!         msg.nack().await?; // delivered again
//!     } else {
//!         msg.ack().await?;
//!     }
//!     Ok(())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), ackstream::BoxError> {
//! let broker = MemoryBroker::new(); // or ackstream-kafka's KafkaBroker::new("localhost:9092")
//! broker
//!     .subscriber("test")
//!     .group_id("group")
//!     .auto_commit(false)
//!     .handle(base_handler);
//! let app = App::new(broker).spawn(); // App::new(broker).run().await waits for SIGINT/SIGTERM
//! app.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! ## Acknowledgement
//! | policy | FastStream spelling | when the framework settles |
//! | --- | --- | --- |
//! | [`AckPolicy::AckFirst`] (default) | `auto_commit=True` | ack before the handler runs: at most once |
//! | [`AckPolicy::Ack`] | `ACK` | ack after the handler, success or failure |
//! | [`AckPolicy::RejectOnError`] | `REJECT_ON_ERROR` | ack on success, reject on error |
//! | [`AckPolicy::NackOnError`] | `auto_commit=False` | ack on success, nack on error: at least once |
//! | [`AckPolicy::Manual`] | `no_ack=True` | never: the handler settles |
//!
//! From any call depth a handler can stop and settle with `Err(AckMessage.into())`,
//! `Err(NackMessage.into())` or `Err(RejectMessage.into())` (or `?` on a function returning
//! them). The committed offset of a partition is always the offset of its first record that is
//! not finished, whatever order records finish in.
//!
//! ## Extractors
//! Metadata (any position): [`KafkaMessage`], [`Key`](extract::Key), [`Headers`],
//! [`State<T>`](extract::State), [`Attempt`](extract::Attempt). Payload (last): `String`,
//! `Bytes`, `Vec<u8>`, [`Json<T>`](extract::Json). A payload that does not decode never reaches
//! the handler: the record fails with a decode error and the policy decides (bounded by
//! `max_decode_attempts`, so it cannot loop).
//!
//! ## Testing
//! [`testing::MemoryBroker`] is an in-memory broker with Kafka semantics (partitions, murmur2
//! keys, consumer groups, committed offsets, rebalances). It is the embedded default and the
//! broker to test handlers with; the same behaviour suite runs against it and against Kafka.
//!
//! ## Feature flags
//! | feature | default | what |
//! | --- | --- | --- |
//! | `json` | yes | `Json<T>` extractor and `publish_json` |

mod app;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod memory;
pub mod middleware;
pub mod testing;

pub use ackstream_core::{
    AckMessage, AckPolicy, Admin, BackendError, BackendErrorKind, Backoff, BoxError,
    BoxMessageService, Broker, BufferBudget, ConfigError, DEFAULT_DECODE_ATTEMPTS, Disposition,
    Handler, HandlerError, Header, Headers, IntoOutcome, KafkaMessage, KeepOrder, MessageService,
    NackAfter, NackMessage, OffsetReset, Outcome, OutgoingRecord, Publish, Record, RecordPosition,
    RejectMessage, SettleError, SettleStatus, StateMap, SubscriberBuilder, TopicPartition,
    dead_letter, event, extract,
};
pub use app::{App, AppError, DEFAULT_DRAIN_TIMEOUT, RunningApp, ShutdownHandle};

/// The names most handlers and `main`s need.
pub mod prelude {
    #[cfg(feature = "json")]
    pub use crate::extract::Json;
    pub use crate::extract::{Attempt, Key, Offset, Partition, State};
    pub use crate::{
        AckMessage, AckPolicy, Admin, App, Broker, HandlerError, Headers, KafkaMessage, KeepOrder,
        NackMessage, OffsetReset, RejectMessage,
    };
}
