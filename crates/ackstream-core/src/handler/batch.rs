//! Batch handlers: an `async fn` over several records of one partition at once, taking a
//! `Vec<T>` of decoded payloads or a [`Batch<T>`] that can also settle single records.

use std::future::Future;
use std::ops::Index;
use std::time::Duration;

use crate::error::ConfigError;
use crate::extract::FromMessage;
use crate::interrupt::SettleStatus;
use crate::message::{KafkaMessage, SettleError};
use crate::outcome::{IntoOutcome, Outcome};
use crate::state::StateMap;

/// A batch of records of one partition, in offset order, each decoded into `T`, with the means
/// to settle single records. The batch's outcome (what the handler returns) settles every
/// record the handler did not settle itself, as the policy says.
///
/// ```
/// use ackstream_core::{Batch, HandlerError};
///
/// async fn store(batch: Batch<String>) -> Result<(), HandlerError> {
///     for (i, line) in batch.iter().enumerate() {
///         if line.is_empty() {
///             batch.reject(i).await?; // this one alone
///         }
///     }
///     Ok(()) // the others are acked
/// }
/// ```
pub struct Batch<T> {
    items: Vec<T>,
    messages: Vec<KafkaMessage>,
}

impl<T> Batch<T> {
    pub(crate) fn new(items: Vec<T>, messages: Vec<KafkaMessage>) -> Self {
        debug_assert_eq!(items.len(), messages.len());
        Self { items, messages }
    }

    /// How many records the batch holds (those that decoded).
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The decoded values, in offset order.
    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.items.iter()
    }

    /// The message of record `i` (its key, headers, offset, attempt; a clone can be settled
    /// later, from another task).
    ///
    /// # Panics
    /// If `i` is out of range.
    pub fn message(&self, i: usize) -> &KafkaMessage {
        &self.messages[i]
    }

    /// The messages, in the values' order.
    pub fn messages(&self) -> &[KafkaMessage] {
        &self.messages
    }

    /// Acks record `i` alone.
    pub async fn ack(&self, i: usize) -> Result<SettleStatus, SettleError> {
        self.messages[i].ack().await
    }

    /// Nacks record `i` alone: it is delivered again (in a later batch), the others are not.
    pub async fn nack(&self, i: usize) -> Result<SettleStatus, SettleError> {
        self.messages[i].nack().await
    }

    /// Nacks record `i` alone, to be delivered again after `delay`.
    pub async fn nack_after(&self, i: usize, delay: Duration) -> Result<SettleStatus, SettleError> {
        self.messages[i].nack_after(delay).await
    }

    /// Rejects record `i` alone (dead-lettered if the subscriber has a dead-letter topic).
    pub async fn reject(&self, i: usize) -> Result<SettleStatus, SettleError> {
        self.messages[i].reject().await
    }

    /// The values, without the messages.
    pub fn into_values(self) -> Vec<T> {
        self.items
    }
}

impl<T> Index<usize> for Batch<T> {
    type Output = T;

    fn index(&self, i: usize) -> &T {
        &self.items[i]
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Batch<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.items).finish()
    }
}

/// A function that handles a batch: `async fn(Vec<T>)` or `async fn(Batch<T>)`, `T` being any
/// extractor (`String`, `Bytes`, `Json<_>`, `KafkaMessage`, ...), returning what a handler may
/// return (`()`, `Result<(), E>`, an interrupt). Implemented for such functions; not meant to
/// be implemented by hand.
pub trait BatchHandler<T>: Clone + Send + Sync + 'static {
    /// The decoded form of one record.
    type Item: FromMessage + Send + 'static;
    /// The future of one call.
    type Future: Future<Output = Outcome> + Send + 'static;

    /// Calls the handler with the decoded records and their messages.
    fn call(&self, items: Vec<Self::Item>, messages: Vec<KafkaMessage>) -> Self::Future;

    /// Checks before anything is consumed that the records can be extracted.
    fn check(state: &StateMap) -> Result<(), ConfigError> {
        Self::Item::check(state)
    }
}

/// The future of a batch handler call.
pub type BatchFuture = futures_util::future::BoxFuture<'static, Outcome>;

impl<F, Fut, T> BatchHandler<(Vec<T>,)> for F
where
    F: Fn(Vec<T>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: IntoOutcome,
    T: FromMessage + Send + 'static,
{
    type Item = T;
    type Future = BatchFuture;

    fn call(&self, items: Vec<T>, _: Vec<KafkaMessage>) -> BatchFuture {
        let fut = self(items);
        Box::pin(async move { fut.await.into_outcome() })
    }
}

impl<F, Fut, T> BatchHandler<(Batch<T>,)> for F
where
    F: Fn(Batch<T>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: IntoOutcome,
    T: FromMessage + Send + 'static,
{
    type Item = T;
    type Future = BatchFuture;

    fn call(&self, items: Vec<T>, messages: Vec<KafkaMessage>) -> BatchFuture {
        let fut = self(Batch::new(items, messages));
        Box::pin(async move { fut.await.into_outcome() })
    }
}
