//! Batch subscribers: `.batch(max_records, max_wait)` on a subscriber, then a handler that takes
//! a `Vec<T>` or a [`Batch<T>`](crate::Batch).

use std::sync::Arc;
use std::time::Duration;

use super::{Declared, Inherited, Registry, SubscriberBuilder};
use crate::backend::Backend;
use crate::error::ConfigError;
use crate::extract::FromMessage;
use crate::handler::batch::BatchHandler;
use crate::runtime::subscription::BatchSubscription;

/// A subscriber whose handler takes up to `max_records` records of one partition at once; made
/// by [`SubscriberBuilder::batch`]. The subscriber's other settings are given before `.batch`.
///
/// How a batch is settled: the handler may settle single records itself (`batch.ack(i)`,
/// `batch.nack(i)`, ...); every record it leaves unsettled takes the batch's outcome, as the
/// policy says (success, failure, interrupt, panic). The commit rule holds per partition, and a
/// nacked record is delivered again (in a later batch, before newer records) while the others
/// are not. A record that does not decode is settled alone by the policy, as a decode failure,
/// and the others are delivered.
///
/// Ordering: a batch holds records of one partition in offset order, and a partition's batches
/// run one at a time; batches of different partitions run side by side.
///
/// ```
/// # use ackstream_core::{AckPolicy, Batch, Broker};
/// # use std::time::Duration;
/// # fn f(broker: &impl Broker) {
/// broker
///     .subscriber("clicks")
///     .group_id("warehouse")
///     .ack_policy(AckPolicy::NackOnError)
///     .batch(500, Duration::from_millis(200))
///     .handle(|clicks: Vec<String>| async move {
///         println!("storing {} clicks at once", clicks.len());
///     });
/// # }
/// ```
#[must_use = "a subscriber does nothing until .handle(..) registers it"]
#[derive(Debug)]
pub struct BatchSubscriberBuilder<B: Backend> {
    single: SubscriberBuilder<B>,
    max_records: usize,
    max_wait: Duration,
}

impl<B: Backend> SubscriberBuilder<B> {
    /// Hands the handler up to `max_records` records of one partition at once, waiting at
    /// most `max_wait` after a batch's first record for more. See [`BatchSubscriberBuilder`].
    pub fn batch(self, max_records: usize, max_wait: Duration) -> BatchSubscriberBuilder<B> {
        BatchSubscriberBuilder {
            single: self,
            max_records,
            max_wait,
        }
    }
}

impl<B: Backend> BatchSubscriberBuilder<B> {
    /// Registers batch `handler` (an `async fn(Vec<T>)` or `async fn(Batch<T>)`), or returns
    /// why the settings cannot work.
    pub fn try_handle<T: 'static, H: BatchHandler<T>>(self, handler: H) -> Result<(), ConfigError> {
        let declare = self.single.declare.clone();
        let topics = self.single.topics.clone();
        declare.declare(Declared {
            topics,
            register: Box::new(move |registry: &dyn Registry<B>, inherited: &Inherited| {
                let Self {
                    single,
                    max_records,
                    max_wait,
                } = self;
                register(
                    single.inherit(inherited),
                    registry,
                    handler,
                    max_records,
                    max_wait,
                )
            }),
        })
    }

    /// Registers batch `handler`.
    ///
    /// # Panics
    /// If the settings cannot work (see [`SubscriberBuilder::handle`]).
    #[track_caller]
    pub fn handle<T: 'static, H: BatchHandler<T>>(self, handler: H) {
        if let Err(e) = self.try_handle(handler) {
            panic!("{e}");
        }
    }
}

fn register<B: Backend, T: 'static, H: BatchHandler<T>>(
    single: SubscriberBuilder<B>,
    registry: &dyn Registry<B>,
    handler: H,
    max_records: usize,
    max_wait: Duration,
) -> Result<(), ConfigError> {
    let refuse = |setting, reason: &str| {
        Err(ConfigError::InvalidSetting {
            setting,
            reason: reason.to_owned(),
        })
    };
    if max_records == 0 {
        return refuse("batch", "a batch holds at least one record");
    }
    if single.max_workers.is_some() || single.ordering.is_some() {
        return refuse(
            "max_workers",
            "a partition's batches run one at a time, in order; partitions run side by side",
        );
    }
    if !single.layers.is_empty() {
        return refuse(
            "layer",
            "layers wrap single-record handlers; a batch subscriber takes none",
        );
    }
    if !single.publish_to.is_empty() {
        return refuse(
            "publish_to",
            "a batch handler's return value is not published",
        );
    }
    let mut config = single.build_config_with(registry.default_ack_policy())?;
    registry.check(&config)?;
    config.replies = false;
    config.reads_headers =
        <H::Item as FromMessage>::READS_HEADERS || config.dead_letter_topic.is_some();
    registry.register(Arc::new(BatchSubscription::new(
        config,
        handler,
        max_records,
        max_wait,
    )));
    Ok(())
}
