//! Counting what a run consumed: per partition, records finished (handled, or failed to decode
//! on their last delivery) against what the partition holds ([`Contents`]), and the quiet
//! timeout that ends a run which stopped making progress.

use std::time::{Duration, Instant};

use crate::contents::Contents;

/// Per partition (index = partition id): records finished, and of those, how many failed to
/// decode.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Records handled or failed, per partition.
    pub(crate) finished: Vec<u64>,
    /// Records that did not decode (included in `finished`), per partition.
    pub(crate) failed: Vec<u64>,
}

impl Counts {
    /// Records finished over every partition.
    pub(crate) fn total(&self) -> u64 {
        self.finished.iter().sum()
    }

    /// Records that did not decode, over every partition.
    pub(crate) fn failed_total(&self) -> u64 {
        self.failed.iter().sum()
    }
}

/// Plain counters for one thread (the raw loop): what finished, and how many partitions still
/// have records to go.
#[derive(Debug)]
pub(crate) struct Tally {
    expected: Vec<u64>,
    counts: Counts,
    /// Per partition, the offset after the last record delivered (`i64::MIN` before the first).
    next: Vec<i64>,
    remaining: usize,
}

impl Tally {
    /// A tally expecting `expected[p]` records of partition `p`.
    pub(crate) fn new(expected: Vec<u64>) -> Self {
        let remaining = expected.iter().filter(|&&n| n > 0).count();
        Self {
            counts: Counts {
                finished: vec![0; expected.len()],
                failed: vec![0; expected.len()],
            },
            next: vec![i64::MIN; expected.len()],
            expected,
            remaining,
        }
    }

    /// Whether the record at `offset` of `partition` is delivered for the first time. A
    /// partition's records arrive in offset order, so one at or before the last delivered is a
    /// delivery again: librdkafka makes them on tansu (see `contents.rs`), and the framework's
    /// offset tracker refuses them, so the raw loop skips them too.
    pub(crate) fn first_delivery(&mut self, partition: i32, offset: i64) -> bool {
        let Some(next) = usize::try_from(partition)
            .ok()
            .and_then(|p| self.next.get_mut(p))
        else {
            return true;
        };
        if offset < *next {
            return false;
        }
        *next = offset + 1;
        true
    }

    /// One record of `partition` finished (`failed`: it did not decode). Records beyond a
    /// partition's count and of partitions not expected finish nothing.
    pub(crate) fn finish(&mut self, partition: i32, failed: bool) {
        if let Some(p) = usize::try_from(partition)
            .ok()
            .filter(|&p| p < self.expected.len())
        {
            self.counts.finished[p] += 1;
            if failed {
                self.counts.failed[p] += 1;
            }
            if self.counts.finished[p] == self.expected[p] {
                self.remaining -= 1;
            }
        }
    }

    /// Whether every partition has finished its records.
    pub(crate) fn is_done(&self) -> bool {
        self.remaining == 0
    }

    /// What finished so far.
    pub(crate) fn counts(&self) -> &Counts {
        &self.counts
    }
}

/// Notices when a run stops making progress: no change of a progress figure for `limit`.
#[derive(Debug)]
pub(crate) struct Quiet {
    limit: Duration,
    progress: u64,
    since: Instant,
}

impl Quiet {
    /// Starts watching at `now`, with progress 0.
    pub(crate) fn new(limit: Duration, now: Instant) -> Self {
        Self {
            limit,
            progress: 0,
            since: now,
        }
    }

    /// The progress figure is `progress` at `now`: whether it has not moved for `limit`.
    pub(crate) fn stalled(&mut self, progress: u64, now: Instant) -> bool {
        if progress != self.progress {
            self.progress = progress;
            self.since = now;
            return false;
        }
        now.saturating_duration_since(self.since) >= self.limit
    }
}

/// The error of a run that made no progress for `limit`: what it counted against what the
/// topic holds, per partition.
pub(crate) fn quiet_error(limit: Duration, contents: &Contents, counts: &Counts) -> String {
    format!(
        "no progress for {} s (--quiet-timeout-s): {}",
        limit.as_secs(),
        contents.shortfall(counts)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contents::PartitionEnd;

    #[test]
    fn a_tally_is_done_when_every_partition_reached_its_records() {
        let mut tally = Tally::new(vec![2, 1]);
        tally.finish(0, false);
        tally.finish(1, true);
        assert!(!tally.is_done());
        tally.finish(0, false);
        assert!(tally.is_done());
        assert_eq!(
            tally.counts(),
            &Counts {
                finished: vec![2, 1],
                failed: vec![0, 1],
            }
        );
    }

    #[test]
    fn a_tally_does_not_wait_for_empty_partitions() {
        // Keyed records can leave a partition empty.
        let mut tally = Tally::new(vec![0, 1, 0]);
        assert!(!tally.is_done());
        tally.finish(1, false);
        assert!(tally.is_done());
    }

    #[test]
    fn records_beyond_a_partitions_count_and_of_unknown_partitions_finish_nothing() {
        let mut tally = Tally::new(vec![1, 2]);
        tally.finish(0, false);
        tally.finish(0, false); // one more than partition 0 holds
        tally.finish(5, false);
        tally.finish(-1, false);
        tally.finish(1, false);
        assert!(!tally.is_done());
        tally.finish(1, false);
        assert!(tally.is_done());
        assert_eq!(tally.counts().total(), 4);
    }

    #[test]
    fn a_record_delivered_again_is_not_a_first_delivery() {
        let mut tally = Tally::new(vec![3, 1]);
        assert!(tally.first_delivery(0, 5));
        assert!(tally.first_delivery(0, 7));
        assert!(!tally.first_delivery(0, 7));
        assert!(!tally.first_delivery(0, 5));
        assert!(tally.first_delivery(1, 0), "partitions are apart");
        assert!(tally.first_delivery(0, 8));
        assert!(
            tally.first_delivery(9, 0),
            "an unknown partition is not checked"
        );
    }

    #[test]
    fn decode_failures_count_as_finished() {
        let mut tally = Tally::new(vec![2]);
        tally.finish(0, true);
        tally.finish(0, true);
        assert!(tally.is_done());
        assert_eq!(tally.counts().failed_total(), 2);
    }

    #[test]
    fn quiet_is_stalled_only_after_the_limit_without_progress() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut quiet = Quiet::new(Duration::from_secs(30), t0);
        assert!(!quiet.stalled(0, t0 + 29 * s));
        assert!(quiet.stalled(0, t0 + 30 * s));
    }

    #[test]
    fn progress_restarts_the_quiet_timeout() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut quiet = Quiet::new(Duration::from_secs(30), t0);
        assert!(!quiet.stalled(5, t0 + 20 * s));
        assert!(!quiet.stalled(5, t0 + 49 * s));
        assert!(quiet.stalled(5, t0 + 50 * s));
    }

    #[test]
    fn the_quiet_error_names_what_was_counted_against_what_was_expected() {
        let contents = Contents::new(vec![
            PartitionEnd { records: 2, end: 2 },
            PartitionEnd { records: 3, end: 3 },
        ]);
        let counts = Counts {
            finished: vec![2, 0],
            failed: vec![0, 0],
        };
        assert_eq!(
            quiet_error(Duration::from_secs(30), &contents, &counts),
            "no progress for 30 s (--quiet-timeout-s): counted 2 of 5 records: p0=2/2 p1=0/3"
        );
    }
}
