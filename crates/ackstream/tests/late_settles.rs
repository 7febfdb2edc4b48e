//! Settles that arrive after their partition's assignment ended (revoked past its drain
//! deadline, or lost) change nothing, dead letters included: a late output failure at the
//! attempt limit publishes no dead letter for a record its next owner delivers again. (Written
//! by a review of the output path's dead letters: both late-failure tests failed 10 of 10
//! runs before `dead_letter_first` checked that the delivery still counts.) And the
//! concurrent dispatch's fast path does not starve a shutdown.

use std::time::Duration;

use ackstream::SettleStatus;
use ackstream::event::Event;
use ackstream::memory::MemoryBroker;
use ackstream::prelude::*;
use tokio::sync::mpsc;

mod gated;

use gated::{
    Gated, WAIT, is_assigned, is_revoked, join_second_member, next_matching, watch_events,
};

/// The late answer's settle, which finds its assignment ended.
fn is_stale_settle(e: &Event) -> bool {
    matches!(
        e,
        Event::Settled {
            offset: 0,
            status: SettleStatus::Stale,
            ..
        }
    )
}

/// A subscriber to "in" publishing to "out", at most one attempt, dead letters to "dlq".
fn subscribe(gated: &Gated) {
    gated
        .subscriber("in")
        .group_id("g")
        .ack_policy(AckPolicy::NackOnError)
        .auto_offset_reset(OffsetReset::Earliest)
        .max_attempts(1)
        .dead_letter_topic("dlq")
        .retry_backoff(ackstream::Backoff::none())
        .publish_to("out")
        .handle(|body: String| async move { body });
}

async fn cluster() -> MemoryBroker {
    let memory = MemoryBroker::new();
    memory.create_topic("in", 1).await.unwrap();
    memory.create_topic("out", 1).await.unwrap();
    memory.create_topic("dlq", 1).await.unwrap();
    memory.publish("in", "x").await.unwrap();
    memory
}

/// The old assignment's output fails after its partition was revoked (the drain gave up on it
/// at its deadline) and assigned again: the failure's settle is stale, and publishes no dead
/// letter (it did: the record was then in "out", processed and committed, and in "dlq").
#[tokio::test]
async fn a_late_output_failure_after_the_revoke_publishes_no_dead_letter() {
    let memory = cluster().await;
    let gated = Gated::over(&memory);
    let mut events = watch_events(&gated);
    subscribe(&gated);
    let app = App::new(gated.clone())
        .drain_timeout(Duration::from_millis(50))
        .spawn();
    next_matching(&mut events, "assignment", is_assigned).await;
    gated.handed_over(1).await;
    let other = join_second_member(&memory);
    next_matching(&mut events, "revoke", is_revoked).await;
    assert_eq!(memory.committed_now("g", "in", 0), None);
    next_matching(&mut events, "re-assignment", is_assigned).await;
    gated.handed_over(2).await;
    // The old assignment's answer comes now: its output failed.
    gated.release(false).await;
    next_matching(
        &mut events,
        "the late answer's (stale) settle",
        is_stale_settle,
    )
    .await;
    // The new assignment's output lands: the record is processed and committed.
    gated.release(true).await;
    tokio::time::timeout(WAIT, memory.wait_committed("g", "in", 1))
        .await
        .expect("committed once the new assignment's output landed");
    app.shutdown().await.unwrap();
    other.shutdown().await.unwrap();
    assert_eq!(memory.published("out").len(), 1);
    assert_eq!(
        memory.published("dlq").len(),
        0,
        "a settle of an ended assignment dead-lettered a record its next assignment processed \
         and committed"
    );
}

/// The partition's assignment is lost while its input's output is in flight: fenced at once,
/// nothing more is settled for it. The output's failure comes afterwards: no dead letter is
/// published (its next owner delivers the record again).
#[tokio::test]
async fn a_late_output_failure_after_the_partition_was_lost_publishes_no_dead_letter() {
    let memory = cluster().await;
    let gated = Gated::over(&memory);
    let mut events = watch_events(&gated);
    subscribe(&gated);
    let app = App::new(gated.clone()).spawn();
    next_matching(&mut events, "assignment", is_assigned).await;
    gated.handed_over(1).await;
    gated.lose(ackstream::TopicPartition::new("in", 0));
    next_matching(&mut events, "loss", is_revoked).await;
    gated.release(false).await;
    next_matching(
        &mut events,
        "the late answer's (stale) settle",
        is_stale_settle,
    )
    .await;
    app.shutdown().await.unwrap();
    assert_eq!(memory.committed_now("g", "in", 0), None);
    assert_eq!(
        memory.published("dlq").len(),
        0,
        "dead-lettered after its partition was lost (fenced: nothing more settled for it)"
    );
}

/// The concurrent dispatch's fast path under load (records always fetched, handlers done at once, two worker
/// threads): a shutdown is not starved, and nothing is committed that was not handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrent_fast_path_does_not_starve_a_shutdown() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    for round in 0..5u32 {
        let memory = MemoryBroker::new();
        memory.create_topic("in", 2).await.unwrap();
        for i in 0..4000 {
            memory
                .publish("in", "x")
                .key(format!("k{}", i % 16))
                .partition(i % 2)
                .await
                .unwrap();
        }
        let handled = Arc::new(AtomicUsize::new(0));
        let (tx, mut enough) = mpsc::unbounded_channel();
        let h = handled.clone();
        memory
            .subscriber("in")
            .group_id("g")
            .ack_policy(AckPolicy::NackOnError)
            .auto_offset_reset(OffsetReset::Earliest)
            .max_workers(8)
            .ordering(if round.is_multiple_of(2) {
                KeepOrder::Key
            } else {
                KeepOrder::Unordered
            })
            .handle(move |_: String| {
                let n = h.fetch_add(1, Ordering::SeqCst) + 1;
                if n == 1500 {
                    let _ = tx.send(());
                }
                async move {
                    if n.is_multiple_of(7) {
                        tokio::task::yield_now().await;
                    }
                }
            });
        let app = App::new(memory.clone()).spawn();
        tokio::time::timeout(WAIT, enough.recv())
            .await
            .expect("handled 1500")
            .unwrap();
        tokio::time::timeout(WAIT, app.shutdown())
            .await
            .expect("shutdown within 10 s")
            .unwrap();
        let committed = memory.committed_total("g", "in");
        let handled = handled.load(Ordering::SeqCst) as i64;
        assert!(
            committed <= handled,
            "round {round}: committed {committed} > handled {handled}"
        );
    }
}
