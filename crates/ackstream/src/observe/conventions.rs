//! Every name ackstream reports under, in one table: metric names and label names follow
//! OpenTelemetry's semantic conventions for messaging (Kafka), written the Prometheus way
//! (dots become underscores, counters end in `_total`); what the conventions do not cover is
//! ackstream's own, under one prefix. A newer conventions version is a change here only.

/// `messaging.system`: always `kafka`.
pub const SYSTEM: &str = "messaging_system";
/// `messaging.destination.name`: the topic.
pub const TOPIC: &str = "messaging_destination_name";
/// `messaging.destination.partition.id`: the partition.
pub const PARTITION: &str = "messaging_destination_partition_id";
/// `messaging.consumer.group.name`: the consumer group (empty without one).
pub const GROUP: &str = "messaging_consumer_group_name";
/// What a settle did, or which kind of thing happened (ackstream's own label).
pub const OUTCOME: &str = "outcome";

/// The value of [`SYSTEM`].
pub const KAFKA: &str = "kafka";

/// The prefix of ackstream's own metric names.
pub const PREFIX: &str = "ackstream_";

/// One metric: its name, its type, and what it means (the README's table is made from these).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metric {
    /// The Prometheus name.
    pub name: &'static str,
    /// `counter`, `gauge` or `histogram`.
    pub kind: &'static str,
    /// The labels it carries besides the partition's (`outcome`, or none).
    pub extra_label: Option<&'static str>,
    /// What it counts or shows.
    pub help: &'static str,
}

const fn counter(
    name: &'static str,
    extra_label: Option<&'static str>,
    help: &'static str,
) -> Metric {
    Metric {
        name,
        kind: "counter",
        extra_label,
        help,
    }
}

const fn gauge(name: &'static str, help: &'static str) -> Metric {
    Metric {
        name,
        kind: "gauge",
        extra_label: None,
        help,
    }
}

/// Records delivered to handlers (every attempt).
pub const CONSUMED: Metric = counter(
    "messaging_client_consumed_messages_total",
    None,
    "Records delivered to the subscriber's handler (every attempt).",
);
/// Handler durations, sampled.
pub const PROCESS_DURATION: Metric = Metric {
    name: "messaging_process_duration_seconds",
    kind: "histogram",
    extra_label: None,
    help: "Handler durations (with the settle), sampled: one delivery in 8, by offset, is timed.",
};
/// Settles applied, by outcome.
pub const SETTLES: Metric = counter(
    "ackstream_settles_total",
    Some(OUTCOME),
    "Settles applied, by outcome: ack, nack, reject.",
);
/// Deliveries after the first attempt.
pub const REDELIVERIES: Metric = counter(
    "ackstream_redeliveries_total",
    None,
    "Deliveries after a record's first attempt.",
);
/// Records dead-lettered.
pub const DEAD_LETTERED: Metric = counter(
    "ackstream_dead_lettered_total",
    None,
    "Records published to the dead-letter topic (confirmed) and rejected.",
);
/// Handler failures, by kind.
pub const FAILURES: Metric = counter(
    "ackstream_handler_failures_total",
    Some(OUTCOME),
    "Handler failures, by kind: error, panic.",
);
/// Records that could not be decoded.
pub const DECODE_FAILURES: Metric = counter(
    "ackstream_decode_failures_total",
    None,
    "Records whose payload or metadata could not be extracted (the handler was not called).",
);
/// Whether the partition is assigned.
pub const ASSIGNED: Metric = gauge(
    "ackstream_partition_assigned",
    "1 while the partition is assigned to the subscriber, 0 after it moved away.",
);
/// The committable offset.
pub const COMMITTABLE: Metric = gauge(
    "ackstream_partition_committable_offset",
    "The offset the partition's commits have reached: every delivered record below it is finished.",
);
/// The offset the broker confirmed.
pub const COMMITTED: Metric = gauge(
    "ackstream_partition_committed_offset",
    "The offset the broker last confirmed as committed (where the backend tracks it).",
);
/// The first unfinished record.
pub const FIRST_UNFINISHED: Metric = gauge(
    "ackstream_partition_first_unfinished_offset",
    "The offset of the record the partition's commit waits for (-1: none).",
);
/// How long the commit has been held back.
pub const HELD_BACK: Metric = gauge(
    "ackstream_partition_held_back_seconds",
    "How long the oldest unfinished record has held the partition's commit back.",
);
/// Unfinished records.
pub const IN_FLIGHT: Metric = gauge(
    "ackstream_partition_unfinished_records",
    "Delivered records not finished yet: running, waiting for a redelivery, unsettled.",
);
/// Consumer lag.
pub const LAG: Metric = gauge(
    "ackstream_consumer_lag",
    "Records behind the high watermark: high watermark minus the committable offset.",
);
/// Rebalances, by kind.
pub const REBALANCES: Metric = counter(
    "ackstream_rebalances_total",
    Some(OUTCOME),
    "Partitions assigned, revoked and lost, per subscriber.",
);
/// Commits answered, by outcome.
pub const COMMITS: Metric = counter(
    "ackstream_commits_total",
    Some(OUTCOME),
    "Commits the broker answered, by outcome: confirmed, failed (Kafka; per subscriber run).",
);
/// Publishes answered, by outcome.
pub const SENT: Metric = counter(
    "messaging_client_sent_messages_total",
    Some(OUTCOME),
    "Records published (publishers, return values, replies, dead letters), by outcome: confirmed, failed.",
);
/// How long publishes took.
pub const SEND_DURATION: Metric = Metric {
    name: "messaging_client_operation_duration_seconds",
    kind: "histogram",
    extra_label: None,
    help: "How long each publish took until the broker's answer (messaging_operation_name=\"send\").",
};
/// Whether the subscriber runs.
pub const UP: Metric = gauge(
    "ackstream_subscriber_up",
    "1 while the subscriber consumes (or waits for an assignment), 0 otherwise.",
);

/// Every metric, in the order the README lists them.
pub const METRICS: &[Metric] = &[
    CONSUMED,
    PROCESS_DURATION,
    SETTLES,
    REDELIVERIES,
    DEAD_LETTERED,
    FAILURES,
    DECODE_FAILURES,
    ASSIGNED,
    COMMITTABLE,
    COMMITTED,
    FIRST_UNFINISHED,
    HELD_BACK,
    IN_FLIGHT,
    LAG,
    REBALANCES,
    COMMITS,
    UP,
    SENT,
    SEND_DURATION,
];
