//! A partition assigned again without a revoke in between (a backend that reports two
//! assignments of one partition in a row): the old assignment's task must be retired before
//! the new one's starts, so two assignments never run the partition's records at once.
//! Neither real backend is known to report it (librdkafka revokes first, and so does the
//! in-memory broker); the runtime handles it, so a test produces it: a client of the in-memory
//! cluster whose consumer hides its first revoke.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ackstream::memory::MemoryBroker;
use ackstream::prelude::*;
use tokio::sync::mpsc;

mod gated;

use gated::{Gated, WAIT, join_second_member};

/// Counts the handler runs in progress; dropped with its run (ended or cancelled).
struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_partition_assigned_again_without_a_revoke_runs_one_assignment_at_a_time() {
    let memory = MemoryBroker::new();
    memory.create_topic("in", 1).await.unwrap();
    memory.publish("in", "x").await.unwrap();
    let broker = Gated::hiding_first_revoke(&memory);
    let running = Arc::new(AtomicUsize::new(0));
    // Each run reports how many runs were in progress when it began (itself included).
    let (began, mut runs) = mpsc::unbounded_channel();
    let r = running.clone();
    broker
        .subscriber("in")
        .group_id("g")
        .auto_commit(false)
        .auto_offset_reset(OffsetReset::Earliest)
        .handle(move |Attempt(attempt): Attempt| {
            let (running, began) = (r.clone(), began.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                let _running = Running(running);
                let _ = began.send(now);
                if attempt == 1 {
                    // The first assignment's run never ends on its own: the retirement of
                    // its task (at the drain deadline) ends it.
                    std::future::pending::<()>().await;
                }
            }
        });
    let app = App::new(broker.clone())
        .drain_timeout(Duration::from_millis(200))
        .spawn();
    let first = tokio::time::timeout(WAIT, runs.recv()).await.unwrap();
    assert_eq!(first, Some(1));
    // A second member joins; with one partition the group gives it back to the first member:
    // revoked (hidden from the runtime), then assigned again.
    let other = join_second_member(&memory);
    let second = tokio::time::timeout(WAIT, runs.recv())
        .await
        .expect("the new assignment delivers the record again");
    assert_eq!(
        second,
        Some(1),
        "the new assignment ran the partition's record while the old one's run was still in progress"
    );
    app.shutdown().await.unwrap();
    other.shutdown().await.unwrap();
}
