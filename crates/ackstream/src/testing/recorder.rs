//! Records runtime events so tests can wait for them instead of sleeping.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::event::Event;
use crate::{Broker, Disposition, SettleStatus, TopicPartition};
use tokio::sync::watch;

/// How long a test waits for an event before failing.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Every event of a broker's subscribers, in order.
#[derive(Debug)]
pub struct Recorder {
    events: Mutex<Vec<Event>>,
    /// Bumped on every event; may be shared with other recorders so one wait sees them all.
    changes: Arc<watch::Sender<u64>>,
}

impl Recorder {
    /// Starts recording `broker`'s events (attach before the app starts).
    pub fn attach<B: Broker>(broker: &B) -> Arc<Self> {
        Self::attach_with(broker, Arc::new(watch::Sender::new(0)))
    }

    /// Records `broker`'s events separately from `other`'s, but wakes `other`'s waits too
    /// (for conditions over several members).
    pub fn attach_beside<B: Broker>(broker: &B, other: &Recorder) -> Arc<Self> {
        Self::attach_with(broker, other.changes.clone())
    }

    /// Records `broker`'s events into this recorder too, in one timeline with its own.
    pub fn attach_also<B: Broker>(self: &Arc<Self>, broker: &B) {
        let r = self.clone();
        broker.observe(move |e| {
            r.events.lock().unwrap().push(e.clone());
            r.changes.send_modify(|n| *n += 1);
        });
    }

    fn attach_with<B: Broker>(broker: &B, changes: Arc<watch::Sender<u64>>) -> Arc<Self> {
        let recorder = Arc::new(Self {
            events: Mutex::new(Vec::new()),
            changes,
        });
        let r = recorder.clone();
        broker.observe(move |e| {
            r.events.lock().unwrap().push(e.clone());
            r.changes.send_modify(|n| *n += 1);
        });
        recorder
    }

    /// A copy of the events so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the events, failing the test after [`EVENT_TIMEOUT`].
    pub async fn wait_for(&self, what: &str, done: impl Fn(&Recorder) -> bool) {
        let mut rx = self.changes.subscribe();
        let wait = async {
            while !done(self) {
                rx.changed().await.expect("recorder alive");
            }
        };
        if tokio::time::timeout(EVENT_TIMEOUT, wait).await.is_err() {
            panic!("timed out waiting for {what}; events: {:#?}", self.events());
        }
    }

    /// Waits up to `limit` for `done`; whether it came. For conditions no event announces
    /// (e.g. when a consumer has resolved its start offset).
    pub async fn came_within(&self, limit: Duration, done: impl Fn(&Recorder) -> bool) -> bool {
        let mut rx = self.changes.subscribe();
        let wait = async {
            while !done(self) {
                rx.changed().await.expect("recorder alive");
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }

    /// Deliveries of one record.
    pub fn deliveries(&self, tp: &TopicPartition, offset: i64) -> u32 {
        self.count_where(
            |e| matches!(e, Event::Delivered { tp: t, offset: o, .. } if t == tp && *o == offset),
        ) as u32
    }

    /// Deliveries of every record of a topic.
    pub fn deliveries_of_topic(&self, topic: &str) -> usize {
        self.count_where(|e| matches!(e, Event::Delivered { tp, .. } if &*tp.topic == topic))
    }

    /// What each effective settle of one record did, in order.
    pub fn settles(&self, tp: &TopicPartition, offset: i64) -> Vec<Disposition> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::Settled {
                    tp: t,
                    offset: o,
                    status: SettleStatus::Settled(d),
                } if t == tp && *o == offset => Some(*d),
                _ => None,
            })
            .collect()
    }

    /// Whether a record was settled at least once.
    pub fn is_settled(&self, tp: &TopicPartition, offset: i64) -> bool {
        !self.settles(tp, offset).is_empty()
    }

    /// The committable offsets stored for a partition, in order.
    pub fn stored(&self, tp: &TopicPartition) -> Vec<i64> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::OffsetStored { tp: t, offset } if t == tp => Some(*offset),
                _ => None,
            })
            .collect()
    }

    /// Whether a record was reported as holding back its partition's commit.
    pub fn held_back(&self, tp: &TopicPartition, offset: i64) -> bool {
        self.count_where(
            |e| matches!(e, Event::HeldBack { tp: t, offset: o } if t == tp && *o == offset),
        ) > 0
    }

    /// Partitions currently assigned to this broker's subscribers in `group` (assigned minus revoked).
    pub fn assigned(&self, group: &str) -> Vec<TopicPartition> {
        let mut now: Vec<TopicPartition> = Vec::new();
        for e in self.events.lock().unwrap().iter() {
            match e {
                Event::Assigned {
                    group: Some(g),
                    partitions,
                } if &**g == group => {
                    now.extend(partitions.iter().cloned());
                }
                Event::Revoked {
                    group: Some(g),
                    partitions,
                } if &**g == group => {
                    now.retain(|tp| !partitions.contains(tp));
                }
                _ => {}
            }
        }
        now.sort();
        now
    }

    /// Number of assignment events for `group` (a rebalance produces at least one).
    pub fn assignments(&self, group: &str) -> usize {
        self.count_where(|e| matches!(e, Event::Assigned { group: Some(g), .. } if &**g == group))
    }

    fn count_where(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.events.lock().unwrap().iter().filter(|e| f(e)).count()
    }
}
