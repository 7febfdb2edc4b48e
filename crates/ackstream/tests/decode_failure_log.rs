//! A record whose payload does not decode is logged with its topic, partition and offset, is
//! redelivered at most `DEFAULT_DECODE_ATTEMPTS` times under `NackOnError`, then rejected.
//!
//! Alone in its test binary: tracing caches per-callsite interest process-wide, so a capturing
//! subscriber must not share the process with tests that log without one.

use std::io::Write;
use std::sync::{Arc, Mutex};

use ackstream::memory::MemoryBroker;
use ackstream::prelude::*;

#[derive(serde::Deserialize)]
struct Order {
    #[allow(dead_code)]
    id: u64,
}

/// Collects everything the fmt subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn malformed_json_is_rejected_not_looped_and_logged_with_its_position() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let broker = MemoryBroker::new();
    broker.create_topic("orders", 2).await.unwrap();
    broker
        .publish("orders", "{\"id\": oops")
        .partition(1)
        .await
        .unwrap();
    broker
        .publish("orders", "{\"id\": 7}")
        .partition(1)
        .await
        .unwrap();
    let calls = Arc::new(Mutex::new(0));
    let c = calls.clone();
    broker
        .subscriber("orders")
        .group_id("g")
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .handle(move |Json(_order): Json<Order>| {
            let c = c.clone();
            async move { *c.lock().unwrap() += 1 }
        });
    let app = App::new(broker.clone()).spawn();
    broker.wait_committed("g", "orders", 2).await;
    app.shutdown().await.unwrap();

    assert_eq!(
        *calls.lock().unwrap(),
        1,
        "the malformed record never reached the handler"
    );
    assert_eq!(
        log_count(&captured, "cannot be decoded"),
        ackstream::DEFAULT_DECODE_ATTEMPTS as usize,
        "bounded redelivery, then rejected"
    );
    assert_eq!(broker.committed_now("g", "orders", 1), Some(2));
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("cannot be decoded"))
        .expect("a decode failure is logged");
    for needle in [
        "topic=\"orders\"",
        "partition=1",
        "offset=0",
        "invalid JSON",
    ] {
        assert!(line.contains(needle), "{needle} missing from: {line}");
    }
    assert!(log.contains("ran out of attempts"), "{log}");
}

/// How many captured log lines contain `text`.
fn log_count(captured: &Captured, text: &str) -> usize {
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    log.lines().filter(|l| l.contains(text)).count()
}
