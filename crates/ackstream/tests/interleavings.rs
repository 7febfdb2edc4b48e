//! Interleavings around the commit rule for batch subscribers and publish-first outputs:
//! panics outside the handler's future, nacks from other tasks while a batch collects, a stop
//! while a batch is partly collected, settles racing the framework's claim. (Written by a
//! review; the two batch panic tests failed before `runtime/batch.rs` caught them.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ackstream::event::Event;
use ackstream::extract::{FromMessage, Rejection};
use ackstream::memory::MemoryBroker;
use ackstream::prelude::*;
use ackstream::testing::Recorder;
use ackstream::{Disposition, SettleStatus, StateMap, TopicPartition};

const WAIT: Duration = Duration::from_secs(30);
/// How long a test waits for progress the contract promises before calling the partition
/// stalled (the progress needs a few milliseconds on the in-memory broker).
const STALL: Duration = Duration::from_secs(5);

fn tp() -> TopicPartition {
    TopicPartition::new("in", 0)
}

async fn publish_all(broker: &MemoryBroker, bodies: &[&str]) {
    broker.create_topic("in", 1).await.unwrap();
    for b in bodies {
        broker
            .publish("in", b.to_string())
            .partition(0)
            .await
            .unwrap();
    }
}

/// Waits up to `limit` for `total` committed; whether it came.
async fn committed_within(broker: &MemoryBroker, limit: Duration, total: i64) -> bool {
    tokio::time::timeout(limit, broker.wait_committed("g", "in", total))
        .await
        .is_ok()
}

/// An extractor whose decoding panics on the payload "boom" (a user `FromMessage`, or a
/// `Deserialize` impl with a bug).
struct Touchy(String);

impl FromMessage for Touchy {
    fn from_message(msg: &KafkaMessage, _: &StateMap) -> Result<Self, Rejection> {
        let s = std::str::from_utf8(msg.payload()).map_err(|e| Rejection::new("Touchy", e))?;
        assert!(s != "boom", "decoder bug on {s:?}");
        Ok(Touchy(s.to_owned()))
    }
}

fn delivered(e: &Event, offset: i64, attempt: u32) -> bool {
    matches!(e, Event::Delivered { tp: t, offset: o, attempt: a } if *t == tp() && *o == offset && *a == attempt)
}

fn position(events: &[Event], f: impl Fn(&Event) -> bool) -> Option<usize> {
    events.iter().position(f)
}

// ---------------------------------------------------------------------------------------------
// Batches: panics outside the batch's catch_unwind.
// ---------------------------------------------------------------------------------------------

/// Control: the single-record path catches a panicking decoder (it runs inside the handler
/// service, inside `catch_unwind`), so the policy settles the record and the partition goes on.
#[tokio::test]
async fn control_a_panicking_decoder_of_a_single_record_handler_is_a_failure() {
    let broker = MemoryBroker::new();
    publish_all(&broker, &["a", "boom", "c"]).await;
    broker
        .subscriber("in")
        .group_id("g")
        .ack_policy(AckPolicy::RejectOnError)
        .auto_offset_reset(OffsetReset::Earliest)
        .handle(|_: Touchy| async {});
    let app = App::new(broker.clone()).spawn();
    assert!(committed_within(&broker, WAIT, 3).await);
    app.shutdown().await.unwrap();
}

/// FINDING: in `runtime/batch.rs::process`, `H::Item::from_message` runs outside any
/// `catch_unwind`. A decoder that panics kills the partition's task: the records of its batch
/// stay delivered-but-unfinished forever, nothing after them is ever delivered, no event says
/// so, and the app looks healthy. (No commit passes them, so nothing is lost, but "a panic
/// never takes the consumer down" is broken, and the partition is stuck until a rebalance,
/// where the next owner panics the same way.)
#[tokio::test]
async fn a_panicking_decoder_in_a_batch_fails_only_its_record() {
    let broker = MemoryBroker::new();
    publish_all(&broker, &["a", "boom", "c"]).await;
    let recorder = Recorder::attach(&broker);
    let handled = Arc::new(Mutex::new(Vec::new()));
    let h = handled.clone();
    broker
        .subscriber("in")
        .group_id("g")
        .ack_policy(AckPolicy::RejectOnError)
        .auto_offset_reset(OffsetReset::Earliest)
        .batch(1, WAIT)
        .handle(move |items: Vec<Touchy>| {
            h.lock().unwrap().extend(items.into_iter().map(|t| t.0));
            async {}
        });
    let app = App::new(broker.clone()).spawn();
    let progressed = committed_within(&broker, STALL, 3).await;
    let committed = broker.committed_now("g", "in", 0);
    app.shutdown().await.unwrap();
    assert!(
        progressed,
        "partition stalled after the decoder panicked: committed {committed:?}, handled {:?}, \
         decode failures reported {}, deliveries of offset 2: {}",
        handled.lock().unwrap(),
        recorder
            .events()
            .iter()
            .filter(|e| matches!(e, Event::DecodeFailed { .. } | Event::HandlerFailed { .. }))
            .count(),
        recorder.deliveries(&tp(), 2),
    );
}

