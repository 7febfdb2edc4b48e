//! Extractors: how a handler's arguments are taken from a message, the axum way.
//!
//! Metadata extractors implement [`FromMessageParts`] and may appear in any position: the
//! message handle [`KafkaMessage`](crate::KafkaMessage), [`Key`], [`Headers`](crate::Headers),
//! [`State`], [`Attempt`]. Payload extractors implement [`FromMessage`] and must be the last
//! argument: `String`, `Bytes`, `Vec<u8>`, `Json<T>`. When extraction fails the handler is not
//! called; the record fails with a decode error and the ack policy decides (see
//! [`AckPolicy`](crate::AckPolicy)).

use std::fmt;

use crate::error::ConfigError;
use crate::message::KafkaMessage;
use crate::state::StateMap;

#[cfg(feature = "json")]
mod json;
mod metadata;
mod payload;

#[cfg(feature = "json")]
pub use json::Json;
pub use metadata::{Attempt, Key, State};

/// Extracts a value from a message's metadata (not its payload); usable in any argument position.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an ackstream extractor",
    label = "cannot be a handler argument",
    note = "metadata extractors: KafkaMessage, Key, Headers, State<T>, Attempt; \
            payload extractors (last argument only): String, Bytes, Vec<u8>, Json<T>"
)]
pub trait FromMessageParts: Sized {
    /// Extracts the value, or explains why not.
    fn from_message_parts(msg: &KafkaMessage, state: &StateMap) -> Result<Self, Rejection>;

    /// Checks, before anything is consumed, that extraction can ever succeed (e.g. that the
    /// state a `State<T>` needs was given).
    fn check(_state: &StateMap) -> Result<(), ConfigError> {
        Ok(())
    }
}

/// Extracts a value from a message, payload included; only the last handler argument.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an ackstream extractor",
    label = "cannot be a handler argument",
    note = "payload extractors (last argument only): String, Bytes, Vec<u8>, Json<T>; \
            metadata extractors: KafkaMessage, Key, Headers, State<T>, Attempt"
)]
pub trait FromMessage<M = private::ViaMessage>: Sized {
    /// Extracts the value, or explains why not.
    fn from_message(msg: &KafkaMessage, state: &StateMap) -> Result<Self, Rejection>;

    /// See [`FromMessageParts::check`].
    fn check(_state: &StateMap) -> Result<(), ConfigError> {
        Ok(())
    }
}

impl<T: FromMessageParts> FromMessage<private::ViaParts> for T {
    fn from_message(msg: &KafkaMessage, state: &StateMap) -> Result<Self, Rejection> {
        T::from_message_parts(msg, state)
    }

    fn check(state: &StateMap) -> Result<(), ConfigError> {
        T::check(state)
    }
}

/// Marker types that keep the payload and metadata impls of [`FromMessage`] apart.
pub mod private {
    /// The extractor reads the payload.
    #[derive(Debug, Clone, Copy)]
    pub enum ViaMessage {}
    /// The extractor reads only metadata.
    #[derive(Debug, Clone, Copy)]
    pub enum ViaParts {}
}

/// Why an extractor could not produce its value: the record's decode error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    target: &'static str,
    reason: String,
}

impl Rejection {
    /// A rejection for `target` (the type being extracted) with a reason.
    pub fn new(target: &'static str, reason: impl fmt::Display) -> Self {
        Self {
            target,
            reason: reason.to_string(),
        }
    }

    /// The type that could not be extracted.
    pub fn target(&self) -> &'static str {
        self.target
    }

    /// Why.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot decode {}: {}", self.target, self.reason)
    }
}

impl std::error::Error for Rejection {}
