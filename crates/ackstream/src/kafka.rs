//! The Kafka backend (feature `kafka`, on by default): [`KafkaBroker`] on rdkafka (librdkafka).
//!
//! ```no_run
//! use ackstream::kafka::KafkaBroker;
//! use ackstream::prelude::*;
//!
//! # #[tokio::main] async fn main() -> Result<(), ackstream::BoxError> {
//! let broker = KafkaBroker::new("127.0.0.1:9092");
//! broker
//!     .subscriber("orders")
//!     .group_id("billing")
//!     .auto_commit(false)
//!     .handle(|body: String| async move { println!("{body}") });
//! App::new(broker).run().await?;
//! # Ok(()) }
//! ```

pub use ackstream_kafka::*;