/// Control: a single-record handler that panics before returning its future (a closure doing
/// synchronous work first) is caught: `service.call` runs inside the `catch_unwind`.
#[tokio::test]
async fn control_a_single_record_handler_panicking_before_its_future_is_a_failure() {
    let broker = MemoryBroker::new();
    publish_all(&broker, &["a", "boom", "c"]).await;
    broker
        .subscriber("in")
        .group_id("g")
        .ack_policy(AckPolicy::RejectOnError)
        .auto_offset_reset(OffsetReset::Earliest)
        .handle(|body: String| {
            assert!(body != "boom", "synchronous part of the handler panicked");
            async {}
        });
    let app = App::new(broker.clone()).spawn();
    assert!(committed_within(&broker, WAIT, 3).await);
    app.shutdown().await.unwrap();
}

/// FINDING: `batches.handler.call(items, ..)` (which calls the user's closure, running its
/// synchronous part) is evaluated before `AssertUnwindSafe(call).catch_unwind()`, so a batch
/// handler that panics before returning its future kills the partition task, as above.
#[tokio::test]
async fn a_batch_handler_panicking_before_its_future_is_a_failure_of_its_records() {
    let broker = MemoryBroker::new();
    publish_all(&broker, &["a", "boom", "c"]).await;
    let handled = Arc::new(Mutex::new(Vec::new()));
    let h = handled.clone();
    broker
        .subscriber("in")
        .group_id("g")
        .ack_policy(AckPolicy::RejectOnError)
        .auto_offset_reset(OffsetReset::Earliest)
        .batch(1, WAIT)
        .handle(move |items: Vec<String>| {
            assert!(
                !items.iter().any(|s| s == "boom"),
                "synchronous part of the batch handler panicked"
            );
            h.lock().unwrap().extend(items);
            async {}
        });
    let app = App::new(broker.clone()).spawn();
    let progressed = committed_within(&broker, STALL, 3).await;
    let committed = broker.committed_now("g", "in", 0);
    app.shutdown().await.unwrap();
    assert!(
        progressed,
        "partition stalled after the batch handler panicked synchronously: committed \
         {committed:?}, handled {:?}",
        handled.lock().unwrap()
    );
}

// ---------------------------------------------------------------------------------------------
// Batches: nacks from another task while the next batch collects.
// ---------------------------------------------------------------------------------------------

