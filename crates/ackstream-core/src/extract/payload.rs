//! Payload extractors: the record value as text or bytes.

use bytes::Bytes;

use super::{FromMessage, Rejection};
use crate::message::KafkaMessage;
use crate::state::StateMap;

impl FromMessage for Bytes {
    const READS_HEADERS: bool = false;

    fn from_message(msg: &KafkaMessage, _: &StateMap) -> Result<Self, Rejection> {
        Ok(msg.payload().clone())
    }
}

impl FromMessage for Vec<u8> {
    const READS_HEADERS: bool = false;

    fn from_message(msg: &KafkaMessage, _: &StateMap) -> Result<Self, Rejection> {
        Ok(msg.payload().to_vec())
    }
}

impl FromMessage for String {
    const READS_HEADERS: bool = false;

    fn from_message(msg: &KafkaMessage, _: &StateMap) -> Result<Self, Rejection> {
        match std::str::from_utf8(msg.payload()) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(Rejection::new(
                "String",
                format_args!("payload is not UTF-8 ({e})"),
            )),
        }
    }
}
