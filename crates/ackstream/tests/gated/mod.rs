//! A client of the in-memory cluster for tests of rebalance interleavings: its outputs wait
//! until the test answers them (as Kafka's delivery reports come on the producer's thread, any
//! time later), its consumer reports a partition lost when the test says, and it can hide its
//! first revoke (so the runtime sees a partition assigned twice in a row). Plus waiting for
//! the runtime's events, and a second member that makes the group rebalance.
#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ackstream::event::Event;
use ackstream::memory::{MemoryBackend, MemoryBroker};
use ackstream::prelude::*;
use ackstream::{Backend, BackendError, Broker, OutgoingRecord, RecordPosition, TopicPartition};
use ackstream_core::BrokerCore;
use ackstream_core::backend::{Consumer, ConsumerEvent, DeliveryCallback, OffsetStore, RevokeAck};
use tokio::sync::{mpsc, watch};

/// The longest a test waits for an event it expects.
pub const WAIT: Duration = Duration::from_secs(10);

type Inner = <MemoryBackend as Backend>::Consumer;

/// The memory consumer, plus a loss the test triggers and, if asked, its first revoke hidden
/// (acked at once, so the group goes on).
pub struct GatedConsumer {
    inner: Inner,
    lose: Option<mpsc::UnboundedReceiver<TopicPartition>>,
    hide_revoke: bool,
}

impl Consumer for GatedConsumer {
    type Partition = <Inner as Consumer>::Partition;

    async fn next_event(&mut self) -> Option<ConsumerEvent<Self::Partition>> {
        loop {
            let event = match self.lose.as_mut() {
                Some(lose) => tokio::select! {
                    biased;
                    Some(tp) = lose.recv() => {
                        let (ack, _rx) = RevokeAck::new();
                        return Some(ConsumerEvent::Lost(vec![tp], ack));
                    }
                    event = self.inner.next_event() => event?,
                },
                None => self.inner.next_event().await?,
            };
            match event {
                ConsumerEvent::Revoked(_, ack) if self.hide_revoke => {
                    self.hide_revoke = false;
                    drop(ack);
                }
                event => return Some(event),
            }
        }
    }

    fn offset_store(&self) -> Arc<dyn OffsetStore> {
        self.inner.offset_store()
    }

    async fn close(self) {
        self.inner.close().await;
    }
}

pub struct GatedBackend {
    inner: Arc<MemoryBackend>,
    held: Mutex<VecDeque<(OutgoingRecord, DeliveryCallback)>>,
    count: watch::Sender<usize>,
    lose: Mutex<Option<mpsc::UnboundedReceiver<TopicPartition>>>,
    hide_revoke: bool,
}

impl GatedBackend {
    fn hold(&self, record: OutgoingRecord, done: DeliveryCallback) {
        self.held.lock().unwrap().push_back((record, done));
        self.count.send_modify(|n| *n += 1);
    }
}

impl Backend for GatedBackend {
    type Consumer = GatedConsumer;

    async fn consumer(
        &self,
        config: &ackstream_core::SubscriberConfig,
    ) -> Result<Self::Consumer, BackendError> {
        Ok(GatedConsumer {
            inner: self.inner.consumer(config).await?,
            lose: self.lose.lock().unwrap().take(),
            hide_revoke: self.hide_revoke,
        })
    }

    async fn publish(&self, record: OutgoingRecord) -> Result<RecordPosition, BackendError> {
        self.inner.publish(record).await
    }

    fn publish_then(
        self: Arc<Self>,
        record: OutgoingRecord,
        done: DeliveryCallback,
    ) -> impl Future<Output = ()> + Send {
        self.hold(record, done);
        std::future::ready(())
    }

    fn try_publish_then(
        &self,
        record: OutgoingRecord,
        done: DeliveryCallback,
    ) -> Result<(), (OutgoingRecord, DeliveryCallback)> {
        self.hold(record, done);
        Ok(())
    }
}

#[derive(Clone)]
pub struct Gated {
    core: Arc<BrokerCore<GatedBackend>>,
    lose: mpsc::UnboundedSender<TopicPartition>,
}

impl Broker for Gated {
    type Backend = GatedBackend;

    fn core(&self) -> &Arc<BrokerCore<GatedBackend>> {
        &self.core
    }
}

impl Gated {
    /// A gated client of `memory`'s cluster (its first consumer is the one that can lose).
    pub fn over(memory: &MemoryBroker) -> Self {
        Self::new(memory, false)
    }

    /// The same, whose first consumer hides its first revoke.
    pub fn hiding_first_revoke(memory: &MemoryBroker) -> Self {
        Self::new(memory, true)
    }

    fn new(memory: &MemoryBroker, hide_revoke: bool) -> Self {
        let (lose, rx) = mpsc::unbounded_channel();
        Self {
            core: Arc::new(BrokerCore::new(GatedBackend {
                inner: memory.connect().core().backend().clone(),
                held: Mutex::new(VecDeque::new()),
                count: watch::Sender::new(0),
                lose: Mutex::new(Some(rx)),
                hide_revoke,
            })),
            lose,
        }
    }

    fn backend(&self) -> &GatedBackend {
        self.core.backend()
    }

    /// The consumer reports `tp`'s assignment lost.
    pub fn lose(&self, tp: TopicPartition) {
        self.lose.send(tp).unwrap();
    }

    /// Waits until `n` outputs have been handed over in all (released or not).
    pub async fn handed_over(&self, n: usize) {
        let mut rx = self.backend().count.subscribe();
        rx.wait_for(|c| *c >= n).await.unwrap();
    }

    /// Answers the oldest held output: appended and confirmed, or failed.
    pub async fn release(&self, ok: bool) -> String {
        let (record, done) = self
            .backend()
            .held
            .lock()
            .unwrap()
            .pop_front()
            .expect("an output is held");
        let topic = record.topic.to_string();
        if ok {
            let at = self.backend().inner.publish(record).await;
            done.call(at);
        } else {
            done.call(Err(BackendError::new("refused by the test")));
        }
        topic
    }
}

/// The runtime's events, from an observer.
pub fn watch_events(broker: &Gated) -> mpsc::UnboundedReceiver<Event> {
    let (tx, rx) = mpsc::unbounded_channel();
    broker.observe(move |e| {
        let _ = tx.send(e.clone());
    });
    rx
}

/// The next event `f` accepts; fails the test after [`WAIT`].
pub async fn next_matching(
    rx: &mut mpsc::UnboundedReceiver<Event>,
    what: &str,
    f: impl Fn(&Event) -> bool,
) -> Event {
    tokio::time::timeout(WAIT, async {
        loop {
            let e = rx.recv().await.expect("events end");
            if f(&e) {
                return e;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"))
}

pub fn is_revoking(e: &Event) -> bool {
    matches!(e, Event::Revoking { .. })
}

pub fn is_revoked(e: &Event) -> bool {
    matches!(e, Event::Revoked { .. })
}

pub fn is_assigned(e: &Event) -> bool {
    matches!(e, Event::Assigned { .. })
}

/// A second member of group "g" on "in" joins: with one partition, the range assignor gives it
/// back to the first member (join order), which sees Revoked(p0) then Assigned(p0).
pub fn join_second_member(memory: &MemoryBroker) -> ackstream::RunningApp {
    let other = memory.connect();
    other
        .subscriber("in")
        .group_id("g")
        .auto_commit(false)
        .auto_offset_reset(OffsetReset::Earliest)
        .handle(|_: String| async move {});
    App::new(other).spawn()
}