/// A Manual batch handler keeps a clone of record 1 and nacks it from the test while the next
/// batch is being collected (record 2 delivered, the loop waiting out `max_wait` for more).
/// Record 1 must come back before any record read after the nack, and no commit may pass it.
/// `delay`: the nack's delay (a retry not due while the batch collects).
async fn nack_from_another_task_while_a_batch_collects(delay: Option<Duration>) {
    let broker = MemoryBroker::new();
    publish_all(&broker, &["0", "1"]).await;
    let recorder = Recorder::attach(&broker);
    let redelivered_at = Arc::new(Mutex::new(None));
    let r = redelivered_at.clone();
    broker.observe(move |e| {
        if delivered(e, 1, 2) {
            *r.lock().unwrap() = Some(std::time::Instant::now());
        }
    });
    let (keep_tx, mut keep_rx) = tokio::sync::mpsc::unbounded_channel::<KafkaMessage>();
    broker
        .subscriber("in")
        .group_id("g")
        .no_ack(true)
        .auto_offset_reset(OffsetReset::Earliest)
        // max_wait long: batch [2] is only handed over early because the nack breaks it.
        .batch(2, WAIT)
        .handle(move |batch: Batch<String>| {
            let keep = keep_tx.clone();
            async move {
                for (i, body) in batch.iter().enumerate() {
                    let msg = batch.message(i);
                    if body == "1" && msg.attempt() == 1 {
                        keep.send(msg.clone()).unwrap(); // settled later, elsewhere
                    } else {
                        batch.ack(i).await?;
                    }
                }
                Ok::<(), HandlerError>(())
            }
        });
    let app = App::new(broker.clone()).spawn();
    let kept = keep_rx.recv().await.unwrap();
    assert_eq!(kept.offset(), 1);
    broker.publish("in", "2").partition(0).await.unwrap();
    recorder
        .wait_for("record 2 delivered (batch collecting)", |r| {
            r.deliveries(&tp(), 2) == 1
        })
        .await;
    let nacked_at = std::time::Instant::now();
    let status = match delay {
        None => kept.nack().await.unwrap(),
        Some(d) => kept.nack_after(d).await.unwrap(),
    };
    assert!(matches!(status, SettleStatus::Settled(_)), "{status:?}");
    // Records read after the nack.
    for b in ["3", "4"] {
        broker.publish("in", b).partition(0).await.unwrap();
    }
    recorder
        .wait_for("record 1 acked again and record 3 delivered", |r| {
            r.settles(&tp(), 1).len() == 2 && r.deliveries(&tp(), 3) == 1
        })
        .await;
    app.shutdown().await.unwrap();
    let events = recorder.events();
    let again = position(&events, |e| delivered(e, 1, 2)).expect("record 1 redelivered");
    let three = position(&events, |e| delivered(e, 3, 1)).expect("record 3 delivered");
    assert!(
        again < three,
        "record 3 delivered past the pending retry of 1"
    );
    if let Some(d) = delay {
        // (The delay is the behaviour under test.)
        let at = redelivered_at.lock().unwrap().expect("redelivery seen");
        assert!(
            at >= nacked_at + d,
            "redelivered {:?} after the nack",
            at - nacked_at
        );
    }
    // No store passes 1 before 1's second delivery is acked.
    let acked = position(&events, |e| {
        matches!(e, Event::Settled { tp: t, offset: 1, status: SettleStatus::Settled(Disposition::Ack) } if *t == tp())
    })
    .expect("record 1 acked");
    for e in &events[..acked] {
        if let Event::OffsetStored { tp: t, offset } = e {
            assert!(
                *t != tp() || *offset <= 1,
                "stored {offset} before 1 was acked"
            );
        }
    }
}

#[tokio::test]
async fn a_nack_from_another_task_while_a_batch_collects_comes_back_before_newer_records() {
    nack_from_another_task_while_a_batch_collects(None).await;
}

#[tokio::test]
async fn a_delayed_nack_from_another_task_while_a_batch_collects_holds_newer_records_back() {
    nack_from_another_task_while_a_batch_collects(Some(Duration::from_millis(300))).await;
}

// ---------------------------------------------------------------------------------------------
// Batches: stop while a batch is partially collected; double settles.
// ---------------------------------------------------------------------------------------------

/// Records delivered to the tracker for a batch that was never handed over (shutdown while it
/// collected) are unfinished: not committed, and the group's next consumer gets them.
#[tokio::test]
async fn records_of_a_partially_collected_batch_are_not_committed_at_shutdown() {
    let broker = MemoryBroker::new();
    publish_all(&broker, &["0", "1", "2"]).await;
    let recorder = Recorder::attach(&broker);
    let calls = Arc::new(Mutex::new(0));
    let c = calls.clone();
    broker
        .subscriber("in")
        .group_id("g")
        .auto_commit(false)
        .auto_offset_reset(OffsetReset::Earliest)
        .batch(10, WAIT)
        .handle(move |_: Vec<String>| {
            *c.lock().unwrap() += 1;
            async {}
        });
    let app = App::new(broker.clone()).spawn();
    recorder
        .wait_for("3 records delivered, batch collecting", |r| {
            r.deliveries(&tp(), 2) == 1
        })
        .await;
    app.shutdown().await.unwrap();
    assert_eq!(*calls.lock().unwrap(), 0);
    assert_eq!(broker.committed_now("g", "in", 0), None);
    // The next consumer of the group handles them.
    let next = broker.connect();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    next.subscriber("in")
        .group_id("g")
        .auto_commit(false)
        .auto_offset_reset(OffsetReset::Earliest)
        .batch(3, WAIT)
        .handle(move |items: Vec<String>| {
            tx.send(items).unwrap();
            async {}
        });
    let app = App::new(next.clone()).spawn();
    assert_eq!(rx.recv().await.unwrap(), ["0", "1", "2"]);
    assert!(committed_within(&broker, WAIT, 3).await);
    app.shutdown().await.unwrap();
}

