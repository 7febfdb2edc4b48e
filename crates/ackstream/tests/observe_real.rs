//! The observability endpoint read by the real programs: Prometheus scrapes `/metrics` and its
//! query API returns the series; headless Chromium opens the status page, whose DOM and
//! screenshot show the stuck partition. Both programs are Debian packages that `scripts/test`
//! installs (`scripts/tools`), so these tests are ignored by a plain `cargo test`; each starts
//! what it needs on loopback and stops it by its pid.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ackstream::memory::MemoryBroker;
use ackstream::prelude::*;
use support::{STUCK, WAIT, get, stuck_subscriber, until};
use tokio::sync::Notify;

/// A scratch directory of this test process.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ackstream-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().unwrap().port()
}

/// A child process killed (and reaped) when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn program(name: &str) -> &str {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{name} is not installed: run scripts/tools (scripts/test does)"
    );
    name
}

const FLOWING: i64 = 500;

/// An app with two subscribers (in groups of their own, so no rebalance redelivers anything):
/// `flowing` consumes `FLOWING` records; `stuck` never finishes its record [`STUCK`].
async fn app() -> (ackstream::RunningApp, Arc<Notify>, SocketAddr) {
    let broker = MemoryBroker::new();
    for i in 0..FLOWING {
        broker.publish("flowing", format!("{i}")).await.unwrap();
    }
    broker
        .subscriber("flowing")
        .group_id("real-flowing")
        .auto_offset_reset(OffsetReset::Earliest)
        .ack_policy(AckPolicy::NackOnError)
        .handle(|_: String| async {});
    let release = stuck_subscriber(&broker, "stuck", "real-stuck", 6).await;
    let app = App::new(broker)
        .stuck_after(Duration::from_millis(500))
        .http("127.0.0.1:0")
        .spawn();
    let addr = app.http_addr().unwrap();
    until("stuck", async || {
        (get(addr, "/health/ready").await.0 == 503).then_some(())
    })
    .await;
    (app, release, addr)
}

/// Asks Prometheus's query API for `query`; the values of the series it returns.
async fn query(prometheus: SocketAddr, query: &str) -> Vec<f64> {
    let mut q = String::new();
    for b in query.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => q.push(b as char),
            _ => q.push_str(&format!("%{b:02X}")),
        }
    }
    let (status, body) = get(prometheus, &format!("/api/v1/query?query={q}")).await;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    json["data"]["result"]
        .as_array()
        .expect("a vector")
        .iter()
        .map(|s| s["value"][1].as_str().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Prometheus (scripts/tools installs it; scripts/test runs this)"]
async fn prometheus_scrapes_the_consumed_count_and_a_stuck_partitions_held_back_age() {
    let prometheus = program("prometheus");
    let (app, release, addr) = app().await;
    let dir = scratch("prometheus");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: ackstream\n    \
             scrape_interval: 500ms\n    static_configs:\n      - targets: ['{addr}']\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let listen: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let _server = Running(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.listen-address={listen}"))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus"),
    );
    until("Prometheus ready", async || {
        if tokio::net::TcpStream::connect(listen).await.is_err() {
            return None;
        }
        (get(listen, "/-/ready").await.0 == 200).then_some(())
    })
    .await;
    let consumed = until("the consumed count in Prometheus", async || {
        let v = query(
            listen,
            "sum(messaging_client_consumed_messages_total{messaging_destination_name=\"flowing\"})",
        )
        .await;
        v.first().copied().filter(|&v| v == FLOWING as f64)
    })
    .await;
    assert_eq!(
        consumed, FLOWING as f64,
        "every produced record counted once"
    );
    let held = until("a held-back age above zero", async || {
        let v = query(
            listen,
            "ackstream_partition_held_back_seconds{messaging_destination_name=\"stuck\"} > 0",
        )
        .await;
        v.first().copied()
    })
    .await;
    assert!(held > 0.0);
    let first = query(
        listen,
        "ackstream_partition_first_unfinished_offset{messaging_destination_name=\"stuck\"}",
    )
    .await;
    assert_eq!(first, [STUCK as f64]);
    release.notify_one();
    app.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs Chromium headless on `url` with `args`; fails the test if it takes longer than
/// [`WAIT`]. Returns its standard output.
fn chromium(args: &[String], url: &str, profile: &Path) -> String {
    let mut child = Command::new(program("chromium"))
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1500,470",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let reader = {
        let mut out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut out, &mut s).map(|_| s)
        })
    };
    let deadline = Instant::now() + WAIT;
    let mut child = Running(child);
    loop {
        if child.0.try_wait().expect("wait").is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "chromium did not finish on {url}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().unwrap().expect("chromium's output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium (scripts/tools installs it; scripts/test runs this)"]
async fn the_status_page_in_a_browser_shows_the_stuck_partition() {
    let (app, release, addr) = app().await;
    let dir = scratch("chromium");
    let url = format!("http://{addr}/");
    let profile = dir.join("profile");
    let dom = {
        let (url, profile) = (url.clone(), profile.clone());
        tokio::task::spawn_blocking(move || chromium(&["--dump-dom".into()], &url, &profile))
            .await
            .unwrap()
    };
    assert!(
        dom.contains("<tr class=\"stuck\" data-topic=\"stuck\" data-partition=\"0\">"),
        "{dom}"
    );
    assert!(dom.contains("STUCK: running"), "{dom}");
    assert!(dom.contains("not ready"), "{dom}");
    assert!(
        !dom.contains("data-topic=\"flowing\" data-partition=\"0\" class"),
        "{dom}"
    );

    // The screenshot the README shows (target/observe/status-page.png).
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&out);
    {
        let (url, profile, out) = (url.clone(), profile.clone(), out.clone());
        tokio::task::spawn_blocking(move || {
            chromium(&[format!("--screenshot={}", out.display())], &url, &profile)
        })
        .await
        .unwrap();
    }
    let png = std::fs::read(&out).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    release.notify_one();
    app.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
