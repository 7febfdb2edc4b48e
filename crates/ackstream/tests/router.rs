//! Routers: subscribers declared without a broker, a prefix and shared settings, nesting, and
//! what happens when one is included in a broker.

use std::sync::atomic::{AtomicU32, Ordering as Atomic};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ackstream::ConfigError;
use ackstream::memory::MemoryBroker;
use ackstream::middleware::{Next, from_fn};
use ackstream::prelude::*;

async fn committed(broker: &MemoryBroker, group: &str, topic: &str, total: i64) {
    tokio::time::timeout(
        Duration::from_secs(30),
        broker.wait_committed(group, topic, total),
    )
    .await
    .unwrap_or_else(|_| panic!("{group} did not commit {total} of {topic} within 30 s"));
}

#[tokio::test]
async fn a_router_prefixes_its_topics_and_shares_its_group_and_policy() {
    let router = Router::new()
        .prefix("orders.")
        .group_id("billing")
        .ack_policy(AckPolicy::NackOnError);
    let attempts = Arc::new(AtomicU32::new(0));
    let a = attempts.clone();
    router
        .subscriber("created")
        .auto_offset_reset(OffsetReset::Earliest)
        .handle(move |msg: KafkaMessage| {
            let a = a.clone();
            async move {
                a.fetch_add(1, Atomic::SeqCst);
                if msg.attempt() == 1 {
                    return Err(HandlerError::from("fails once"));
                }
                Ok(())
            }
        });
    assert_eq!(router.topics(), ["orders.created"]);
    let broker = MemoryBroker::new();
    broker.include_router(router);
    broker.publish("orders.created", "x").await.unwrap();
    let app = App::new(broker.clone()).spawn();
    // The group is the router's; NackOnError (the router's policy) redelivers the failure.
    committed(&broker, "billing", "orders.created", 1).await;
    app.shutdown().await.unwrap();
    assert_eq!(attempts.load(Atomic::SeqCst), 2);
}

#[tokio::test]
async fn a_subscribers_own_settings_win_over_its_routers() {
    let router = Router::new()
        .group_id("shared")
        .ack_policy(AckPolicy::NackOnError);
    let attempts = Arc::new(AtomicU32::new(0));
    let a = attempts.clone();
    router
        .subscriber("t")
        .group_id("own")
        .ack_policy(AckPolicy::Ack)
        .auto_offset_reset(OffsetReset::Earliest)
        .handle(move || {
            let a = a.clone();
            async move {
                a.fetch_add(1, Atomic::SeqCst);
                Err::<(), _>(HandlerError::from("always fails"))
            }
        });
    let broker = MemoryBroker::new();
    broker.include_router(router);
    broker.publish("t", "x").await.unwrap();
    let app = App::new(broker.clone()).spawn();
    // Ack (its own policy) commits the failed record; the group is its own.
    committed(&broker, "own", "t", 1).await;
    app.shutdown().await.unwrap();
    assert_eq!(attempts.load(Atomic::SeqCst), 1);
    assert_eq!(broker.committed_now("shared", "t", 0), None);
}

#[tokio::test]
async fn nested_routers_add_their_prefixes_and_the_outer_layers_run_outside() {
    let trace: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let noting = |name: &'static str| {
        let trace = trace.clone();
        from_fn(move |msg: KafkaMessage, next: Next| {
            let trace = trace.clone();
            async move {
                trace.lock().unwrap().push(name);
                next.run(msg).await
            }
        })
    };
    let inner = Router::new()
        .prefix("orders.")
        .layer(noting("inner router"));
    let t = trace.clone();
    inner
        .subscriber("created")
        .auto_offset_reset(OffsetReset::Earliest)
        .layer(noting("subscriber"))
        .handle(move || {
            let t = t.clone();
            async move { t.lock().unwrap().push("handler") }
        });
    let outer = Router::new()
        .prefix("shop.")
        .group_id("g")
        .ack_policy(AckPolicy::NackOnError)
        .layer(noting("outer router"))
        .include_router(inner);
    assert_eq!(outer.topics(), ["shop.orders.created"]);
    let broker = MemoryBroker::new().layer(noting("broker"));
    broker.include_router(outer);
    broker.publish("shop.orders.created", "x").await.unwrap();
    let app = App::new(broker.clone()).spawn();
    committed(&broker, "g", "shop.orders.created", 1).await;
    app.shutdown().await.unwrap();
    assert_eq!(
        *trace.lock().unwrap(),
        [
            "broker",
            "outer router",
            "inner router",
            "subscriber",
            "handler"
        ]
    );
}

