//! Outputs: where a handler's return value goes (each `publish_to` topic, and the input's
//! `reply_to`), and publishing it with every confirmation awaited.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use tokio::sync::OwnedSemaphorePermit;

use super::ledger::PendingOutput;
use super::{EnqueueFn, ObserveFn, PUBLISH_TIMEOUT, PublishFn, TryEnqueueFn};
use crate::error::BackendError;
use crate::interrupt::Disposition;
use crate::message::Claimed;
use crate::record::{OutgoingRecord, Record, RecordPosition};
use crate::response::{CORRELATION_ID, Output, REPLY_TO};
use crate::tracker::DeliveryId;

/// How many inputs of one subscriber may have their outputs in flight at once (over all its
/// partitions): a partition whose next output would pass this waits, so memory stays bounded
/// while outputs are published back to back, as a producer needs for its speed.
pub(crate) const OUTPUTS_IN_FLIGHT: usize = 65_536;

/// A subscriber's output topics and the means to publish to them.
#[derive(Clone)]
pub(crate) struct Outputs {
    topics: Arc<[Arc<str>]>,
    /// Whether an input's `reply_to` gets the output too.
    replies: bool,
    publish: Arc<PublishFn>,
    enqueue: Arc<EnqueueFn>,
    try_enqueue: Arc<TryEnqueueFn>,
    /// Traces, counts and times each output's hand-over when the subscriber is observed.
    observe: Option<Arc<ObserveFn>>,
    /// Permits for inputs whose outputs are in flight ([`OUTPUTS_IN_FLIGHT`]).
    pub(crate) in_flight: Arc<tokio::sync::Semaphore>,
    /// The runtime the subscriber runs on: an input whose output failed at its last attempt
    /// is dead-lettered there (its answer comes on a backend's thread, outside any runtime).
    runtime: tokio::runtime::Handle,
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
    /// Made inside the subscriber's runtime (it keeps a handle to it); panics outside one.
    pub(crate) fn new(
        topics: &[String],
        replies: bool,
        publish: Arc<PublishFn>,
        enqueue: Arc<EnqueueFn>,
        try_enqueue: Arc<TryEnqueueFn>,
        observe: Option<Arc<ObserveFn>>,
    ) -> Self {
        Self {
            topics: topics.iter().map(|t| Arc::from(t.as_str())).collect(),
            replies,
            publish,
            enqueue,
            try_enqueue,
            observe,
            in_flight: Arc::new(tokio::sync::Semaphore::new(OUTPUTS_IN_FLIGHT)),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// `record` and its callback as handed over: observed (a `send` span whose context goes
    /// into the headers, the answer counted and timed) when the subscriber is.
    fn observed(
        &self,
        mut record: OutgoingRecord,
        done: DeliveryCallback,
    ) -> (OutgoingRecord, DeliveryCallback) {
        match &self.observe {
            None => (record, done),
            Some(observe) => {
                let done = observe(&mut record, done);
                (record, done)
            }
        }
    }

    /// The records `output` becomes for `input`: one per output topic, one for its `reply_to`
    /// (none if it names none, or the subscriber says `no_reply`). Each carries the input's
    /// correlation id, unless the output sets its own.
    pub(crate) fn records(&self, input: &Record, output: Output) -> Records {
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
        if let ([topic], None) = (&self.topics[..], reply_to) {
            return Records::One(OutgoingRecord {
                topic: topic.clone(),
                key: output.key,
                headers,
                partition: output.partition,
                timestamp: None,
                payload: output.payload,
            });
        }
        Records::Many(
            self.topics
                .iter()
                .cloned()
                .chain(reply_to.map(Arc::from))
                .map(|topic| OutgoingRecord {
                    topic,
                    key: output.key.clone(),
                    headers: headers.clone(),
                    partition: output.partition,
                    timestamp: None,
                    payload: output.payload.clone(),
                })
                .collect(),
        )
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
    /// backend (in order); the input is acked when the last confirmation arrives, or settled
    /// with `failed` (a nack) if any publish fails or its answer can never come. `permit` (one
    /// of [`OUTPUTS_IN_FLIGHT`]) is held until then.
    ///
    /// Outputs the producer takes at once are handed over here, without a future; `Some` is
    /// what is left when the producer cannot take the next one now (its queue is full, or it is
    /// not made yet): the caller awaits it before its next input, so outputs keep input order.
    pub(crate) fn publish_then_ack(
        &self,
        claimed: Claimed<'_>,
        records: Records,
        failed: Disposition,
        permit: OwnedSemaphorePermit,
    ) -> Option<BoxFuture<'static, ()>> {
        let msg = claimed.message();
        // The record, not the message: the message goes back to its partition for the next
        // delivery at once, and the record's buffers are shared, not copied.
        let settle = Unsettled(Some(Settle {
            record: msg.record().clone(),
            id: msg.delivery_id(),
            attempt: msg.attempt(),
            failed,
            span: msg.take_span(),
            pending: msg.context_arc().output_started(),
            _permit: permit,
        }));
        let records = match records {
            // One output (one topic, no `reply_to`): its callback settles the input itself.
            Records::One(record) => {
                let done = Answer::settle(settle);
                let (record, done) = self.observed(record, done);
                return match (self.try_enqueue)(record, done) {
                    Ok(()) => None,
                    Err((record, done)) => {
                        let enqueue = self.enqueue.clone();
                        Some(Box::pin(async move { enqueue(record, done).await }))
                    }
                };
            }
            Records::Many(records) => records,
        };
        if records.is_empty() {
            settle.finish(None);
            return None;
        }
        let in_flight = Arc::new(InFlight {
            remaining: AtomicUsize::new(records.len()),
            failure: Mutex::new(None),
            settle: Mutex::new(settle),
        });
        let mut records = records.into_iter();
        while let Some(record) = records.next() {
            let (record, done) = self.observed(record, in_flight.callback());
            if let Err((record, done)) = (self.try_enqueue)(record, done) {
                let outputs = self.clone();
                return Some(Box::pin(async move {
                    (outputs.enqueue)(record, done).await;
                    for record in records {
                        let (record, done) = outputs.observed(record, in_flight.callback());
                        (outputs.enqueue)(record, done).await;
                    }
                }));
            }
        }
        None
    }
}

/// The records a return value becomes ([`Outputs::records`]).
pub(crate) enum Records {
    /// One output topic and no `reply_to`: the common case, without a list.
    One(OutgoingRecord),
    /// Any other number.
    Many(Vec<OutgoingRecord>),
}

impl Records {
    pub(crate) fn is_empty(&self) -> bool {
        matches!(self, Self::Many(v) if v.is_empty())
    }

    pub(crate) fn into_vec(self) -> Vec<OutgoingRecord> {
        match self {
            Self::One(record) => vec![record],
            Self::Many(records) => records,
        }
    }
}

/// One input's outputs in flight, when it has several: settled once every answer is in.
struct InFlight {
    remaining: AtomicUsize,
    failure: Mutex<Option<BackendError>>,
    settle: Mutex<Unsettled>,
}

/// What settling the input takes (and holds until then: the partition's count of outputs in
/// flight, the subscriber's permit).
struct Settle {
    record: Record,
    id: DeliveryId,
    attempt: u32,
    failed: Disposition,
    /// The input's span, under tracing: the settle is recorded there, on whichever thread
    /// answers. Dropped before `pending`, so a drain waiting for the outputs in flight also
    /// waits for the span to end.
    span: Option<tracing::Span>,
    pending: PendingOutput,
    _permit: OwnedSemaphorePermit,
}

/// An input waiting for its outputs' answers. Dropped before [`finish`](Self::finish) (answers
/// that can never come: the producer went away with the records), it nacks the input, which
/// stays unfinished and comes back.
pub(crate) struct Unsettled(Option<Settle>);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Unsettled {
    /// Acks the input, or settles it as failed if an output failed.
    pub(crate) fn finish(mut self, failure: Option<BackendError>) {
        let Some(settle) = self.0.take() else {
            return;
        };
        match failure {
            None => {
                let ctx = settle.pending.context();
                ctx.apply_traced(
                    &settle.record,
                    settle.id,
                    Disposition::Ack,
                    settle.span.as_ref(),
                );
                // Then the partition's count of outputs in flight, then the permit.
                drop(settle);
            }
            Some(error) => {
                let r = &settle.record;
                tracing::warn!(
                    topic = %r.topic,
                    partition = r.partition,
                    offset = r.offset,
                    %error,
                    "output not published: the input is nacked, not committed"
                );
                settle.failed(format!("output not published: {error}"));
            }
        }
    }
}

impl Settle {
    /// Settles the input whose output failed as the settle rule says: a nack (after the
    /// failure backoff), or at the subscriber's attempt limit a reject, dead-lettered first
    /// when there is a dead-letter topic. That publish is awaited on the subscriber's runtime;
    /// until it ends, the partition counts the input's output as in flight (a revoke's drain
    /// waits for it).
    fn failed(self, why: String) {
        let ctx = self.pending.context();
        let plan = super::plan(
            &self.record,
            self.attempt,
            self.failed,
            ctx.config.max_attempts,
            ctx.config.dead_letters.is_some(),
        );
        match plan {
            super::Plan::Apply(disposition) => {
                ctx.apply_traced(&self.record, self.id, disposition, self.span.as_ref());
            }
            super::Plan::DeadLetterFirst => {
                let runtime = ctx
                    .config
                    .outputs
                    .as_ref()
                    .expect("an input waits for outputs only where there are outputs")
                    .runtime
                    .clone();
                runtime.spawn(async move {
                    let ctx = self.pending.context();
                    let span = self.span.as_ref();
                    super::dead_letter_first(ctx, &self.record, self.id, self.attempt, span, &why)
                        .await;
                    drop(self);
                });
            }
        }
    }
}

impl Drop for Unsettled {
    fn drop(&mut self) {
        if let Some(settle) = self.0.take() {
            let r = &settle.record;
            tracing::warn!(
                topic = %r.topic,
                partition = r.partition,
                offset = r.offset,
                "output abandoned before it was confirmed: the input is nacked, not committed"
            );
            settle.failed("output abandoned before it was confirmed".to_owned());
        }
    }
}

impl InFlight {
    /// The callback of one of the input's outputs.
    fn callback(self: &Arc<Self>) -> DeliveryCallback {
        let answer = self.clone();
        Answer::new(move |result| answer.answered(result))
    }

    fn answered(&self, result: Result<RecordPosition, BackendError>) {
        if let Err(e) = result {
            lock(&self.failure).get_or_insert(e);
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let settle = std::mem::replace(&mut *lock(&self.settle), Unsettled(None));
            settle.finish(lock(&self.failure).take());
        }
    }
}

/// What a backend's `publish_then` calls with the broker's answer ([`Answer::call`]). One
/// pointer, so a backend can hand it to a C library as the record's opaque, and one
/// allocation for an input waiting for its one output (the common case of `publish_to`),
/// which is held inline: a boxed closure in a box was two, made on one thread and freed on
/// another for every output.
pub type DeliveryCallback = Box<Answer>;

/// Where a publish's answer goes: see [`DeliveryCallback`].
pub struct Answer(AnswerKind);

// The settle held inline is the point: one allocation per output (the answer's box).
#[allow(clippy::large_enum_variant)]
enum AnswerKind {
    /// Any callback.
    Call(Box<dyn FnOnce(Result<RecordPosition, BackendError>) + Send + Sync + 'static>),
    /// An input settled once its one output is answered.
    Settle(Unsettled),
}

impl Answer {
    /// A callback that calls `f` with the answer.
    pub fn new(
        f: impl FnOnce(Result<RecordPosition, BackendError>) + Send + Sync + 'static,
    ) -> DeliveryCallback {
        Box::new(Self(AnswerKind::Call(Box::new(f))))
    }

    /// The callback that settles an input once its one output is answered.
    pub(crate) fn settle(input: Unsettled) -> DeliveryCallback {
        Box::new(Self(AnswerKind::Settle(input)))
    }

    /// Hands the broker's answer over (once: it consumes the callback).
    pub fn call(self: Box<Self>, answer: Result<RecordPosition, BackendError>) {
        match self.0 {
            AnswerKind::Call(f) => f(answer),
            AnswerKind::Settle(input) => input.finish(answer.err()),
        }
    }
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            AnswerKind::Call(_) => "Answer::Call",
            AnswerKind::Settle(_) => "Answer::Settle",
        })
    }
}
