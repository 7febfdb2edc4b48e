//! Prometheus metrics through the [`metrics`] facade: each sample of the [`Monitor`] is
//! written into a recorder as absolute counter values and gauges (the counts are exact: the
//! ledger keeps them), so any `metrics` recorder can take them, and [`Metrics::render`] gives
//! Prometheus's text format. Names and labels are those of [`conventions`](super::conventions).
//!
//! ```
//! use ackstream::observe::Monitor;
//! use ackstream::observe::metrics::Metrics;
//! let metrics = Metrics::new();
//! let text = metrics.render(&Monitor::new(Vec::new(), std::time::Duration::from_secs(30)));
//! assert!(!text.contains("ackstream_subscriber_up{"), "no subscriber, no series");
//! ```

use std::fmt;
use std::fmt::Write;

use ackstream_core::event::{DURATION_BUCKETS, Durations};
use ackstream_core::status::{Phase, PublishSnapshot, SubscriberSnapshot};
use metrics::{Label, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use super::Monitor;
use super::conventions::{self as c, Metric};

/// A Prometheus recorder of its own (nothing global is installed, so several apps, or tests,
/// in one process keep their metrics apart).
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Metrics(..)")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A recorder with every metric described.
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        for m in c::METRICS {
            let unit = None;
            match m.kind {
                "counter" => recorder.describe_counter(m.name.into(), unit, m.help.into()),
                "gauge" => recorder.describe_gauge(m.name.into(), unit, m.help.into()),
                // Rendered from the ledger's fixed buckets (see `durations`).
                _ => {}
            }
        }
        Self { recorder, handle }
    }

    /// Writes `snapshots` (and the brokers' `publishes`) into the recorder.
    pub fn record(&self, snapshots: &[SubscriberSnapshot], publishes: &PublishSnapshot) {
        metrics::with_local_recorder(&self.recorder, || {
            for sub in snapshots {
                record_subscriber(sub);
            }
            let labels = vec![Label::new(c::SYSTEM, c::KAFKA)];
            counter(c::SENT, &labels, Some("confirmed"), publishes.confirmed);
            counter(c::SENT, &labels, Some("failed"), publishes.failed);
        });
    }

    /// A fresh sample of the monitor, in Prometheus's text format.
    pub fn render(&self, monitor: &Monitor) -> String {
        let latest = monitor.sample();
        let publishes = monitor.publishes();
        self.record(&latest, &publishes);
        let mut text = self.handle.render();
        durations(&mut text, &latest);
        if publishes.durations.count() > 0 {
            let m = c::SEND_DURATION;
            let _ = writeln!(text, "# HELP {} {}", m.name, m.help);
            let _ = writeln!(text, "# TYPE {} histogram", m.name);
            let labels = format!(
                "{}=\"{}\",messaging_operation_name=\"send\"",
                c::SYSTEM,
                c::KAFKA
            );
            histogram(&mut text, m.name, &labels, &publishes.durations);
        }
        text
    }
}

/// The handler-duration histogram, in Prometheus's text format, from each partition's fixed
/// buckets: kept by the ledger (bounded: 15 counts a partition), not as samples in the
/// recorder, whose histograms hold every sample until a scrape.
fn durations(text: &mut String, snapshots: &[SubscriberSnapshot]) {
    let m = c::PROCESS_DURATION;
    let timed: Vec<_> = snapshots
        .iter()
        .flat_map(|s| s.partitions.iter().map(move |p| (s, p)))
        .filter(|(_, p)| p.durations.count() > 0)
        .collect();
    if timed.is_empty() {
        return;
    }
    let _ = writeln!(text, "# HELP {} {}", m.name, m.help);
    let _ = writeln!(text, "# TYPE {} histogram", m.name);
    for (sub, p) in timed {
        let labels = format!(
            "{}=\"{}\",{}=\"{}\",{}=\"{}\",{}=\"{}\"",
            c::SYSTEM,
            c::KAFKA,
            c::GROUP,
            sub.group.as_deref().unwrap_or(""),
            c::TOPIC,
            p.tp.topic,
            c::PARTITION,
            p.tp.partition
        );
        histogram(text, m.name, &labels, &p.durations);
    }
}

