//! App lifecycle: state, hooks, checks before consuming, programmatic shutdown.

use std::sync::{Arc, Mutex};

use ackstream::memory::MemoryBroker;
use ackstream::prelude::*;
use ackstream::{AppError, ConfigError};

#[derive(Clone)]
struct Db(Arc<Mutex<Vec<String>>>);

#[tokio::test]
async fn state_is_given_to_handlers() {
    let db = Db(Arc::default());
    let broker = MemoryBroker::new().with_state(db.clone());
    broker.publish("t", "hello").await.unwrap();
    broker
        .subscriber("t")
        .group_id("g")
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .handle(|State(db): State<Db>, body: String| async move {
            db.0.lock().unwrap().push(body);
        });
    let app = App::new(broker.clone()).spawn();
    broker.wait_committed("g", "t", 1).await;
    app.shutdown().await.unwrap();
    assert_eq!(*db.0.lock().unwrap(), vec!["hello".to_owned()]);
}

#[tokio::test]
async fn missing_state_stops_the_app_before_anything_is_consumed() {
    let broker = MemoryBroker::new();
    broker.publish("t", "hello").await.unwrap();
    broker
        .subscriber("t")
        .group_id("g")
        .auto_offset_reset(OffsetReset::Earliest)
        .handle(|State(_): State<Db>| async {});
    let err = App::new(broker.clone()).run().await.unwrap_err();
    assert!(
        matches!(err, AppError::Config(ConfigError::MissingState { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("with_state"), "{err}");
    assert_eq!(broker.delivery_count(Some("g"), "t", 0, 0), 0);
}

#[tokio::test]
async fn hooks_run_around_the_subscribers() {
    let log: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let broker = MemoryBroker::new();
    broker.publish("t", "x").await.unwrap();
    let l = log.clone();
    broker
        .subscriber("t")
        .group_id("g")
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .handle(move |_: String| {
            let l = l.clone();
            async move { l.lock().unwrap().push("handler") }
        });
    let (l1, l2) = (log.clone(), log.clone());
    let app = App::new(broker.clone())
        .on_startup(move || async move {
            l1.lock().unwrap().push("startup");
            Ok(())
        })
        .on_shutdown(move || async move {
            l2.lock().unwrap().push("shutdown");
            Ok(())
        })
        .spawn();
    broker.wait_committed("g", "t", 1).await;
    app.shutdown().await.unwrap();
    assert_eq!(*log.lock().unwrap(), vec!["startup", "handler", "shutdown"]);
}

#[tokio::test]
async fn failing_startup_hook_stops_the_app_before_anything_is_consumed() {
    let broker = MemoryBroker::new();
    broker.publish("t", "x").await.unwrap();
    broker
        .subscriber("t")
        .auto_offset_reset(OffsetReset::Earliest)
        .handle(|_: String| async {});
    let err = App::new(broker.clone())
        .on_startup(|| async { Err("no database".into()) })
        .run()
        .await
        .unwrap_err();
    assert!(matches!(err, AppError::Hook(_)), "{err}");
    assert_eq!(broker.delivery_count(None, "t", 0, 0), 0);
}

#[tokio::test]
async fn run_until_stops_when_the_signal_fires() {
    let broker = MemoryBroker::new();
    broker.subscriber("t").handle(|_: String| async {});
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let app = tokio::spawn(App::new(broker).run_until(async {
        let _ = rx.await;
    }));
    tx.send(()).unwrap();
    app.await.unwrap().unwrap();
}
