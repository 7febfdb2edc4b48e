//! Consumer groups of the in-memory broker: membership, eager rebalances, committed offsets.
//!
//! Like Kafka's eager protocol: when a member joins or leaves, every member's partitions are
//! revoked (each member drains and commits, then acknowledges), then all partitions of the
//! subscribed topics are assigned again, per topic, in contiguous ranges over the members
//! sorted by join order (Kafka's range assignor). A commit from a member that does not own the
//! partition is refused, as Kafka fences a stale generation.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ackstream_core::backend::{ConsumerEvent, RevokeAck};
use ackstream_core::{BackendError, OffsetReset, TopicPartition};
use tokio::sync::mpsc;

use super::feed::MemoryFeed;
use super::log::{Topics, lock};

/// How long a rebalance waits for a member to drain and acknowledge a revoke.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(60);

pub(super) type EventSender = mpsc::UnboundedSender<ConsumerEvent<MemoryFeed>>;

#[derive(Debug)]
struct Member {
    id: u64,
    topics: Vec<String>,
    reset: OffsetReset,
    events: EventSender,
    assigned: Vec<TopicPartition>,
}

#[derive(Debug, Default)]
struct Members {
    next_id: u64,
    list: Vec<Member>,
}

/// A partition as its group sees it.
#[derive(Debug, Default)]
pub(super) struct PartitionSlot {
    state: Mutex<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    owner: Option<u64>,
    committed: Option<i64>,
    /// Attempt counts handed over with the commits (as Kafka keeps them in commit metadata).
    carried: Vec<(i64, u32)>,
}

/// One consumer group.
#[derive(Debug)]
pub(super) struct Group {
    name: Arc<str>,
    members: tokio::sync::Mutex<Members>,
    /// Each partition's owner and committed offset; a member keeps its partitions' entries,
    /// so a commit costs no map lookup.
    partitions: Mutex<HashMap<TopicPartition, Arc<PartitionSlot>>>,
    /// Bumped on every commit, for waiters.
    commits: tokio::sync::watch::Sender<u64>,
}

impl Group {
    pub(super) fn new(name: &str) -> Self {
        Self {
            name: Arc::from(name),
            members: Default::default(),
            partitions: Default::default(),
            commits: tokio::sync::watch::Sender::new(0),
        }
    }

    pub(super) fn committed(&self, tp: &TopicPartition) -> Option<i64> {
        lock(&self.partitions)
            .get(tp)
            .and_then(|slot| lock(&slot.state).committed)
    }

    /// The entry of `tp`, made on first use.
    pub(super) fn slot(&self, tp: &TopicPartition) -> Arc<PartitionSlot> {
        lock(&self.partitions)
            .entry(tp.clone())
            .or_default()
            .clone()
    }

    fn set_owner(&self, tp: &TopicPartition, owner: Option<u64>) {
        lock(&self.slot(tp).state).owner = owner;
    }

    /// Commits `offset` to `slot` if `member` owns it; `false` if fenced.
    pub(super) fn commit(&self, slot: &PartitionSlot, member: u64, offset: i64) -> bool {
        {
            let mut state = lock(&slot.state);
            if state.owner != Some(member) {
                return false;
            }
            state.committed = Some(offset);
        }
        // Wake waiters, if any: waking nobody still costs a walk over the watch's slots, and a
        // receiver subscribed later starts from the current value anyway.
        if self.commits.receiver_count() > 0 {
            self.commits.send_modify(|n| *n += 1);
        }
        true
    }

    /// Like [`commit`](Self::commit), handing `attempts` over to the partition's next owner.
    pub(super) fn carry(
        &self,
        slot: &PartitionSlot,
        member: u64,
        offset: i64,
        attempts: &[(i64, u32)],
    ) -> bool {
        {
            let mut state = lock(&slot.state);
            if state.owner != Some(member) {
                return false;
            }
            state.carried = attempts.to_vec();
        }
        self.commit(slot, member, offset)
    }

    /// The attempt counts carried with `tp`'s commits, of records not below its committed
    /// offset.
    fn carried(&self, tp: &TopicPartition) -> Vec<(i64, u32)> {
        let slot = self.slot(tp);
        let state = lock(&slot.state);
        let from = state.committed.unwrap_or(0);
        state
            .carried
            .iter()
            .copied()
            .filter(|&(o, _)| o >= from)
            .collect()
    }

