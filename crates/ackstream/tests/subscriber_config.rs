//! Misconfiguration is a clear error when the subscriber is declared, before anything is consumed.

use ackstream::ConfigError;
use ackstream::memory::MemoryBroker;
use ackstream::prelude::*;

async fn noop(_: String) {}

#[test]
fn committing_policy_without_group_is_refused() {
    let broker = MemoryBroker::new();
    for policy in [
        AckPolicy::Ack,
        AckPolicy::RejectOnError,
        AckPolicy::NackOnError,
        AckPolicy::Manual,
    ] {
        let err = broker
            .subscriber("t")
            .ack_policy(policy)
            .try_handle(noop)
            .unwrap_err();
        assert!(
            matches!(err, ConfigError::PolicyNeedsGroup { .. }),
            "{policy:?}: {err}"
        );
        assert!(err.to_string().contains("group_id"), "{err}");
    }
    let err = broker
        .subscriber("t")
        .auto_commit(false)
        .try_handle(noop)
        .unwrap_err();
    assert!(matches!(
        err,
        ConfigError::PolicyNeedsGroup {
            policy: AckPolicy::NackOnError,
            ..
        }
    ));
}

#[test]
fn ack_first_without_group_is_allowed() {
    let broker = MemoryBroker::new();
    broker.subscriber("t").try_handle(noop).unwrap();
    broker
        .subscriber("t")
        .auto_commit(true)
        .try_handle(noop)
        .unwrap();
}

#[test]
fn auto_commit_combined_with_ack_policy_is_refused() {
    let broker = MemoryBroker::new();
    let err = broker
        .subscriber("t")
        .group_id("g")
        .auto_commit(false)
        .ack_policy(AckPolicy::Ack)
        .try_handle(noop)
        .unwrap_err();
    assert!(
        matches!(err, ConfigError::ConflictingPolicy { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("auto_commit") && err.to_string().contains("ack_policy"));
}

#[test]
fn no_ack_combined_with_auto_commit_is_refused() {
    let broker = MemoryBroker::new();
    let err = broker
        .subscriber("t")
        .group_id("g")
        .no_ack(true)
        .auto_commit(true)
        .try_handle(noop)
        .unwrap_err();
    assert!(
        matches!(err, ConfigError::ConflictingPolicy { .. }),
        "{err}"
    );
}

fn policy_of(b: ackstream::SubscriberBuilder<ackstream::memory::MemoryBackend>) -> AckPolicy {
    let config = b.build_config().unwrap();
    config.ack_policy
}

#[test]
fn faststream_spellings_choose_the_policy() {
    let broker = MemoryBroker::new();
    let sub = || broker.subscriber("t").group_id("g");
    assert_eq!(policy_of(sub()), AckPolicy::AckFirst);
    assert_eq!(policy_of(sub().auto_commit(false)), AckPolicy::NackOnError);
    assert_eq!(policy_of(sub().auto_commit(true)), AckPolicy::AckFirst);
    assert_eq!(policy_of(sub().no_ack(true)), AckPolicy::Manual);
    assert_eq!(policy_of(sub().no_ack(false)), AckPolicy::AckFirst);
    assert_eq!(
        policy_of(sub().ack_policy(AckPolicy::RejectOnError)),
        AckPolicy::RejectOnError
    );
}

#[test]
fn broker_default_policy_applies_unless_the_subscriber_overrides_it() {
    let broker = MemoryBroker::new().with_default_ack_policy(AckPolicy::NackOnError);
    assert_eq!(
        policy_of(broker.subscriber("t").group_id("g")),
        AckPolicy::NackOnError
    );
    assert_eq!(
        policy_of(
            broker
                .subscriber("t")
                .group_id("g")
                .ack_policy(AckPolicy::Ack)
        ),
        AckPolicy::Ack
    );
    // the default needs a group too
    let err = broker.subscriber("t").try_handle(noop).unwrap_err();
    assert!(matches!(err, ConfigError::PolicyNeedsGroup { .. }));
}

#[test]
fn invalid_values_are_refused() {
    let broker = MemoryBroker::new();
    let cases = [
        broker.subscriber("t").group_id("g").max_attempts(0),
        broker.subscriber("t").group_id("g").max_decode_attempts(0),
        broker.subscriber("t").group_id("g").max_workers(0),
        broker.subscriber("t").group_id("g").dead_letter_topic(""),
        broker.subscriber("t").group_id("g").dead_letter_topic("t"),
        broker.subscriber("t").group_id(""),
        broker.subscriber("").group_id("g"),
        broker
            .subscriber("t")
            .group_id("g")
            .ack_policy(AckPolicy::Ack)
            .manual_cumulative(true),
    ];
    for case in cases {
        let err = case.try_handle(noop).unwrap_err();
        assert!(matches!(err, ConfigError::InvalidSetting { .. }), "{err}");
    }
    let err = broker
        .subscriber_to(Vec::<String>::new())
        .try_handle(noop)
        .unwrap_err();
    assert_eq!(err, ConfigError::NoTopics);
}

#[test]
#[should_panic(expected = "needs a consumer group")]
fn handle_panics_with_the_configuration_error() {
    MemoryBroker::new()
        .subscriber("t")
        .auto_commit(false)
        .handle(noop);
}

#[test]
fn policy_names_round_trip() {
    for p in AckPolicy::ALL {
        assert_eq!(p.name().parse::<AckPolicy>().unwrap(), p);
    }
    assert!("sometimes".parse::<AckPolicy>().is_err());
}

#[test]
fn ordering_names_round_trip() {
    for o in KeepOrder::ALL {
        assert_eq!(o.name().parse::<KeepOrder>().unwrap(), o);
    }
    assert!("random".parse::<KeepOrder>().is_err());
}

#[test]
fn concurrency_is_another_name_for_max_workers() {
    let broker = MemoryBroker::new();
    let config = broker
        .subscriber("t")
        .group_id("g")
        .concurrency(16)
        .ordering(KeepOrder::Key)
        .build_config()
        .unwrap();
    assert_eq!(
        (config.max_workers, config.ordering),
        (Some(16), KeepOrder::Key)
    );
    let defaults = broker.subscriber("t").build_config().unwrap();
    assert_eq!(
        (defaults.max_workers, defaults.ordering),
        (None, KeepOrder::Partition)
    );
}

#[test]
fn group_timeouts_become_backend_settings() {
    let config = MemoryBroker::new()
        .subscriber("t")
        .group_id("g")
        .session_timeout(std::time::Duration::from_secs(2))
        .heartbeat_interval(std::time::Duration::from_millis(500))
        .config("fetch.min.bytes", "1")
        .build_config()
        .unwrap();
    assert_eq!(config.setting("session.timeout.ms"), Some("2000"));
    assert_eq!(config.setting("heartbeat.interval.ms"), Some("500"));
    assert_eq!(config.setting("fetch.min.bytes"), Some("1"));
}
