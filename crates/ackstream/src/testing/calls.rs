//! The calls a subscriber received, recorded by a layer, with mock-style assertions.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::sync::watch;
use tower_layer::Layer;
use tower_service::Service;

use crate::TopicPartition;
use crate::event::Event;
use crate::{Broker, Disposition, Headers, KafkaMessage, Outcome, Output, SettleStatus};

/// Payloads longer than this (in characters of their rendering) are cut in messages.
const SHOWN: usize = 300;

/// The calls one subscriber received, for assertions in tests: each record's payload, key,
/// headers, position and attempt, what the handler's stack returned and how the delivery was
/// settled. Attach it to a subscriber as a layer ([`layer`](Self::layer)); clones share the
/// same record of calls.
///
/// A call is recorded when the stack inside the layer has returned (or panicked, or was
/// cancelled), so every call in [`calls`](Self::calls) has its [`Returned`]. The settle
/// that follows (the policy's, or the handler's own `msg.ack()`, or `AckFirst`'s before the
/// handler ran) is known only to a recorder made with [`attach`](Self::attach), which also
/// listens to the broker's events; [`wait_settled`](Self::wait_settled) waits for it.
///
/// Its layer works on every broker, Kafka included. See the [module docs](super) for an example.
#[derive(Clone)]
pub struct Calls {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Bumped on every recorded call and every settle.
    changes: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct State {
    /// Each call, with the number of its delivery if the broker's events told it.
    calls: Vec<(Call, Option<u64>)>,
    /// Whether the broker's events reach this recorder (settles are known).
    observing: bool,
    /// Deliveries seen so far, numbering them.
    deliveries: u64,
    /// The number of each record's current delivery, from `Delivered` events: a delivery is
    /// reported before its call starts, and a record is delivered again only once its
    /// delivery was nacked or its partition revoked, so a call's is the one current when it
    /// starts.
    delivering: HashMap<(TopicPartition, i64), u64>,
    /// What each delivery's effective settle did, by delivery number.
    settles: HashMap<u64, Disposition>,
}

impl fmt::Debug for Calls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Calls")
            .field("calls", &self.call_count())
            .finish_non_exhaustive()
    }
}

impl Default for Calls {
    fn default() -> Self {
        Self::new()
    }
}

