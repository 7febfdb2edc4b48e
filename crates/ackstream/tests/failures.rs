//! Handler failures: panics are caught, undecodable payloads never reach the handler and are
//! logged with their topic, partition and offset, and nothing loops.

use std::sync::{Arc, Mutex};

use ackstream::memory::MemoryBroker;
use ackstream::prelude::*;

#[tokio::test]
async fn panicking_handler_leaves_the_consumer_running() {
    let broker = MemoryBroker::new();
    for body in ["panic", "fine", "panic", "fine"] {
        broker.publish("t", body).await.unwrap();
    }
    let handled: Arc<Mutex<Vec<String>>> = Arc::default();
    let h = handled.clone();
    broker
        .subscriber("t")
        .group_id("g")
        .auto_offset_reset(OffsetReset::Earliest)
        .ack_policy(AckPolicy::RejectOnError)
        .handle(move |body: String| {
            let h = h.clone();
            async move {
                if body == "panic" {
                    panic!("boom");
                }
                h.lock().unwrap().push(body);
            }
        });
    let app = App::new(broker.clone()).spawn();
    broker.wait_committed("g", "t", 4).await;
    app.shutdown().await.unwrap();
    assert_eq!(handled.lock().unwrap().len(), 2);
    assert_eq!(broker.committed_now("g", "t", 0), Some(4));
}

#[tokio::test]
async fn non_utf8_payload_into_string_is_a_decode_failure() {
    let broker = MemoryBroker::new();
    broker.publish("t", vec![0xff, 0xfe]).await.unwrap();
    broker
        .subscriber("t")
        .group_id("g")
        .auto_offset_reset(OffsetReset::Earliest)
        .ack_policy(AckPolicy::RejectOnError)
        .handle(|body: String| async move {
            assert!(body.is_empty(), "never called with a decoded string");
        });
    let app = App::new(broker.clone()).spawn();
    broker.wait_committed("g", "t", 1).await;
    app.shutdown().await.unwrap();
    assert_eq!(broker.delivery_count(Some("g"), "t", 0, 0), 1);
}
