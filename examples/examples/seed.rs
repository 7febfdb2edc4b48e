//! The README's first example on real Kafka: `group_id("group").auto_commit(false)`, manual ack and nack,
//! and interrupts from two calls deep.
//!
//! Run with (a Kafka-compatible broker on 127.0.0.1:9092, e.g. `scripts/broker up`):
//! `cargo run --example seed`  (`KAFKA_BOOTSTRAP=host:port` to change it)
//!
//! It publishes four records to a fresh topic, consumes them until each is finished, prints what
//! happened to each delivery, then shuts down (drain + synchronous commit) and prints the offset
//! the group committed. `App::run()` would instead run until SIGINT/SIGTERM.

use std::sync::Arc;

use ackstream::event::Event;
use ackstream::kafka::KafkaBroker;
use ackstream::prelude::*;
use ackstream::{Disposition, SettleStatus};
use tokio::sync::Notify;

async fn base_handler(body: String, msg: KafkaMessage) -> Result<(), HandlerError> {
    let attempt = msg.attempt();
    println!(
        "  handler: offset {} body {body:?} attempt {attempt}",
        msg.offset()
    );
    match body.as_str() {
        // A failing handler: auto_commit(false) = NackOnError, so it is delivered again.
        "fails once" if attempt == 1 => return Err("simulated failure".into()),
        // Manual nack: the framework leaves a settled message alone afterwards.
        "nack once" if attempt == 1 => {
            msg.nack().await?;
            return Ok(());
        }
        // An interrupt from two calls deep settles the record as named.
        "reject me" => validate(&body)?,
        _ => {}
    }
    msg.ack().await?;
    Ok(())
}

fn validate(body: &str) -> Result<(), HandlerError> {
    check_not_poison(body)?;
    Ok(())
}

fn check_not_poison(_body: &str) -> Result<(), HandlerError> {
    Err(RejectMessage.into())
}

#[tokio::main]
async fn main() -> Result<(), ackstream::BoxError> {
    let bootstrap = std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let topic = format!("seed-{}", std::process::id());
    let broker = KafkaBroker::new(&bootstrap);
    broker.create_topic(&topic, 1).await?;
    for body in ["hello", "fails once", "nack once", "reject me"] {
        broker.publish(&topic, body).await?;
    }

    let finished = Arc::new(Notify::new());
    let f = finished.clone();
    broker.observe(move |event| {
        if let Event::Settled {
            offset,
            status: SettleStatus::Settled(how),
            ..
        } = event
        {
            let what = match how {
                Disposition::Ack => "acked: committed once every earlier record is finished",
                Disposition::Nack { .. } => "nacked: only this record is delivered again",
                Disposition::Reject => "rejected: finished, committed past",
                _ => "settled",
            };
            println!("  settle:  offset {offset} {what}");
            if *offset == 3 && !matches!(how, Disposition::Nack { .. }) {
                f.notify_one();
            }
        }
    });
    broker
        .subscriber(&topic)
        .group_id("group")
        .auto_commit(false)
        .auto_offset_reset(OffsetReset::Earliest)
        .config("session.timeout.ms", "6000")
        .handle(base_handler);

    println!("consuming {topic} on {bootstrap} as group \"group\" (NackOnError)");
    let app = App::new(broker.clone()).spawn();
    finished.notified().await;
    app.shutdown().await?;
    let committed = broker.committed_offset("group", &topic, 0).await?;
    println!("shut down; committed offset of {topic}/0: {committed:?} (4 records, all finished)");
    if committed != Some(4) {
        return Err(format!("expected the group to have committed 4, not {committed:?}").into());
    }
    Ok(())
}
