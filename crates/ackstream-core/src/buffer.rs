//! How much one subscriber may hold of records fetched ahead of its handler.
//!
//! A consumer reads ahead so its handler never waits for the network. What it reads ahead is
//! memory, and Kafka clients usually bound it per partition, so a consumer of a thousand
//! partitions holds a thousand times as much. ackstream bounds it per subscriber instead: one
//! budget, in bytes and in records, shared by every partition assigned to it, whatever their
//! number, and following the assignment through rebalances. How a backend keeps to it is its
//! own (the Kafka backend's rule is in its `budget` module).

/// The read-ahead budget of one subscriber: records fetched and not yet handed to the handler,
/// counted by their size (key, payload and headers) and by their number.
///
/// ```
/// use ackstream_core::BufferBudget;
/// let default = BufferBudget::default();
/// assert_eq!(default.bytes(), 64 * 1024 * 1024);
/// assert_eq!(default.records(), 100_000);
/// let small = BufferBudget::new(8 * 1024 * 1024, 10_000);
/// assert_eq!(small.records(), 10_000);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferBudget {
    bytes: usize,
    records: usize,
}

impl Default for BufferBudget {
    /// 64 MiB or 100,000 records, whichever comes first: a few seconds of a slow handler's
    /// work, and enough read-ahead for a fast one to run at the broker's speed.
    fn default() -> Self {
        Self::new(64 * 1024 * 1024, 100_000)
    }
}

impl BufferBudget {
    /// At most `bytes` (keys, payloads, headers) and at most `records` records; each at
    /// least 1, so a partition can always take its next record.
    pub fn new(bytes: usize, records: usize) -> Self {
        Self {
            bytes: bytes.max(1),
            records: records.max(1),
        }
    }

    /// The byte limit.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The record limit.
    pub fn records(&self) -> usize {
        self.records
    }
}
