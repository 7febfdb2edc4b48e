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
        $crate::__module_tests!([$(#[$attr])*] $fixture, scenarios,
            ack_first_acks_before_the_handler_runs,
            key_headers_and_position_reach_the_handler,
            a_backlog_beyond_the_buffer_bound_is_handled_once_in_order,
            nack_on_error_commits_after_success_and_redelivers_after_error,
            manual_unsettled_record_holds_back_the_commit,
            nack_redelivers_to_another_group_member,
            members_of_one_group_split_the_partitions,
            cooperative_rebalance_hands_over_without_loss_or_repeats,
            revoke_during_in_flight_processing_commits_exactly_the_finished_prefix,
            every_group_sees_every_record,
            restart_resumes_from_the_committed_offset,
            latest_offset_reset_skips_earlier_records,
            shutdown_drains_in_flight_handlers_and_commits,
            handler_cancelled_at_drain_deadline_is_not_committed,
            settle_after_revoke_changes_nothing,
            nack_after_delay_redelivers_later,
            a_nack_delay_holds_back_only_its_partition,
            max_attempts_turns_nack_into_reject,
            attempts_survive_a_move_to_another_member,
            a_poison_record_moves_to_the_dead_letter_topic,
            a_failing_dead_letter_publish_leaves_the_record_uncommitted,
        );
        $crate::__module_tests!([$(#[$attr])*] $fixture, concurrency,
            a_slow_partition_does_not_stall_the_others,
            unordered_runs_up_to_max_workers_at_once,
            max_workers_bounds_the_subscriber_across_partitions,
            key_ordering_never_overlaps_a_key_and_keeps_its_order,
            nack_under_concurrency_redelivers_only_the_nacked_record,
            under_key_ordering_a_nack_delay_holds_back_only_its_key,
            under_key_ordering_a_waiting_key_stops_no_other_key_however_many_partitions,
            commit_rule_holds_under_random_concurrency_nacks_and_rebalances,
        );
        $crate::__module_tests!([$(#[$attr])*] $fixture, races,
            a_nack_from_another_task_keeps_the_commit_behind_the_record,
            under_partition_ordering_a_lane_waits_for_its_nacked_record,
            under_key_ordering_a_lane_waits_for_its_nacked_record,
            two_nacks_pending_at_once_keep_their_own_delays,
            a_revoke_during_a_key_delay_starts_nothing_of_that_key,
            a_record_that_always_fails_backs_off_and_other_keys_flow,
            one_at_a_time_a_retry_waits_behind_an_earlier_retry_nacked_again,
            a_nack_without_delay_lets_other_tasks_run,
            a_nack_delay_too_large_for_the_clock_is_capped,
        );
        $crate::__module_tests!([$(#[$attr])*] $fixture, read_ahead,
            under_a_tiny_read_ahead_budget_every_record_is_handled_once_in_order,
        );
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
