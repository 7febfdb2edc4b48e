#![doc = include_str!("../../../README.md")]

mod app;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod memory;
pub mod middleware;
pub mod observe;
pub mod testing;

pub use ackstream_core::{
    AckMessage, AckPolicy, Admin, Backend, BackendError, BackendErrorKind, Backoff, Batch,
    BatchHandler, BatchSubscriberBuilder, BoxError, BoxMessageService, Broker, BufferBudget,
    ConfigError, DEFAULT_DECODE_ATTEMPTS, Disposition, Handler, HandlerError, Header, Headers,
    IntoOutcome, KafkaMessage, KeepOrder, MessageService, NackAfter, NackMessage, OffsetReset,
    Outcome, OutgoingRecord, Output, Publish, Publisher, Record, RecordPosition, RejectMessage,
    Response, Router, SettleError, SettleStatus, StateMap, SubscriberBuilder, TopicPartition,
    call_when_ready, dead_letter, event, extract, response, status, trace,
};
pub use app::{App, AppError, DEFAULT_DRAIN_TIMEOUT, RunningApp, ShutdownHandle};

/// The names most handlers and `main`s need.
pub mod prelude {
    #[cfg(feature = "json")]
    pub use crate::extract::Json;
    pub use crate::extract::{Attempt, Key, Offset, Partition, State};
    pub use crate::{
        AckMessage, AckPolicy, Admin, App, Batch, Broker, HandlerError, Headers, KafkaMessage,
        KeepOrder, NackMessage, OffsetReset, RejectMessage, Response, Router,
    };
}
