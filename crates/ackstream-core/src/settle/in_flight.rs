//! The bound on a subscriber's inputs whose outputs are in flight
//! ([`OUTPUTS_IN_FLIGHT`](super::output::OUTPUTS_IN_FLIGHT)).
//!
//! A permit is taken for every input that publishes and returned on the producer's thread when
//! its last output is answered, so both ends are one atomic operation each: tokio's semaphore
//! locks its list of waiters on every release, a lock per output shared by the runtime's
//! threads and the producer's. Only a release that frees the first permit of a full bound
//! wakes whoever waits.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// At most `limit` permits out at once.
#[derive(Debug)]
pub(crate) struct InFlightLimit {
    taken: AtomicUsize,
    limit: usize,
    /// Notified when a release makes room in a full bound.
    room: Notify,
}

/// One input's place within an [`InFlightLimit`]; returned when dropped.
#[derive(Debug)]
pub(crate) struct InFlightPermit(Arc<InFlightLimit>);

impl InFlightLimit {
    /// A bound of `limit` permits (at least one).
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            taken: AtomicUsize::new(0),
            limit: limit.max(1),
            room: Notify::new(),
        })
    }

    /// A permit, if one is free now.
    pub(crate) fn try_take(self: &Arc<Self>) -> Option<InFlightPermit> {
        self.taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .ok()
            .map(|_| InFlightPermit(self.clone()))
    }

    /// A permit, waiting for one to be returned while the bound is full.
    pub(crate) async fn take(self: &Arc<Self>) -> InFlightPermit {
        loop {
            // Registered before the check: a release between the two still wakes this one.
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if let Some(permit) = self.try_take() {
                return permit;
            }
            room.await;
        }
    }

    /// How many permits are free.
    #[cfg(test)]
    pub(crate) fn available(&self) -> usize {
        self.limit - self.taken.load(Ordering::Acquire)
    }
}

impl Drop for InFlightPermit {
    fn drop(&mut self) {
        // A waiter waits only after it saw the bound full, and the bound goes down from full
        // only through a release that sees it full: that release wakes every waiter.
        if self.0.taken.fetch_sub(1, Ordering::AcqRel) == self.0.limit {
            self.0.room.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn permits_are_refused_once_the_bound_is_full_and_come_back_when_dropped() {
        let limit = InFlightLimit::new(2);
        let (a, b) = (limit.try_take().unwrap(), limit.try_take().unwrap());
        assert!(limit.try_take().is_none());
        assert_eq!(limit.available(), 0);
        drop(a);
        assert_eq!(limit.available(), 1);
        let c = limit.try_take().expect("a permit came back");
        drop((b, c));
        assert_eq!(limit.available(), 2);
    }

    /// Every waiter of a full bound gets a permit as releases come, whichever thread makes
    /// them: none sleeps through the release that makes its room.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiters_of_a_full_bound_are_woken_by_releases_on_other_threads() {
        let limit = InFlightLimit::new(4);
        let held: Vec<_> = (0..4).map(|_| limit.try_take().unwrap()).collect();
        let waiters: Vec<_> = (0..16)
            .map(|_| {
                let limit = limit.clone();
                tokio::spawn(async move { drop(limit.take().await) })
            })
            .collect();
        let releaser = std::thread::spawn(move || drop(held));
        for waiter in waiters {
            tokio::time::timeout(Duration::from_secs(10), waiter)
                .await
                .expect("a waiter slept through its release")
                .unwrap();
        }
        releaser.join().unwrap();
        assert_eq!(limit.available(), 4);
    }
}
