//! The consume runtime: one task per subscriber that follows assignments, and one task per
//! assigned partition that delivers its records to the handler: one at a time in offset order
//! (`partition`), or several at once within the subscriber's ordering and worker pool
//! (`concurrent`).
//!
//! ```text
//! backend consumer ── Assigned(feeds) ──▶ spawn a partition task per feed
//!                  ── Revoked(tps)    ──▶ stop those tasks, drain (bounded), fence, commit, ack
//!                  ── Lost(tps)       ──▶ forget their offsets, fence, cancel those tasks, ack
//!                  ── Failed(error)   ──▶ fence and cancel every task, close, end with error
//! partition task:  retry due? │ next record ─▶ tracker.deliver ─▶ handler ─▶ policy settles
//! shutdown:        stop every partition task, drain (bounded), fence, commit, leave the group
//! ```

pub(crate) mod batch;
mod concurrent;
mod partition;
mod policy;
pub(crate) mod subscription;
mod task;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backend::{
    Answer, Backend, Consumer, ConsumerEvent, DeliveryCallback, OffsetStore, PartitionFeed,
};
use crate::config::SubscriberConfig;
use crate::dead_letter::DeadLetters;
use crate::error::BackendError;
use crate::event::Event;
use crate::handler::service::MessageService;
use crate::record::TopicPartition;
use crate::record::{OutgoingRecord, RecordPosition};
use crate::settle::output::Outputs;
use crate::settle::{
    EnqueueFn, ObserveFn, PartitionContext, PublishFn, SettleConfig, TryEnqueueFn,
};
use crate::trace;
use subscription::StartContext;
use task::PartitionTask;
use tracing::Instrument;

