//! Outcomes: what a handler's return value means for its record.

use crate::error::HandlerError;
use crate::extract::Rejection;
use crate::interrupt::Disposition;

/// The result of one delivery, before the ack policy resolves it.
#[derive(Debug)]
#[non_exhaustive]
pub enum Outcome {
    /// The handler returned successfully.
    Success,
    /// The handler returned a value to publish (see [`response`](crate::response)). Boxed, so
    /// the outcome every record's future carries stays small.
    Output(Box<crate::response::Output>),
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
