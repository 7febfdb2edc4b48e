//! Observability on the in-memory broker: status snapshots, stuck detection (log, readiness,
//! metrics, status page), lag and counts. Prometheus and a browser read the same endpoint in
//! `observe_real.rs`.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ackstream::memory::MemoryBroker;
use ackstream::prelude::*;
use ackstream::status::{Holder, Phase};
use support::{STUCK, get, stuck_app, until};
use tracing_subscriber::layer::SubscriberExt;

/// Captures the messages of warnings logged on this thread.
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Warnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() != tracing::Level::WARN {
            return;
        }
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                use std::fmt::Write;
                let _ = write!(self.0, "{}={value:?} ", field.name());
            }
        }
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }
}

const LIMIT: Duration = Duration::from_millis(300);

#[tokio::test(flavor = "current_thread")]
async fn a_stuck_partition_shows_in_the_log_readiness_metrics_and_page_until_it_moves() {
    let warnings = Warnings::default();
    let _log =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(warnings.clone()));
    let (broker, app, release) = stuck_app("stuck", "watchers", 6, LIMIT).await;
    let addr = app.http_addr().expect("an HTTP address");
    let monitor = app.monitor();

    // Ready once running and nothing is held back past the limit.
    until("ready", async || {
        (get(addr, "/health/ready").await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(get(addr, "/health/live").await, (200, "live\n".to_owned()));

    // Record 3 never finishes: within the limit (plus a sample) the partition is stuck.
    let (status, body) = until("not ready", async || {
        let (status, body) = get(addr, "/health/ready").await;
        (status == 503).then_some((status, body))
    })
    .await;
    assert_eq!(status, 503);
    assert!(
        body.contains("stuck: partition stuck/0 stuck at offset 3 (attempt 1, running)"),
        "{body}"
    );
    let snapshot = &monitor.latest()[0];
    let held = snapshot.partitions[0]
        .oldest_unfinished
        .expect("a held record");
    assert_eq!(
        (held.offset, held.attempt, held.holder),
        (STUCK, 1, Holder::Running)
    );
    assert!(held.age >= LIMIT, "{held:?}");
    assert_eq!(snapshot.partitions[0].committable, Some(STUCK));

    let stuck_lines: Vec<String> = warnings
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|w| w.contains("partition stuck"))
        .cloned()
        .collect();
    assert_eq!(
        stuck_lines.len(),
        1,
        "one warning, however long it stays: {stuck_lines:?}"
    );
    for part in [
        "topic=stuck",
        "partition=0",
        "offset=3",
        "attempt=1",
        "held_by=\"running\"",
    ] {
        assert!(
            stuck_lines[0].contains(part),
            "{part} in {}",
            stuck_lines[0]
        );
    }

    let (_, metrics) = get(addr, "/metrics").await;
    let line = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains("messaging_destination_partition_id=\"0\""))
            .unwrap_or_else(|| panic!("{name} in\n{metrics}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse::<f64>()
            .unwrap()
    };
    assert_eq!(
        line("ackstream_partition_first_unfinished_offset"),
        STUCK as f64
    );
    assert!(line("ackstream_partition_held_back_seconds") >= LIMIT.as_secs_f64());
    assert_eq!(line("ackstream_partition_committable_offset"), STUCK as f64);
    assert_eq!(
        line("messaging_client_consumed_messages_total"),
        4.0,
        "0..=3 delivered"
    );
    assert_eq!(
        line("ackstream_consumer_lag"),
        3.0,
        "6 produced, committable at 3"
    );

    let (_, page) = get(addr, "/").await;
    assert!(
        page.contains("<tr class=\"stuck\" data-topic=\"stuck\" data-partition=\"0\">"),
        "{page}"
    );
    assert!(page.contains("STUCK: running"), "{page}");

    // Released: the commit moves, the app is ready again, and the page shows no stuck row.
    release.notify_one();
    tokio::time::timeout(support::WAIT, broker.wait_committed("watchers", "stuck", 6))
        .await
        .expect("everything committed once released");
    until("ready again", async || {
        (get(addr, "/health/ready").await.0 == 200).then_some(())
    })
    .await;
    let (_, page) = get(addr, "/").await;
    assert!(!page.contains("class=\"stuck\""), "{page}");
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn status_counts_deliveries_redeliveries_and_settles_exactly() {
    let broker = MemoryBroker::new();
    for i in 0..10 {
        broker.publish("counted", format!("{i}")).await.unwrap();
    }
    broker
        .subscriber("counted")
        .group_id("g")
        .auto_offset_reset(OffsetReset::Earliest)
        .ack_policy(AckPolicy::Manual)
        .handle(|msg: KafkaMessage, Offset(offset): Offset| async move {
            match (offset, msg.attempt()) {
                (2, 1) => msg.nack().await.unwrap(),
                (5, _) => msg.reject().await.unwrap(),
                _ => msg.ack().await.unwrap(),
            };
        });
    let app = App::new(broker.clone()).spawn();
    tokio::time::timeout(support::WAIT, broker.wait_committed("g", "counted", 10))
        .await
        .unwrap();
    let monitor = app.monitor();
    let p = until("counts", async || {
        let p = monitor.sample()[0].partitions[0].clone();
        (p.counts.acked == 9).then_some(p)
    })
    .await;
    let c = p.counts;
    assert_eq!((c.delivered, c.redelivered), (11, 1));
    assert_eq!((c.acked, c.nacked, c.rejected), (9, 1, 1));
    assert_eq!((c.failed, c.decode_failed), (0, 0));
    assert_eq!(
        (p.committable, p.confirmed, p.lag()),
        (Some(10), Some(10), Some(0))
    );
    assert_eq!(p.oldest_unfinished, None);
    assert_eq!(monitor.latest()[0].phase, Phase::Running);
    app.shutdown().await.unwrap();
    assert_eq!(monitor.sample()[0].phase, Phase::Stopped);
}

#[tokio::test]
async fn failures_and_panics_are_counted_apart() {
    let broker = MemoryBroker::new();
    for i in 0..4 {
        broker.publish("failing", format!("{i}")).await.unwrap();
    }
    broker
        .subscriber("failing")
        .group_id("g")
        .auto_offset_reset(OffsetReset::Earliest)
        .ack_policy(AckPolicy::RejectOnError)
        .handle(|Offset(offset): Offset| async move {
            match offset {
                1 => Err(HandlerError::from("refused")),
                2 => panic!("boom"),
                _ => Ok(()),
            }
        });
    let app = App::new(broker.clone()).spawn();
    tokio::time::timeout(support::WAIT, broker.wait_committed("g", "failing", 4))
        .await
        .unwrap();
    let monitor = app.monitor();
    let c = until("counts", async || {
        let c = monitor.sample()[0].partitions[0].counts;
        (c.acked + c.rejected == 4).then_some(c)
    })
    .await;
    assert_eq!((c.failed, c.panicked, c.rejected, c.acked), (2, 1, 2, 2));
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_subscriber_that_cannot_start_is_failed_and_not_ready() {
    let broker = MemoryBroker::new();
    broker
        .subscriber("not a valid topic name!")
        .group_id("g")
        .handle(|_: String| async {});
    let app = App::new(broker).spawn();
    let monitor = app.monitor();
    assert!(app.join().await.is_err());
    let sample = monitor.sample();
    assert!(
        matches!(sample[0].phase, Phase::Failed(_)),
        "{:?}",
        sample[0].phase
    );
    let readiness = monitor.readiness();
    assert!(!readiness.ready);
    assert!(readiness.reasons[0].contains("failed"), "{readiness:?}");
}

#[tokio::test]
async fn a_partition_that_moved_away_keeps_its_counts_and_is_marked_unassigned() {
    let broker = MemoryBroker::new();
    for i in 0..5 {
        broker.publish("moving", format!("{i}")).await.unwrap();
    }
    let declare = |broker: &MemoryBroker| {
        broker
            .subscriber("moving")
            .group_id("g")
            .auto_offset_reset(OffsetReset::Earliest)
            .ack_policy(AckPolicy::NackOnError)
            .handle(|_: String| async {});
    };
    declare(&broker);
    let first = App::new(broker.clone()).spawn();
    tokio::time::timeout(support::WAIT, broker.wait_committed("g", "moving", 5))
        .await
        .unwrap();
    let monitor = first.monitor();
    // A second member joins: the only partition moves to one of them (or stays).
    let other = broker.connect();
    declare(&other);
    let second = App::new(other.clone()).spawn();
    until("two members", async || {
        (broker.group_size("g").await == 2).then_some(())
    })
    .await;
    let rebalances = until("a revoke", async || {
        let s = monitor.sample();
        (s[0].rebalances.revoked >= 1).then_some(s[0].rebalances)
    })
    .await;
    assert!(rebalances.assigned >= 1, "{rebalances:?}");
    let p = &monitor.latest()[0].partitions[0];
    assert_eq!(
        p.counts.delivered, 5,
        "counts of the ended assignment are kept"
    );
    second.shutdown().await.unwrap();
    first.shutdown().await.unwrap();
}

#[tokio::test]
async fn handler_durations_are_a_histogram_of_one_delivery_in_eight() {
    let broker = MemoryBroker::new();
    for i in 0..64 {
        broker.publish("timed", format!("{i}")).await.unwrap();
    }
    broker
        .subscriber("timed")
        .group_id("g")
        .auto_offset_reset(OffsetReset::Earliest)
        .ack_policy(AckPolicy::NackOnError)
        .handle(|Offset(offset): Offset| async move {
            if offset == 8 {
                // Sampled (8 % 8 == 0) and slow: lands above 10 ms.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    let app = App::new(broker.clone()).http("127.0.0.1:0").spawn();
    let addr = app.http_addr().unwrap();
    tokio::time::timeout(support::WAIT, broker.wait_committed("g", "timed", 64))
        .await
        .unwrap();
    let metrics = until("the histogram", async || {
        let (_, m) = get(addr, "/metrics").await;
        m.lines()
            .any(|l| l.starts_with("messaging_process_duration_seconds_count") && l.ends_with(" 8"))
            .then_some(m)
    })
    .await;
    let value = |prefix: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("{prefix} in\n{metrics}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(metrics.contains("# TYPE messaging_process_duration_seconds histogram"));
    assert_eq!(
        value("messaging_process_duration_seconds_count{"),
        8.0,
        "offsets 0, 8, .., 56"
    );
    let under_10ms = "messaging_process_duration_seconds_bucket{messaging_system=\"kafka\",\
        messaging_consumer_group_name=\"g\",messaging_destination_name=\"timed\",\
        messaging_destination_partition_id=\"0\",le=\"0.01\"}";
    assert_eq!(value(under_10ms), 7.0, "all but the slow one");
    assert!(value("messaging_process_duration_seconds_sum{") >= 0.02);
    app.shutdown().await.unwrap();
}

#[test]
fn the_readme_lists_every_metric() {
    let readme = include_str!("../../../README.md");
    for m in ackstream::observe::conventions::METRICS {
        let row = format!("| `{}` | {} |", m.name, m.kind);
        assert!(readme.contains(&row), "README's metric table lacks {row}");
    }
}

#[tokio::test]
async fn publishes_are_counted_by_outcome_and_timed() {
    let broker = MemoryBroker::new();
    // An app runs while it has a subscriber.
    broker.subscriber("idle").handle(|_: String| async {});
    let app = App::new(broker.clone()).http("127.0.0.1:0").spawn();
    let addr = app.http_addr().unwrap();
    let audit = broker.publisher("audit");
    audit.publish("one").await.unwrap();
    audit.publish("two").await.unwrap();
    broker.publish("not a topic!", "x").await.unwrap_err();
    let (_, metrics) = get(addr, "/metrics").await;
    for line in [
        "messaging_client_sent_messages_total{messaging_system=\"kafka\",outcome=\"confirmed\"} 2",
        "messaging_client_sent_messages_total{messaging_system=\"kafka\",outcome=\"failed\"} 1",
        "messaging_client_operation_duration_seconds_count{messaging_system=\"kafka\",\
         messaging_operation_name=\"send\"} 3",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    app.shutdown().await.unwrap();
}
