//! Outputs: where a handler's return value goes (each `publish_to` topic, and the input's
//! `reply_to`), and publishing it with every confirmation awaited.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::error::BackendError;
use crate::record::{OutgoingRecord, Record, RecordPosition};
use crate::response::{CORRELATION_ID, Output, REPLY_TO};

use super::PUBLISH_TIMEOUT;

/// The erased backend publish the settle rule uses (outputs, dead letters).
pub(crate) type PublishFn = dyn Fn(OutgoingRecord) -> BoxFuture<'static, Result<RecordPosition, BackendError>>
    + Send
    + Sync;

/// How many inputs of one subscriber may have their outputs in flight at once (over all its
/// partitions): a partition whose next output would pass this waits, so memory stays bounded
/// while outputs are published back to back, as a producer needs for its speed.
pub(crate) const OUTPUTS_IN_FLIGHT: usize = 8192;

/// A subscriber's output topics and the means to publish to them.
#[derive(Clone)]
pub(crate) struct Outputs {
    topics: Arc<[String]>,
    /// Whether an input's `reply_to` gets the output too.
    replies: bool,
    publish: Arc<PublishFn>,
    /// Permits for inputs whose outputs are in flight ([`OUTPUTS_IN_FLIGHT`]).
    pub(crate) in_flight: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Outputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outputs")
            .field("topics", &self.topics)
            .field("replies", &self.replies)
            .finish_non_exhaustive()
    }
}

impl Outputs {
    pub(crate) fn new(topics: &[String], replies: bool, publish: Arc<PublishFn>) -> Self {
        Self {
            topics: topics.into(),
            replies,
            publish,
            in_flight: Arc::new(tokio::sync::Semaphore::new(OUTPUTS_IN_FLIGHT)),
        }
    }

    /// The records `output` becomes for `input`: one per output topic, one for its `reply_to`
    /// (none if it names none, or the subscriber says `no_reply`). Each carries the input's
    /// correlation id, unless the output sets its own.
    pub(crate) fn records(&self, input: &Record, output: Output) -> Vec<OutgoingRecord> {
        let reply_to = self
            .replies
            .then(|| input.headers.get_str(REPLY_TO))
            .flatten()
            .filter(|t| !t.is_empty());
        let mut headers = output.headers;
        if headers.get(CORRELATION_ID).is_none()
            && let Some(id) = input.headers.get(CORRELATION_ID)
        {
            headers.insert(CORRELATION_ID, bytes::Bytes::copy_from_slice(id));
        }
        self.topics
            .iter()
            .map(String::as_str)
            .chain(reply_to)
            .map(|topic| OutgoingRecord {
                topic: topic.to_owned(),
                key: output.key.clone(),
                headers: headers.clone(),
                partition: output.partition,
                timestamp: None,
                payload: output.payload.clone(),
            })
            .collect()
    }

    /// Publishes every record, all in flight at once, and waits for every confirmation (each
    /// within [`PUBLISH_TIMEOUT`]); the first failure if any failed (others may have landed:
    /// the input is delivered again, so they will be published again).
    pub(crate) async fn publish_all(
        &self,
        records: Vec<OutgoingRecord>,
    ) -> Result<(), BackendError> {
        let sends = records.into_iter().map(|record| {
            let topic = record.topic.clone();
            let send = (self.publish)(record);
            async move {
                match tokio::time::timeout(PUBLISH_TIMEOUT, send).await {
                    Ok(sent) => sent.map(drop),
                    Err(_) => Err(BackendError::new(format!(
                        "publish to {topic} not confirmed within {PUBLISH_TIMEOUT:?}"
                    ))),
                }
            }
        });
        futures_util::future::join_all(sends)
            .await
            .into_iter()
            .collect()
    }
}
