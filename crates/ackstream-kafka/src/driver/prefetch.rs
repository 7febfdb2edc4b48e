//! The librdkafka fetch settings ackstream chooses differently, and why.
//!
//! ackstream reads every partition from the consumer's one queue, so librdkafka's prefetch
//! limits (`queued.min.messages`, `queued.max.messages.kbytes`) bound the whole consumer, not
//! each partition. They are derived from the subscriber's
//! [`BufferBudget`](ackstream_core::BufferBudget): librdkafka's queue gets a quarter of it
//! ([`LIBRDKAFKA_PART`]), ackstream's inboxes the rest (see [`budget`](crate::driver::budget)). The
//! poll thread empties librdkafka's queue as it fills, so most of what is read ahead waits in
//! the inboxes, where each partition's part is kept. The other settings decide how big a fetch
//! is and how long it may wait. A setting given with `.config(..)`, on the broker or the
//! subscriber, always wins.

use ackstream_core::BufferBudget;

/// librdkafka's queue holds at most this part (1 in N) of the budget; one fetch response
/// (`fetch.max.bytes`) may land on top of it.
pub(crate) const LIBRDKAFKA_PART: usize = 4;

/// `(key, value, why)` for every setting ackstream changes from librdkafka's default.
pub(crate) const DEFAULTS: &[(&str, &str, &str)] = &[
    (
        "fetch.max.bytes",
        "1048576",
        "bytes per fetch response; a response lands in the queue at once, whatever its \
         limits, and tansu fills it from one partition (librdkafka: 52428800)",
    ),
    (
        "fetch.wait.max.ms",
        "100",
        "how long the broker may hold a fetch with nothing new; librdkafka keeps one fetch in \
         flight per broker, so a partition rewound by a nack (a seek) is fetched again only \
         after it returns (librdkafka: 500)",
    ),
    (
        "fetch.queue.backoff.ms",
        "10",
        "how long a full queue waits before fetching is reconsidered; with librdkafka's 1000 \
         a fast handler would drain the queue and then idle",
    ),
];

/// librdkafka's queue limits for `budget`: its part of it.
pub(crate) fn queue_limits(budget: BufferBudget) -> [(&'static str, String); 2] {
    [
        (
            "queued.min.messages",
            (budget.records() / LIBRDKAFKA_PART).max(1).to_string(),
        ),
        (
            "queued.max.messages.kbytes",
            (budget.bytes() / LIBRDKAFKA_PART / 1024).max(1).to_string(),
        ),
    ]
}

/// What is left of `budget` for ackstream's inboxes.
pub(crate) fn inbox_part(budget: BufferBudget) -> BufferBudget {
    let keep = |n: usize| n - n / LIBRDKAFKA_PART;
    BufferBudget::new(keep(budget.bytes()), keep(budget.records()))
}

/// The default settings none of `given` names, to be applied before them: the fixed ones
/// and `budget`'s queue limits.
pub(crate) fn defaults_unless_given<'a>(
    given: impl Iterator<Item = &'a str> + Clone,
    budget: BufferBudget,
) -> impl Iterator<Item = (String, String)> {
    let fixed = DEFAULTS
        .iter()
        .map(|(key, value, _)| (*key, (*value).to_owned()));
    fixed
        .chain(queue_limits(budget))
        .filter(move |(key, _)| !given.clone().any(|g| g == *key))
        .map(|(key, value)| (key.to_owned(), value))
        .collect::<Vec<_>>()
        .into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setting_the_user_gives_replaces_the_default() {
        let given = ["queued.min.messages", "client.id"];
        let applied: Vec<_> =
            defaults_unless_given(given.iter().copied(), BufferBudget::default()).collect();
        assert!(applied.iter().all(|(k, _)| k != "queued.min.messages"));
        assert_eq!(applied.len(), DEFAULTS.len() + 1);
    }

    #[test]
    fn librdkafka_gets_a_quarter_of_the_budget_and_the_inboxes_the_rest() {
        let budget = BufferBudget::new(64 * 1024 * 1024, 100_000);
        let limits = queue_limits(budget);
        assert_eq!(limits[0], ("queued.min.messages", "25000".to_owned()));
        assert_eq!(
            limits[1],
            ("queued.max.messages.kbytes", "16384".to_owned())
        );
        let rest = inbox_part(budget);
        assert_eq!((rest.bytes(), rest.records()), (48 * 1024 * 1024, 75_000));
    }

    #[test]
    fn every_default_is_a_valid_librdkafka_setting() {
        let mut config = rdkafka::ClientConfig::new();
        config.set("group.id", "g");
        for (k, v) in defaults_unless_given(std::iter::empty(), BufferBudget::new(1, 1)) {
            config.set(k, v);
        }
        let consumer: Result<rdkafka::consumer::BaseConsumer, _> = config.create();
        assert!(consumer.is_ok(), "{:?}", consumer.err());
    }
}
