//! The ackstream variants: a `KafkaBroker` subscriber with the chosen policy.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ackstream::event::Event;
use ackstream::extract::{FromMessage, Rejection};
use ackstream::kafka::KafkaBroker;
use ackstream::prelude::*;
use ackstream::{Backoff, StateMap};
use tokio::sync::Notify;

use crate::args::Args;
use crate::contents::Contents;
use crate::count::{Counts, Quiet, quiet_error};
use crate::{Order, read_contents, report};

/// A partition's counters, on their own cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot {
    /// Records handled, or failed to decode on their last delivery.
    finished: AtomicU64,
    /// Records that did not decode (included in `finished`).
    failed: AtomicU64,
}

/// Deliveries of a record that does not decode, under `NackOnError` (set on the subscriber so
/// that [`last_decode_attempt`] and the runtime agree).
const DECODE_ATTEMPTS: u32 = ackstream::DEFAULT_DECODE_ATTEMPTS;

/// Whether a decode failure of delivery `attempt` is the record's last under `policy`: every
/// policy settles an undecodable record at once (acked, or rejected under `RejectOnError` and
/// `Manual`) except `NackOnError`, which delivers it again until `DECODE_ATTEMPTS` and then
/// rejects it.
fn last_decode_attempt(policy: AckPolicy, attempt: u32) -> bool {
    policy != AckPolicy::NackOnError || attempt >= DECODE_ATTEMPTS
}

/// Counts finished records per partition against what each holds, and timestamps the first
/// and the last. Counters are per partition (a partition is handled by one task at a time), so
/// the count costs the handler no shared cache line, as the raw loop's local counter costs it
/// none.
#[derive(Debug)]
struct Progress {
    /// Records each partition holds (read before the run, see `contents.rs`).
    expected: Vec<u64>,
    slots: Vec<Slot>,
    partitions_done: AtomicUsize,
    policy: AckPolicy,
    first: OnceLock<Instant>,
    last: OnceLock<Instant>,
    /// When the subscriber's partitions were assigned, and when the last of them (of those
    /// holding records) had its first record.
    assigned: OnceLock<Instant>,
    all_started: OnceLock<Instant>,
    /// Partitions holding records that have not had their first yet.
    not_started: AtomicUsize,
    /// Where and why the first record failed to decode.
    first_failure: OnceLock<String>,
    done: Notify,
}

impl Progress {
    fn new(expected: Vec<u64>, policy: AckPolicy) -> Self {
        let holding = expected.iter().filter(|&&n| n > 0).count();
        Self {
            slots: expected.iter().map(|_| Slot::default()).collect(),
            // Partitions without records are done from the start.
            partitions_done: AtomicUsize::new(expected.iter().filter(|&&n| n == 0).count()),
            expected,
            policy,
            first: OnceLock::new(),
            last: OnceLock::new(),
            assigned: OnceLock::new(),
            all_started: OnceLock::new(),
            not_started: AtomicUsize::new(holding),
            first_failure: OnceLock::new(),
            done: Notify::new(),
        }
    }

    /// The time from the assignment to the first record of every partition, once known.
    fn startup(&self) -> Option<Duration> {
        Some(
            self.all_started
                .get()?
                .duration_since(*self.assigned.get()?),
        )
    }

    /// A record of `partition` was handled.
    fn record(&self, partition: i32) {
        if self.first.get().is_none() {
            let _ = self.first.set(Instant::now());
        }
        let Some(slot) = self.slots.get(partition as usize) else {
            return;
        };
        let finished = slot.finished.fetch_add(1, Ordering::Relaxed) + 1;
        self.finished(partition as usize, finished);
    }

