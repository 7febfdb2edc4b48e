//! A seek belongs to the assignment it was asked in: one that could not be done before its
//! partition was revoked is dropped, never applied when the partition comes back.
//!
//! The scenario of issue 10's "backwards commit", on librdkafka's mock cluster: member X nacks
//! offset 10 while the partition is being revoked from it (the poll thread is inside the revoke
//! callback, so the seek cannot be done then, and afterwards librdkafka refuses it: the
//! partition is no longer assigned); member Y takes the partition, commits 100 and leaves; X
//! gets the partition back. X must resume from 100: no record below it delivered again, no
//! offset below it stored (and so committed).
//!
//! Static membership (`group.instance.id`) makes the range assignor's choice deterministic: it
//! orders static members by instance id, so "a-y" gets the one partition while it is a member.
//! The moment X's revoke starts is observed through the runtime's own log line ("revoking
//! partitions"), captured by a tracing layer: no event of the public API marks it, and the nack
//! must come after it, before the drain ends.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ackstream::Admin;
use ackstream::event::Event;
use ackstream::prelude::*;
use ackstream::{KafkaMessage, TopicPartition};
use ackstream_kafka::KafkaBroker;
use ackstream_suite::Recorder;
use rdkafka::mocking::MockCluster;
use tokio::sync::{Notify, watch};
use tracing_subscriber::layer::SubscriberExt;

const TOPIC: &str = "stale-seek";
const GROUP: &str = "stale-seek";
const NACKED: i64 = 10;
const FIRST: i64 = 100;
const MORE: i64 = 5;

/// Set once the runtime logs the start of a revoke.
fn revoking() -> &'static watch::Sender<bool> {
    static REVOKING: OnceLock<watch::Sender<bool>> = OnceLock::new();
    REVOKING.get_or_init(|| watch::Sender::new(false))
}

struct RevokeWatch;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RevokeWatch {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(bool);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 |= format!("{value:?}").starts_with("revoking partitions");
                }
            }
        }
        let mut message = Message(false);
        event.record(&mut message);
        if message.0 {
            revoking().send_replace(true);
        }
    }
}

fn member(cluster: &MockCluster<'_, impl rdkafka::ClientContext>, instance: &str) -> KafkaBroker {
    KafkaBroker::new(cluster.bootstrap_servers())
        .commit_interval(Duration::from_millis(100))
        .config("session.timeout.ms", "4000")
        .config("heartbeat.interval.ms", "1000")
        .config("group.instance.id", instance)
}

fn subscriber(broker: &KafkaBroker) -> ackstream::SubscriberBuilder<ackstream_kafka::KafkaBackend> {
    broker
        .subscriber(TOPIC)
        .group_id(GROUP)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
}

async fn committed(broker: &KafkaBroker) -> Option<i64> {
    broker
        .committed_offset(GROUP, TOPIC, 0)
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_seek_asked_during_a_revoke_is_dropped_and_never_rewinds_a_later_assignment() {
    let _ =
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(RevokeWatch));
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic(TOPIC, 1, 1).expect("topic");
    let tp = TopicPartition::new(TOPIC, 0);

    let x = member(&cluster, "b-x");
    for i in 0..FIRST {
        x.publish(TOPIC, i.to_string())
            .partition(0)
            .await
            .expect("publish");
    }
    let x_events = Recorder::attach(&x);
    let held = Arc::new(Notify::new());
    {
        let held = held.clone();
        subscriber(&x).handle(move |msg: KafkaMessage| {
            let held = held.clone();
            async move {
                if msg.offset() == NACKED && msg.attempt() == 1 {
                    held.notify_one();
                    // Nack once X's revoke has begun: its drain waits for this handler.
                    let mut revoking = revoking().subscribe();
                    revoking.wait_for(|r| *r).await.expect("watch open");
                    return Err(NackMessage.into());
                }
                Ok::<(), HandlerError>(())
            }
        });
    }
    let x_app = App::new(x.clone()).spawn();
    held.notified().await;

    let y = member(&cluster, "a-y");
    let y_events = Recorder::attach_beside(&y, &x_events);
    subscriber(&y).handle(|_: String| async {});
    let y_app = App::new(y.clone()).spawn();
    y_events
        .wait_for("Y stores the end of the partition", |r| {
            r.stored(&tp).contains(&FIRST)
        })
        .await;
    let deadline = tokio::time::Instant::now() + ackstream_suite::EVENT_TIMEOUT;
    while committed(&y).await != Some(FIRST) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Y never committed {FIRST}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    y_app.shutdown().await.expect("Y shuts down");

    // Y is gone (a static member leaves by its session ending): X gets the partition back.
    x_events
        .wait_for("X assigned the partition again", |r| {
            r.assignments(GROUP) == 2
        })
        .await;
    // Watch the group's committed offset from now on.
    let lowest = Arc::new(Mutex::new(i64::MAX));
    let sampler = {
        let (lowest, y) = (lowest.clone(), y.clone());
        tokio::spawn(async move {
            loop {
                if let Some(c) = committed(&y).await {
                    let mut l = lowest.lock().unwrap();
                    *l = (*l).min(c);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    for i in FIRST..FIRST + MORE {
        x.publish(TOPIC, i.to_string())
            .partition(0)
            .await
            .expect("publish");
    }
    x_events
        .wait_for("X stores the new end", |r| {
            r.stored(&tp).contains(&(FIRST + MORE))
        })
        .await;
    let deadline = tokio::time::Instant::now() + ackstream_suite::EVENT_TIMEOUT;
    while committed(&y).await != Some(FIRST + MORE) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "X never committed the new end"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sampler.abort();
    x_app.shutdown().await.expect("X shuts down");

    // What X did in its second assignment.
    let events = x_events.events();
    let second = events
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, Event::Assigned { .. }))
        .nth(1)
        .map(|(i, _)| i)
        .expect("a second assignment");
    let delivered_below: Vec<i64> = events[second..]
        .iter()
        .filter_map(|e| match e {
            Event::Delivered { offset, .. } if *offset < FIRST => Some(*offset),
            _ => None,
        })
        .collect();
    let stored_below: Vec<i64> = events[second..]
        .iter()
        .filter_map(|e| match e {
            Event::OffsetStored { offset, .. } if *offset < FIRST => Some(*offset),
            _ => None,
        })
        .collect();
    assert!(
        delivered_below.is_empty(),
        "X was delivered {} records below what Y committed ({FIRST}), from {:?}",
        delivered_below.len(),
        delivered_below.first()
    );
    assert!(
        stored_below.is_empty(),
        "X stored offsets below what Y committed: {:?}..",
        stored_below.first()
    );
    let lowest = *lowest.lock().unwrap();
    assert!(
        lowest >= FIRST,
        "the group's committed offset went back to {lowest} after being {FIRST}"
    );
    drop((x, y));
}
