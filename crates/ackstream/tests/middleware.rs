//! Middleware: the order layers run in, and the ack policy settling every record whatever a
//! layer does (answers without the handler, panics, times out); the shipped timeout and
//! shared concurrency limit.

use std::sync::atomic::{AtomicUsize, Ordering as Atomic};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ackstream::event::Event;
use ackstream::memory::MemoryBroker;
use ackstream::middleware::{ConcurrencyLimit, Next, Timeout, from_fn};
use ackstream::prelude::*;
use ackstream::{Disposition, Outcome, SettleStatus};

type Trace = Arc<Mutex<Vec<String>>>;

/// A middleware that notes its name on the way in and on the way out.
fn noting(
    trace: &Trace,
    name: &'static str,
) -> ackstream::middleware::FromFnLayer<
    impl Fn(KafkaMessage, Next) -> futures_util::future::BoxFuture<'static, Outcome>
    + Clone
    + Send
    + Sync
    + 'static,
> {
    let trace = trace.clone();
    from_fn(move |msg: KafkaMessage, next: Next| {
        let trace = trace.clone();
        Box::pin(async move {
            trace.lock().unwrap().push(format!("{name} in"));
            let outcome = next.run(msg).await;
            trace.lock().unwrap().push(format!("{name} out"));
            outcome
        }) as futures_util::future::BoxFuture<'static, Outcome>
    })
}

/// Waits until group `g` has committed `total` offsets of `topic`; panics after 30 s.
async fn committed(broker: &MemoryBroker, topic: &str, total: i64) {
    tokio::time::timeout(
        Duration::from_secs(30),
        broker.wait_committed("g", topic, total),
    )
    .await
    .unwrap_or_else(|_| panic!("{topic}: {total} offsets not committed within 30 s"));
}

/// Every settle of the broker's subscribers, in order.
fn settles(broker: &MemoryBroker) -> Arc<Mutex<Vec<(i64, SettleStatus)>>> {
    let seen: Arc<Mutex<Vec<(i64, SettleStatus)>>> = Arc::default();
    let s = seen.clone();
    broker.observe(move |e| {
        if let Event::Settled { offset, status, .. } = e {
            s.lock().unwrap().push((*offset, *status));
        }
    });
    seen
}

#[tokio::test]
async fn layers_run_last_added_first_and_the_brokers_outside_the_subscribers() {
    let trace: Trace = Arc::default();
    let broker = MemoryBroker::new().layer(noting(&trace, "broker"));
    broker.publish("t", "x").await.unwrap();
    let t = trace.clone();
    broker
        .subscriber("t")
        .group_id("g")
        .auto_offset_reset(OffsetReset::Earliest)
        .ack_policy(AckPolicy::NackOnError)
        .layer(noting(&trace, "first"))
        .layer(noting(&trace, "second"))
        .handle(move || {
            let t = t.clone();
            async move { t.lock().unwrap().push("handler".into()) }
        });
    let app = App::new(broker.clone()).spawn();
    committed(&broker, "t", 1).await;
    app.shutdown().await.unwrap();
    assert_eq!(
        *trace.lock().unwrap(),
        [
            "broker in",
            "second in",
            "first in",
            "handler",
            "first out",
            "second out",
            "broker out"
        ]
    );
}

#[tokio::test]
async fn a_middleware_answering_without_the_handler_gets_its_outcome_settled_by_the_policy() {
    let broker = MemoryBroker::new();
    let seen = settles(&broker);
    for body in ["skip", "keep"] {
        broker.publish("t", body).await.unwrap();
    }
    let handled = Arc::new(AtomicUsize::new(0));
    let h = handled.clone();
    // Records whose payload is "skip" are answered with a failure here: NackOnError would
    // redeliver them, so the limit of one attempt makes that failure a reject.
    broker
        .subscriber("t")
        .group_id("g")
        .auto_offset_reset(OffsetReset::Earliest)
        .ack_policy(AckPolicy::NackOnError)
        .max_attempts(1)
        .layer(from_fn(|msg: KafkaMessage, next: Next| async move {
            if msg.payload().as_ref() == b"skip" {
                return Outcome::Failed("skipped by the middleware".into());
            }
            next.run(msg).await
        }))
        .handle(move || {
            let h = h.clone();
            async move {
                h.fetch_add(1, Atomic::SeqCst);
            }
        });
    let app = App::new(broker.clone()).spawn();
    committed(&broker, "t", 2).await;
    app.shutdown().await.unwrap();
    assert_eq!(
        handled.load(Atomic::SeqCst),
        1,
        "only the kept record reached the handler"
    );
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (0, SettleStatus::Settled(Disposition::Reject)),
            (1, SettleStatus::Settled(Disposition::Ack))
        ]
    );
}

