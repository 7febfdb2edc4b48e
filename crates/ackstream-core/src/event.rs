//! Events the runtime reports as records flow: for metrics, for tests to await instead of
//! sleeping, and for the in-memory broker's demo output.
//!
//! ```
//! use ackstream_core::event::{Event, Observer};
//! let observer = Observer::new(|event: &Event| {
//!     if let Event::Settled { tp, offset, status } = event {
//!         println!("{tp}@{offset}: {status:?}");
//!     }
//! });
//! # let _ = observer;
//! ```

use std::fmt;
use std::sync::Arc;

use crate::interrupt::SettleStatus;
use crate::record::TopicPartition;

/// Something that happened to a subscriber or one of its records.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Event {
    /// Partitions were assigned to a subscriber.
    Assigned {
        /// The subscriber's consumer group, if any.
        group: Option<Arc<str>>,
        /// The partitions.
        partitions: Vec<TopicPartition>,
    },
    /// A revoke of partitions began: nothing more of them starts on this subscriber, their
    /// in-flight handlers drain (bounded by the drain timeout), their finished prefix is
    /// committed, then [`Event::Revoked`] follows. (A lost assignment is fenced at once, with
    /// no drain: it reports only `Revoked`.)
    Revoking {
        /// The subscriber's consumer group, if any.
        group: Option<Arc<str>>,
        /// The partitions.
        partitions: Vec<TopicPartition>,
    },
    /// Partitions were revoked from a subscriber (after their drain and commit).
    Revoked {
        /// The subscriber's consumer group, if any.
        group: Option<Arc<str>>,
        /// The partitions.
        partitions: Vec<TopicPartition>,
    },
    /// A record was delivered to a subscriber.
    Delivered {
        /// Where the record is.
        tp: TopicPartition,
        /// Its offset.
        offset: i64,
        /// Which attempt this is (1 = first delivery).
        attempt: u32,
    },
    /// A record's handler failed (returned an error that is not an interrupt, or panicked).
    HandlerFailed {
        /// Where the record is.
        tp: TopicPartition,
        /// Its offset.
        offset: i64,
        /// The error or panic message.
        error: String,
        /// Whether the handler panicked.
        panicked: bool,
    },
    /// A record's payload or metadata could not be extracted; the handler was not called.
    DecodeFailed {
        /// Where the record is.
        tp: TopicPartition,
        /// Its offset.
        offset: i64,
        /// Why.
        reason: String,
    },
    /// A delivery was settled (by the handler, an interrupt or the policy).
    Settled {
        /// Where the record is.
        tp: TopicPartition,
        /// Its offset.
        offset: i64,
        /// What the settle did.
        status: SettleStatus,
    },
    /// A partition's committable offset moved (stored for the next coalesced commit).
    OffsetStored {
        /// The partition.
        tp: TopicPartition,
        /// The new committable offset.
        offset: i64,
    },
    /// A handler's record was left unsettled and now holds back its partition's commit.
    HeldBack {
        /// The partition.
        tp: TopicPartition,
        /// The unsettled record's offset.
        offset: i64,
    },
}

/// A callback receiving every [`Event`]. Keep it quick: it runs on the consuming task.
#[derive(Clone)]
pub struct Observer(Arc<dyn Fn(&Event) + Send + Sync>);

impl Observer {
    /// Wraps a callback.
    pub fn new(f: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// Reports an event.
    pub fn emit(&self, event: &Event) {
        (self.0)(event);
    }
}

impl fmt::Debug for Observer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Observer(..)")
    }
}
