//! Arbitrary bytes through the decoding paths: every extractor either produces its value or a
//! rejection, never a panic, and header lookups never fail on odd names or values.

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;

use super::FromMessage;
use crate::backend::offsets::NoCommit;
use crate::message::KafkaMessage;
use crate::record::{Header, Headers, Record, TopicPartition};
use crate::settle::{PartitionContext, SettleConfig};
use crate::state::StateMap;

fn message(
    payload: Vec<u8>,
    key: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
) -> KafkaMessage {
    let tp = TopicPartition::new("fuzz", 0);
    let config = Arc::new(SettleConfig {
        max_attempts: None,
        observer: None,
        dead_letters: None,
        outputs: None,
        tracing: None,
        group: None,
        timed: false,
    });
    let ctx = Arc::new(PartitionContext::new(tp, Arc::new(NoCommit), config, false));
    let crate::settle::Delivery::Accepted(delivered) = ctx.deliver(0) else {
        panic!("first delivery refused");
    };
    let record = Record {
        topic: "fuzz".into(),
        partition: 0,
        offset: 0,
        key: key.map(Bytes::from),
        headers: headers
            .into_iter()
            .map(|(key, value)| Header {
                key,
                value: value.map(Bytes::from),
            })
            .collect(),
        timestamp: None,
        payload: Bytes::from(payload),
    };
    KafkaMessage::new(record, delivered.id, delivered.attempt, ctx)
}

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
struct Shaped {
    id: u64,
    name: String,
    tags: Vec<String>,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn payload_extractors_decode_or_reject_arbitrary_bytes(
        payload in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let msg = message(payload.clone(), None, Vec::new());
        let state = StateMap::default();
        prop_assert_eq!(Bytes::from_message(&msg, &state).unwrap(), Bytes::from(payload.clone()));
        prop_assert_eq!(Vec::<u8>::from_message(&msg, &state).unwrap(), payload.clone());
        match String::from_message(&msg, &state) {
            Ok(s) => prop_assert_eq!(s.as_bytes(), payload.as_slice()),
            Err(r) => prop_assert!(std::str::from_utf8(&payload).is_err(), "{}", r),
        }
        #[cfg(feature = "json")]
        {
            use super::Json;
            let value = Json::<serde_json::Value>::from_message(&msg, &state);
            prop_assert_eq!(value.is_ok(), serde_json::from_slice::<serde_json::Value>(&payload).is_ok());
            let _ = Json::<Shaped>::from_message(&msg, &state);
        }
    }

    #[test]
    fn json_shaped_text_decodes_or_rejects(text in r#"\{("id":[0-9a-z"]{0,4},?|"name":"[a-z]{0,3}",?|"tags":\[("[a-z]"\,?){0,2}\],?){0,3}\}"#) {
        #[cfg(feature = "json")]
        {
            use super::Json;
            let msg = message(text.clone().into_bytes(), None, Vec::new());
            let decoded = Json::<Shaped>::from_message(&msg, &StateMap::default());
            prop_assert_eq!(decoded.is_ok(), serde_json::from_str::<Shaped>(&text).is_ok());
        }
    }

    #[test]
    fn header_and_key_lookups_take_arbitrary_names_and_values(
        headers in proptest::collection::vec(
            (".{0,8}", proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16))),
            0..8,
        ),
        key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
        probe in ".{0,8}",
    ) {
        let msg = message(Vec::new(), key.clone(), headers.clone());
        let state = StateMap::default();
        let all = Headers::from_message(&msg, &state).unwrap();
        prop_assert_eq!(all.len(), headers.len());
        let last = headers.iter().rev().find(|(k, _)| *k == probe).and_then(|(_, v)| v.clone());
        prop_assert_eq!(all.get(&probe).map(<[u8]>::to_vec), last.clone());
        prop_assert_eq!(
            all.get_str(&probe).map(str::to_owned),
            last.and_then(|v| String::from_utf8(v).ok())
        );
        let super::Key(k) = super::Key::from_message(&msg, &state).unwrap();
        prop_assert_eq!(k.map(|b| b.to_vec()), key);
    }
}
