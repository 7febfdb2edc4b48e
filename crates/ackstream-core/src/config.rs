//! A subscriber's resolved settings: what the runtime and the backends read once a subscriber is
//! registered.

use crate::AckPolicy;
use crate::ordering::KeepOrder;

/// Where a consumer group without a committed offset starts reading (Kafka's `auto.offset.reset`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum OffsetReset {
    /// From the first record still in the partition.
    Earliest,
    /// From the next record published (Kafka's default).
    #[default]
    Latest,
}

/// How many times a record that cannot be decoded is delivered under `NackOnError` before it is
/// rejected, unless the subscriber sets `max_attempts`. A payload that does not decode will not
/// decode the next time either; a few attempts only cover decoders with external state.
pub const DEFAULT_DECODE_ATTEMPTS: u32 = 3;

/// A subscriber's resolved settings, as the runtime and the backends see them.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SubscriberConfig {
    /// Topics to consume.
    pub topics: Vec<String>,
    /// Consumer group; `None` consumes every partition without committing.
    pub group_id: Option<String>,
    /// Start position for a group without a committed offset.
    pub offset_reset: OffsetReset,
    /// When the framework settles.
    pub ack_policy: AckPolicy,
    /// Deliveries of a record after which a nack becomes a reject (`None`: unlimited).
    pub max_attempts: Option<u32>,
    /// Deliveries of an undecodable record before it is rejected under `NackOnError`.
    pub max_decode_attempts: u32,
    /// The wait before a failed record (handler error or panic, decode failure) is delivered
    /// again under `NackOnError`.
    pub retry_backoff: crate::Backoff,
    /// Manual policy: an ack also finishes earlier records the handler left unsettled.
    pub manual_cumulative: bool,
    /// Records of this subscriber in flight at once, over all its partitions (`None`: one per
    /// partition, partitions side by side).
    pub max_workers: Option<usize>,
    /// Which records of a partition may be in flight together.
    pub ordering: KeepOrder,
    /// Where rejected records are published before they are committed past.
    pub dead_letter_topic: Option<String>,
    /// Topics the handler's return value is published to before the input is acked.
    pub publish_to: Vec<String>,
    /// Whether a return value also goes to the input's `reply_to` header (true unless the
    /// subscriber says `no_reply`).
    pub replies: bool,
    /// What the subscriber may hold of records read ahead of its handler, over all its
    /// partitions.
    pub buffer: crate::BufferBudget,
    /// Backend settings passed through as given (for Kafka: librdkafka configuration).
    pub settings: Vec<(String, String)>,
    /// Whether the handler reads record headers; a backend may skip decoding them if not.
    pub reads_headers: bool,
}

impl SubscriberConfig {
    /// The topics joined with commas, for messages.
    pub fn topics_label(&self) -> String {
        self.topics.join(",")
    }

    /// The value of a passthrough setting, if given.
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.settings
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}