    /// Notified after every commit.
    pub(super) fn watch_commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.commits.subscribe()
    }

    pub(super) async fn member_count(&self) -> usize {
        self.members.lock().await.list.len()
    }

    /// Adds a member and rebalances; returns its id.
    pub(super) async fn join(
        &self,
        topics: &Topics,
        member_topics: Vec<String>,
        reset: OffsetReset,
        events: EventSender,
    ) -> Result<u64, BackendError> {
        let mut members = self.members.lock().await;
        self.revoke_all(&mut members).await;
        let id = members.next_id;
        members.next_id += 1;
        members.list.push(Member {
            id,
            topics: member_topics,
            reset,
            events,
            assigned: Vec::new(),
        });
        self.assign_all(&mut members, topics)?;
        Ok(id)
    }

    /// Removes a member (which has already drained and committed) and rebalances the rest.
    pub(super) async fn leave(&self, id: u64, topics: &Topics) {
        let mut members = self.members.lock().await;
        if let Some(i) = members.list.iter().position(|m| m.id == id) {
            let gone = members.list.remove(i);
            for tp in &gone.assigned {
                self.set_owner(tp, None);
            }
        }
        self.revoke_all(&mut members).await;
        if let Err(e) = self.assign_all(&mut members, topics) {
            tracing::error!(group = %self.name, error = %e, "rebalance failed");
        }
    }

    async fn revoke_all(&self, members: &mut Members) {
        let mut waits = Vec::new();
        members.list.retain_mut(|m| {
            if m.assigned.is_empty() {
                return !m.events.is_closed();
            }
            let partitions = std::mem::take(&mut m.assigned);
            let (ack, done) = RevokeAck::new();
            if m.events
                .send(ConsumerEvent::Revoked(partitions.clone(), ack))
                .is_err()
            {
                // The member is gone (dropped without leaving): forget it.
                for tp in &partitions {
                    self.set_owner(tp, None);
                }
                return false;
            }
            waits.push((m.id, partitions, done));
            true
        });
        for (id, partitions, done) in waits {
            if tokio::time::timeout(REVOKE_TIMEOUT, done).await.is_err() {
                tracing::warn!(group = %self.name, member = id, "member did not finish its revoke in time");
            }
            for tp in &partitions {
                self.set_owner(tp, None);
            }
        }
    }

    fn assign_all(&self, members: &mut Members, topics: &Topics) -> Result<(), BackendError> {
        let names: BTreeSet<String> = members
            .list
            .iter()
            .flat_map(|m| m.topics.iter().cloned())
            .collect();
        let mut plan: HashMap<u64, Vec<MemoryFeed>> = HashMap::new();
        for name in names {
            let topic = topics.get_or_create(&name)?;
            let subscribed: Vec<&Member> = members
                .list
                .iter()
                .filter(|m| m.topics.contains(&name))
                .collect();
            let n = topic.partitions.len();
            let k = subscribed.len();
            for (i, member) in subscribed.iter().enumerate() {
                // range assignor: the first n % k members get one extra partition
                let start = i * (n / k) + i.min(n % k);
                let len = n / k + usize::from(i < n % k);
                for log in &topic.partitions[start..start + len] {
                    let from = match (self.committed(&log.tp), member.reset) {
                        (Some(c), _) => c,
                        (None, OffsetReset::Earliest) => 0,
                        (None, OffsetReset::Latest) => log.end_offset(),
                    };
                    let feed = MemoryFeed::new(log.clone(), from, Some(self.name.clone()))
                        .with_carried(self.carried(&log.tp));
                    plan.entry(member.id).or_default().push(feed);
                }
            }
        }
        for member in &mut members.list {
            let feeds = plan.remove(&member.id).unwrap_or_default();
            member.assigned = feeds.iter().map(|f| f.tp().clone()).collect();
            for tp in &member.assigned {
                self.set_owner(tp, Some(member.id));
            }
            // A member that is gone is found and dropped at the next rebalance.
            let _ = member.events.send(ConsumerEvent::Assigned(feeds));
        }
        Ok(())
    }
}
