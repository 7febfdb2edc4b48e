//! One consumer's read-ahead budget, and the rule that shares it among its partitions.
//!
//! Every record the poll thread pops from librdkafka is held by ackstream (in its partition's
//! inbox, then in its feed) until the partition's task takes it. What all partitions hold
//! together stays within the subscriber's [`BufferBudget`] (the part of it not left to
//! librdkafka's own queue: see [`prefetch`](crate::driver::prefetch)):
//!
//! - each of the `n` assigned partitions is *guaranteed* a share: half the budget, divided by
//!   `n`;
//! - beyond its share a partition may *borrow*, while everything held stays under the budget
//!   less the other partitions' shares (all of it with one partition, half of it with many),
//!   up to a part of that for each partition (all of it with one partition, a quarter with
//!   four or more), so a slow partition cannot take all that is lent and leave the fast ones
//!   only their shares;
//! - a partition always takes a record when it holds none, so a record larger than a share
//!   still goes through.
//!
//! So a fast consumer rarely meets the limit (it borrows freely, and nothing is fetched twice),
//! a slow partition can hold a lot but never the others' shares (no
//! head-of-line blocking), and the total is never more than the budget, whatever the number of
//! partitions. A record a partition may not take is given back to librdkafka: the poll thread
//! pauses the partition and seeks it back to that record, and resumes it once it has drained
//! to half of what it may hold ([`Budget::resumable`]).

use std::sync::atomic::{AtomicUsize, Ordering};

use ackstream_core::{BufferBudget, Record};

/// Into how many parts what may be lent is cut at most: one partition may borrow a quarter.
const MAX_BORROWERS: usize = 4;

/// Records and their bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Held {
    pub(crate) bytes: usize,
    pub(crate) records: usize,
}

impl Held {
    /// One record's size as the budget counts it: key, payload and headers.
    pub(crate) fn of(record: &Record) -> Self {
        let headers: usize = record
            .headers
            .iter()
            .map(|h| h.key.len() + h.value.as_ref().map_or(0, |v| v.len()))
            .sum();
        Self {
            bytes: record.payload.len() + record.key.as_ref().map_or(0, |k| k.len()) + headers,
            records: 1,
        }
    }

    fn plus(self, other: Held) -> Self {
        Self {
            bytes: self.bytes + other.bytes,
            records: self.records + other.records,
        }
    }

    fn within(self, limit: Held) -> bool {
        self.bytes <= limit.bytes && self.records <= limit.records
    }

    fn half(self) -> Self {
        Self {
            bytes: self.bytes / 2,
            records: self.records / 2,
        }
    }
}

/// What one consumer's partitions hold, against its limit.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: Held,
    bytes: AtomicUsize,
    records: AtomicUsize,
    /// Partitions assigned now: each one's share is a part of half the limit.
    assigned: AtomicUsize,
}

impl Budget {
    pub(crate) fn new(limit: BufferBudget) -> Self {
        Self {
            limit: Held {
                bytes: limit.bytes(),
                records: limit.records(),
            },
            bytes: AtomicUsize::new(0),
            records: AtomicUsize::new(0),
            assigned: AtomicUsize::new(0),
        }
    }

    /// What all partitions hold now.
    pub(crate) fn total(&self) -> Held {
        Held {
            bytes: self.bytes.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
        }
    }

    /// A partition's guaranteed part: half the limit, shared equally by the assigned ones.
    pub(crate) fn share(&self) -> Held {
        let n = self.assigned.load(Ordering::Relaxed).max(1);
        let half = self.limit.half();
        Held {
            bytes: half.bytes / n,
            records: (half.records / n).max(1),
        }
    }

    /// Up to where all partitions together may hold before a partition over its share is
    /// refused: the limit less the other partitions' shares, which stay theirs.
    fn lending(&self) -> Held {
        let others = self.assigned.load(Ordering::Relaxed).max(1) - 1;
        let share = self.share();
        Held {
            bytes: self.limit.bytes.saturating_sub(others * share.bytes),
            records: self.limit.records.saturating_sub(others * share.records),
        }
    }

    /// The most one partition may hold by borrowing: a part of what may be lent.
    fn borrowing(&self) -> Held {
        let parts = self
            .assigned
            .load(Ordering::Relaxed)
            .clamp(1, MAX_BORROWERS);
        let lending = self.lending();
        Held {
            bytes: lending.bytes / parts,
            records: lending.records / parts,
        }
    }

    /// How many of `records` (in order) a partition holding `held` may take now.
    pub(crate) fn admit(&self, held: Held, records: &[Record]) -> usize {
        let (share, lending, borrowing) = (self.share(), self.lending(), self.borrowing());
        let mut total = self.total();
        let mut held = held;
        for (i, record) in records.iter().enumerate() {
            let size = Held::of(record);
            let (next, next_total) = (held.plus(size), total.plus(size));
            let borrowed = next.within(borrowing) && next_total.within(lending);
            if held.records > 0 && !next.within(share) && !borrowed {
                return i;
            }
            held = next;
            total = next_total;
        }
        records.len()
    }