/// A record the handler settled itself keeps that settle: the batch's outcome finds it settled.
#[tokio::test]
async fn a_record_settled_by_the_batch_handler_is_not_settled_again_by_the_outcome() {
    let broker = MemoryBroker::new();
    publish_all(&broker, &["0", "1", "2"]).await;
    let recorder = Recorder::attach(&broker);
    broker
        .subscriber("in")
        .group_id("g")
        .auto_commit(false)
        .retry_backoff(ackstream::Backoff::none())
        .auto_offset_reset(OffsetReset::Earliest)
        .batch(3, WAIT)
        .handle(|batch: Batch<String>| async move {
            for (i, m) in batch.messages().iter().enumerate() {
                if m.offset() == 1 && m.attempt() == 1 {
                    batch.nack(i).await?;
                }
                if m.offset() == 2 {
                    batch.reject(i).await?;
                }
            }
            // Fails: the records the handler left take a nack, but 1 and 2 keep theirs.
            Err::<(), _>(HandlerError::from("batch failed"))
        });
    let app = App::new(broker.clone()).spawn();
    recorder
        .wait_for("records 0 and 1 settled twice", |r| {
            r.settles(&tp(), 0).len() >= 2 && r.settles(&tp(), 1).len() >= 2
        })
        .await;
    app.shutdown().await.unwrap();
    assert_eq!(recorder.settles(&tp(), 2), [Disposition::Reject]);
    assert_eq!(
        recorder.settles(&tp(), 1)[0],
        Disposition::Nack { delay: None }
    );
    assert_eq!(recorder.deliveries(&tp(), 2), 1);
}

// ---------------------------------------------------------------------------------------------
// Publish first.
// ---------------------------------------------------------------------------------------------

/// Safety evidence for the claim race: once the framework has claimed the settle (the publish
/// is in flight or done), a settle from another task is a no-op (`AlreadySettled`), and a
/// refused output nacks the input, which comes back.
#[tokio::test]
async fn a_settle_from_another_task_after_the_claim_changes_nothing() {
    let broker = MemoryBroker::new();
    broker.create_topic("out", 1).await.unwrap();
    publish_all(&broker, &["x"]).await;
    let recorder = Recorder::attach(&broker);
    let (keep_tx, mut keep_rx) = tokio::sync::mpsc::unbounded_channel::<KafkaMessage>();
    broker
        .subscriber("in")
        .group_id("g")
        .auto_commit(false)
        .retry_backoff(ackstream::Backoff::fixed(Duration::from_millis(200)))
        .auto_offset_reset(OffsetReset::Earliest)
        .publish_to("out")
        .handle(move |msg: KafkaMessage, Attempt(attempt): Attempt| {
            let keep = keep_tx.clone();
            async move {
                if attempt == 1 {
                    keep.send(msg).unwrap();
                    return ackstream::Response::new("first").partition(5);
                }
                ackstream::Response::new("second")
            }
        });
    let app = App::new(broker.clone()).spawn();
    let kept = keep_rx.recv().await.unwrap();
    recorder
        .wait_for("the refused output nacked the input", |r| {
            r.settles(&tp(), 0)
                .first()
                .is_some_and(|d| matches!(d, Disposition::Nack { .. }))
        })
        .await;
    assert_eq!(kept.ack().await.unwrap(), SettleStatus::AlreadySettled);
    assert!(committed_within(&broker, WAIT, 1).await);
    app.shutdown().await.unwrap();
    let out: Vec<_> = broker
        .published("out")
        .into_iter()
        .map(|r| r.payload)
        .collect();
    assert_eq!(out, ["second"]);
}