    /// Delivery `attempt` of the record at `offset` of `partition` did not decode (for
    /// `reason`): counted as finished if it is the record's last.
    fn decode_failed(&self, partition: i32, offset: i64, attempt: u32, reason: &dyn fmt::Display) {
        if !last_decode_attempt(self.policy, attempt) {
            return;
        }
        if self.first.get().is_none() {
            let _ = self.first.set(Instant::now());
        }
        if self.first_failure.get().is_none() {
            let _ = self
                .first_failure
                .set(format!("partition {partition} offset {offset}: {reason}"));
        }
        let Some(slot) = self.slots.get(partition as usize) else {
            return;
        };
        slot.failed.fetch_add(1, Ordering::Relaxed);
        let finished = slot.finished.fetch_add(1, Ordering::Relaxed) + 1;
        self.finished(partition as usize, finished);
    }

    /// Partition `p` has `finished` records finished: the last partition to reach its records
    /// ends the run.
    fn finished(&self, p: usize, finished: u64) {
        if finished == 1
            && self.expected[p] > 0
            && self.not_started.fetch_sub(1, Ordering::AcqRel) == 1
        {
            let _ = self.all_started.set(Instant::now());
        }
        if finished == self.expected[p]
            && self.partitions_done.fetch_add(1, Ordering::AcqRel) + 1 == self.expected.len()
        {
            let _ = self.last.set(Instant::now());
            self.done.notify_one();
        }
    }

    /// What finished so far.
    fn counts(&self) -> Counts {
        Counts {
            finished: self
                .slots
                .iter()
                .map(|s| s.finished.load(Ordering::Relaxed))
                .collect(),
            failed: self
                .slots
                .iter()
                .map(|s| s.failed.load(Ordering::Relaxed))
                .collect(),
        }
    }

    /// Waits until every partition finished its records, and returns the time from the first
    /// record to the last; fails after `quiet` without a record finishing.
    async fn wait(&self, contents: &Contents, quiet: Duration) -> Result<Duration, String> {
        let mut watch = Quiet::new(quiet, Instant::now());
        let tick = (quiet / 4).min(Duration::from_secs(1));
        loop {
            tokio::select! {
                () = self.done.notified() => break,
                () = tokio::time::sleep(tick) => {
                    let counts = self.counts();
                    if watch.stalled(counts.total(), Instant::now()) {
                        return Err(quiet_error(quiet, contents, &counts));
                    }
                }
            }
        }
        let (first, last) = self
            .first
            .get()
            .zip(self.last.get())
            .ok_or("no record finished")?;
        Ok(last.duration_since(*first))
    }
}

/// The payload as the bench's `Order`, decoded by `Json<Order>`. A record that does not decode
/// is reported to the run's [`Progress`] (given as state) before the framework settles it as
/// its policy says, so a topic of other records still finishes.
#[derive(Debug)]
struct Decoded(Order);

impl FromMessage for Decoded {
    const READS_HEADERS: bool = false;

    fn from_message(msg: &KafkaMessage, state: &StateMap) -> Result<Self, Rejection> {
        match Json::<Order>::from_message(msg, state) {
            Ok(Json(order)) => Ok(Decoded(order)),
            Err(rejection) => {
                if let Some(progress) = state.get::<Arc<Progress>>() {
                    progress.decode_failed(
                        msg.partition(),
                        msg.offset(),
                        msg.attempt(),
                        &rejection,
                    );
                }
                Err(rejection)
            }
        }
    }
}

/// The subscriber every framework variant runs: from the earliest offset, with `policy` and the
/// ordering and worker count of `args`, and a 6 s session. A failed record is delivered again
/// at once: the bench's handlers fail only on records that are not the bench's, and with the
/// default backoff each record that does not decode would take 0.3 s under `NackOnError`
/// (`DECODE_ATTEMPTS` deliveries); the explicit nacks of `--amplification` have no delay
/// either way.
pub(crate) fn subscriber<B: Broker>(
    broker: &B,
    topic: &str,
    group: &str,
    policy: AckPolicy,
    args: &Args,
) -> ackstream::SubscriberBuilder<B::Backend> {
    let subscriber = broker
        .subscriber(topic)
        .group_id(group)
        .auto_offset_reset(OffsetReset::Earliest)
        .ack_policy(policy)
        .max_decode_attempts(DECODE_ATTEMPTS)
        .retry_backoff(Backoff::none())
        .ordering(args.ordering)
        .config("session.timeout.ms", "6000");
    match args.concurrency {
        Some(k) => subscriber.max_workers(k),
        None => subscriber,
    }
}

