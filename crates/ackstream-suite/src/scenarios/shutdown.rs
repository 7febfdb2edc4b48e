//! Shutdown: the drain, and what a handler still running at its deadline leaves behind.
//! Each scenario is named after the behaviour it shows; the macro at the end lists them for
//! the suite.

use crate::{Fixture, Recorder, unique};
use ackstream::prelude::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

use super::{publish_n, tp};

/// Shutdown stops fetching, waits for the in-flight handler, and commits its record.
pub async fn shutdown_drains_in_flight_handlers_and_commits<F: Fixture>(fx: &F) {
    let (topic, group) = (unique("drain"), unique("group"));
    fx.create_topic(&topic, 1).await;
    let broker = fx.connect();
    publish_n(&broker, &topic, 0, 3).await;
    let recorder = Recorder::attach(&broker);
    let release = Arc::new(Notify::new());
    let release2 = release.clone();
    fx.subscriber(&broker, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .handle(move |_: String| {
            let release = release2.clone();
            async move { release.notified().await }
        });
    let app = App::new(broker.clone()).spawn();
    let p = tp(&topic, 0);
    recorder
        .wait_for("record 0 in flight", |r| r.deliveries(&p, 0) == 1)
        .await;
    let handle = app.shutdown_handle();
    handle.shutdown();
    release.notify_one();
    app.join().await.unwrap();
    assert_eq!(
        recorder.deliveries(&p, 1),
        0,
        "nothing fetched after shutdown began"
    );
    assert_eq!(
        fx.committed(&group, &topic, 0).await,
        Some(1),
        "the drained record is committed"
    );
}

/// A handler still running at the drain deadline is cancelled, and its record not committed.
pub async fn handler_cancelled_at_drain_deadline_is_not_committed<F: Fixture>(fx: &F) {
    let (topic, group) = (unique("deadline"), unique("group"));
    fx.create_topic(&topic, 1).await;
    let broker = fx.connect();
    publish_n(&broker, &topic, 0, 2).await;
    let recorder = Recorder::attach(&broker);
    let dropped = Arc::new(Notify::new());
    let dropped2 = dropped.clone();
    struct OnDrop(Arc<Notify>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.notify_one();
        }
    }
    fx.subscriber(&broker, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .handle(move |msg: KafkaMessage| {
            let guard = OnDrop(dropped2.clone());
            async move {
                if msg.offset() == 1 {
                    let _guard = guard;
                    std::future::pending::<()>().await;
                }
            }
        });
    let app = App::new(broker.clone())
        .drain_timeout(Duration::from_millis(200))
        .spawn();
    let p = tp(&topic, 0);
    recorder
        .wait_for("record 1 in flight", |r| r.deliveries(&p, 1) == 1)
        .await;
    app.shutdown().await.unwrap();
    dropped.notified().await; // the handler future was dropped (cancelled)
    assert!(!recorder.is_settled(&p, 1));
    assert_eq!(
        fx.committed(&group, &topic, 0).await,
        Some(1),
        "only record 0 is committed"
    );
}

/// The scenarios of this file, for `behaviour_suite!`: one test each per broker. A scenario
/// missing here would never run; `every_scenario_is_listed` fails if one is.
#[doc(hidden)]
#[macro_export]
macro_rules! __scenarios_shutdown {
    ($attrs:tt $fixture:expr) => {
        $crate::__module_tests!($attrs $fixture, shutdown,
            shutdown_drains_in_flight_handlers_and_commits,
            handler_cancelled_at_drain_deadline_is_not_committed,
        );
    };
}