impl Calls {
    /// A recorder of calls only: [`Call::settle`] stays `None`. Use
    /// [`attach`](Self::attach) to know the settles too.
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                changes: watch::Sender::new(0),
            }),
        }
    }

    /// A recorder that also listens to `broker`'s events, so each call gets the settle of its
    /// delivery ([`Call::settle`]). Attach it before the app starts.
    ///
    /// A settle is matched to its call by the record's topic, partition and offset (events
    /// do not name their subscriber): if two subscribers of the same broker client (two
    /// groups) read the same topic, their settles cannot be told apart; give each its own
    /// client ([`MemoryBroker::connect`]) then.
    ///
    /// [`MemoryBroker::connect`]: crate::memory::MemoryBroker::connect
    pub fn attach<B: Broker>(broker: &B) -> Self {
        let calls = Self::new();
        calls.lock().observing = true;
        let shared = calls.shared.clone();
        broker.observe(move |event| shared.observe(event));
        calls
    }

    /// The layer that records into this recorder: `.layer(calls.layer())` on the subscriber
    /// (or on a broker, for all of its subscribers). Added last, it runs first and sees what
    /// every other layer and the handler returned.
    pub fn layer(&self) -> CallsLayer {
        CallsLayer {
            shared: self.shared.clone(),
        }
    }

    /// The calls so far, in the order they returned, each with its settle as known now.
    pub fn calls(&self) -> Vec<Call> {
        let state = self.lock();
        state
            .calls
            .iter()
            .map(|(call, delivery)| {
                let mut call = call.clone();
                call.settle = delivery.and_then(|d| state.settles.get(&d).copied());
                call
            })
            .collect()
    }

    /// Number of calls so far.
    pub fn call_count(&self) -> usize {
        self.lock().calls.len()
    }

    /// The payloads of the calls so far, in order.
    pub fn payloads(&self) -> Vec<Bytes> {
        self.lock()
            .calls
            .iter()
            .map(|(c, _)| c.payload.clone())
            .collect()
    }

    /// The last call, if any.
    pub fn last_call(&self) -> Option<Call> {
        self.calls().pop()
    }

    /// Forgets the calls so far (as a mock's `reset_mock`); later ones are recorded as before.
    pub fn reset(&self) {
        self.lock().calls.clear();
        self.shared.changed();
    }

    /// Waits until at least `n` calls have returned and gives them all (as
    /// [`calls`](Self::calls)). Their settles may not be known yet: use
    /// [`wait_settled`](Self::wait_settled) to check them.
    ///
    /// # Panics
    /// After `timeout`, with the calls that did arrive.
    pub async fn wait_calls(&self, n: usize, timeout: Duration) -> Vec<Call> {
        self.wait_until(&format!("{n} calls"), timeout, |calls| calls.len() >= n)
            .await
    }

    /// Waits until at least `n` calls have returned *and* had their delivery settled (acked,
    /// nacked or rejected), and gives every call so far.
    ///
    /// # Panics
    /// If the recorder does not know settles (made with [`new`](Self::new), not
    /// [`attach`](Self::attach)); after `timeout`, with the calls so far.
    pub async fn wait_settled(&self, n: usize, timeout: Duration) -> Vec<Call> {
        assert!(
            self.lock().observing,
            "wait_settled needs the broker's events: make the recorder with Calls::attach(&broker)"
        );
        self.wait_until(&format!("{n} settled calls"), timeout, |calls| {
            calls.iter().filter(|c| c.settle.is_some()).count() >= n
        })
        .await
    }

    /// Waits until `done` holds for the calls so far, and gives them; `what` names the
    /// condition in the failure message.
    ///
    /// # Panics
    /// After `timeout`, with the calls so far.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[Call]) -> bool,
    ) -> Vec<Call> {
        // Subscribed before the first look, so no change between the look and the wait is
        // missed.
        let mut changes = self.shared.changes.subscribe();
        let wait = async {
            loop {
                let calls = self.calls();
                if done(&calls) {
                    return calls;
                }
                // The sender lives in `self`.
                let _ = changes.changed().await;
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(calls) => calls,
            Err(_) => panic!(
                "timed out after {timeout:?} waiting for {what}; {}",
                listing(&self.calls())
            ),
        }
    }

    /// Asserts there was at least one call.
    ///
    /// # Panics
    /// If there was none.
    #[track_caller]
    pub fn assert_called(&self) {
        if self.call_count() == 0 {
            panic!("expected at least one call, got none");
        }
    }

    /// Asserts there was exactly one call.
    ///
    /// # Panics
    /// If there were none or several, listing them.
    #[track_caller]
    pub fn assert_called_once(&self) {
        let calls = self.calls();
        if calls.len() != 1 {
            panic!("expected 1 call, got {}", listing(&calls));
        }
    }

    /// Asserts there was no call.
    ///
    /// # Panics
    /// If there was one, listing them.
    #[track_caller]
    pub fn assert_not_called(&self) {
        let calls = self.calls();
        if !calls.is_empty() {
            panic!("expected no call, got {}", listing(&calls));
        }
    }

    /// Asserts the last call's payload is `payload`.
    ///
    /// # Panics
    /// If there was no call, or its payload differs: the message shows both payloads (as
    /// text when they are UTF-8, else as bytes).
    #[track_caller]
    pub fn assert_called_with(&self, payload: impl AsRef<[u8]>) {
        let expected = payload.as_ref();
        let calls = self.calls();
        let Some(last) = calls.last() else {
            panic!(
                "expected a call with payload {}, got none",
                show_payload(expected)
            );
        };
        if last.payload != expected {
            panic!(
                "the last call's payload differs\n  expected: {}\n    actual: {}\n{}",
                show_payload(expected),
                show_payload(&last.payload),
                listing(&calls)
            );
        }
    }

    /// Asserts there was exactly one call, with payload `payload`.
    ///
    /// # Panics
    /// If there were none or several, or its payload differs: the message shows both payloads
    /// (as text when they are UTF-8, else as bytes).
    #[track_caller]
    pub fn assert_called_once_with(&self, payload: impl AsRef<[u8]>) {
        let expected = payload.as_ref();
        let calls = self.calls();
        match calls.as_slice() {
            [call] if call.payload == expected => {}
            [call] => panic!(
                "the call's payload differs\n  expected: {}\n    actual: {}\n{}",
                show_payload(expected),
                show_payload(&call.payload),
                listing(&calls)
            ),
            _ => panic!(
                "expected 1 call with payload {}, got {}",
                show_payload(expected),
                listing(&calls)
            ),
        }
    }

    /// Asserts some call had payload `payload` (as a mock's `assert_any_call`).
    ///
    /// # Panics
    /// If none had, listing the calls.
    #[track_caller]
    pub fn assert_any_call(&self, payload: impl AsRef<[u8]>) {
        let expected = payload.as_ref();
        let calls = self.calls();
        if !calls.iter().any(|c| c.payload == expected) {
            panic!(
                "no call had payload {}; got {}",
                show_payload(expected),
                listing(&calls)
            );
        }
    }

    /// Asserts the last call's payload is the JSON of `expected` (compared as JSON values, so
    /// key order and spacing do not matter).
    ///
    /// # Panics
    /// If there was no call, its payload is not JSON, or it differs: the message shows both.
    #[cfg(feature = "json")]
    #[track_caller]
    pub fn assert_called_with_json<T: serde::Serialize + ?Sized>(&self, expected: &T) {
        let expected = to_json(expected);
        let calls = self.calls();
        let Some(last) = calls.last() else {
            panic!("expected a call with JSON {expected}, got none");
        };
        if let Some(actual) = json_differs(&expected, &last.payload) {
            panic!(
                "the last call's JSON differs\n  expected: {expected}\n    actual: {actual}\n{}",
                listing(&calls)
            );
        }
    }

    /// Asserts there was exactly one call, whose payload is the JSON of `expected` (compared
    /// as JSON values, so key order and spacing do not matter).
    ///
    /// # Panics
    /// If there were none or several, its payload is not JSON, or it differs: the message
    /// shows both.
    #[cfg(feature = "json")]
    #[track_caller]
    pub fn assert_called_once_with_json<T: serde::Serialize + ?Sized>(&self, expected: &T) {
        let expected = to_json(expected);
        let calls = self.calls();
        let [call] = calls.as_slice() else {
            panic!(
                "expected 1 call with JSON {expected}, got {}",
                listing(&calls)
            );
        };
        if let Some(actual) = json_differs(&expected, &call.payload) {
            panic!(
                "the call's JSON differs\n  expected: {expected}\n    actual: {actual}\n{}",
                listing(&calls)
            );
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held (in a test's assertion, say) leaves the calls as
        // they were: keep reading them.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// The number of the delivery `msg` is, if the broker's events told it.
    fn delivery_of(&self, msg: &KafkaMessage) -> Option<u64> {
        self.lock()
            .delivering
            .get(&(msg.topic_partition().clone(), msg.offset()))
            .copied()
    }

    fn record(&self, call: Call, delivery: Option<u64>) {
        self.lock().calls.push((call, delivery));
        self.changed();
    }

    fn observe(&self, event: &Event) {
        let mut state = self.lock();
        match event {
            Event::Delivered { tp, offset, .. } => {
                state.deliveries += 1;
                let number = state.deliveries;
                state.delivering.insert((tp.clone(), *offset), number);
            }
            // Only an effective settle: one that found the delivery settled already, or no
            // longer current (revoked, superseded), changed nothing.
            Event::Settled {
                tp,
                offset,
                status: SettleStatus::Settled(disposition),
            } => {
                let Some(&delivery) = state.delivering.get(&(tp.clone(), *offset)) else {
                    return;
                };
                state.settles.entry(delivery).or_insert(*disposition);
                drop(state);
                self.changed();
            }
            _ => {}
        }
    }
}

/// One call a subscriber received: the delivery (record and attempt), what the stack
/// returned, and how the delivery was settled.
///
/// Its `Display` is one line, as the assertions list calls:
/// `orders/0@3 attempt 2 payload "hello" returned Success settled Ack`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Call {
    /// The record's topic.
    pub topic: String,
    /// The record's partition.
    pub partition: i32,
    /// The record's offset.
    pub offset: i64,
    /// The record's key.
    pub key: Option<Bytes>,
    /// The record's headers, as the layer saw them. On Kafka they are decoded only for a
    /// handler that may read them (one with a `Headers` or `KafkaMessage` argument, or a
    /// subscriber with a dead-letter topic or outputs); otherwise they are empty here.
    pub headers: Headers,
    /// The record's payload.
    pub payload: Bytes,
    /// Which delivery of the record this was (1 = the first).
    pub attempt: u32,
    /// What the handler's stack (the layers inside this one, then the handler) returned.
    pub returned: Returned,
    /// How the delivery was settled, as the broker's events reported it: its effective
    /// settle, by the handler, an interrupt or the policy (a nack that ran out of attempts is
    /// the reject it became). `None` when not settled (yet), when its partition was revoked
    /// first, or when the recorder was made with [`Calls::new`], which does not listen to
    /// events.
    pub settle: Option<Disposition>,
}

impl Call {
    /// The payload as UTF-8 text, if it is.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.payload).ok()
    }

    /// The payload decoded from JSON.
    ///
    /// # Errors
    /// If it is not the JSON of a `T`.
    #[cfg(feature = "json")]
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.payload)
    }

    /// The record's topic and partition.
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition::new(self.topic.as_str(), self.partition)
    }

    fn of(msg: &KafkaMessage) -> Self {
        Self {
            topic: msg.topic().to_owned(),
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg.key().cloned(),
            headers: msg.headers().clone(),
            payload: msg.payload().clone(),
            attempt: msg.attempt(),
            returned: Returned::Cancelled,
            settle: None,
        }
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}@{} attempt {}",
            self.topic, self.partition, self.offset, self.attempt
        )?;
        if let Some(key) = &self.key {
            write!(f, " key {}", show_payload(key))?;
        }
        if !self.headers.is_empty() {
            f.write_str(" headers [")?;
            for (i, h) in self.headers.iter().enumerate() {
                let value = h.value.as_deref().map_or("(none)".to_owned(), show_payload);
                write!(f, "{}{}: {value}", if i > 0 { ", " } else { "" }, h.key)?;
            }
            f.write_str("]")?;
        }
        write!(
            f,
            " payload {} returned {:?}",
            show_payload(&self.payload),
            self.returned
        )?;
        match self.settle {
            Some(d) => write!(f, " settled {d:?}"),
            None => f.write_str(" not settled"),
        }
    }
}