struct Worker {
    ctx: Arc<PartitionContext>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Runs one subscriber until shutdown, keeping its status; see the module docs.
async fn run_subscription<B, S>(
    backend: Arc<B>,
    config: Arc<SubscriberConfig>,
    service: S,
    ctx: StartContext,
    spawn: Spawn<B, S>,
) -> Result<(), BackendError>
where
    B: Backend,
    S: Clone + Send + Sync + 'static,
{
    let status = ctx.status.clone();
    status.starting();
    let result = consume(backend, config, service, ctx, spawn).await;
    status.ended(&result);
    result
}

/// The subscriber's consume loop: assignments, revokes, losses, shutdown.
async fn consume<B, S>(
    backend: Arc<B>,
    config: Arc<SubscriberConfig>,
    service: S,
    ctx: StartContext,
    spawn: Spawn<B, S>,
) -> Result<(), BackendError>
where
    B: Backend,
    S: Clone + Send + Sync + 'static,
{
    let config = match &ctx.tracing {
        // Trace context comes in headers: read them whatever the handler takes (and only then:
        // reading a record's headers is a large part of what consuming it costs).
        Some(tracing) if tracing.propagates() && !config.reads_headers => {
            Arc::new(SubscriberConfig {
                reads_headers: true,
                ..(*config).clone()
            })
        }
        _ => config,
    };
    let mut consumer = backend.consumer(&config).await?;
    let offsets = consumer.offset_store();
    ctx.status.running(&offsets);
    let publish: Arc<PublishFn> = {
        let backend = backend.clone();
        let tracing = ctx.tracing.clone();
        let publishes = ctx.publishes.clone();
        Arc::new(move |mut record| {
            let (backend, publishes) = (backend.clone(), publishes.clone());
            let span = trace::sending(tracing.as_ref(), &mut record);
            Box::pin(async move { publishes.count(backend.publish(record)).await }.instrument(span))
        })
    };
    let dead_letters =
        (config.dead_letter_topic.as_deref()).map(|topic| DeadLetters::new(topic, publish.clone()));
    let enqueue: Arc<EnqueueFn> = {
        let backend = backend.clone();
        Arc::new(move |record, done| Box::pin(backend.clone().publish_then(record, done)))
    };
    // Outputs are traced, and counted and timed, only when observed: an output's hand-over is
    // on the pipeline's per-record path.
    let observe: Option<Arc<ObserveFn>> = (ctx.tracing.is_some() || ctx.timed).then(|| {
        let tracing = ctx.tracing.clone();
        let publishes = ctx.timed.then(|| ctx.publishes.clone());
        Arc::new(move |record: &mut OutgoingRecord, done: DeliveryCallback| {
            // The span lasts until the broker's answer.
            let span = trace::sending(tracing.as_ref(), record);
            let (publishes, started) = (publishes.clone(), std::time::Instant::now());
            Answer::new(move |result: Result<RecordPosition, BackendError>| {
                if let Some(p) = publishes {
                    p.answered(result.is_ok(), started.elapsed());
                }
                let _span = span;
                done.call(result);
            })
        }) as Arc<ObserveFn>
    });
    #[allow(clippy::result_large_err)] // given back only when the producer cannot take it
    let try_enqueue: Arc<TryEnqueueFn> = {
        let backend = backend.clone();
        Arc::new(move |record, done| backend.try_publish_then(record, done))
    };
    let outputs = (!config.publish_to.is_empty() || config.replies).then(|| {
        Outputs::new(
            &config.publish_to,
            config.replies,
            publish,
            enqueue,
            try_enqueue,
            observe,
        )
    });
    let settle = Arc::new(SettleConfig {
        max_attempts: config.max_attempts,
        observer: ctx.observer.clone(),
        dead_letters,
        outputs,
        tracing: ctx.tracing.clone(),
        group: config.group_id.as_deref().map(Arc::from),
        timed: ctx.timed,
    });
    let group: Option<Arc<str>> = config.group_id.as_deref().map(Arc::from);
    let emit = |event: Event| {
        if let Some(o) = &ctx.observer {
            o.emit(&event);
        }
    };
    // The subscriber's worker pool, shared by its partitions (and kept across rebalances).
    let pool = Arc::new(concurrent::Pool::new(config.max_workers));
    let one_at_a_time = pool.is_single() && config.ordering == crate::KeepOrder::Partition;
    let mut workers: HashMap<TopicPartition, Worker> = HashMap::new();
    loop {
        let event = tokio::select! {
            biased;
            () = ctx.shutdown.token().cancelled() => break,
            event = consumer.next_event() => event,
        };
        match event {
            None => break,
            Some(ConsumerEvent::Assigned(feeds)) => {
                let partitions: Vec<_> =
                    feeds.iter().map(|f| f.topic_partition().clone()).collect();
                tracing::debug!(?partitions, group = ?group, "partitions assigned");
                // Assigned again without a revoke in between: the old assignments' tasks are
                // retired (drained within one deadline, fenced) before the new assignment is
                // reported and read, so two assignments never run a partition's records at once.
                let again: Vec<Worker> = partitions
                    .iter()
                    .filter_map(|tp| workers.remove(tp))
                    .collect();
                if !again.is_empty() {
                    for old in &again {
                        old.ctx.stop_dispatching();
                    }
                    stop_workers(again, ctx.drain_timeout).await;
                }
                // Reported before the partitions' tasks start: an assignment's deliveries
                // come after its event.
                emit(Event::Assigned {
                    group: group.clone(),
                    partitions,
                });
                // Before the new tasks read: their part of what may be held counts them.
                pool.assigned(workers.len() + feeds.len());
                for feed in feeds {
                    let tp = feed.topic_partition().clone();
                    let pctx = Arc::new(PartitionContext::new(
                        tp.clone(),
                        offsets.clone(),
                        settle.clone(),
                        config.manual_cumulative,
                    ));
                    pctx.carry_in(&feed.carried_attempts());
                    ctx.status.assigned(&pctx);
                    // A child of the app's token: shutdown stops fetching at once, everywhere.
                    let stop = ctx.shutdown.token().child_token();
                    let task = PartitionTask {
                        feed,
                        ctx: pctx.clone(),
                        service: service.clone(),
                        stop: stop.clone(),
                        app: ctx.shutdown.clone(),
                        config: config.clone(),
                    };
                    let task = spawn(task, &pool, one_at_a_time);
                    workers.insert(
                        tp,
                        Worker {
                            ctx: pctx,
                            stop,
                            task,
                        },
                    );
                }
                pool.assigned(workers.len());
            }
            Some(ConsumerEvent::Revoked(partitions, ack)) => {
                tracing::debug!(?partitions, group = ?group, "revoking partitions: draining");
                let revoked: Vec<Worker> = partitions
                    .iter()
                    .filter_map(|tp| workers.remove(tp))
                    .collect();
                // Nothing of them starts from now on; then the revoke is reported as begun.
                for w in &revoked {
                    w.ctx.stop_dispatching();
                }
                emit(Event::Revoking {
                    group: group.clone(),
                    partitions: partitions.clone(),
                });
                pool.assigned(workers.len());
                stop_workers(revoked, ctx.drain_timeout).await;
                commit(&*offsets).await;
                offsets.release(&partitions);
                ctx.status.unassigned(&partitions, false);
                tracing::debug!(?partitions, group = ?group, "partitions revoked");
                emit(Event::Revoked {
                    group: group.clone(),
                    partitions,
                });
                ack.done();
            }
            Some(ConsumerEvent::Lost(partitions, ack)) => {
                // Forgotten first, so no coalesced commit sends them from now on.
                offsets.release(&partitions);
                let lost: Vec<Worker> = partitions
                    .iter()
                    .filter_map(|tp| workers.remove(tp))
                    .collect();
                pool.assigned(workers.len());
                fence_workers(lost).await;
                ctx.status.unassigned(&partitions, true);
                tracing::warn!(
                    ?partitions,
                    group = ?group,
                    "assignment lost: partitions fenced without commit; their unfinished \
                     records go to their next owner"
                );
                emit(Event::Revoked {
                    group: group.clone(),
                    partitions,
                });
                ack.done();
            }
            Some(ConsumerEvent::Failed(error)) => {
                let partitions: Vec<TopicPartition> = workers.keys().cloned().collect();
                offsets.release(&partitions);
                fence_workers(workers.into_values().collect()).await;
                tracing::error!(%error, group = ?group, "consumer failed; the subscriber stops");
                consumer.close().await;
                return Err(error);
            }
        }
    }
    stop_workers(workers.into_values().collect(), ctx.drain_timeout).await;
    commit(&*offsets).await;
    consumer.close().await;
    Ok(())
}

/// Starts one partition's task (a dispatch mode: records one at a time or concurrently, or
/// batches) with the subscriber's pool and whether it runs one record at a time.
type Spawn<B, S> = fn(
    PartitionTask<<<B as Backend>::Consumer as Consumer>::Partition, S>,
    &Arc<concurrent::Pool>,
    bool,
) -> JoinHandle<()>;

/// Spawns a partition's task: one record at a time when the subscriber has a single worker
/// per partition under `Partition` ordering, otherwise within the subscriber's `pool`.
fn spawn_partition<F: PartitionFeed, S: MessageService>(
    task: PartitionTask<F, S>,
    pool: &Arc<concurrent::Pool>,
    one_at_a_time: bool,
) -> JoinHandle<()> {
    if one_at_a_time {
        tokio::spawn(partition::run(task))
    } else {
        tokio::spawn(concurrent::run(task, pool.clone()))
    }
}

/// Stops partition tasks: no new records are dispatched, in-flight handlers get until the
/// deadline, then are cancelled (their records stay unfinished, so they are not committed).
/// Every partition is fenced afterwards, so late settles change nothing.
async fn stop_workers(workers: Vec<Worker>, drain_timeout: Duration) {
    for w in &workers {
        w.ctx
            .stopping
            .store(true, std::sync::atomic::Ordering::Release);
        w.stop.cancel();
    }
    let deadline = Instant::now() + drain_timeout;
    for mut w in workers {
        if tokio::time::timeout_at(deadline, &mut w.task)
            .await
            .is_err()
        {
            tracing::warn!(
                topic = %w.ctx.tp.topic,
                partition = w.ctx.tp.partition,
                ?drain_timeout,
                "handler still running at the drain deadline: cancelled, its record is not committed"
            );
            w.task.abort();
            let _ = w.task.await;
        }
        // Outputs still being published: their inputs are acked once confirmed.
        if tokio::time::timeout_at(deadline, w.ctx.outputs_drained())
            .await
            .is_err()
        {
            tracing::warn!(
                topic = %w.ctx.tp.topic,
                partition = w.ctx.tp.partition,
                ?drain_timeout,
                "outputs still unconfirmed at the drain deadline: their inputs are not committed"
            );
        }
        w.ctx.revoke();
    }
}

/// Fences partitions at once (a lost assignment, a failed consumer): late settles change
/// nothing from now on, and their tasks (with any handler still running) are cancelled without
/// a drain: their records stay unfinished, for their next owner.
async fn fence_workers(workers: Vec<Worker>) {
    for w in &workers {
        // Stopping first: nothing starts once the partition is fenced.
        w.ctx
            .stopping
            .store(true, std::sync::atomic::Ordering::Release);
        w.ctx.revoke();
        w.stop.cancel();
        w.task.abort();
    }
    for w in workers {
        let _ = w.task.await;
    }
}

/// How long a synchronous commit keeps retrying: long enough to outlast a group's rebalance
/// (during which brokers may answer REBALANCE_IN_PROGRESS), short of a rebalance timeout.
const COMMIT_PATIENCE: Duration = Duration::from_secs(5);

/// Synchronous commit with retries. A commit that keeps failing is logged, never reported as
/// done; the offsets stay stored, so a later commit (or the next owner) picks them up.
async fn commit(offsets: &dyn OffsetStore) {
    let deadline = Instant::now() + COMMIT_PATIENCE;
    let mut backoff = Duration::from_millis(50);
    let mut attempt = 1;
    loop {
        match offsets.commit().await {
            Ok(()) => return,
            Err(e) if Instant::now() + backoff < deadline => {
                tracing::warn!(error = %e, attempt, "commit failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                attempt += 1;
            }
            Err(e) => {
                tracing::error!(error = %e, attempt, "commit failed; giving up for now");
                return;
            }
        }
    }
}