#[tokio::test]
async fn a_panicking_middleware_is_a_handler_failure_the_policy_settles() {
    let broker = MemoryBroker::new();
    let seen = settles(&broker);
    let failed = Arc::new(AtomicUsize::new(0));
    let f = failed.clone();
    broker.observe(move |e| {
        if let Event::HandlerFailed { panicked: true, .. } = e {
            f.fetch_add(1, Atomic::SeqCst);
        }
    });
    broker.publish("t", "x").await.unwrap();
    broker
        .subscriber("t")
        .group_id("g")
        .auto_offset_reset(OffsetReset::Earliest)
        .ack_policy(AckPolicy::RejectOnError)
        .layer(from_fn(|msg: KafkaMessage, next: Next| async move {
            if msg.payload().as_ref() == b"x" {
                panic!("middleware panicked");
            }
            next.run(msg).await
        }))
        .handle(|| async {});
    let app = App::new(broker.clone()).spawn();
    committed(&broker, "t", 1).await;
    app.shutdown().await.unwrap();
    assert_eq!(failed.load(Atomic::SeqCst), 1);
    assert_eq!(
        *seen.lock().unwrap(),
        [(0, SettleStatus::Settled(Disposition::Reject))]
    );
}

#[tokio::test]
async fn a_layer_that_panics_when_called_is_a_handler_failure_too() {
    #[derive(Clone)]
    struct PanicsAtCall;
    impl tower_layer::Layer<ackstream::BoxMessageService> for PanicsAtCall {
        type Service = PanicsAtCallService;
        fn layer(&self, _: ackstream::BoxMessageService) -> PanicsAtCallService {
            PanicsAtCallService
        }
    }
    #[derive(Clone)]
    struct PanicsAtCallService;
    impl tower_service::Service<KafkaMessage> for PanicsAtCallService {
        type Response = Outcome;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Outcome, std::convert::Infallible>>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: KafkaMessage) -> Self::Future {
            panic!("panicked before returning a future")
        }
    }
    let broker = MemoryBroker::new();
    let seen = settles(&broker);
    broker.publish("t", "x").await.unwrap();
    broker
        .subscriber("t")
        .group_id("g")
        .auto_offset_reset(OffsetReset::Earliest)
        .ack_policy(AckPolicy::Ack)
        .layer(PanicsAtCall)
        .handle(|| async {});
    let app = App::new(broker.clone()).spawn();
    committed(&broker, "t", 1).await;
    app.shutdown().await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [(0, SettleStatus::Settled(Disposition::Ack))]
    );
}

