//! Metadata extractors: key, headers, position, attempt, the message handle and application
//! state.

use std::any::type_name;

use bytes::Bytes;

use super::{FromMessage, Rejection};
use crate::error::ConfigError;
use crate::message::KafkaMessage;
use crate::record::Headers;
use crate::state::StateMap;

impl FromMessage for KafkaMessage {
    fn from_message(msg: &KafkaMessage, _: &StateMap) -> Result<Self, Rejection> {
        Ok(msg.clone())
    }
}

impl FromMessage for Headers {
    fn from_message(msg: &KafkaMessage, _: &StateMap) -> Result<Self, Rejection> {
        Ok(msg.headers().clone())
    }
}

/// The record's key (`None` for a record without one).
///
/// ```
/// use ackstream_core::extract::Key;
/// async fn handler(Key(key): Key, body: String) {
///     println!("{key:?}: {body}");
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key(pub Option<Bytes>);

impl FromMessage for Key {
    const READS_HEADERS: bool = false;

    fn from_message(msg: &KafkaMessage, _: &StateMap) -> Result<Self, Rejection> {
        Ok(Key(msg.key().cloned()))
    }
}

/// The record's partition.
///
/// ```
/// use ackstream_core::extract::{Offset, Partition};
/// async fn handler(Partition(partition): Partition, Offset(offset): Offset, body: String) {
///     println!("{partition}@{offset}: {body}");
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partition(pub i32);

impl FromMessage for Partition {
    const READS_HEADERS: bool = false;

    fn from_message(msg: &KafkaMessage, _: &StateMap) -> Result<Self, Rejection> {
        Ok(Partition(msg.partition()))
    }
}

/// The record's offset within its partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offset(pub i64);

impl FromMessage for Offset {
    const READS_HEADERS: bool = false;

    fn from_message(msg: &KafkaMessage, _: &StateMap) -> Result<Self, Rejection> {
        Ok(Offset(msg.offset()))
    }
}

/// Which attempt this delivery is: 1 the first time, +1 after each nack of the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempt(pub u32);

impl FromMessage for Attempt {
    const READS_HEADERS: bool = false;

    fn from_message(msg: &KafkaMessage, _: &StateMap) -> Result<Self, Rejection> {
        Ok(Attempt(msg.attempt()))
    }
}

/// Application state of type `T`, given to the broker with `with_state`.
///
/// ```
/// use ackstream_core::extract::State;
/// #[derive(Clone)]
/// struct Db { url: String }
/// async fn handler(State(db): State<Db>, body: String) {
///     println!("{} <- {body}", db.url);
/// }
/// ```
#[derive(Clone, Debug)]
pub struct State<T>(pub T);

impl<T: Clone + Send + Sync + 'static> FromMessage for State<T> {
    const READS_HEADERS: bool = false;

    fn from_message(_: &KafkaMessage, state: &StateMap) -> Result<Self, Rejection> {
        state
            .get::<T>()
            .map(|v| State(v.clone()))
            .ok_or_else(|| Rejection::new(type_name::<T>(), "no state of this type was given"))
    }

    fn check(state: &StateMap) -> Result<(), ConfigError> {
        if state.contains::<T>() {
            Ok(())
        } else {
            Err(ConfigError::MissingState {
                type_name: type_name::<T>(),
            })
        }
    }
}
