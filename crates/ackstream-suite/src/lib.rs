//! The behaviour suite: every acknowledgement rule of `docs/acknowledgement.md`, written once against a
//! [`Fixture`], run against every broker (the in-memory broker here, Kafka in `ackstream-kafka`).
//!
//! A broker's test file is one line:
//! ```text
//! ackstream_suite::behaviour_suite!(ackstream_suite::MemoryFixture::new());
//! ```
//! which expands to one `#[tokio::test]` per scenario: a module per ack policy with one test per
//! handler behaviour (checked against [`policies::expected`]), plus the group, rebalance and
//! shutdown scenarios of [`scenarios`], and the concurrency scenarios and commit-rule property
//! test of [`concurrency`]. Tests synchronise on runtime events ([`Recorder`]),
//! never on sleeps, and use unique topic and group names so they can run in parallel.

pub mod concurrency;
pub mod explorer;
mod fixture;
pub mod policies;
pub mod races;
pub mod read_ahead;
pub mod scenarios;

// The scenario areas at the root too, where the suite's macros name them.
pub use scenarios::{batches, dead_letters, delivery, groups, outputs, redelivery, shutdown};

pub use ackstream::testing::{EVENT_TIMEOUT, Recorder};
pub use fixture::{Fixture, MemoryFixture, unique};

/// Expands to the whole suite for one fixture expression (evaluated once per test). Attributes
/// after it (`behaviour_suite!(fixture, #[ignore = "needs a broker"])`) go on every test.
#[macro_export]
macro_rules! behaviour_suite {
    ($fixture:expr $(, #[$attr:meta])* $(,)?) => {
        $crate::__policy_tests!([$(#[$attr])*] $fixture, ack_first, AckFirst);
        $crate::__policy_tests!([$(#[$attr])*] $fixture, ack, Ack);
        $crate::__policy_tests!([$(#[$attr])*] $fixture, reject_on_error, RejectOnError);
        $crate::__policy_tests!([$(#[$attr])*] $fixture, nack_on_error, NackOnError);
        $crate::__policy_tests!([$(#[$attr])*] $fixture, manual, Manual);
        $crate::__scenarios_delivery!([$(#[$attr])*] $fixture);
        $crate::__scenarios_groups!([$(#[$attr])*] $fixture);
        $crate::__scenarios_shutdown!([$(#[$attr])*] $fixture);
        $crate::__scenarios_redelivery!([$(#[$attr])*] $fixture);
        $crate::__scenarios_dead_letters!([$(#[$attr])*] $fixture);
        $crate::__scenarios_outputs!([$(#[$attr])*] $fixture);
        $crate::__scenarios_batches!([$(#[$attr])*] $fixture);
        $crate::__scenarios_concurrency!([$(#[$attr])*] $fixture);
        $crate::__scenarios_races!([$(#[$attr])*] $fixture);
        $crate::__scenarios_read_ahead!([$(#[$attr])*] $fixture);
    };
}
/// One test per scenario `$name` of the suite's module `$module`.
#[doc(hidden)]
#[macro_export]
macro_rules! __module_tests {
    ($attrs:tt $fixture:expr, $module:ident, $($name:ident),* $(,)?) => {
        $(
            $crate::__with_attrs!($attrs
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::$module::$name(&$fixture).await;
                }
            );
        )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __with_attrs {
    ([$(#[$attr:meta])*] $item:item) => {
        $(#[$attr])*
        $item
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __policy_tests {
    ($attrs:tt $fixture:expr, $module:ident, $policy:ident) => {
        mod $module {
            use super::*;
            $crate::__policy_case!($attrs $fixture, $policy,
                handler_returns_ok => ReturnsOk,
                handler_returns_err => ReturnsErr,
                handler_panics => Panics,
                ack_interrupt_two_calls_deep => InterruptAck,
                nack_interrupt_two_calls_deep => InterruptNack,
                reject_interrupt_two_calls_deep => InterruptReject,
                manual_ack_then_ok => AckThenOk,
                manual_ack_then_err => AckThenErr,
                manual_nack_then_ok => NackThenOk,
                manual_nack_then_err => NackThenErr,
                manual_reject_then_ok => RejectThenOk,
                payload_does_not_decode => DecodeFailure,
            );
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __policy_case {
    ($attrs:tt $fixture:expr, $policy:ident, $($name:ident => $behaviour:ident),* $(,)?) => {
        $(
            $crate::__with_attrs!($attrs
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::policies::run(
                        &$fixture,
                        ::ackstream::AckPolicy::$policy,
                        $crate::policies::Behaviour::$behaviour,
                    )
                    .await;
                }
            );
        )*
    };
}

#[cfg(test)]
mod tests {
    /// Every scenario file, with its source: what `every_scenario_is_listed` reads.
    const AREAS: &[(&str, &str)] = &[
        ("delivery", include_str!("scenarios/delivery.rs")),
        ("groups", include_str!("scenarios/groups.rs")),
        ("shutdown", include_str!("scenarios/shutdown.rs")),
        ("redelivery", include_str!("scenarios/redelivery.rs")),
        ("dead_letters", include_str!("scenarios/dead_letters.rs")),
        ("outputs", include_str!("scenarios/outputs.rs")),
        ("batches", include_str!("scenarios/batches.rs")),
        ("concurrency", include_str!("concurrency.rs")),
        ("races", include_str!("races.rs")),
        ("read_ahead", include_str!("read_ahead.rs")),
    ];

    /// The scenarios a file defines: its `pub async fn name<F: Fixture>`s.
    fn defined(source: &str) -> Vec<&str> {
        source
            .lines()
            .filter_map(|l| l.strip_prefix("pub async fn "))
            .filter_map(|rest| {
                let name = rest.split(['<', '(']).next()?;
                rest[name.len()..]
                    .starts_with("<F: Fixture>")
                    .then_some(name)
            })
            .collect()
    }

    /// The scenarios a file's list macro names: the words between `$fixture, <area>,` and `)`.
    fn listed<'a>(area: &str, source: &'a str) -> Vec<&'a str> {
        let head = format!("$fixture, {area},");
        let start = source.find(&head).expect("the area's list macro") + head.len();
        let end = start + source[start..].find(')').expect("the end of the list");
        source[start..end]
            .split(',')
            .map(str::trim)
            .filter(|w| !w.is_empty())
            .collect()
    }

    #[test]
    fn every_scenario_is_listed() {
        for (area, source) in AREAS {
            let defined = defined(source);
            assert!(!defined.is_empty(), "{area}: no scenario found");
            assert!(
                include_str!("lib.rs").contains(&format!("$crate::__scenarios_{area}!(")),
                "{area}: its list is not expanded by behaviour_suite!, so none of it runs"
            );
            let listed = listed(area, source);
            for name in &defined {
                assert!(
                    listed.contains(name),
                    "{area}: scenario {name} is not in __scenarios_{area}!, so it never runs"
                );
            }
        }
    }
}
