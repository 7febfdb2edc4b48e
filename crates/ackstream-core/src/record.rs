//! Kafka records as ackstream sees them: what a backend delivers and what a publisher sends.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

/// A topic and one of its partitions: the unit Kafka orders, assigns and commits.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: Arc<str>,
    /// Partition number within the topic.
    pub partition: i32,
}

impl TopicPartition {
    /// A topic-partition pair.
    pub fn new(topic: impl Into<Arc<str>>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Debug for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One Kafka record header. Kafka allows a header without a value (`None`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Header name (Kafka does not require names to be unique).
    pub key: String,
    /// Header value, if any.
    pub value: Option<Bytes>,
}

/// The headers of a record, in their wire order.
///
/// ```
/// use ackstream_core::Headers;
/// let headers = Headers::new().with("trace-id", "abc").with("attempt", "2");
/// assert_eq!(headers.get_str("attempt"), Some("2"));
/// assert_eq!(headers.len(), 2);
/// ```
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Headers(Box<[Header]>);
// A boxed slice, not a `Vec`: it keeps `Record` within 128 bytes, which the compiler moves
// inline rather than through `memcpy` (a record is moved several times on its way to the
// handler), and most records have no headers at all.

impl Clone for Headers {
    // Inlined: copying a record (the in-memory broker's fetch, for one) stays a few moves for
    // the common record without headers, instead of a call and a `memcpy` of the record.
    #[inline]
    fn clone(&self) -> Self {
        // Most records have none: skip the general slice clone for them.
        if self.0.is_empty() {
            Self::new()
        } else {
            Self(self.0.clone())
        }
    }
}

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Self(Box::default())
    }

    /// Adds a header and returns the set (builder style).
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.insert(key, value);
        self
    }

    /// Appends a header.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<Bytes>) {
        self.push(Header {
            key: key.into(),
            value: Some(value.into()),
        });
    }

    /// Appends a header as given (value may be absent).
    pub fn push(&mut self, header: Header) {
        let mut all = std::mem::take(&mut self.0).into_vec();
        all.push(header);
        self.0 = all.into_boxed_slice();
    }

    /// The value of the last header named `key` (Kafka's "last wins" reading).
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .rev()
            .find(|h| h.key == key)
            .and_then(|h| h.value.as_deref())
    }

    /// [`get`](Self::get) as UTF-8; `None` if absent or not UTF-8.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Iterates the headers in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Header> {
        self.0.iter()
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = &'a Header;
    type IntoIter = std::slice::Iter<'a, Header>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl FromIterator<Header> for Headers {
    fn from_iter<I: IntoIterator<Item = Header>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

/// A record as a backend delivers it.
#[derive(Clone, Debug)]
pub struct Record {
    /// Topic the record was read from.
    pub topic: Arc<str>,
    /// Partition within the topic.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
    /// Record key, if any.
    pub key: Option<Bytes>,
    /// Record headers.
    pub headers: Headers,
    /// Record timestamp, milliseconds since the Unix epoch, if known.
    pub timestamp: Option<i64>,
    /// Record value.
    pub payload: Bytes,
}

/// A record to publish.
#[derive(Clone, Debug)]
pub struct OutgoingRecord {
    /// Destination topic (shared, not copied: a subscriber's outputs all name the same few).
    pub topic: Arc<str>,
    /// Key; with no explicit partition, the key chooses the partition (murmur2, as Kafka's default).
    pub key: Option<Bytes>,
    /// Headers.
    pub headers: Headers,
    /// Explicit partition, overriding the key's choice.
    pub partition: Option<i32>,
    /// Creation time in milliseconds since the Unix epoch (`None`: when it is produced).
    pub timestamp: Option<i64>,
    /// Value.
    pub payload: Bytes,
}

impl OutgoingRecord {
    /// A record with only a topic and a payload.
    pub fn new(topic: impl AsRef<str>, payload: impl Into<Bytes>) -> Self {
        Self {
            topic: Arc::from(topic.as_ref()),
            key: None,
            headers: Headers::new(),
            partition: None,
            timestamp: None,
            payload: payload.into(),
        }
    }
}

/// Where a published record landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordPosition {
    /// Partition the record was written to.
    pub partition: i32,
    /// Offset the record was given.
    pub offset: i64,
}

#[cfg(test)]
mod size_tests {
    use super::Record;

    #[test]
    fn a_record_fits_in_128_bytes_so_moving_it_needs_no_memcpy_call() {
        assert!(size_of::<Record>() <= 128, "{}", size_of::<Record>());
    }
}
