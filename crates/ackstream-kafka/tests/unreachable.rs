//! A broker that cannot be reached at start-up: clear errors, nothing consumed or committed,
//! and a shutdown that still completes. Nothing listens on 127.0.0.1:1.

use std::time::Duration;

use ackstream::Admin;
use ackstream::prelude::*;
use ackstream_kafka::KafkaBroker;

#[tokio::test]
async fn an_unreachable_broker_at_start_up_gives_clear_errors_and_a_clean_shutdown() {
    // Short timeouts so the test fails fast; the defaults wait up to a minute (socket) and five
    // minutes (message delivery) before reporting.
    let broker = KafkaBroker::new("127.0.0.1:1")
        .config("message.timeout.ms", "2000")
        .config("socket.timeout.ms", "3000");
    let err = broker.create_topic("t", 1).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("cannot create topic t") && text.contains("Timed out"),
        "{text}"
    );

    let err = broker.publish("t", "x").await.unwrap_err();
    let text = format!("{err:#}").to_lowercase();
    assert!(
        text.contains("timed out") || text.contains("timeout"),
        "{text}"
    );

    broker
        .subscriber("t")
        .group_id("g")
        .auto_commit(false)
        .handle(|_: String| async {});
    let app = App::new(broker.clone()).spawn();
    tokio::time::timeout(Duration::from_secs(30), app.shutdown())
        .await
        .expect("shutdown completes without a broker")
        .expect("a clean shutdown");
}
