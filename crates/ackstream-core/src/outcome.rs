//! Outcomes: what a handler's return value means for its record.

use bytes::Bytes;

use crate::error::HandlerError;
use crate::extract::Rejection;
use crate::interrupt::Disposition;
use crate::record::Headers;

/// The result of one delivery, before the ack policy resolves it.
#[derive(Debug)]
#[non_exhaustive]
pub enum Outcome {
    /// The handler returned successfully.
    Success,
    /// The handler returned a value to publish (see the `response` module). Boxed, so the
    /// outcome every record's future carries stays small.
    Output(Box<Output>),
    /// The handler asked for a settle with an interrupt (`Err(NackMessage.into())`, …).
    Interrupted(Disposition),
    /// The handler returned an error.
    Failed(HandlerError),
    /// The handler panicked (the message is the panic's).
    Panicked(String),
    /// An argument could not be extracted; the handler was not called.
    Rejected(Rejection),
}

/// Converts a handler's return value into an [`Outcome`]: `()` is success, `Result<T, E>` is
/// `T`'s outcome or `E`'s (an interrupt or a failure).
pub trait IntoOutcome {
    /// Whether the value may be an [`Outcome::Output`] (so the input's headers are read for
    /// its `reply_to`).
    const OUTPUTS: bool = false;

    /// The outcome.
    fn into_outcome(self) -> Outcome;
}

impl IntoOutcome for () {
    fn into_outcome(self) -> Outcome {
        Outcome::Success
    }
}

impl IntoOutcome for Outcome {
    const OUTPUTS: bool = true;

    fn into_outcome(self) -> Outcome {
        self
    }
}

impl<T: IntoOutcome, E: Into<HandlerError>> IntoOutcome for Result<T, E> {
    const OUTPUTS: bool = T::OUTPUTS;

    fn into_outcome(self) -> Outcome {
        match self {
            Ok(v) => v.into_outcome(),
            Err(e) => {
                let e: HandlerError = e.into();
                match e.interrupt() {
                    Some(d) => Outcome::Interrupted(d),
                    None => Outcome::Failed(e),
                }
            }
        }
    }
}

/// A handler's return value, encoded: the record to publish, without its topic (each
/// `publish_to` topic, and the input's `reply_to`, get one). A layer may inspect or change it
/// (add a header, say) before it is published.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Output {
    /// The payload.
    pub payload: Bytes,
    /// The key (`None`: no key).
    pub key: Option<Bytes>,
    /// The headers (the input's correlation id is added when publishing, unless set here).
    pub headers: Headers,
    /// The partition (`None`: the key chooses, or the producer's partitioner).
    pub partition: Option<i32>,
}

impl Output {
    /// An output of `payload`, without key, headers or partition.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Self {
            payload: payload.into(),
            ..Self::default()
        }
    }
}
