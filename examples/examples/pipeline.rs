//! A pipeline on the in-memory broker: consume orders, transform each, and publish the handler's
//! return value to another topic with `publish_to`.
//!
//! `cargo run --example pipeline`
//!
//! Each input is acked (and so committed) only once its output is on `invoices`; an order the
//! handler returns `None` for publishes nothing and is acked at once. The program prints what
//! `invoices` holds and exits non-zero if it is not what the handler made of the orders.

use std::time::Duration;

use ackstream::memory::MemoryBroker;
use ackstream::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
struct Order {
    id: u64,
    customer: String,
    amount_cents: u64,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Invoice {
    order: u64,
    total: String,
}

#[tokio::main]
async fn main() -> Result<(), ackstream::BoxError> {
    let broker = MemoryBroker::new();
    let orders = [(1, "ada", 1250), (2, "bob", 0), (3, "ada", 990)];
    for (id, customer, amount_cents) in orders {
        let order =
            serde_json::json!({ "id": id, "customer": customer, "amount_cents": amount_cents });
        broker.publish("orders", order.to_string()).await?;
    }

    broker
        .subscriber("orders")
        .group_id("billing")
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false) // NackOnError: an output that cannot be published nacks its input
        .publish_to("invoices")
        .handle(|Json(order): Json<Order>| async move {
            // Free orders get no invoice: `None` publishes nothing.
            (order.amount_cents > 0).then(|| {
                let total = format!(
                    "{}.{:02} EUR",
                    order.amount_cents / 100,
                    order.amount_cents % 100
                );
                // Keyed by customer: one customer's invoices stay in order on one partition.
                Response::new(Json(Invoice {
                    order: order.id,
                    total,
                }))
                .key(order.customer)
            })
        });

    let app = App::new(broker.clone()).spawn();
    // Every order committed: each output was published before its input was acked.
    tokio::time::timeout(
        Duration::from_secs(10),
        broker.wait_committed("billing", "orders", 3),
    )
    .await?;
    app.shutdown().await?;

    let invoices: Vec<Invoice> = broker.published_json("invoices")?;
    for invoice in &invoices {
        println!("invoices: {invoice:?}");
    }
    let expected = [
        Invoice {
            order: 1,
            total: "12.50 EUR".into(),
        },
        Invoice {
            order: 3,
            total: "9.90 EUR".into(),
        },
    ];
    if invoices != expected {
        return Err(format!("expected {expected:?}, found {invoices:?}").into());
    }
    println!("2 invoices for 3 orders (the free one published nothing)");
    Ok(())
}
