//! The settings the commit rule depends on cannot be overridden: ackstream commits offsets
//! itself (the finished prefix of each partition), so librdkafka's auto commit or automatic
//! offset store would commit records that are not finished. Giving them is a configuration
//! error at registration, naming the key; nothing is consumed. No broker is needed: the check
//! runs when the subscriber is declared.

use ackstream::ConfigError;
use ackstream::prelude::*;
use ackstream_kafka::KafkaBroker;

async fn noop(_: String) {}

const KEYS: [&str; 2] = ["enable.auto.commit", "enable.auto.offset.store"];

#[test]
fn overriding_a_commit_setting_on_a_subscriber_is_a_configuration_error_naming_the_key() {
    let broker = KafkaBroker::new("127.0.0.1:1");
    for key in KEYS {
        for policy in AckPolicy::ALL {
            let err = broker
                .subscriber("t")
                .group_id("g")
                .ack_policy(policy)
                .config(key, "true")
                .try_handle(noop)
                .unwrap_err();
            assert!(
                matches!(err, ConfigError::InvalidSetting { setting, .. } if setting == key),
                "{key} under {policy:?}: {err}"
            );
            assert!(err.to_string().contains(key), "{err}");
        }
    }
}

#[test]
fn overriding_a_commit_setting_on_the_broker_is_a_configuration_error_naming_the_key() {
    for key in KEYS {
        let broker = KafkaBroker::new("127.0.0.1:1").config(key, "true");
        let err = broker
            .subscriber("t")
            .group_id("g")
            .auto_commit(false)
            .try_handle(noop)
            .unwrap_err();
        assert!(err.to_string().contains(key), "{err}");
    }
}

#[test]
fn the_values_ackstream_uses_anyway_are_accepted() {
    let broker = KafkaBroker::new("127.0.0.1:1");
    broker
        .subscriber("t")
        .group_id("g")
        .auto_commit(false)
        .config("enable.auto.commit", "false")
        .config("enable.auto.offset.store", "false")
        .try_handle(noop)
        .expect("the values ackstream sets itself");
}
