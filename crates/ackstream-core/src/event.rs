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

/// How many times each thing happened to one partition's records, as the ledger counted it
/// (under the lock it takes anyway, so counting costs no synchronisation). Read through
/// [`status`](crate::status) snapshots; totals survive the partition moving away and back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counts {
    /// Deliveries of records (every attempt).
    pub delivered: u64,
    /// Deliveries after the first attempt (nacked records coming back, counts carried in).
    pub redelivered: u64,
    /// Acks applied.
    pub acked: u64,
    /// Nacks applied.
    pub nacked: u64,
    /// Rejects applied (a dead-lettered record is rejected once its dead letter is confirmed).
    pub rejected: u64,
    /// Records dead-lettered (their dead letter confirmed by the broker).
    pub dead_lettered: u64,
    /// Handler failures: errors that are not interrupts, and panics.
    pub failed: u64,
    /// Of those, panics.
    pub panicked: u64,
    /// Records whose payload or metadata could not be extracted (the handler was not called).
    pub decode_failed: u64,
}

impl Counts {
    /// Adds `other` to these counts.
    pub fn add(&mut self, other: &Counts) {
        self.delivered += other.delivered;
        self.redelivered += other.redelivered;
        self.acked += other.acked;
        self.nacked += other.nacked;
        self.rejected += other.rejected;
        self.dead_lettered += other.dead_lettered;
        self.failed += other.failed;
        self.panicked += other.panicked;
        self.decode_failed += other.decode_failed;
    }
}

/// The upper bounds (seconds) of the handler-duration histogram's buckets (a last, unbounded
/// bucket follows).
pub const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Handler durations of one partition, sampled (see [`SAMPLE_EVERY`]): how many fell in each
/// bucket of [`DURATION_BUCKETS`] (and above the last), and their sum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Durations {
    /// Counts per bucket (not cumulative); the last is above every bound.
    pub buckets: [u64; 15],
    /// The sum of the sampled durations, in nanoseconds.
    pub sum_nanos: u64,
}

/// One delivery in this many (by offset) is timed: reading the clock twice for every record
/// would cost more than the rest of the per-record path's bookkeeping.
pub const SAMPLE_EVERY: i64 = 8;

impl Durations {
    /// How many durations were sampled.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Adds `other` to these.
    pub fn add(&mut self, other: &Durations) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.sum_nanos += other.sum_nanos;
    }

    /// The sum of the sampled durations, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_nanos as f64 / 1e9
    }

    /// Counts one duration.
    pub fn record(&mut self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        let i = DURATION_BUCKETS
            .iter()
            .position(|&bound| secs <= bound)
            .unwrap_or(DURATION_BUCKETS.len());
        self.buckets[i] += 1;
        self.sum_nanos += u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    }
}
