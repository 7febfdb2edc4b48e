//! What the observability tests share: a plain HTTP GET, waiting for a condition on the
//! monitor, and an app with one stuck partition.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ackstream::RunningApp;
use ackstream::memory::MemoryBroker;
use ackstream::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

/// The longest any test waits for something it expects.
pub const WAIT: Duration = Duration::from_secs(30);

/// `GET path` from `addr` (HTTP/1.1, one request per connection): status and body.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let response = String::from_utf8(response).expect("utf-8");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    (status, body.to_owned())
}

/// Waits (polling every 20 ms, at most [`WAIT`]) until `check` returns `Some`.
pub async fn until<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(t) = check().await {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The offset of the record whose handler never finishes (until released).
pub const STUCK: i64 = 3;

/// An app whose subscriber to `topic` (group `group`, one partition, `records` records)
/// finishes every record but [`STUCK`], whose handler waits until the returned `Notify`
/// is notified. Records after it wait behind it (partition order).
pub async fn stuck_app(
    topic: &str,
    group: &str,
    records: i64,
    stuck_after: Duration,
) -> (MemoryBroker, RunningApp, Arc<Notify>) {
    let broker = MemoryBroker::new();
    let release = stuck_subscriber(&broker, topic, group, records).await;
    let app = App::new(broker.clone())
        .stuck_after(stuck_after)
        .http("127.0.0.1:0")
        .spawn();
    (broker, app, release)
}

/// Publishes `records` records to `topic` and subscribes to it in `group`: every record is
/// finished but [`STUCK`], whose handler waits until the returned `Notify` is notified.
pub async fn stuck_subscriber(
    broker: &MemoryBroker,
    topic: &str,
    group: &str,
    records: i64,
) -> Arc<Notify> {
    for i in 0..records {
        broker.publish(topic, format!("{i}")).await.unwrap();
    }
    let release = Arc::new(Notify::new());
    let r = release.clone();
    broker
        .subscriber(topic)
        .group_id(group)
        .auto_offset_reset(OffsetReset::Earliest)
        .ack_policy(AckPolicy::NackOnError)
        .handle(move |Offset(offset): Offset| {
            let r = r.clone();
            async move {
                if offset == STUCK {
                    r.notified().await;
                }
            }
        });
    release
}
