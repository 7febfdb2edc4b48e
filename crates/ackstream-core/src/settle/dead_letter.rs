//! Dead letters: a rejected record is published to the subscriber's dead-letter topic, and only
//! once the broker confirmed it is the record settled as rejected (and so committed past). If
//! the publish fails, the record is nacked instead: it stays uncommitted and comes back.

use std::fmt;
use std::sync::Arc;

use crate::error::BackendError;
use crate::record::{OutgoingRecord, Record, RecordPosition};

use super::{PUBLISH_TIMEOUT, PublishFn};

/// Header naming the topic a dead letter came from.
pub const HEADER_TOPIC: &str = "ackstream-dead-letter-topic";
/// Header with the partition a dead letter came from.
pub const HEADER_PARTITION: &str = "ackstream-dead-letter-partition";
/// Header with the offset a dead letter had in its partition.
pub const HEADER_OFFSET: &str = "ackstream-dead-letter-offset";
/// Header with the delivery attempt that rejected the record.
pub const HEADER_ATTEMPT: &str = "ackstream-dead-letter-attempt";
/// Header with why the record was rejected (the last error).
pub const HEADER_ERROR: &str = "ackstream-dead-letter-error";

/// A subscriber's dead-letter topic and the means to publish to it.
#[derive(Clone)]
pub(crate) struct DeadLetters {
    pub(crate) topic: Arc<str>,
    publish: Arc<PublishFn>,
}

impl fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetters")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl DeadLetters {
    pub(crate) fn new(topic: &str, publish: Arc<PublishFn>) -> Self {
        Self {
            topic: Arc::from(topic),
            publish,
        }
    }

    /// Publishes `record` as a dead letter and waits for the broker's confirmation.
    pub(crate) async fn publish(
        &self,
        record: &Record,
        attempt: u32,
        error: &str,
    ) -> Result<RecordPosition, BackendError> {
        let publish = (self.publish)(letter(&self.topic, record, attempt, error));
        tokio::time::timeout(PUBLISH_TIMEOUT, publish)
            .await
            .unwrap_or_else(|_| {
                Err(BackendError::new(format!(
                    "not confirmed within {PUBLISH_TIMEOUT:?}"
                )))
            })
    }
}

/// The dead letter of `record`: same key, payload and headers, plus where it came from.
fn letter(topic: &str, record: &Record, attempt: u32, error: &str) -> OutgoingRecord {
    let mut out = OutgoingRecord::new(topic, record.payload.clone());
    out.key = record.key.clone();
    out.headers = record.headers.clone();
    out.headers.insert(HEADER_TOPIC, record.topic.to_string());
    out.headers
        .insert(HEADER_PARTITION, record.partition.to_string());
    out.headers.insert(HEADER_OFFSET, record.offset.to_string());
    out.headers.insert(HEADER_ATTEMPT, attempt.to_string());
    out.headers.insert(HEADER_ERROR, error.to_owned());
    out
}
