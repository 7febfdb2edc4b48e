//! The Kafka backend of [ackstream](https://docs.rs/ackstream), on `rdkafka` (librdkafka).
//!
//! ```no_run
//! use ackstream::prelude::*;
//! use ackstream_kafka::KafkaBroker;
//!
//! async fn base_handler(body: String, msg: KafkaMessage) -> Result<(), HandlerError> {
//!     println!("{body}");
//!     msg.ack().await?;
//!     Ok(())
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), ackstream::BoxError> {
//! let broker = KafkaBroker::new("localhost:9092");
//! broker.subscriber("test").group_id("group").auto_commit(false).handle(base_handler);
//! App::new(broker).run().await?; // until SIGINT/SIGTERM, then drains and commits
//! # Ok(()) }
//! ```
//!
//! How the acknowledgement contract maps onto Kafka:
//! - **ack / reject**: the record is finished; when every earlier record of its partition is
//!   finished too, the partition's committable offset moves past it. Commits are coalesced: one
//!   commit of every moved partition per [`commit_interval`](KafkaBroker::commit_interval)
//!   or after [`commit_batch`](KafkaBroker::commit_batch) moves, whichever comes first; one the
//!   runtime waits for on revoke and on shutdown. A failed commit is retried by the next one.
//!   Each consumer makes every commit on one thread of its own, one at a time, so an older
//!   commit never lands after a newer one, and waiting callers never pile up threads.
//! - **nack**: the partition is rewound with a seek to the record, so it and every later record
//!   of the partition are fetched again.
//! - **rebalance**: on revoke, librdkafka's rebalance callback waits while the runtime stops the
//!   revoked partitions, drains their handlers, and commits their finished prefix; only then is
//!   the revoke completed. A seek asked for during an assignment is dropped when it ends. A
//!   *lost* assignment (`assignment_lost()`: session expired, poll interval exceeded, fenced) is
//!   fenced at once: no drain, no commit, no seek; the next owner redelivers.
//! - **fatal errors**: a fatal librdkafka error (e.g. `FENCED_INSTANCE_ID` under static
//!   membership) ends the subscriber with that error; `App::run` returns it.
//! - **one reader**: a dedicated thread polls the librdkafka consumer (as librdkafka intends),
//!   taking turns over the assigned partitions' queues, and hands records to per-partition
//!   inboxes; each partition's handlers run on the async runtime, so one slow partition does not
//!   stall the others. A full inbox leaves its partition's records in librdkafka, whose queue
//!   limits (`queued.min.messages`, `queued.max.messages.kbytes`) then stop fetching it: memory
//!   stays bounded. librdkafka applies those limits per queue, so ackstream lowers their
//!   defaults, with `fetch.max.bytes` and `fetch.queue.backoff.ms` (see the README's table);
//!   anything given with `.config(..)` wins.
//! - **headers** are decoded only for handlers with an argument that reads them (`Headers`,
//!   `KafkaMessage`, or an extractor of your own): decoding them costs librdkafka about as much
//!   as the rest of handing a record over.
//! - Offsets are committed explicitly (`enable.auto.commit=false`,
//!   `enable.auto.offset.store=false`); librdkafka's auto commit would commit
//!   fetched-but-unprocessed records. Turning either on for a subscriber with a group is a
//!   `ConfigError` at registration.
//! - Keys are placed with the `murmur2_random` partitioner, as Java clients and the in-memory
//!   broker place them.

mod admin;
mod broker;
mod driver;
mod error;
mod producer;
mod settings;

pub use broker::{
    DEFAULT_COMMIT_BATCH, DEFAULT_COMMIT_INTERVAL, DEFAULT_COMMIT_TIMEOUT, KafkaBackend,
    KafkaBroker,
};
// The backend's consumer side: public because `KafkaBackend`'s types name them, hidden
// because an application never uses them.
#[doc(hidden)]
pub use driver::KafkaConsumer;
#[doc(hidden)]
pub use driver::feed::KafkaFeed;
/// The rdkafka crate this backend is built on (for settings and types it exposes).
pub use rdkafka;
