//! What the Kafka fixtures (tansu and the mock cluster) share.

use std::time::Duration;

use ackstream::Admin;
use ackstream_kafka::KafkaBroker;

/// A broker client for tests: commits every 100 ms, since tests settle in milliseconds.
pub(crate) fn test_broker(bootstrap: &str) -> KafkaBroker {
    KafkaBroker::new(bootstrap).commit_interval(Duration::from_millis(100))
}

/// What `group` committed for a partition, as the broker reports it.
pub(crate) async fn committed(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    test_broker(bootstrap)
        .committed_offset(group, topic, partition)
        .await
        .expect("read committed offset")
}
