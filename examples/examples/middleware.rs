//! Middleware on the in-memory broker: a `from_fn` layer that times each record and skips
//! records marked as tests, and the per-record timeout, under `NackOnError`.
//!
//! `cargo run --example middleware`
//!
//! Four records go through the stack; the program prints what the middleware saw and how each
//! record was settled: the slow one times out on its first attempt (a failure: redelivered
//! after the backoff), the test record is answered by the middleware without the handler (its
//! outcome, a success, is acked by the policy), the others are handled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ackstream::event::Event;
use ackstream::memory::MemoryBroker;
use ackstream::middleware::{Next, Timeout, from_fn};
use ackstream::prelude::*;
use ackstream::{Outcome, SettleStatus};
use tokio::sync::Notify;

#[tokio::main]
async fn main() -> Result<(), ackstream::BoxError> {
    let broker = MemoryBroker::new();
    for body in ["hello", "slow", "test: ignore me", "bye"] {
        broker.publish("orders", body).await?;
    }

    let settled = Arc::new(Notify::new());
    let s = settled.clone();
    broker.observe(move |event| {
        if let Event::Settled { offset, status, .. } = event {
            println!("  settled: offset {offset}: {status:?}");
            if *offset == 3 && matches!(status, SettleStatus::Settled(_)) {
                s.notify_one();
            }
        }
    });

    // Runs around the timeout and the handler (it is added last, so it is outermost).
    let timing = from_fn(|msg: KafkaMessage, next: Next| async move {
        if msg.payload().starts_with(b"test:") {
            println!(
                "  middleware: offset {} is a test record, not handled",
                msg.offset()
            );
            return Outcome::Success;
        }
        let (offset, attempt, start) = (msg.offset(), msg.attempt(), Instant::now());
        let outcome = next.run(msg).await;
        let ms = start.elapsed().as_millis();
        println!("  middleware: offset {offset} attempt {attempt} took {ms} ms: {outcome:?}");
        outcome
    });

    broker
        .subscriber("orders")
        .group_id("shipping")
        .auto_offset_reset(OffsetReset::Earliest)
        .ack_policy(AckPolicy::NackOnError)
        .retry_backoff(ackstream::Backoff::exponential(
            Duration::from_millis(50),
            Duration::from_secs(1),
        ))
        .layer(Timeout::new(Duration::from_millis(200)))
        .layer(timing)
        .handle(|body: String, msg: KafkaMessage| async move {
            if body == "slow" && msg.attempt() == 1 {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            println!("  handler: {body:?}");
        });

    let app = App::new(broker.clone()).spawn();
    settled.notified().await;
    app.shutdown().await?;
    let committed = broker.committed_offset("shipping", "orders", 0).await?;
    println!("committed offset of orders/0: {committed:?} (every record finished)");
    assert_eq!(committed, Some(4));
    Ok(())
}
