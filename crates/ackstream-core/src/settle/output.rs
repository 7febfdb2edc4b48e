//! Outputs: where a handler's return value goes (each `publish_to` topic, and the input's
//! `reply_to`), and publishing it with every confirmation awaited.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedSemaphorePermit;

use super::ledger::PendingOutput;
use super::{EnqueueFn, PUBLISH_TIMEOUT, PublishFn};
use crate::error::BackendError;
use crate::interrupt::Disposition;
use crate::message::{Claimed, KafkaMessage};
use crate::record::{OutgoingRecord, Record, RecordPosition};
use crate::response::{CORRELATION_ID, Output, REPLY_TO};

/// How many inputs of one subscriber may have their outputs in flight at once (over all its
/// partitions): a partition whose next output would pass this waits, so memory stays bounded
/// while outputs are published back to back, as a producer needs for its speed.
pub(crate) const OUTPUTS_IN_FLIGHT: usize = 65_536;

/// A subscriber's output topics and the means to publish to them.
#[derive(Clone)]
pub(crate) struct Outputs {
    topics: Arc<[String]>,
    /// Whether an input's `reply_to` gets the output too.
    replies: bool,
    publish: Arc<PublishFn>,
    enqueue: Arc<EnqueueFn>,
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
    pub(crate) fn new(
        topics: &[String],
        replies: bool,
        publish: Arc<PublishFn>,
        enqueue: Arc<EnqueueFn>,
    ) -> Self {
        Self {
            topics: topics.into(),
            replies,
            publish,
            enqueue,
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

impl Outputs {
    /// The settle rule's "publish first" for a claimed delivery: hands every output to the
    /// backend (in order) and returns; the input is acked when the last confirmation arrives,
    /// or settled with `failed` (a nack) if any publish fails or its answer can never come.
    /// `permit` (one of [`OUTPUTS_IN_FLIGHT`]) is held until then.
    pub(crate) async fn publish_then_ack(
        &self,
        claimed: Claimed<'_>,
        records: Vec<OutgoingRecord>,
        failed: Disposition,
        permit: OwnedSemaphorePermit,
    ) {
        let msg = claimed.message().clone();
        let in_flight = Arc::new(InFlight {
            remaining: AtomicUsize::new(records.len()),
            failure: Mutex::new(None),
            settle: Mutex::new(Some(Settle {
                pending: msg.context_arc().output_started(),
                msg,
                failed,
                _permit: permit,
            })),
        });
        if records.is_empty() {
            in_flight.finish();
            return;
        }
        for record in records {
            let answer = in_flight.clone();
            (self.enqueue)(record, Box::new(move |result| answer.answered(result))).await;
        }
    }
}

/// One input's outputs in flight: settled once every answer is in.
struct InFlight {
    remaining: AtomicUsize,
    failure: Mutex<Option<BackendError>>,
    settle: Mutex<Option<Settle>>,
}

/// What settling the input takes (and holds until then: the partition's count of outputs in
/// flight, the subscriber's permit).
struct Settle {
    msg: KafkaMessage,
    failed: Disposition,
    pending: PendingOutput,
    _permit: OwnedSemaphorePermit,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl InFlight {
    fn answered(&self, result: Result<RecordPosition, BackendError>) {
        if let Err(e) = result {
            lock(&self.failure).get_or_insert(e);
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finish();
        }
    }

    fn finish(&self) {
        let Some(settle) = lock(&self.settle).take() else {
            return;
        };
        match lock(&self.failure).take() {
            None => settle.msg.apply_claimed(Disposition::Ack),
            Some(error) => {
                let r = settle.msg.record();
                tracing::warn!(
                    topic = %r.topic,
                    partition = r.partition,
                    offset = r.offset,
                    %error,
                    "output not published: the input is nacked, not committed"
                );
                settle.msg.apply_claimed(settle.failed)
            }
        };
        drop(settle.pending);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // Answers that can never come (the producer went away with the records): the input
        // stays unfinished and comes back.
        if let Some(settle) = lock(&self.settle).take() {
            let r = settle.msg.record();
            tracing::warn!(
                topic = %r.topic,
                partition = r.partition,
                offset = r.offset,
                "output abandoned before it was confirmed: the input is nacked, not committed"
            );
            settle.msg.apply_claimed(settle.failed);
        }
    }
}
