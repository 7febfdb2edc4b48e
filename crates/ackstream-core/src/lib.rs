//! Core of [ackstream](https://docs.rs/ackstream): messages, extractors, handlers,
//! acknowledgement policies, the per-partition offset tracker and the consume runtime.
//!
//! Applications depend on `ackstream`, which re-exports all of this. Backends (the Kafka client,
//! the in-memory broker) depend on this crate alone and implement [`backend::Backend`]. It has
//! no native dependencies.
//!
//! The acknowledgement contract lives in three places, each small:
//! - [`tracker`]: the commit rule (commit only the finished prefix of each partition);
//! - `settle` (private) and [`KafkaMessage`]: first settle wins, stores offsets, asks for rewinds;
//! - the runtime (private): applies the [`AckPolicy`] around each handler call, drains and
//!   commits on revoke and shutdown.

#[macro_use]
mod macros;

mod admin;
pub mod backend;
mod backoff;
mod broker;
mod buffer;
mod config;
mod error;
pub mod event;
pub mod extract;
mod handler;
mod interrupt;
mod message;
mod ordering;
mod outcome;
mod policy;
mod publish;
mod record;
pub mod response;
mod router;
mod runtime;
mod settle;
pub use settle::dead_letter;
mod shutdown;
mod state;
pub mod status;
mod subscriber;
pub mod trace;
pub mod tracker;

pub use admin::Admin;
pub use backend::Backend;
pub use backoff::Backoff;
pub use broker::{Broker, BrokerCore, Publish, Runnable};
pub use buffer::BufferBudget;
pub use config::{DEFAULT_DECODE_ATTEMPTS, OffsetReset, SubscriberConfig};
pub use error::{BackendError, BackendErrorKind, BoxError, ConfigError, HandlerError};
pub use handler::batch::{Batch, BatchFuture, BatchHandler};
pub use handler::service::{
    BoxMessageService, HandlerService, InfallibleFuture, Layers, MessageService, call_when_ready,
};
pub use handler::{Handler, HandlerFuture};
pub use interrupt::{
    AckMessage, Disposition, MAX_NACK_DELAY, NackAfter, NackMessage, RejectMessage, SettleStatus,
};
pub use message::{KafkaMessage, SettleError};
pub use ordering::KeepOrder;
pub use outcome::{IntoOutcome, Outcome};
pub use policy::AckPolicy;
pub use publish::Publisher;
pub use record::{Header, Headers, OutgoingRecord, Record, RecordPosition, TopicPartition};
pub use response::{Output, Response};
pub use router::Router;
pub use shutdown::Shutdown;
pub use state::StateMap;
pub use subscriber::{BatchSubscriberBuilder, SubscriberBuilder};
