use super::*;
use proptest::prelude::*;

#[test]
fn carry_out_hands_over_the_nacked_counts_at_or_after_the_committable_offset() {
    let mut t = OffsetTracker::new();
    assert_eq!(
        t.carry_out(),
        None,
        "nothing delivered, nothing to hand over"
    );
    let a = t.deliver(5).unwrap();
    let b = t.deliver(6).unwrap();
    t.nack(6, b.id).unwrap();
    // Nothing finished: committed where reading began, with 6's count.
    assert_eq!(t.carry_out(), Some((5, vec![(6, 1)])));
    t.finish(5, a.id).unwrap();
    let b = t.redeliver(6).unwrap();
    assert_eq!(b.attempt, 2);
    assert_eq!(
        t.carry_out(),
        Some((6, vec![(6, 1)])),
        "in flight again: one failed attempt"
    );
    t.nack(6, b.id).unwrap();
    assert_eq!(t.carry_out(), Some((6, vec![(6, 2)])));
    let b = t.redeliver(6).unwrap();
    t.finish(6, b.id).unwrap();
    assert_eq!(
        t.carry_out(),
        Some((7, vec![])),
        "a finished record's count is dropped"
    );
}

#[test]
fn carried_counts_below_the_committable_offset_are_ignored() {
    let mut t = OffsetTracker::new();
    let a = t.deliver(5).unwrap();
    t.finish(5, a.id).unwrap();
    t.carry_in(&[(4, 3), (6, 2), (7, 0)], None);
    assert_eq!(t.deliver(6).unwrap().attempt, 3);
    assert_eq!(t.deliver(7).unwrap().attempt, 1);
}

#[test]
fn in_order_acks_advance_one_by_one() {
    let mut t = OffsetTracker::new();
    let a = t.deliver(0).unwrap();
    assert_eq!(t.finish(0, a.id).unwrap().advanced_to, Some(1));
    let b = t.deliver(1).unwrap();
    assert_eq!(t.finish(1, b.id).unwrap().advanced_to, Some(2));
}

#[test]
fn unfinished_record_holds_the_prefix() {
    let mut t = OffsetTracker::new();
    let a = t.deliver(5).unwrap();
    let b = t.deliver(6).unwrap();
    let c = t.deliver(7).unwrap();
    assert_eq!(t.finish(7, c.id).unwrap().advanced_to, None);
    assert_eq!(t.finish(5, a.id).unwrap().advanced_to, Some(6));
    assert_eq!(t.finish(6, b.id).unwrap().advanced_to, Some(8));
}

#[test]
fn second_settle_of_a_delivery_is_stale() {
    let mut t = OffsetTracker::new();
    let a = t.deliver(0).unwrap();
    t.finish(0, a.id).unwrap();
    assert_eq!(t.finish(0, a.id), Err(TrackerError::Stale));
    assert_eq!(t.nack(0, a.id), Err(TrackerError::Stale));
}

#[test]
fn nack_redelivers_only_the_nacked_record() {
    let mut t = OffsetTracker::new();
    let a = t.deliver(0).unwrap();
    let b = t.deliver(1).unwrap();
    let c = t.deliver(2).unwrap();
    assert_eq!(t.nack(1, b.id), Ok(1));
    // 2 ran past the nack: it finishes and stays finished.
    assert_eq!(t.finish(2, c.id).unwrap().advanced_to, None);
    assert_eq!(t.finish(0, a.id).unwrap().advanced_to, Some(1));
    assert_eq!(
        t.deliver(3).unwrap().attempt,
        1,
        "new records go on meanwhile"
    );
    let b2 = t.redeliver(1).unwrap();
    assert_eq!(b2.attempt, 2);
    assert_eq!(
        t.finish(1, b.id),
        Err(TrackerError::Stale),
        "old delivery id"
    );
    assert_eq!(t.redeliver(1), Err(TrackerError::Stale), "not nacked now");
    assert_eq!(t.finish(1, b2.id).unwrap().advanced_to, Some(3));
}