/// What a handler's stack returned for one call: its [`Outcome`], in a form that can be
/// cloned and compared.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Returned {
    /// The handler returned successfully.
    Success,
    /// The handler returned a value to publish (before it was published).
    Output(Output),
    /// The handler returned an interrupt (`AckMessage`, `NackMessage`, `RejectMessage`).
    Interrupted(Disposition),
    /// The handler returned an error; its message.
    Failed(String),
    /// The handler panicked; the panic's message.
    Panicked(String),
    /// An argument could not be extracted (a payload that does not decode, say), so the
    /// handler was not called; the reason.
    Rejected(String),
    /// The call did not finish: a layer outside the recorder dropped it (a timeout), or the
    /// app cancelled it (a drain past its deadline).
    Cancelled,
}

impl Returned {
    fn of(outcome: &Outcome) -> Self {
        match outcome {
            Outcome::Success => Self::Success,
            // `Output::clone` reads through a box as well as a reference.
            Outcome::Output(output) => Self::Output(Output::clone(output)),
            Outcome::Interrupted(d) => Self::Interrupted(*d),
            Outcome::Failed(e) => Self::Failed(e.to_string()),
            Outcome::Panicked(message) => Self::Panicked(message.clone()),
            Outcome::Rejected(rejection) => Self::Rejected(rejection.to_string()),
            // A variant added later: its debug rendering says what it was.
            other => Self::Failed(format!("{other:?}")),
        }
    }
}

