//! Publishers: a cloneable handle to one topic with defaults, for `main`s and handlers.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::backend::Backend;
use crate::error::BackendError;
use crate::record::{Header, OutgoingRecord, RecordPosition};
use crate::status::PublishStatus;
use crate::trace::{self, Tracing};
use tracing::Instrument;

/// Publishes to one topic with defaults (key, headers, partition, timestamp); made by
/// [`Broker::publisher`](crate::Broker::publisher). Cheap to clone: give one to handlers as
/// state (`broker.with_state(publisher)`, then a `State<Publisher<_>>` argument).
///
/// Each publish waits for the broker's confirmation, unless the publisher was made with
/// [`no_confirm`](Self::no_confirm). A failed publish says the topic and why; its
/// [`kind`](BackendError::kind) tells a retriable failure from one that will fail again.
///
/// ```
/// use ackstream_core::Broker;
/// # async fn f(broker: impl Broker) -> Result<(), ackstream_core::BackendError> {
/// let audit = broker.publisher("audit").key("service-a").header("source", "billing");
/// let position = audit.publish("charged 250").await?;
/// assert!(position.is_some(), "confirmed by the broker");
/// # Ok(()) }
/// ```
pub struct Publisher<B: Backend> {
    backend: Arc<B>,
    defaults: OutgoingRecord,
    confirm: bool,
    tracing: Option<Tracing>,
    publishes: Arc<PublishStatus>,
}

impl<B: Backend> Clone for Publisher<B> {
    fn clone(&self) -> Self {
        Self {
            backend: self.backend.clone(),
            defaults: self.defaults.clone(),
            confirm: self.confirm,
            tracing: self.tracing.clone(),
            publishes: self.publishes.clone(),
        }
    }
}

impl<B: Backend> fmt::Debug for Publisher<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("topic", &self.defaults.topic)
            .field("confirm", &self.confirm)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> Publisher<B> {
    pub(crate) fn new(
        backend: Arc<B>,
        topic: String,
        tracing: Option<Tracing>,
        publishes: Arc<PublishStatus>,
    ) -> Self {
        Self {
            backend,
            defaults: OutgoingRecord::new(topic, Bytes::new()),
            confirm: true,
            tracing,
            publishes,
        }
    }

    /// The topic it publishes to.
    pub fn topic(&self) -> &str {
        &self.defaults.topic
    }

    /// The key of every record (with no partition set, the key chooses it: murmur2, as Kafka).
    #[must_use]
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.defaults.key = Some(key.into());
        self
    }

    /// A header on every record.
    #[must_use]
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.defaults.headers.push(Header {
            key: key.into(),
            value: Some(value.into()),
        });
        self
    }

    /// Sends every record to this partition, whatever its key.
    #[must_use]
    pub fn partition(mut self, partition: i32) -> Self {
        self.defaults.partition = Some(partition);
        self
    }

    /// The timestamp of every record, in milliseconds since the Unix epoch (by default, the
    /// time it is produced).
    #[must_use]
    pub fn timestamp(mut self, millis: i64) -> Self {
        self.defaults.timestamp = Some(millis);
        self
    }

    /// Does not wait for the broker's confirmation: a publish returns `Ok(None)` once the
    /// record is handed to the backend, and a failure is only logged. For records whose loss
    /// is acceptable (metrics, traces), never for outputs that must not be lost.
    #[must_use]
    pub fn no_confirm(mut self) -> Self {
        self.confirm = false;
        self
    }

    /// Publishes `payload` with the defaults: where it landed once the broker confirmed it
    /// (`None` under [`no_confirm`](Self::no_confirm)).
    pub async fn publish(
        &self,
        payload: impl Into<Bytes>,
    ) -> Result<Option<RecordPosition>, BackendError> {
        let mut record = self.defaults.clone();
        record.payload = payload.into();
        let span = trace::sending(self.tracing.as_ref(), &mut record);
        if self.confirm {
            let publish = self.publishes.count(self.backend.publish(record));
            return publish.instrument(span).await.map(Some);
        }
        let (backend, publishes) = (self.backend.clone(), self.publishes.clone());
        tokio::spawn(
            async move {
                let topic = record.topic.clone();
                if let Err(error) = publishes.count(backend.publish(record)).await {
                    tracing::warn!(%topic, %error, "publish without confirmation failed");
                }
            }
            .instrument(span),
        );
        Ok(None)
    }

    /// Publishes `value` as JSON (see [`publish`](Self::publish)).
    #[cfg(feature = "json")]
    pub async fn publish_json<T: serde::Serialize + ?Sized>(
        &self,
        value: &T,
    ) -> Result<Option<RecordPosition>, BackendError> {
        let payload = serde_json::to_vec(value).map_err(|e| {
            BackendError::with_source(format!("cannot encode a record for {}", self.topic()), e)
                .with_kind(crate::BackendErrorKind::Invalid)
        })?;
        self.publish(payload).await
    }

    /// Publishes every payload, all in flight at once, and waits for every confirmation: the
    /// positions in the order given, or the first failure (the others may have landed).
    pub async fn publish_batch<I, P>(
        &self,
        payloads: I,
    ) -> Result<Vec<Option<RecordPosition>>, BackendError>
    where
        I: IntoIterator<Item = P>,
        P: Into<Bytes>,
    {
        let sends: Vec<_> = payloads.into_iter().map(|p| self.publish(p)).collect();
        futures_util::future::join_all(sends)
            .await
            .into_iter()
            .collect()
    }
}