#[test]
fn a_nacked_record_holds_the_commit_until_it_finishes() {
    let mut t = OffsetTracker::new();
    let a = t.deliver(0).unwrap();
    let b = t.deliver(1).unwrap();
    t.nack(0, a.id).unwrap();
    assert_eq!(t.finish(1, b.id).unwrap().advanced_to, None);
    assert_eq!(t.unfinished(), 1);
    assert_eq!(t.finish(0, a.id), Err(TrackerError::Stale), "nacked");
    let again = t.redeliver(0).unwrap();
    assert_eq!(t.finish(0, again.id).unwrap().advanced_to, Some(2));
}

#[test]
fn a_carried_count_of_u32_max_neither_overflows_nor_rejects_early() {
    let mut t = OffsetTracker::new();
    t.carry_in(&[(0, u32::MAX), (1, u32::MAX)], None);
    let a = t.deliver(0).unwrap();
    assert_eq!(a.attempt, CARRY_COUNT_MAX + 1);
    t.nack(0, a.id).unwrap();
    assert_eq!(t.redeliver(0).unwrap().attempt, CARRY_COUNT_MAX + 2);
    // With a limit, a carried count leaves one attempt here.
    let mut t = OffsetTracker::new();
    t.carry_in(&[(0, u32::MAX), (1, 1), (-5, 2)], Some(3));
    assert_eq!(t.deliver(0).unwrap().attempt, 3);
    assert_eq!(t.deliver(1).unwrap().attempt, 2);
    assert_eq!(
        t.carry_out().unwrap().1,
        vec![(0, 2), (1, 1)],
        "a negative offset is not carried"
    );
}

#[test]
fn revoke_fences_every_later_settle() {
    let mut t = OffsetTracker::new();
    let a = t.deliver(0).unwrap();
    let b = t.deliver(1).unwrap();
    t.finish(0, a.id).unwrap();
    assert_eq!(t.revoke(), Some(1));
    assert_eq!(t.finish(1, b.id), Err(TrackerError::Revoked));
    assert_eq!(t.position(), Some(1));
    assert_eq!(t.deliver(2), Err(TrackerError::Revoked));
}

#[test]
fn out_of_order_delivery_is_refused() {
    let mut t = OffsetTracker::new();
    t.deliver(3).unwrap();
    assert!(matches!(t.deliver(3), Err(TrackerError::OutOfOrder { .. })));
}

#[test]
fn manual_unsettled_record_is_reported_once_when_it_holds_back_a_later_ack() {
    let mut t = OffsetTracker::new();
    let a = t.deliver(0).unwrap();
    let b = t.deliver(1).unwrap();
    let c = t.deliver(2).unwrap();
    assert_eq!(t.returned(0, a.id), Ok(None));
    let f = t.finish(1, b.id).unwrap();
    assert_eq!(
        f,
        Finished {
            advanced_to: None,
            held_back_by: Some(0)
        }
    );
    let f = t.finish(2, c.id).unwrap();
    assert_eq!(
        f,
        Finished {
            advanced_to: None,
            held_back_by: None
        }
    );
    // a late ack of the returned record releases everything
    assert_eq!(t.finish(0, a.id).unwrap().advanced_to, Some(3));
}

#[test]
fn cumulative_ack_finishes_earlier_returned_records_but_not_running_ones() {
    let mut t = OffsetTracker::cumulative();
    let a = t.deliver(0).unwrap();
    let b = t.deliver(1).unwrap();
    let c = t.deliver(2).unwrap();
    let d = t.deliver(3).unwrap();
    t.returned(0, a.id).unwrap();
    // 1 is still in flight: 2's ack finishes 0 (returned) but cannot pass 1
    assert_eq!(t.finish(2, c.id).unwrap().advanced_to, Some(1));
    t.returned(1, b.id).unwrap();
    assert_eq!(t.finish(3, d.id).unwrap().advanced_to, Some(4));
}