/// The layer of a [`Calls`] recorder ([`Calls::layer`]).
#[derive(Clone, Debug)]
pub struct CallsLayer {
    shared: Arc<Shared>,
}

impl<S> Layer<S> for CallsLayer {
    type Service = CallsService<S>;

    fn layer(&self, inner: S) -> CallsService<S> {
        CallsService {
            shared: self.shared.clone(),
            inner,
        }
    }
}

/// The service [`CallsLayer`] wraps around the rest of the stack: records each call, and
/// passes the message and the outcome (a panic included) through unchanged.
#[derive(Clone, Debug)]
pub struct CallsService<S> {
    shared: Arc<Shared>,
    inner: S,
}

impl<S> Service<KafkaMessage> for CallsService<S>
where
    S: Service<KafkaMessage, Response = Outcome, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Outcome;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Outcome, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, msg: KafkaMessage) -> Self::Future {
        let mut pending = Pending {
            delivery: self.shared.delivery_of(&msg),
            shared: self.shared.clone(),
            call: Some(Call::of(&msg)),
        };
        // A service may panic in `call` itself, before it has a future.
        let run = match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(msg))) {
            Ok(run) => run,
            Err(panic) => {
                pending.finish(Returned::Panicked(panic_message(&*panic)));
                std::panic::resume_unwind(panic)
            }
        };
        Box::pin(async move {
            match AssertUnwindSafe(run).catch_unwind().await {
                Ok(Ok(outcome)) => {
                    pending.finish(Returned::of(&outcome));
                    Ok(outcome)
                }
                Err(panic) => {
                    pending.finish(Returned::Panicked(panic_message(&*panic)));
                    // On to the ack policy, which settles it as the handler failure it is.
                    std::panic::resume_unwind(panic)
                }
            }
        })
    }
}

