//! Batch subscribers on the in-memory broker: settings refused at registration, a partial batch
//! after `max_wait`, `Vec<T>` handlers, a panicking batch, interrupts, revoke-free shutdown.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ackstream::memory::MemoryBroker;
use ackstream::middleware::Timeout;
use ackstream::prelude::*;
use ackstream::testing::Recorder;
use ackstream::{ConfigError, Disposition, TopicPartition};

const WAIT: Duration = Duration::from_secs(30);

async fn committed(broker: &MemoryBroker, group: &str, topic: &str, offset: i64) {
    tokio::time::timeout(WAIT, broker.wait_committed(group, topic, offset))
        .await
        .unwrap_or_else(|_| panic!("{topic} not committed to {offset}"));
}

fn refused(result: Result<(), ConfigError>, setting: &str) {
    match result {
        Err(ConfigError::InvalidSetting { setting: s, .. }) if s == setting => {}
        other => panic!("expected {setting} to be refused, got {other:?}"),
    }
}

#[test]
fn a_batch_subscriber_refuses_what_it_cannot_honour() {
    let broker = MemoryBroker::new();
    let sub = || broker.subscriber("in").group_id("g");
    let handler = |_: Vec<String>| async {};
    refused(sub().batch(0, WAIT).try_handle(handler), "batch");
    refused(
        sub().max_workers(4).batch(10, WAIT).try_handle(handler),
        "max_workers",
    );
    refused(
        sub()
            .layer(Timeout::new(WAIT))
            .batch(10, WAIT)
            .try_handle(handler),
        "layer",
    );
    refused(
        sub().publish_to("out").batch(10, WAIT).try_handle(handler),
        "publish_to",
    );
}

#[tokio::test]
async fn a_partial_batch_is_handed_over_once_max_wait_has_passed() {
    let broker = MemoryBroker::new();
    broker.publish("in", "only").await.unwrap();
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let s = sizes.clone();
    broker
        .subscriber("in")
        .group_id("g")
        .auto_commit(false)
        .auto_offset_reset(OffsetReset::Earliest)
        .batch(1000, Duration::from_millis(20))
        .handle(move |items: Vec<String>| {
            s.lock().unwrap().push(items.len());
            async {}
        });
    let app = App::new(broker.clone()).spawn();
    committed(&broker, "g", "in", 1).await;
    app.shutdown().await.unwrap();
    assert_eq!(*sizes.lock().unwrap(), [1]);
}

#[tokio::test]
async fn a_panicking_batch_is_a_failure_of_each_record_it_held() {
    let broker = MemoryBroker::new();
    for i in 0..3 {
        broker
            .publish("in", format!("{i}"))
            .partition(0)
            .await
            .unwrap();
    }
    let recorder = Recorder::attach(&broker);
    let calls = Arc::new(Mutex::new(0));
    let c = calls.clone();
    broker
        .subscriber("in")
        .group_id("g")
        .auto_commit(false)
        .retry_backoff(ackstream::Backoff::none())
        .auto_offset_reset(OffsetReset::Earliest)
        .batch(3, WAIT)
        .handle(move |_: Vec<String>| {
            let first = {
                let mut n = c.lock().unwrap();
                *n += 1;
                *n == 1
            };
            async move {
                assert!(!first, "the warehouse client panicked");
            }
        });
    let app = App::new(broker.clone()).spawn();
    committed(&broker, "g", "in", 3).await;
    app.shutdown().await.unwrap();
    assert_eq!(*calls.lock().unwrap(), 2);
    let tp = TopicPartition::new("in", 0);
    for offset in 0..3 {
        assert_eq!(
            recorder.settles(&tp, offset),
            [Disposition::Nack { delay: None }, Disposition::Ack]
        );
    }
}

#[tokio::test]
async fn a_batch_interrupt_settles_every_record_it_left() {
    let broker = MemoryBroker::new();
    for i in 0..2 {
        broker
            .publish("in", format!("{i}"))
            .partition(0)
            .await
            .unwrap();
    }
    let recorder = Recorder::attach(&broker);
    broker
        .subscriber("in")
        .group_id("g")
        .auto_commit(false)
        .auto_offset_reset(OffsetReset::Earliest)
        .batch(2, WAIT)
        .handle(|_: Vec<String>| async { Err::<(), _>(RejectMessage) });
    let app = App::new(broker.clone()).spawn();
    committed(&broker, "g", "in", 2).await;
    app.shutdown().await.unwrap();
    let tp = TopicPartition::new("in", 0);
    assert_eq!(recorder.settles(&tp, 0), [Disposition::Reject]);
    assert_eq!(recorder.settles(&tp, 1), [Disposition::Reject]);
}

#[tokio::test]
async fn under_manual_a_batch_record_left_unsettled_holds_its_partition_back() {
    let broker = MemoryBroker::new();
    for i in 0..3 {
        broker
            .publish("in", format!("{i}"))
            .partition(0)
            .await
            .unwrap();
    }
    let recorder = Recorder::attach(&broker);
    broker
        .subscriber("in")
        .group_id("g")
        .no_ack(true)
        .auto_offset_reset(OffsetReset::Earliest)
        .batch(3, WAIT)
        .handle(|batch: Batch<String>| async move {
            batch.ack(0).await?;
            batch.ack(2).await?;
            Ok::<(), HandlerError>(())
        });
    let app = App::new(broker.clone()).spawn();
    let tp = TopicPartition::new("in", 0);
    recorder
        .wait_for("record 1 reported as holding back", |r| r.held_back(&tp, 1))
        .await;
    app.shutdown().await.unwrap();
    assert_eq!(recorder.stored(&tp), [1]);
    assert_eq!(broker.committed_now("g", "in", 0), Some(1));
}
