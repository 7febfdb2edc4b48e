//! Scenarios beyond the policy table, one file per area: delivery, groups, shutdown, redelivery,
//! dead letters. Each file lists its scenarios next to their functions (the macro at its end,
//! which the suite expands), and `every_scenario_is_listed` fails when one is missing.

pub mod batches;
pub mod dead_letters;
pub mod delivery;
pub mod groups;
pub mod outputs;
pub mod redelivery;
pub mod shutdown;

use ackstream::TopicPartition;
use ackstream::prelude::*;

pub(crate) async fn publish_n<B: Broker>(broker: &B, topic: &str, partition: i32, n: usize) {
    for i in 0..n {
        broker
            .publish(topic, format!("record-{i}"))
            .partition(partition)
            .await
            .expect("publish");
    }
}

/// Publishes `n` records to `partition` with many in flight at once (fast on a real broker).
pub(crate) async fn publish_many<B: Broker>(broker: &B, topic: &str, partition: i32, n: usize) {
    for start in (0..n).step_by(2000) {
        let mut sends = tokio::task::JoinSet::new();
        for i in start..n.min(start + 2000) {
            sends.spawn(
                broker
                    .publish(topic, format!("record-{i}"))
                    .partition(partition)
                    .into_future(),
            );
        }
        while let Some(sent) = sends.join_next().await {
            sent.expect("publish task").expect("publish");
        }
    }
}

pub(crate) fn tp(topic: &str, partition: i32) -> TopicPartition {
    TopicPartition::new(topic, partition)
}
