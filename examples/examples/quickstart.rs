//! The acknowledgement contract, shown: the README's handler under every ack policy, on the
//! in-memory broker (no Kafka needed).
//!
//! Run with: `cargo run --example quickstart`
//!
//! For each policy and each way a handler can end, it publishes two records to a fresh topic:
//! record 0 gets the outcome, record 1 is handled normally. It prints how many times record 0 was
//! delivered and the offset the consumer group committed (2 = both records finished; 0 = the
//! commit stopped at record 0, which will be delivered again after a restart).

use std::sync::Arc;

use ackstream::SettleStatus;
use ackstream::event::Event;
use ackstream::memory::MemoryBroker;
use ackstream::prelude::*;
use tokio::sync::Notify;

/// The seed's handler, in Rust: the body says what to do on the first attempt.
async fn base_handler(body: String, msg: KafkaMessage) -> Result<(), HandlerError> {
    let first_attempt = msg.attempt() == 1;
    match body.as_str() {
        "error" if first_attempt => return Err("something went wrong".into()),
        "panic" if first_attempt => panic!("handler panicked"),
        "nack-interrupt" if first_attempt => deep_check()?, // Err(NackMessage) two calls deep
        "reject-interrupt" if first_attempt => return Err(RejectMessage.into()),
        "manual-nack" if first_attempt => {
            msg.nack().await?;
            return Ok(());
        }
        _ => {}
    }
    msg.ack().await?; // a settled message is left alone by the framework afterwards
    Ok(())
}

fn deep_check() -> Result<(), HandlerError> {
    deeper_check()?;
    Ok(())
}

fn deeper_check() -> Result<(), HandlerError> {
    Err(NackMessage.into())
}

/// A handler that returns without settling (what `Manual` is strict about).
async fn forgetful_handler(_body: String, msg: KafkaMessage) -> Result<(), HandlerError> {
    if msg.offset() > 0 {
        msg.ack().await?;
    }
    Ok(())
}

#[derive(serde::Deserialize)]
struct Order {
    #[allow(dead_code)]
    id: u64,
}

async fn json_handler(Json(_order): Json<Order>, msg: KafkaMessage) -> Result<(), HandlerError> {
    msg.ack().await?;
    Ok(())
}

#[derive(Clone, Copy)]
enum Case {
    Seed(&'static str),
    Forgetful,
    BadJson,
}

impl Case {
    fn label(self) -> &'static str {
        match self {
            Case::Seed("ok") => "acks and returns Ok",
            Case::Seed("error") => "returns Err",
            Case::Seed("panic") => "panics",
            Case::Seed("nack-interrupt") => "Err(NackMessage) 2 calls deep",
            Case::Seed("reject-interrupt") => "Err(RejectMessage)",
            Case::Seed("manual-nack") => "msg.nack() then Ok",
            Case::Seed(_) => "?",
            Case::Forgetful => "returns Ok, never settles",
            Case::BadJson => "payload is not valid JSON",
        }
    }
}

const CASES: [Case; 8] = [
    Case::Seed("ok"),
    Case::Seed("error"),
    Case::Seed("panic"),
    Case::Seed("nack-interrupt"),
    Case::Seed("reject-interrupt"),
    Case::Seed("manual-nack"),
    Case::Forgetful,
    Case::BadJson,
];

/// Runs one case; returns (deliveries of record 0, committed offset, last settle of record 0).
async fn run(policy: AckPolicy, case: Case, n: usize) -> (u32, Option<i64>, String) {
    let broker = MemoryBroker::new();
    let topic = format!("demo-{n}");
    // Deliveries of record 0 to the handler (a nacked record comes back from memory, so the
    // runtime's events count them, not the broker's fetches).
    let deliveries = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = deliveries.clone();
    broker.observe(move |e| {
        if let Event::Delivered { offset: 0, .. } = e {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let body0 = match case {
        Case::Seed(b) => b.to_owned(),
        Case::Forgetful => "anything".to_owned(),
        Case::BadJson => "{\"id\": oops".to_owned(),
    };
    let body1 = if matches!(case, Case::BadJson) {
        "{\"id\": 1}"
    } else {
        "ok"
    };
    broker.publish(&topic, body0).await.expect("publish");
    broker.publish(&topic, body1).await.expect("publish");

    // Wait on events, not time: record 1 settled means record 0 is done with.
    let done = Arc::new(Notify::new());
    let last_settle = Arc::new(std::sync::Mutex::new(String::from("-")));
    let (d, l) = (done.clone(), last_settle.clone());
    broker.observe(move |e| {
        if let Event::Settled {
            offset,
            status: SettleStatus::Settled(how),
            ..
        } = e
        {
            if *offset == 1 {
                d.notify_one();
            } else {
                *l.lock().unwrap() = format!("{how:?}");
            }
        }
    });
    let subscriber = broker
        .subscriber(&topic)
        .group_id("group")
        .auto_offset_reset(OffsetReset::Earliest)
        .ack_policy(policy);
    match case {
        Case::Seed(_) => subscriber.handle(base_handler),
        Case::Forgetful => subscriber.handle(forgetful_handler),
        Case::BadJson => subscriber.handle(json_handler),
    }
    let app = App::new(broker.clone()).spawn();
    done.notified().await;
    app.shutdown().await.expect("clean shutdown");
    let deliveries = deliveries.load(std::sync::atomic::Ordering::SeqCst);
    let committed = broker.committed_now("group", &topic, 0);
    let last = last_settle.lock().unwrap().clone();
    (deliveries, committed, last)
}

#[tokio::main]
async fn main() {
    // Handler errors, panics and decode failures are logged; the table is the point here, so
    // logs are off unless asked for (RUST_LOG=warn shows each failure with its record).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "off".into()),
        )
        .init();
    std::panic::set_hook(Box::new(|_| {})); // the demo's panics are caught and shown in the table

    println!(
        "ackstream quickstart: the README's handler under every ack policy (in-memory broker)\n"
    );
    println!(
        "{:<16} {:<32} {:>10} {:>10}  record 0 settled as",
        "policy", "handler", "deliveries", "committed"
    );
    println!("{}", "-".repeat(96));
    let mut n = 0;
    for policy in AckPolicy::ALL {
        for case in CASES {
            n += 1;
            let (deliveries, committed, last) = run(policy, case, n).await;
            let committed = committed.map_or("none".to_owned(), |c| c.to_string());
            println!(
                "{:<16} {:<32} {:>10} {:>10}  {}",
                policy.name(),
                case.label(),
                deliveries,
                committed,
                last
            );
        }
        println!();
    }
    println!("deliveries: times record 0 reached the consumer; committed: the group's offset");
    println!(
        "(2 = both records finished, none = commit held before record 0, redelivered on restart)."
    );
}
