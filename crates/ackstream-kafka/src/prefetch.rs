//! The librdkafka fetch settings ackstream chooses differently, and why.
//!
//! Mostly prefetch bounds (below); also how long a fetch may wait, which decides how soon a
//! nacked partition is read again.
//!
//! ackstream reads each assigned partition from its own queue (so one slow partition cannot
//! stall the others). librdkafka applies its prefetch limits to each *queue*: with the high-level
//! consumer's single queue they bound the whole consumer, with one queue per partition they bound
//! every partition. Left at librdkafka's defaults (100,000 records or 64 MB per queue), a
//! consumer of a backlog with a slow handler would hold that much for *each* partition, and its
//! memory would grow with the partition count and the backlog. These defaults keep the prefetch
//! at a few seconds of a slow handler's work per partition. A setting given with `.config(..)`,
//! on the broker or the subscriber, always wins.

/// `(key, value, why)` for every setting ackstream changes from librdkafka's default.
pub(crate) const DEFAULTS: &[(&str, &str, &str)] = &[
    (
        "queued.min.messages",
        "10000",
        "records prefetched per partition before fetching it pauses (librdkafka: 100000)",
    ),
    (
        "queued.max.messages.kbytes",
        "16384",
        "kilobytes prefetched per partition before fetching it pauses (librdkafka: 65536)",
    ),
    (
        "fetch.max.bytes",
        "1048576",
        "bytes per fetch response; a response lands in one partition queue at once, \
         whatever the queue limits (librdkafka: 52428800)",
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
        "how long a partition whose queue is full waits before fetching is reconsidered; with \
         librdkafka's 1000 a fast handler would drain the smaller queues and then idle",
    ),
];

/// The default settings none of `given` names, to be applied before them.
pub(crate) fn defaults_unless_given<'a>(
    given: impl Iterator<Item = &'a str> + Clone,
) -> impl Iterator<Item = (String, String)> {
    DEFAULTS
        .iter()
        .filter(move |(key, _, _)| !given.clone().any(|g| g == *key))
        .map(|(key, value, _)| ((*key).to_owned(), (*value).to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setting_the_user_gives_replaces_the_default() {
        let given = ["queued.min.messages", "client.id"];
        let applied: Vec<_> = defaults_unless_given(given.iter().copied()).collect();
        assert!(applied.iter().all(|(k, _)| k != "queued.min.messages"));
        assert_eq!(applied.len(), DEFAULTS.len() - 1);
    }

    #[test]
    fn every_default_is_a_valid_librdkafka_setting() {
        let mut config = rdkafka::ClientConfig::new();
        config.set("group.id", "g");
        for (k, v) in defaults_unless_given(std::iter::empty()) {
            config.set(k, v);
        }
        let consumer: Result<rdkafka::consumer::BaseConsumer, _> = config.create();
        assert!(consumer.is_ok(), "{:?}", consumer.err());
    }
}
