//! Which records of a partition may be handled at the same time.

use std::fmt;
use std::str::FromStr;

/// How a subscriber that handles several records at once
/// ([`max_workers`](crate::SubscriberBuilder::max_workers)) keeps order within a partition.
///
/// Whatever the ordering, a partition's committed offset is its first record that is not
/// finished, so handlers completing out of order never commit a record early.
///
/// ```
/// use ackstream_core::KeepOrder;
/// assert_eq!(KeepOrder::default(), KeepOrder::Partition);
/// assert_eq!("key".parse::<KeepOrder>(), Ok(KeepOrder::Key));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KeepOrder {
    /// One record at a time per partition, in offset order (Kafka's own guarantee). Partitions
    /// are handled side by side; `max_workers` caps how many at once.
    #[default]
    Partition,
    /// One record at a time per key within a partition; records of one key in offset order,
    /// records of different keys side by side. Records without a key count as one key of their
    /// own (they keep their order among themselves): nothing runs more parallel than asked.
    Key,
    /// Up to `max_workers` records at once, in any order.
    Unordered,
}

impl KeepOrder {
    /// Every ordering, in declaration order.
    pub const ALL: [KeepOrder; 3] = [KeepOrder::Partition, KeepOrder::Key, KeepOrder::Unordered];

    /// The ordering's name as `FromStr` reads it (`partition`, `key`, `unordered`).
    pub fn name(self) -> &'static str {
        match self {
            KeepOrder::Partition => "partition",
            KeepOrder::Key => "key",
            KeepOrder::Unordered => "unordered",
        }
    }
}

impl fmt::Display for KeepOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KeepOrder {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeepOrder::ALL
            .into_iter()
            .find(|o| o.name() == s)
            .ok_or_else(|| format!("unknown ordering {s:?} (partition, key or unordered)"))
    }
}