#[tokio::test(start_paused = true)]
async fn a_record_past_its_timeout_has_failed_and_is_redelivered() {
    let broker = MemoryBroker::new();
    let seen = settles(&broker);
    broker.publish("t", "x").await.unwrap();
    broker
        .subscriber("t")
        .group_id("g")
        .auto_offset_reset(OffsetReset::Earliest)
        .ack_policy(AckPolicy::NackOnError)
        .layer(Timeout::new(Duration::from_secs(1)))
        .handle(|msg: KafkaMessage| async move {
            if msg.attempt() == 1 {
                // Longer than the limit: cancelled at 1 s.
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        });
    let app = App::new(broker.clone()).spawn();
    committed(&broker, "t", 1).await;
    app.shutdown().await.unwrap();
    let seen = seen.lock().unwrap();
    assert!(
        matches!(
            seen.as_slice(),
            [
                (
                    0,
                    SettleStatus::Settled(Disposition::Nack { delay: Some(_) })
                ),
                (0, SettleStatus::Settled(Disposition::Ack))
            ]
        ),
        "{seen:?}"
    );
    assert_eq!(broker.delivery_count(Some("g"), "t", 0, 0), 1);
}

#[tokio::test]
async fn one_concurrency_limit_bounds_the_records_of_every_subscriber_it_is_given_to() {
    let broker = MemoryBroker::new();
    let limit = ConcurrencyLimit::new(2);
    let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    for topic in ["a", "b"] {
        for i in 0..20 {
            broker.publish(topic, format!("{i}")).await.unwrap();
        }
        let (running, most) = (running.clone(), most.clone());
        broker
            .subscriber(topic)
            .group_id("g")
            .auto_offset_reset(OffsetReset::Earliest)
            .ack_policy(AckPolicy::NackOnError)
            .ordering(ackstream::KeepOrder::Unordered)
            .max_workers(8)
            .layer(limit.clone())
            .handle(move || {
                let (running, most) = (running.clone(), most.clone());
                async move {
                    let now = running.fetch_add(1, Atomic::SeqCst) + 1;
                    most.fetch_max(now, Atomic::SeqCst);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    running.fetch_sub(1, Atomic::SeqCst);
                }
            });
    }
    let app = App::new(broker.clone()).spawn();
    committed(&broker, "a", 20).await;
    committed(&broker, "b", 20).await;
    app.shutdown().await.unwrap();
    assert_eq!(
        most.load(Atomic::SeqCst),
        2,
        "never more than the limit, and it was reached"
    );
    assert_eq!(limit.available(), 2);
}

/// A service that, as tower's own limits do, must be made ready before each call (readiness is
/// not cloned).
struct ReadyFirst {
    ready: bool,
    inner: ackstream::BoxMessageService,
}

impl Clone for ReadyFirst {
    fn clone(&self) -> Self {
        Self {
            ready: false,
            inner: self.inner.clone(),
        }
    }
}

impl tower_service::Service<KafkaMessage> for ReadyFirst {
    type Response = Outcome;
    type Error = std::convert::Infallible;
    type Future = futures_util::future::BoxFuture<'static, Result<Outcome, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.ready = true;
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, msg: KafkaMessage) -> Self::Future {
        assert!(std::mem::take(&mut self.ready), "called before poll_ready");
        self.inner.call(msg)
    }
}

struct ReadyFirstLayer;

impl tower_layer::Layer<ackstream::BoxMessageService> for ReadyFirstLayer {
    type Service = ReadyFirst;
    fn layer(&self, inner: ackstream::BoxMessageService) -> ReadyFirst {
        ReadyFirst {
            ready: false,
            inner,
        }
    }
}

#[tokio::test]
async fn a_concurrency_limit_calls_the_service_inside_it_only_once_it_is_ready() {
    let broker = MemoryBroker::new();
    let panics: Arc<Mutex<Vec<String>>> = Arc::default();
    let p = panics.clone();
    broker.observe(move |e| {
        if let Event::HandlerFailed { error, .. } = e {
            p.lock().unwrap().push(error.clone());
        }
    });
    broker.publish("t", "x").await.unwrap();
    let handled = Arc::new(AtomicUsize::new(0));
    let h = handled.clone();
    broker
        .subscriber("t")
        .group_id("g")
        .auto_offset_reset(OffsetReset::Earliest)
        .ack_policy(AckPolicy::RejectOnError)
        .layer(ReadyFirstLayer)
        .layer(ConcurrencyLimit::new(2))
        .handle(move || {
            let h = h.clone();
            async move {
                h.fetch_add(1, Atomic::SeqCst);
            }
        });
    let app = App::new(broker.clone()).spawn();
    committed(&broker, "t", 1).await;
    app.shutdown().await.unwrap();
    assert_eq!(
        handled.load(Atomic::SeqCst),
        1,
        "failures: {:?}",
        panics.lock().unwrap()
    );
}