    /// Whether a partition paused at the limit, now holding `held`, has drained enough to be
    /// fetched again: to half its share, or while at most half of what may be lent is held.
    pub(crate) fn resumable(&self, held: Held) -> bool {
        held.within(self.share().half()) || self.total().within(self.lending().half())
    }

    pub(crate) fn hold(&self, held: Held) {
        self.bytes.fetch_add(held.bytes, Ordering::Relaxed);
        self.records.fetch_add(held.records, Ordering::Relaxed);
    }

    pub(crate) fn release(&self, held: Held) {
        self.bytes.fetch_sub(held.bytes, Ordering::Relaxed);
        self.records.fetch_sub(held.records, Ordering::Relaxed);
    }

    pub(crate) fn partition_assigned(&self) {
        self.assigned.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn partition_released(&self) {
        self.assigned.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(n: usize, size: usize) -> Vec<Record> {
        (0..n)
            .map(|i| Record {
                topic: "t".into(),
                partition: 0,
                offset: i as i64,
                key: None,
                headers: Default::default(),
                timestamp: None,
                payload: vec![0u8; size].into(),
            })
            .collect()
    }

    fn budget(bytes: usize, records: usize, partitions: usize) -> Budget {
        let b = Budget::new(BufferBudget::new(bytes, records));
        for _ in 0..partitions {
            b.partition_assigned();
        }
        b
    }

    #[test]
    fn one_partition_may_hold_the_whole_budget() {
        let b = budget(usize::MAX, 1_000, 1);
        assert_eq!(b.admit(Held::default(), &records(1_200, 1)), 1_000);
    }

    #[test]
    fn a_partition_borrows_beyond_its_share_but_never_the_others_shares() {
        // 2 partitions of a 1,000-record budget: shares of 250, so 750 may be lent, half of
        // it to each.
        let b = budget(usize::MAX, 1_000, 2);
        assert_eq!(b.admit(Held::default(), &records(1_000, 1)), 375);
        let hog = Held {
            bytes: 375,
            records: 375,
        };
        b.hold(hog);
        assert_eq!(b.admit(hog, &records(10, 1)), 0, "the hog takes no more");
        assert_eq!(b.admit(Held::default(), &records(1_000, 1)), 375);
    }

    #[test]
    fn a_slow_partition_borrows_at_most_a_quarter_of_what_is_lent() {
        // 8 partitions of a 1,000-record budget: shares of 62, 566 may be lent.
        let b = budget(usize::MAX, 1_000, 8);
        assert_eq!(b.admit(Held::default(), &records(1_000, 1)), 141);
    }

    #[test]
    fn the_total_stays_within_the_budget_whatever_the_partition_count() {
        for partitions in [1, 4, 64, 1024] {
            let b = budget(10_000_000, 100_000, partitions);
            let mut held = vec![Held::default(); partitions];
            // Every partition is offered far more than the budget, in rounds.
            for _ in 0..(400 / partitions).max(4) {
                for h in &mut held {
                    let offer = records(1_000, 100);
                    let n = b.admit(*h, &offer);
                    let taken = Held {
                        bytes: n * 100,
                        records: n,
                    };
                    b.hold(taken);
                    *h = h.plus(taken);
                }
            }
            let total = b.total();
            assert!(total.records <= 100_000, "{partitions}: {total:?}");
            assert!(total.bytes <= 10_000_000, "{partitions}: {total:?}");
            assert!(
                total.records >= 50_000,
                "{partitions}: the budget is used: {total:?}"
            );
        }
    }

    #[test]
    fn a_record_larger_than_a_share_goes_through_alone() {
        let b = budget(1_000, 1_000, 4);
        assert_eq!(b.admit(Held::default(), &records(3, 10_000)), 1);
    }

    #[test]
    fn a_paused_partition_resumes_once_drained_to_half_its_share() {
        let b = budget(usize::MAX, 1_000, 4);
        b.hold(Held {
            bytes: 0,
            records: 900,
        });
        let at = |records| Held { bytes: 0, records };
        assert!(!b.resumable(at(100)));
        assert!(b.resumable(at(62)));
        // With little held overall (at most half of the 625 that may be lent), a partition
        // resumes even above its share.
        b.release(Held {
            bytes: 0,
            records: 600,
        });
        assert!(b.resumable(at(200)));
    }

    #[test]
    fn shares_follow_the_assignment() {
        let b = budget(usize::MAX, 1_000, 2);
        assert_eq!(b.share().records, 250);
        b.partition_assigned();
        b.partition_assigned();
        assert_eq!(b.share().records, 125);
        b.partition_released();
        assert_eq!(b.share().records, 166);
    }
}
