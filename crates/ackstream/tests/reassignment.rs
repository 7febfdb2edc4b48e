//! A partition assigned again without a revoke in between (a backend that reports two
//! assignments of one partition in a row): the old assignment's task must be retired before
//! the new one's starts, so two assignments never run the partition's records at once.
//! Neither real backend is known to report it (librdkafka revokes first, and so does the
//! in-memory broker); the runtime handles it, so a test produces it: a client of the in-memory
//! cluster whose consumer swallows its first revoke.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ackstream::memory::{MemoryBackend, MemoryBroker};
use ackstream::prelude::*;
use ackstream::{Backend, BackendError, Broker, OutgoingRecord, RecordPosition};
use ackstream_core::BrokerCore;
use ackstream_core::backend::{Consumer, ConsumerEvent, OffsetStore};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

/// A consumer that hides its first revoke (acked at once, so the group goes on): the runtime
/// then sees the partition assigned twice.
struct WithoutFirstRevoke<C> {
    inner: C,
    swallowed: bool,
}

impl<C: Consumer> Consumer for WithoutFirstRevoke<C> {
    type Partition = C::Partition;

    async fn next_event(&mut self) -> Option<ConsumerEvent<Self::Partition>> {
        loop {
            match self.inner.next_event().await? {
                ConsumerEvent::Revoked(_, ack) if !self.swallowed => {
                    self.swallowed = true;
                    drop(ack);
                }
                event => return Some(event),
            }
        }
    }

    fn offset_store(&self) -> Arc<dyn OffsetStore> {
        self.inner.offset_store()
    }

    fn close(self) -> impl Future<Output = ()> + Send {
        self.inner.close()
    }
}

struct Backend1(Arc<MemoryBackend>);

impl Backend for Backend1 {
    type Consumer = WithoutFirstRevoke<<MemoryBackend as Backend>::Consumer>;

    async fn consumer(
        &self,
        config: &ackstream_core::SubscriberConfig,
    ) -> Result<Self::Consumer, BackendError> {
        Ok(WithoutFirstRevoke {
            inner: self.0.consumer(config).await?,
            swallowed: false,
        })
    }

    async fn publish(&self, record: OutgoingRecord) -> Result<RecordPosition, BackendError> {
        self.0.publish(record).await
    }
}

#[derive(Clone)]
struct NoFirstRevoke(Arc<BrokerCore<Backend1>>);

impl Broker for NoFirstRevoke {
    type Backend = Backend1;

    fn core(&self) -> &Arc<BrokerCore<Backend1>> {
        &self.0
    }
}

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
    let broker = NoFirstRevoke(Arc::new(BrokerCore::new(Backend1(
        memory.connect().core().backend().clone(),
    ))));
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
    let other = memory.connect();
    other
        .subscriber("in")
        .group_id("g")
        .auto_commit(false)
        .auto_offset_reset(OffsetReset::Earliest)
        .handle(|_: String| async move {});
    let other = App::new(other).spawn();
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