// ---- property test: random interleavings against the commit rule ----

#[derive(Clone, Debug)]
enum Op {
    Deliver,
    Ack(usize),
    Reject(usize),
    Nack(usize),
    Redeliver(usize),
    Return(usize),
    SettleStale(usize),
    Revoke,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Deliver),
        3 => any::<usize>().prop_map(Op::Ack),
        1 => any::<usize>().prop_map(Op::Reject),
        1 => any::<usize>().prop_map(Op::Nack),
        1 => any::<usize>().prop_map(Op::Redeliver),
        1 => any::<usize>().prop_map(Op::Return),
        1 => any::<usize>().prop_map(Op::SettleStale),
        1 => Just(Op::Revoke),
    ]
}

/// A partition log, a consumer reading it, and the group's committed offset.
struct Model {
    log: Vec<i64>,
    cursor: usize,
    tracker: OffsetTracker,
    outstanding: Vec<(i64, DeliveryId)>,
    /// Nacked records, waiting to be delivered again.
    nacked: Vec<i64>,
    stale: Vec<(i64, DeliveryId)>,
    finished_ever: std::collections::HashSet<i64>,
    committed: i64,
}

impl Model {
    fn new(log: Vec<i64>) -> Self {
        Self {
            committed: log[0],
            log,
            cursor: 0,
            tracker: OffsetTracker::new(),
            outstanding: Vec::new(),
            nacked: Vec::new(),
            stale: Vec::new(),
            finished_ever: Default::default(),
        }
    }

    fn seek(&mut self, offset: i64) {
        self.cursor = self.log.partition_point(|&o| o < offset);
    }

    fn pick(&self, k: usize) -> Option<(usize, (i64, DeliveryId))> {
        if self.outstanding.is_empty() {
            return None;
        }
        let i = k % self.outstanding.len();
        Some((i, self.outstanding[i]))
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Deliver => {
                if let Some(&offset) = self.log.get(self.cursor) {
                    let d = self.tracker.deliver(offset).expect("in-order delivery");
                    self.outstanding.push((offset, d.id));
                    self.cursor += 1;
                }
            }
            Op::Ack(k) | Op::Reject(k) => {
                if let Some((i, (offset, id))) = self.pick(k) {
                    self.tracker
                        .finish(offset, id)
                        .expect("pending delivery finishes");
                    self.outstanding.remove(i);
                    self.stale.push((offset, id));
                    self.finished_ever.insert(offset);
                }
            }
            Op::Return(k) => {
                if let Some((_, (offset, id))) = self.pick(k) {
                    self.tracker
                        .returned(offset, id)
                        .expect("pending delivery returns");
                }
            }
            Op::Nack(k) => {
                if let Some((i, (offset, id))) = self.pick(k) {
                    let attempt = self
                        .tracker
                        .nack(offset, id)
                        .expect("pending delivery nacks");
                    assert!(attempt >= 1);
                    self.outstanding.remove(i);
                    self.stale.push((offset, id));
                    self.nacked.push(offset);
                }
            }
            Op::Redeliver(k) => {
                if !self.nacked.is_empty() {
                    let offset = self.nacked.remove(k % self.nacked.len());
                    let d = self
                        .tracker
                        .redeliver(offset)
                        .expect("nacked record comes back");
                    assert!(d.attempt >= 2);
                    self.outstanding.push((offset, d.id));
                }
            }
            Op::SettleStale(k) => {
                if !self.stale.is_empty() {
                    let (offset, id) = self.stale[k % self.stale.len()];
                    assert!(
                        self.tracker.finish(offset, id).is_err(),
                        "stale settle refused"
                    );
                    assert!(self.tracker.nack(offset, id).is_err(), "stale nack refused");
                }
            }
            Op::Revoke => {
                self.tracker.revoke();
                for (offset, id) in self.outstanding.drain(..).chain(self.stale.drain(..)) {
                    assert_eq!(self.tracker.finish(offset, id), Err(TrackerError::Revoked));
                }
                for offset in self.nacked.drain(..) {
                    assert_eq!(self.tracker.redeliver(offset), Err(TrackerError::Revoked));
                }
                // (delivery ids are per tracker: the old ones mean nothing to the next one)
                // a new assignment resumes from the committed offset with a fresh tracker
                self.tracker = OffsetTracker::new();
                let committed = self.committed;
                self.seek(committed);
            }
        }
    }

    /// The commit rule: the broker's committed offset never passes an unfinished record and
    /// never moves backwards.
    fn check(&mut self) {
        if let Some(p) = self.tracker.position() {
            assert!(
                p >= self.committed,
                "committed offset moved back: {} -> {p}",
                self.committed
            );
            self.committed = p;
        }
        for &o in self.log.iter().take_while(|&&o| o < self.committed) {
            assert!(
                self.finished_ever.contains(&o),
                "committed past unfinished record {o}"
            );
        }
        for &o in self.outstanding.iter().map(|(o, _)| o).chain(&self.nacked) {
            assert!(
                self.committed <= o,
                "committed {} past unfinished {o}",
                self.committed
            );
        }
    }

    /// Delivers and finishes everything left; the committed offset must reach the end.
    fn drain(&mut self) {
        for offset in std::mem::take(&mut self.nacked) {
            let d = self.tracker.redeliver(offset).unwrap();
            self.outstanding.push((offset, d.id));
        }
        self.outstanding.sort_unstable();
        while let Some(&(offset, id)) = self.outstanding.first() {
            self.tracker.finish(offset, id).unwrap();
            self.finished_ever.insert(offset);
            self.outstanding.remove(0);
        }
        while let Some(&offset) = self.log.get(self.cursor) {
            let d = self.tracker.deliver(offset).unwrap();
            self.tracker.finish(offset, d.id).unwrap();
            self.finished_ever.insert(offset);
            self.cursor += 1;
            self.check();
        }
        self.check();
        assert_eq!(
            self.committed,
            self.log.last().unwrap() + 1,
            "reaches the end"
        );
    }
}

