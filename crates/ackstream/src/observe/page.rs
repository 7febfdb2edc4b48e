//! The status page: plain HTML, no script and nothing fetched from elsewhere, refreshed by
//! the browser every two seconds. One table per subscriber, one row per partition; a stuck
//! partition's row is marked (class `stuck`) and says what holds it.

use std::fmt::Write;

use ackstream_core::status::Phase;

use super::Monitor;

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.5em}\
table{border-collapse:collapse;font-size:.85em}\
th,td{border:1px solid #ccc;padding:.25em .45em;text-align:right}\
th{background:#f0f0f0}td.l{text-align:left}\
tr.stuck td{background:#fde2e2;font-weight:bold}\
tr.gone td{color:#999}\
.ok{color:#176f2c}.bad{color:#b00020}";

/// The page for the monitor's last sample.
pub(crate) fn render(monitor: &Monitor) -> String {
    let readiness = monitor.readiness();
    let limit = monitor.stuck_after();
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"2\"><title>ackstream status</title>\
         <style>{STYLE}</style></head><body><h1>ackstream status</h1>"
    );
    if readiness.ready {
        html.push_str("<p id=\"readiness\" class=\"ok\">ready</p>");
    } else {
        html.push_str("<p id=\"readiness\" class=\"bad\">not ready</p><ul>");
        for reason in &readiness.reasons {
            let _ = write!(html, "<li>{}</li>", escape(reason));
        }
        html.push_str("</ul>");
    }
    for (i, sub) in monitor.latest().iter().enumerate() {
        let phase = match &sub.phase {
            Phase::Failed(e) => format!("failed: {e}"),
            other => other.as_str().to_owned(),
        };
        let _ = write!(
            html,
            "<h2>{} <small>group {} · {}</small></h2>\
             <table><tr><th>partition</th><th>assigned</th><th>committable</th>\
             <th>committed</th><th>lag</th><th>in flight</th><th>first unfinished</th>\
             <th>attempt</th><th>held by</th><th>held for</th><th>delivered/s</th>\
             <th>delivered</th><th>redelivered</th><th>acked</th><th>nacked</th>\
             <th>rejected</th><th>failed</th></tr>",
            escape(&sub.name()),
            escape(sub.group.as_deref().unwrap_or("(none)")),
            escape(&phase),
        );
        for p in &sub.partitions {
            let stuck = p.assigned && p.oldest_unfinished.is_some_and(|u| u.age >= limit);
            let class = match (stuck, p.assigned) {
                (true, _) => " class=\"stuck\"",
                (false, false) => " class=\"gone\"",
                _ => "",
            };
            let opt = |o: Option<i64>| o.map_or_else(|| "–".to_owned(), |o| o.to_string());
            let (first, attempt, holder, age) = match p.oldest_unfinished {
                Some(u) => (
                    u.offset.to_string(),
                    u.attempt.to_string(),
                    if stuck {
                        format!("STUCK: {}", u.holder.as_str())
                    } else {
                        u.holder.as_str().to_owned()
                    },
                    format!("{:.1}s", u.age.as_secs_f64()),
                ),
                None => ("–".into(), "–".into(), "–".into(), "–".into()),
            };
            let rate = monitor
                .rate(i, &p.tp)
                .map_or_else(|| "–".to_owned(), |r| format!("{r:.0}"));
            let n = &p.counts;
            let _ = write!(
                html,
                "<tr{class} data-topic=\"{}\" data-partition=\"{}\"><td class=\"l\">{} / {}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{first}</td>\
                 <td>{attempt}</td><td class=\"l\">{holder}</td><td>{age}</td><td>{rate}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&p.tp.topic),
                p.tp.partition,
                escape(&p.tp.topic),
                p.tp.partition,
                if p.assigned { "yes" } else { "no" },
                opt(p.committable),
                opt(p.confirmed),
                opt(p.lag()),
                p.unfinished,
                n.delivered,
                n.redelivered,
                n.acked,
                n.nacked,
                n.rejected,
                n.failed,
            );
        }
        html.push_str("</table>");
    }
    let _ = write!(
        html,
        "<p><small>A partition is stuck when one record has held its commit back longer than \
         {:.1}s. Metrics: <a href=\"/metrics\">/metrics</a>.</small></p></body></html>",
        limit.as_secs_f64()
    );
    html
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(ch),
        }
    }
    out
}
