//! Extractors: how a handler's arguments are taken from a message, the axum way.
//!
//! Every argument of a handler implements [`FromMessage`]. Metadata: the message handle
//! [`KafkaMessage`], [`Key`], [`Headers`](crate::Headers), [`State`],
//! [`Attempt`]. Payload: `String`, `Bytes`, `Vec<u8>`, `Json<T>`. When extraction fails the
//! handler is not called; the record fails with a decode error and the ack policy decides (see
//! [`AckPolicy`](crate::AckPolicy)).

use std::fmt;

use crate::error::ConfigError;
use crate::message::KafkaMessage;
use crate::state::StateMap;

#[cfg(feature = "json")]
mod json;
mod metadata;
mod payload;

#[cfg(test)]
mod fuzz;

#[cfg(feature = "json")]
pub use json::Json;
pub use metadata::{Attempt, Key, Offset, Partition, State};

/// Extracts a handler argument from a message.
///
/// Extractors borrow the message and consume nothing, so arguments may come in any order (the
/// seed handler is `async fn(body: String, msg: KafkaMessage)`): unlike axum's request body, a
/// record's payload is shared, not streamed.
///
/// ```
/// use ackstream_core::extract::{FromMessage, Rejection};
/// use ackstream_core::{KafkaMessage, StateMap};
///
/// /// The `tenant` header, required.
/// struct Tenant(String);
///
/// impl FromMessage for Tenant {
///     fn from_message(msg: &KafkaMessage, _: &StateMap) -> Result<Self, Rejection> {
///         msg.headers()
///             .get_str("tenant")
///             .map(|t| Tenant(t.to_owned()))
///             .ok_or_else(|| Rejection::new("Tenant", "missing `tenant` header"))
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an ackstream extractor",
    label = "cannot be a handler argument",
    note = "extractors: String, Bytes, Vec<u8>, Json<T> (payload); KafkaMessage, Key, Headers, \
            State<T>, Attempt, Partition, Offset (metadata); or implement FromMessage for your type"
)]
pub trait FromMessage: Sized {
    /// Extracts the value, or explains why not (a decode error: the handler is not called).
    fn from_message(msg: &KafkaMessage, state: &StateMap) -> Result<Self, Rejection>;

    /// Whether this extractor may look at the record's headers. A backend skips decoding
    /// headers for a handler none of whose arguments read them (for Kafka, decoding them costs
    /// about as much as the rest of handing a record over). Keep the default unless the
    /// extractor never reads headers.
    const READS_HEADERS: bool = true;

    /// Checks, before anything is consumed, that extraction can ever succeed (e.g. that the
    /// state a `State<T>` needs was given).
    fn check(_state: &StateMap) -> Result<(), ConfigError> {
        Ok(())
    }
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
