//! Interrupts: values a handler returns as its error to stop and settle a record from any depth.
//!
//! They are FastStream's `AckMessage`, `NackMessage` and `RejectMessage`, made into values: each
//! converts into [`HandlerError`](crate::HandlerError), so `?` carries one up from a helper
//! function two calls deep and the framework settles the record as named. They are honoured under
//! every policy except [`AckFirst`](crate::AckPolicy::AckFirst), where the record was acked before
//! the handler ran. An interrupt is not a failure: it is not logged as one.
//!
//! None of them implements `std::error::Error`, on purpose: that keeps the blanket
//! `From<E: Into<BoxError>>` for `HandlerError` coherent beside their own `From` impls.
//!
//! ```
//! use ackstream_core::{HandlerError, NackMessage};
//!
//! fn check_stock(available: u32) -> Result<(), HandlerError> {
//!     if available == 0 {
//!         return Err(NackMessage.into()); // try again later
//!     }
//!     Ok(())
//! }
//!
//! async fn handler(body: String) -> Result<(), HandlerError> {
//!     check_stock(body.len() as u32)?; // the interrupt travels up with `?`
//!     Ok(())
//! }
//! ```

use std::time::Duration;

/// Ack the record now and stop the handler: the record is finished.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AckMessage;

/// Nack the record now and stop the handler: it is delivered again (only it), in its place in its
/// lane.
///
/// For a delay before the redelivery use [`NackMessage::after`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NackMessage;

impl NackMessage {
    /// A nack whose redelivery waits `delay`: the record's lane waits with it (its partition
    /// under `KeepOrder::Partition`, its key under `KeepOrder::Key`); other lanes go on.
    pub fn after(delay: Duration) -> NackAfter {
        NackAfter(delay)
    }
}

/// A nack with a redelivery delay; see [`NackMessage::after`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NackAfter(pub Duration);

/// Reject the record now and stop the handler: finished but failed (committed past, like ack).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RejectMessage;

/// How a record is settled. The first settle of a delivery wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disposition {
    /// Finished: the committed offset may move past it.
    Ack,
    /// Not finished: deliver it again, optionally after a delay.
    Nack {
        /// Delay before the redelivery (capped at [`MAX_NACK_DELAY`](crate::MAX_NACK_DELAY)).
        delay: Option<Duration>,
    },
    /// Finished but failed: committed past like ack.
    Reject,
}

impl From<AckMessage> for Disposition {
    fn from(_: AckMessage) -> Self {
        Disposition::Ack
    }
}

impl From<NackMessage> for Disposition {
    fn from(_: NackMessage) -> Self {
        Disposition::Nack { delay: None }
    }
}

impl From<NackAfter> for Disposition {
    fn from(n: NackAfter) -> Self {
        Disposition::Nack { delay: Some(n.0) }
    }
}

impl From<RejectMessage> for Disposition {
    fn from(_: RejectMessage) -> Self {
        Disposition::Reject
    }
}

/// What a settle did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SettleStatus {
    /// The delivery was settled as given. A nack whose record ran out of attempts is reported
    /// as the reject it became.
    Settled(Disposition),
    /// The delivery had already been settled; nothing changed.
    AlreadySettled,
    /// The delivery no longer counts: its partition was revoked (its next owner delivers it
    /// again), or it was superseded by a later delivery of the same record. Nothing changed.
    Stale,
}

/// The longest a nack's delay (or a failure's backoff) can be: longer ones are capped, so no
/// delay can overflow the clock. A record waiting that long is still unfinished and holds its
/// partition's commit back; a revoke or a restart redelivers it from Kafka.
pub const MAX_NACK_DELAY: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);