/// A call under way: recorded as [`Returned::Cancelled`] if dropped unfinished.
struct Pending {
    shared: Arc<Shared>,
    call: Option<Call>,
    delivery: Option<u64>,
}

impl Pending {
    fn finish(&mut self, returned: Returned) {
        if let Some(mut call) = self.call.take() {
            call.returned = returned;
            self.shared.record(call, self.delivery);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.finish(Returned::Cancelled);
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "handler panicked with a non-string payload".to_owned()
    }
}

/// A payload for a message: quoted text if it is UTF-8, else its bytes (`b"\x00\xff"`); cut
/// after [`SHOWN`] characters, with its length.
fn show_payload(payload: &[u8]) -> String {
    let shown = match std::str::from_utf8(payload) {
        Ok(text) => format!("{text:?}"),
        Err(_) => format!("{:?}", Bytes::copy_from_slice(payload)),
    };
    if shown.chars().count() <= SHOWN {
        return shown;
    }
    let cut: String = shown.chars().take(SHOWN).collect();
    format!("{cut}... ({} bytes)", payload.len())
}

/// "N calls:" and one line per call, for failure messages.
fn listing(calls: &[Call]) -> String {
    if calls.is_empty() {
        return "no calls".to_owned();
    }
    let mut out = format!(
        "{} call{}:",
        calls.len(),
        if calls.len() == 1 { "" } else { "s" }
    );
    for (i, call) in calls.iter().enumerate() {
        out.push_str(&format!("\n  {}. {call}", i + 1));
    }
    out
}

#[cfg(feature = "json")]
fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).expect("the expected value serialises to JSON")
}

/// `None` if `payload` is the JSON `expected`, else how to show it.
#[cfg(feature = "json")]
fn json_differs(expected: &serde_json::Value, payload: &[u8]) -> Option<String> {
    match serde_json::from_slice::<serde_json::Value>(payload) {
        Ok(actual) if actual == *expected => None,
        Ok(actual) => Some(actual.to_string()),
        Err(e) => Some(format!("{} (not JSON: {e})", show_payload(payload))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_is_shown_as_text_when_it_is_utf8_else_as_bytes() {
        assert_eq!(show_payload(b"hello"), "\"hello\"");
        assert_eq!(show_payload(&[0, 0xff]), "b\"\\0\\xff\"");
        let long = show_payload(&[b'a'; 1000]);
        assert!(long.ends_with("... (1000 bytes)"), "{long}");
    }
}
