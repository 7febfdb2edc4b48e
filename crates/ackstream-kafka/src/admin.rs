//! Topic creation and committed-offset lookups.

use std::time::Duration;

use ackstream_core::BackendError;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::error::kafka_error;
use crate::settings::Settings;

const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) async fn create_topic(
    settings: &Settings,
    topic: &str,
    partitions: i32,
) -> Result<(), BackendError> {
    let admin: AdminClient<DefaultClientContext> = settings
        .client_config(&[])
        .create()
        .map_err(|e| kafka_error("cannot create Kafka admin client", e))?;
    let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &options,
        )
        .await
        .map_err(|e| kafka_error(format!("cannot create topic {topic}"), e))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(BackendError::new(format!(
                    "cannot create topic {name}: {code}"
                )));
            }
        }
    }
    Ok(())
}

pub(crate) async fn committed_offset(
    settings: &Settings,
    group: &str,
    topic: &str,
    partition: i32,
) -> Result<Option<i64>, BackendError> {
    let config = settings.client_config(&[
        ("group.id".to_owned(), group.to_owned()),
        ("enable.auto.commit".to_owned(), "false".to_owned()),
    ]);
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config
            .create()
            .map_err(|e| kafka_error("cannot create Kafka consumer", e))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&topic, partition);
        let committed = consumer
            .committed_offsets(tpl, ADMIN_TIMEOUT)
            .map_err(|e| kafka_error("cannot read committed offsets", e))?;
        Ok(committed
            .find_partition(&topic, partition)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            }))
    })
    .await
    .map_err(|e| BackendError::with_source("committed offset lookup panicked", e))?
}