/// Consumes every record of the topic (as [`read_contents`] found them) with the chosen
/// policy in a fresh group, stops the app, checks the group's committed offsets and prints the
/// result lines.
pub(crate) async fn run(args: &Args) -> Result<(), String> {
    let contents = read_contents(args)?;
    let policy: AckPolicy = args.policy.parse()?;
    let mut expected = contents.expected();
    if let Some((slow, _)) = args.slow {
        // Only the others are measured: the run ends when they are done.
        if let Some(n) = usize::try_from(slow).ok().and_then(|i| expected.get_mut(i)) {
            *n = 0;
        }
    }
    let progress = Arc::new(Progress::new(expected, policy));
    let mut broker = KafkaBroker::new(&args.bootstrap).with_state(progress.clone());
    for (k, v) in &args.config {
        broker = broker.config(k, v);
    }
    let p = progress.clone();
    broker.observe(move |event| {
        if let Event::Assigned { partitions, .. } = event
            && !partitions.is_empty()
        {
            let _ = p.assigned.set(Instant::now());
        }
    });
    let group = format!("bench-{}-{}", args.policy, std::process::id());
    let subscriber = subscriber(&broker, &args.topic, &group, policy, args);
    let p = progress.clone();
    if args.handler_sleep.is_some() || args.slow.is_some() {
        // Stands in for an I/O call: counted when it completes.
        let (io, slow) = (args.handler_sleep, args.slow);
        subscriber.handle(move |Decoded(order): Decoded, msg: KafkaMessage| {
            std::hint::black_box(order);
            let p = p.clone();
            let wait = match slow {
                Some((slow, ms)) if msg.partition() == slow => Some(ms),
                _ => io,
            };
            async move {
                if let Some(d) = wait.filter(|d| !d.is_zero()) {
                    crate::timer::sleep(d).await;
                }
                if policy == AckPolicy::Manual {
                    msg.ack().await?;
                }
                p.record(msg.partition());
                Ok::<(), HandlerError>(())
            }
        });
    } else if policy == AckPolicy::Manual {
        subscriber.handle(move |Decoded(order): Decoded, msg: KafkaMessage| {
            std::hint::black_box(order);
            p.record(msg.partition());
            async move {
                msg.ack().await?;
                Ok::<(), HandlerError>(())
            }
        });
    } else {
        // Like the raw loop, this handler never looks at headers, so they are not decoded.
        subscriber.handle(move |Decoded(order): Decoded, Partition(partition)| {
            std::hint::black_box(order);
            p.record(partition);
            std::future::ready(())
        });
    }
    let app = crate::observed(App::new(broker.clone()), &broker, args)
        .drain_timeout(Duration::from_secs(30))
        .spawn();
    let elapsed = match progress.wait(&contents, args.quiet_timeout).await {
        Ok(elapsed) => elapsed,
        Err(e) => {
            // Best effort: the error is what matters.
            let _ = tokio::time::timeout(Duration::from_secs(10), app.shutdown()).await;
            return Err(e);
        }
    };
    app.shutdown().await.map_err(|e| e.to_string())?; // synchronous commit of what finished
    if let Some(kb) = crate::peak_rss_kb() {
        println!("peak_rss_kb={kb}");
    }
    if let Some(startup) = progress.startup() {
        println!(
            "first_record_of_every_partition_ms={:.0}",
            startup.as_secs_f64() * 1000.0
        );
    }
    if let Some((slow, ms)) = args.slow {
        let counts = progress.counts();
        let of_slow = usize::try_from(slow)
            .ok()
            .and_then(|i| counts.finished.get(i))
            .copied()
            .unwrap_or(0);
        let others = counts.total() - of_slow;
        let rate = others as f64 / elapsed.as_secs_f64();
        println!(
            "policy={} slow_partition={slow} slow_ms={} others={others} elapsed_s={:.3}",
            args.policy,
            ms.as_millis(),
            elapsed.as_secs_f64()
        );
        println!("others_msgs_per_s={rate:.0}");
        return Ok(());
    }
    let committed = crate::committed_offsets(args, &group, contents.partitions().len())?;
    report(
        &args.policy,
        &contents,
        &progress.counts(),
        progress.first_failure.get().map(String::as_str),
        elapsed,
        &committed,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contents::PartitionEnd;

    #[test]
    fn a_decode_failure_finishes_its_record_on_the_last_delivery_only() {
        for policy in [
            AckPolicy::AckFirst,
            AckPolicy::Ack,
            AckPolicy::RejectOnError,
            AckPolicy::Manual,
        ] {
            assert!(last_decode_attempt(policy, 1), "{policy:?}");
        }
        assert!(!last_decode_attempt(AckPolicy::NackOnError, 1));
        assert!(!last_decode_attempt(
            AckPolicy::NackOnError,
            DECODE_ATTEMPTS - 1
        ));
        assert!(last_decode_attempt(AckPolicy::NackOnError, DECODE_ATTEMPTS));
    }

    #[test]
    fn progress_is_done_when_every_partition_finished_its_records_handled_or_failed() {
        let progress = Progress::new(vec![2, 1, 0], AckPolicy::AckFirst);
        progress.record(0);
        progress.decode_failed(1, 0, 1, &"bad");
        assert!(progress.last.get().is_none());
        progress.record(0);
        assert!(progress.last.get().is_some());
        assert_eq!(
            progress.counts(),
            Counts {
                finished: vec![2, 1, 0],
                failed: vec![0, 1, 0],
            }
        );
        assert_eq!(
            progress.first_failure.get().map(String::as_str),
            Some("partition 1 offset 0: bad")
        );
    }

    #[test]
    fn under_nack_on_error_only_the_last_failed_delivery_counts() {
        let progress = Progress::new(vec![1], AckPolicy::NackOnError);
        for attempt in 1..DECODE_ATTEMPTS {
            progress.decode_failed(0, 0, attempt, &"bad");
        }
        assert_eq!(progress.counts().total(), 0);
        progress.decode_failed(0, 0, DECODE_ATTEMPTS, &"bad");
        assert_eq!(progress.counts().failed_total(), 1);
        assert!(progress.last.get().is_some());
    }

    #[test]
    fn records_of_unknown_partitions_finish_nothing() {
        let progress = Progress::new(vec![1], AckPolicy::Ack);
        progress.record(3);
        progress.decode_failed(-1, 0, 1, &"bad");
        assert_eq!(progress.counts().total(), 0);
    }

    #[tokio::test]
    async fn wait_returns_the_time_from_the_first_record_to_the_last() {
        let progress = Progress::new(vec![1, 1], AckPolicy::Ack);
        progress.record(0);
        progress.record(1);
        let contents = Contents::new(vec![PartitionEnd { records: 1, end: 1 }; 2]);
        assert!(
            progress
                .wait(&contents, Duration::from_secs(30))
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn wait_fails_after_the_quiet_timeout_naming_what_was_counted() {
        let progress = Progress::new(vec![1, 2], AckPolicy::Ack);
        progress.record(1);
        let contents = Contents::new(vec![
            PartitionEnd { records: 1, end: 1 },
            PartitionEnd { records: 2, end: 2 },
        ]);
        let e = progress
            .wait(&contents, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(e.ends_with("counted 1 of 3 records: p0=0/1 p1=1/2"), "{e}");
    }
}