/// One histogram series in Prometheus's text format, from fixed buckets.
fn histogram(text: &mut String, name: &str, labels: &str, d: &Durations) {
    let mut cumulative = 0;
    for (i, n) in d.buckets.iter().enumerate() {
        cumulative += n;
        let le = DURATION_BUCKETS
            .get(i)
            .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
        let _ = writeln!(text, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(text, "{name}_sum{{{labels}}} {}", d.sum_seconds());
    let _ = writeln!(text, "{name}_count{{{labels}}} {}", d.count());
}

fn record_subscriber(sub: &SubscriberSnapshot) {
    let group = sub.group.clone().unwrap_or_default();
    let subscriber = vec![
        Label::new(c::SYSTEM, c::KAFKA),
        Label::new(c::GROUP, group.clone()),
        Label::new(c::TOPIC, sub.name()),
    ];
    let up = f64::from(u8::from(sub.phase == Phase::Running));
    metrics::gauge!(c::UP.name, subscriber.clone()).set(up);
    let r = sub.rebalances;
    for (outcome, n) in [
        ("assigned", r.assigned),
        ("revoked", r.revoked),
        ("lost", r.lost),
    ] {
        counter(c::REBALANCES, &subscriber, Some(outcome), n);
    }
    if let Some((confirmed, failed)) = sub.commits {
        counter(c::COMMITS, &subscriber, Some("confirmed"), confirmed);
        counter(c::COMMITS, &subscriber, Some("failed"), failed);
    }
    for p in &sub.partitions {
        let labels = vec![
            Label::new(c::SYSTEM, c::KAFKA),
            Label::new(c::GROUP, group.clone()),
            Label::new(c::TOPIC, p.tp.topic.to_string()),
            Label::new(c::PARTITION, p.tp.partition.to_string()),
        ];
        let n = &p.counts;
        counter(c::CONSUMED, &labels, None, n.delivered);
        counter(c::REDELIVERIES, &labels, None, n.redelivered);
        counter(c::SETTLES, &labels, Some("ack"), n.acked);
        counter(c::SETTLES, &labels, Some("nack"), n.nacked);
        counter(c::SETTLES, &labels, Some("reject"), n.rejected);
        counter(c::DEAD_LETTERED, &labels, None, n.dead_lettered);
        counter(c::FAILURES, &labels, Some("error"), n.failed - n.panicked);
        counter(c::FAILURES, &labels, Some("panic"), n.panicked);
        counter(c::DECODE_FAILURES, &labels, None, n.decode_failed);
        let gauge = |m: Metric, v: f64| metrics::gauge!(m.name, labels.clone()).set(v);
        gauge(c::ASSIGNED, f64::from(u8::from(p.assigned)));
        let offset = |o: Option<i64>| o.map_or(-1.0, |o| o as f64);
        gauge(c::COMMITTABLE, offset(p.committable));
        gauge(c::COMMITTED, offset(p.confirmed));
        gauge(
            c::FIRST_UNFINISHED,
            offset(p.oldest_unfinished.map(|u| u.offset)),
        );
        gauge(
            c::HELD_BACK,
            p.oldest_unfinished.map_or(0.0, |u| u.age.as_secs_f64()),
        );
        gauge(c::IN_FLIGHT, p.unfinished as f64);
        if let Some(lag) = p.lag() {
            gauge(c::LAG, lag as f64);
        }
    }
}

fn counter(m: Metric, labels: &[Label], outcome: Option<&'static str>, value: u64) {
    let mut labels = labels.to_vec();
    if let (Some(name), Some(outcome)) = (m.extra_label, outcome) {
        labels.push(Label::new(name, outcome));
    }
    metrics::counter!(m.name, labels).absolute(value);
}