#[tokio::test]
async fn a_routers_state_reaches_its_handlers() {
    #[derive(Clone)]
    struct Rate(u32);
    let router = Router::new().group_id("g").with_state(Rate(7));
    let seen = Arc::new(AtomicU32::new(0));
    let s = seen.clone();
    router
        .subscriber("t")
        .auto_commit(false)
        .auto_offset_reset(OffsetReset::Earliest)
        .handle(move |State(rate): State<Rate>| {
            let s = s.clone();
            async move {
                s.store(rate.0, Atomic::SeqCst);
            }
        });
    let broker = MemoryBroker::new();
    broker.include_router(router);
    broker.publish("t", "x").await.unwrap();
    let app = App::new(broker.clone()).spawn();
    committed(&broker, "g", "t", 1).await;
    app.shutdown().await.unwrap();
    assert_eq!(seen.load(Atomic::SeqCst), 7);
}

#[test]
fn a_router_subscriber_that_cannot_work_is_refused_when_the_router_is_included() {
    // A committing policy and no group anywhere: refused by the broker, naming the topic.
    let router = Router::new()
        .prefix("orders.")
        .ack_policy(AckPolicy::NackOnError);
    router.subscriber("created").handle(|| async {});
    let broker = MemoryBroker::new();
    let err = broker.try_include_router(router).unwrap_err();
    assert!(
        matches!(&err, ConfigError::PolicyNeedsGroup { topics, .. } if topics == "orders.created"),
        "{err}"
    );
}

#[test]
fn a_routers_topics_show_its_prefix_before_it_is_included() {
    let router: Router<ackstream::memory::MemoryBackend> = Router::new().prefix("audit.");
    router.subscriber_to(["a", "b"]).handle(|| async {});
    router.subscriber("c").handle(|| async {});
    assert_eq!(router.topics(), ["audit.a", "audit.b", "audit.c"]);
}

#[test]
fn a_subscriber_declared_through_a_router_already_included_is_refused() {
    let router = Router::new().prefix("orders.").group_id("g");
    let late = router.subscriber("late").auto_commit(false);
    let broker = MemoryBroker::new();
    broker.include_router(router);
    // Declared after the router went into the broker: it would never be registered.
    let err = late.try_handle(|| async {}).unwrap_err();
    assert!(err.to_string().contains("already included"), "{err}");
    assert!(broker.subscribed_topics().is_empty());
}

#[test]
fn a_router_that_cannot_be_included_registers_nothing() {
    #[derive(Clone)]
    struct Rate;
    let router = Router::new().prefix("p.").with_state(Rate);
    router
        .subscriber("ok")
        .group_id("g")
        .auto_commit(false)
        .handle(|| async {});
    // A committing policy without a group: refused.
    router
        .subscriber("bad")
        .auto_commit(false)
        .handle(|| async {});
    let broker = MemoryBroker::new();
    assert!(broker.try_include_router(router).is_err());
    assert!(
        broker.subscribed_topics().is_empty(),
        "{:?}",
        broker.subscribed_topics()
    );
}

#[test]
fn the_broker_shows_the_topics_its_subscribers_read_prefixes_applied() {
    let router = Router::new().prefix("orders.").group_id("g");
    router
        .subscriber("created")
        .auto_commit(false)
        .handle(|| async {});
    let broker = MemoryBroker::new();
    broker.subscriber("audit").handle(|| async {});
    broker.include_router(router);
    assert_eq!(broker.subscribed_topics(), ["audit", "orders.created"]);
}