fn log() -> impl Strategy<Value = Vec<i64>> {
    // increasing offsets with gaps (compaction, transaction markers)
    (0i64..1000, prop::collection::vec(1i64..4, 1..60)).prop_map(|(start, steps)| {
        let mut o = start;
        steps
            .into_iter()
            .map(|s| {
                o += s;
                o
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn commit_rule_holds_for_random_interleavings(log in log(), ops in prop::collection::vec(op(), 0..200)) {
        let mut m = Model::new(log);
        for op in &ops {
            m.apply(op);
            m.check();
        }
        m.drain();
    }
}

#[test]
fn the_oldest_unfinished_record_is_the_one_the_commit_waits_for() {
    let mut t = OffsetTracker::new();
    assert_eq!(t.oldest_unfinished(), None, "nothing delivered");
    let a = t.deliver(5).unwrap();
    let b = t.deliver(6).unwrap();
    assert_eq!(t.oldest_unfinished(), Some((5, 1, Holder::Running)));
    t.finish(5, a.id).unwrap();
    assert_eq!(t.oldest_unfinished(), Some((6, 1, Holder::Running)));
    t.nack(6, b.id).unwrap();
    assert_eq!(
        t.oldest_unfinished(),
        Some((6, 1, Holder::WaitingRedelivery))
    );
    let b = t.redeliver(6).unwrap();
    assert_eq!(t.oldest_unfinished(), Some((6, 2, Holder::Running)));
    t.returned(6, b.id).unwrap();
    let c = t.deliver(7).unwrap();
    t.finish(7, c.id).unwrap();
    assert_eq!(
        t.oldest_unfinished(),
        Some((6, 2, Holder::Unsettled)),
        "a finished record behind it changes nothing"
    );
    t.finish(6, b.id).unwrap();
    assert_eq!(t.oldest_unfinished(), None, "everything finished");
}
