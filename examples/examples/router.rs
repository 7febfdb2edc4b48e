//! Routers on the in-memory broker: subscribers declared apart from the broker, in a function
//! that knows nothing of it, with a topic prefix and settings they share (group, policy,
//! ordering, a layer, state), then included in the broker in one call.
//!
//! `cargo run --example router`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ackstream::memory::MemoryBroker;
use ackstream::middleware::{Next, from_fn};
use ackstream::prelude::*;

/// Prices in cents, shared by the orders handlers.
#[derive(Clone)]
struct Prices {
    per_item: u64,
}

/// The orders part of the service: its own module could declare it, as here.
fn orders<B: ackstream::Backend>(handled: Arc<AtomicUsize>) -> Router<B> {
    let router = Router::new()
        .prefix("orders.")
        .group_id("billing")
        .ack_policy(AckPolicy::NackOnError)
        .ordering(KeepOrder::Key)
        .with_state(Prices { per_item: 250 })
        .layer(from_fn(|msg: KafkaMessage, next: Next| async move {
            println!("  [orders] {} offset {}", msg.topic(), msg.offset());
            next.run(msg).await
        }));
    let h = handled.clone();
    router
        .subscriber("created")
        .auto_offset_reset(OffsetReset::Earliest)
        .handle(move |items: String, State(prices): State<Prices>| {
            let h = h.clone();
            async move {
                let items: u64 = items.parse()?;
                println!(
                    "    created: {items} items, {} cents",
                    items * prices.per_item
                );
                h.fetch_add(1, Ordering::SeqCst);
                Ok::<(), HandlerError>(())
            }
        });
    router
        .subscriber("cancelled")
        .auto_offset_reset(OffsetReset::Earliest)
        .max_workers(4) // its own setting, beside the shared ones
        .handle(move |id: String| {
            let h = handled.clone();
            async move {
                println!("    cancelled: order {id}");
                h.fetch_add(1, Ordering::SeqCst);
            }
        });
    router
}

#[tokio::main]
async fn main() -> Result<(), ackstream::BoxError> {
    let handled = Arc::new(AtomicUsize::new(0));
    let shop = Router::new()
        .prefix("shop.")
        .include_router(orders(handled.clone()));
    println!("the shop's subscribers read {:?}", shop.topics());

    let broker = MemoryBroker::new();
    broker.include_router(shop);
    broker
        .publish("shop.orders.created", "3")
        .key("order-1")
        .await?;
    broker
        .publish("shop.orders.cancelled", "order-1")
        .key("order-1")
        .await?;
    broker
        .publish("shop.orders.created", "5")
        .key("order-2")
        .await?;

    let app = App::new(broker.clone()).spawn();
    broker
        .wait_committed("billing", "shop.orders.created", 2)
        .await;
    broker
        .wait_committed("billing", "shop.orders.cancelled", 1)
        .await;
    app.shutdown().await?;
    let handled = handled.load(Ordering::SeqCst);
    println!("handled {handled} records; group \"billing\" committed both topics to their ends");
    if handled != 3 {
        return Err(format!("expected 3 records handled, not {handled}").into());
    }
    Ok(())
}
