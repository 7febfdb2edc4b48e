//! What a topic holds, read from the data before a timed run: per partition, the records a
//! consumer gets and the offset after the last of them. Every consuming variant counts what it
//! handled (or failed to decode) against these records, and checks its group's committed
//! offsets against these ends.
//!
//! Neither of the broker's figures for a partition's end is right on tansu 0.6 (checked by
//! hand with a plain librdkafka consumer and librdkafka's statistics):
//! - ListOffsets (`fetch_watermarks`, and so `Offset::End`): on a 4-partition topic of 2,500
//!   records each, filled by `--produce`, it answered 2,340, 2,290, 2,302 and 2,282, every
//!   time.
//! - The high watermark of Fetch responses, which librdkafka compares with its fetch position
//!   to report a partition's end (`enable.partition.eof`): right for that topic (2,500), but
//!   on a partition of 5,000 such records followed by 50 written by `tansu cat produce` it
//!   stayed at 5,001 while the records went on to offset 5,049, so librdkafka never reported
//!   the end; on a partition filled by `tansu perf produce` (a record at every other offset) it
//!   was 15,982 with the last record at 15,980.
//!
//! Offsets do not count records either (after `tansu perf produce` only every other offset
//! holds a record librdkafka delivers), and librdkafka on tansu delivers some records again
//! (there, a partition's last record dozens of times before it reported the end, and one record
//! in the middle twice). So a plain consumer (no group) reads every partition from the
//! beginning and counts each offset once (a record at or before the last one read is a delivery
//! again); a partition ends after its last record when librdkafka reports its end, or, failing
//! that, when nothing new has come for [`IDLE`].
//! The variants under test are librdkafka consumers of the same records, so they get exactly
//! these and commit up to exactly these ends. The topic must not be written meanwhile: records
//! written after the read are not expected, and the check of the committed offsets then fails.
//!
//! The read runs in a child process (the bench itself, `--read-contents`), which prints what it
//! found as one line: the process keeps some of the memory a consumer used after it is dropped
//! (8 MB after reading 1,000,000 records in-process, and the framework variants' `peak_rss_kb`
//! then came out up to 10 MB higher), and the variants' figures are for the consumer under test
//! alone.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::args::Args;
use crate::count::{Counts, Quiet};
use crate::partition_count;

/// One partition's records, as read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PartitionEnd {
    /// Records a consumer gets from the beginning to the end.
    pub(crate) records: u64,
    /// The offset after the last record (0 for a partition without records): where a group
    /// that finished the partition has committed.
    pub(crate) end: i64,
}

/// What each partition of a topic holds (index = partition id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Contents {
    partitions: Vec<PartitionEnd>,
}

impl Contents {
    /// Contents made of these partitions (index = partition id).
    pub(crate) fn new(partitions: Vec<PartitionEnd>) -> Self {
        Self { partitions }
    }

    /// The partitions (index = partition id).
    pub(crate) fn partitions(&self) -> &[PartitionEnd] {
        &self.partitions
    }

    /// The records of every partition, index = partition id.
    pub(crate) fn expected(&self) -> Vec<u64> {
        self.partitions.iter().map(|p| p.records).collect()
    }

    /// Records over every partition.
    pub(crate) fn total(&self) -> u64 {
        self.partitions.iter().map(|p| p.records).sum()
    }

    /// Whether there is anything to consume, and (given `--count`) whether the topic holds
    /// exactly that many records.
    pub(crate) fn check_count(&self, count: Option<u64>) -> Result<(), String> {
        let total = self.total();
        if total == 0 {
            return Err(
                "the topic holds no records: nothing to consume (fill it with --produce)".into(),
            );
        }
        match count {
            Some(count) if count != total => Err(format!(
                "--count {count}, but the topic holds {total} records ({})",
                self.per_partition()
            )),
            _ => Ok(()),
        }
    }

    /// Checks that `committed` (index = partition id; 0 where nothing was committed) reached the
    /// end of every partition.
    pub(crate) fn check_committed(&self, committed: &[i64]) -> Result<(), String> {
        let short: Vec<String> = self
            .partitions
            .iter()
            .enumerate()
            .filter(|&(p, end)| committed.get(p).copied().unwrap_or(0) != end.end)
            .map(|(p, end)| {
                format!(
                    "partition {p} at {} of {}",
                    committed.get(p).copied().unwrap_or(0),
                    end.end
                )
            })
            .collect();
        if short.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "committed offsets are not at the end of every partition: {}",
                short.join(", ")
            ))
        }
    }

    /// `records=<total> per_partition=<a>,<b>,...`, for the first line of a run.
    pub(crate) fn summary(&self) -> String {
        format!(
            "records={} per_partition={}",
            self.total(),
            self.per_partition()
        )
    }

    /// What `counts` reached against these contents, for an error: every partition as
    /// `p<id>=<finished>/<records>`, with its decode failures if any.
    pub(crate) fn shortfall(&self, counts: &Counts) -> String {
        let partitions: Vec<String> = self
            .partitions
            .iter()
            .enumerate()
            .map(|(p, end)| {
                let finished = counts.finished.get(p).copied().unwrap_or(0);
                let failed = counts.failed.get(p).copied().unwrap_or(0);
                let failed = if failed > 0 {
                    format!(" ({failed} failed to decode)")
                } else {
                    String::new()
                };
                format!("p{p}={finished}/{}{failed}", end.records)
            })
            .collect();
        format!(
            "counted {} of {} records: {}",
            counts.finished.iter().sum::<u64>(),
            self.total(),
            partitions.join(" ")
        )
    }

    /// The line `--read-contents` prints: `contents=<records>:<end>,...`, one pair per
    /// partition.
    pub(crate) fn to_line(&self) -> String {
        let partitions: Vec<String> = self
            .partitions
            .iter()
            .map(|p| format!("{}:{}", p.records, p.end))
            .collect();
        format!("{LINE_PREFIX}{}", partitions.join(","))
    }

    /// Parses a line [`to_line`](Self::to_line) printed.
    pub(crate) fn from_line(line: &str) -> Result<Self, String> {
        let bad = || format!("not a contents line: {line:?}");
        let partitions = line.trim().strip_prefix(LINE_PREFIX).ok_or_else(bad)?;
        partitions
            .split(',')
            .map(|p| {
                let (records, end) = p.split_once(':').ok_or_else(bad)?;
                Ok(PartitionEnd {
                    records: records.parse().map_err(|_| bad())?,
                    end: end.parse().map_err(|_| bad())?,
                })
            })
            .collect::<Result<_, String>>()
            .map(Contents::new)
    }

    fn per_partition(&self) -> String {
        let records: Vec<String> = self
            .partitions
            .iter()
            .map(|p| p.records.to_string())
            .collect();
        records.join(",")
    }
}

/// What starts the line `--read-contents` prints.
const LINE_PREFIX: &str = "contents=";

/// How long a read goes on after every partition reported its end, so that records fetched
/// after an end reported too early (a Fetch high watermark below the records) are still read.
pub(crate) const GRACE: Duration = Duration::from_millis(250);

/// How long a read waits for a partition whose end librdkafka does not report (tansu's Fetch
/// high watermark below the records read, see the module docs): without a new record, or a
/// reported end, for this long, every partition is taken to end after its last record read.
/// Well above the 500 ms a fetch of a partition at its end waits by default.
pub(crate) const IDLE: Duration = Duration::from_secs(2);

/// A read of every partition to its end, in progress: what has been seen so far.
#[derive(Debug)]
pub(crate) struct Reading {
    partitions: Vec<PartitionEnd>,
    at_end: Vec<bool>,
    /// When the last new record or newly reported end came (`None` before the first).
    last_news: Option<Instant>,
}

impl Reading {
    /// A read of `partitions` partitions that has seen nothing yet.
    pub(crate) fn new(partitions: usize) -> Self {
        Self {
            partitions: vec![PartitionEnd::default(); partitions],
            at_end: vec![false; partitions],
            last_news: None,
        }
    }

    /// A record at `offset` of `partition`, read at `now`. A record past the last one read is
    /// counted, and its partition is not at its end (any more: a record after a reported end
    /// moves it); one at or before it is a delivery again, which librdkafka makes on tansu (see
    /// the module docs), and counts for nothing.
    pub(crate) fn record(&mut self, partition: i32, offset: i64, now: Instant) {
        let Some(p) = usize::try_from(partition)
            .ok()
            .filter(|&p| p < self.partitions.len())
        else {
            return;
        };
        let part = &mut self.partitions[p];
        if part.records > 0 && offset < part.end {
            return;
        }
        part.records += 1;
        part.end = offset + 1;
        self.at_end[p] = false;
        self.last_news = Some(now);
    }

    /// librdkafka reported the end of `partition` at `now`.
    pub(crate) fn end(&mut self, partition: i32, now: Instant) {
        if let Some(at_end) = usize::try_from(partition)
            .ok()
            .and_then(|p| self.at_end.get_mut(p))
            && !*at_end
        {
            *at_end = true;
            self.last_news = Some(now);
        }
    }

    /// Records seen plus ends reported: grows while the read makes progress.
    pub(crate) fn progress(&self) -> u64 {
        self.partitions.iter().map(|p| p.records).sum::<u64>()
            + self.at_end.iter().filter(|&&e| e).count() as u64
    }

    /// Whether the read is over at `now`: every partition reported its end and [`GRACE`]
    /// passed without news, or something came and then nothing for [`IDLE`]. Before anything
    /// came, never (the caller's quiet timeout decides).
    pub(crate) fn is_over(&self, now: Instant) -> bool {
        let Some(last) = self.last_news else {
            return false;
        };
        let quiet = now.saturating_duration_since(last);
        quiet >= IDLE || (quiet >= GRACE && self.at_end.iter().all(|&e| e))
    }

    /// The partitions whose end was not reported (since their last record).
    pub(crate) fn unreported(&self) -> Vec<i32> {
        (0..self.at_end.len() as i32)
            .filter(|&p| !self.at_end[p as usize])
            .collect()
    }

    /// What the read found.
    pub(crate) fn into_contents(self) -> Contents {
        Contents::new(self.partitions)
    }
}

/// Reads every partition of `topic` (`--topic`, or the output topic of `--pipeline`) to its
/// end in a child process (see the module docs): the bench itself with `--read-contents` and
/// the same `--bootstrap`, `--config` and `--quiet-timeout-s`. What the child says on stderr
/// (notes) is passed on. Blocks.
pub(crate) fn read_in_child(args: &Args, topic: &str) -> Result<Contents, String> {
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the bench's binary: {e}"))?;
    let mut command = std::process::Command::new(exe);
    command
        .arg("--read-contents")
        .args(["--bootstrap", &args.bootstrap, "--topic", topic])
        .args([
            "--quiet-timeout-s",
            &args.quiet_timeout.as_secs().to_string(),
        ]);
    for (k, v) in &args.config {
        command.args(["--config", &format!("{k}={v}")]);
    }
    let output = command
        .output()
        .map_err(|e| format!("cannot start the read of {topic}: {e}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        let why = stderr.trim();
        return Err(why.strip_prefix("error: ").unwrap_or(why).to_owned());
    }
    eprint!("{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with(LINE_PREFIX))
        .ok_or_else(|| format!("the read of {topic} printed no contents: {stdout:?}"))?;
    Contents::from_line(line)
}

/// `--read-contents`: [`read`] the topic and print what it holds as one line.
pub(crate) fn run_child(args: &Args) -> Result<(), String> {
    println!("{}", read(args)?.to_line());
    Ok(())
}

/// Reads every partition of `--topic` to its end (see the module docs) with a consumer of its
/// own, configured with `--config`; fails after `--quiet-timeout-s` without anything read.
/// Blocks.
pub(crate) fn read(args: &Args) -> Result<Contents, String> {
    let partitions = partition_count(args)?;
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &args.bootstrap);
    for (k, v) in &args.config {
        config.set(k, v);
    }
    // librdkafka refuses `assign` without a group id; this consumer never joins or commits.
    config
        .set("group.id", "ackstream-bench-read")
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    let consumer: BaseConsumer = config.create().map_err(|e| e.to_string())?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(&args.topic, p, Offset::Beginning)
            .map_err(|e| e.to_string())?;
    }
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    let mut reading = Reading::new(partitions as usize);
    let mut quiet = Quiet::new(args.quiet_timeout, Instant::now());
    loop {
        let event = consumer.poll(Duration::from_millis(50));
        let now = Instant::now();
        match event {
            Some(Ok(m)) => reading.record(m.partition(), m.offset(), now),
            Some(Err(KafkaError::PartitionEOF(p))) => reading.end(p, now),
            Some(Err(e)) => eprintln!("reading {} to its end: {e}", args.topic),
            None => {}
        }
        if reading.is_over(now) {
            break;
        }
        if quiet.stalled(reading.progress(), now) {
            return Err(format!(
                "reading {} to its end: nothing for {} s (--quiet-timeout-s)",
                args.topic,
                args.quiet_timeout.as_secs()
            ));
        }
    }
    let unreported = reading.unreported();
    if !unreported.is_empty() {
        eprintln!(
            "note: librdkafka reported no end for partitions {unreported:?} of {} (the broker's \
             high watermark is not after their last record); each is taken to end after its \
             last record read, {} s without one",
            args.topic,
            IDLE.as_secs()
        );
    }
    Ok(reading.into_contents())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(records: &[u64]) -> Contents {
        Contents::new(
            records
                .iter()
                .map(|&r| PartitionEnd {
                    records: r,
                    end: r as i64,
                })
                .collect(),
        )
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_read_is_over_a_grace_after_every_partition_reported_its_end() {
        let t0 = Instant::now();
        let mut reading = Reading::new(3);
        reading.record(0, 0, t0);
        reading.record(0, 1, t0);
        reading.end(0, t0);
        reading.end(2, t0); // an empty partition
        assert!(!reading.is_over(t0 + GRACE));
        assert_eq!(reading.unreported(), vec![1]);
        reading.record(1, 0, t0 + MS);
        reading.end(1, t0 + 2 * MS);
        assert!(!reading.is_over(t0 + 2 * MS + GRACE - MS));
        assert!(reading.is_over(t0 + 2 * MS + GRACE));
        assert!(reading.unreported().is_empty());
        assert_eq!(
            reading.into_contents().partitions(),
            &[
                PartitionEnd { records: 2, end: 2 },
                PartitionEnd { records: 1, end: 1 },
                PartitionEnd { records: 0, end: 0 },
            ]
        );
    }

    #[test]
    fn a_record_after_the_end_reopens_its_partition() {
        let t0 = Instant::now();
        let mut reading = Reading::new(1);
        reading.record(0, 0, t0);
        reading.end(0, t0);
        reading.record(0, 1, t0 + MS);
        assert!(!reading.is_over(t0 + MS + GRACE));
        reading.end(0, t0 + 2 * MS);
        assert!(reading.is_over(t0 + 2 * MS + GRACE));
        assert_eq!(
            reading.into_contents().partitions(),
            &[PartitionEnd { records: 2, end: 2 }]
        );
    }

    #[test]
    fn a_partition_whose_end_is_never_reported_ends_after_idle() {
        // tansu's Fetch high watermark below the records: librdkafka reports no end.
        let t0 = Instant::now();
        let mut reading = Reading::new(2);
        reading.end(0, t0);
        reading.record(1, 0, t0);
        reading.record(1, 1, t0 + MS);
        assert!(!reading.is_over(t0 + MS + IDLE - MS));
        assert!(reading.is_over(t0 + MS + IDLE));
        assert_eq!(reading.unreported(), vec![1]);
        assert_eq!(
            reading.into_contents().partitions()[1],
            PartitionEnd { records: 2, end: 2 }
        );
    }

    #[test]
    fn a_read_that_found_nothing_yet_is_never_over() {
        let t0 = Instant::now();
        assert!(!Reading::new(2).is_over(t0 + 10 * IDLE));
    }

    #[test]
    fn the_end_is_after_the_last_offset_read_and_gaps_are_not_records() {
        // A log that does not start at 0 and skips offsets (as tansu's can).
        let t0 = Instant::now();
        let mut reading = Reading::new(1);
        for offset in [5, 6, 8] {
            reading.record(0, offset, t0);
        }
        assert_eq!(
            reading.into_contents().partitions(),
            &[PartitionEnd { records: 3, end: 9 }]
        );
    }

    #[test]
    fn a_record_delivered_again_counts_once() {
        // librdkafka on tansu delivers some records twice, and a partition's last record
        // again and again until it reports the end.
        let t0 = Instant::now();
        let mut reading = Reading::new(1);
        for offset in [0, 2, 2, 4, 4, 4] {
            reading.record(0, offset, t0);
        }
        reading.end(0, t0);
        reading.record(0, 4, t0 + MS);
        assert!(reading.is_over(t0 + GRACE), "a delivery again is no news");
        assert_eq!(
            reading.into_contents().partitions(),
            &[PartitionEnd { records: 3, end: 5 }]
        );
    }

    #[test]
    fn records_of_unknown_partitions_are_ignored() {
        let t0 = Instant::now();
        let mut reading = Reading::new(1);
        reading.record(3, 0, t0);
        reading.record(-1, 0, t0);
        reading.end(7, t0);
        assert_eq!(reading.progress(), 0);
        assert!(!reading.is_over(t0 + IDLE));
    }

    #[test]
    fn progress_counts_records_and_ends() {
        let t0 = Instant::now();
        let mut reading = Reading::new(2);
        reading.record(0, 0, t0);
        assert_eq!(reading.progress(), 1);
        reading.end(1, t0);
        assert_eq!(reading.progress(), 2);
    }

    #[test]
    fn a_given_count_must_match_the_topic() {
        let c = contents(&[3, 1]);
        assert_eq!(c.check_count(None), Ok(()));
        assert_eq!(c.check_count(Some(4)), Ok(()));
        assert_eq!(
            c.check_count(Some(5)),
            Err("--count 5, but the topic holds 4 records (3,1)".into())
        );
    }

    #[test]
    fn an_empty_topic_is_an_error() {
        assert!(contents(&[0, 0]).check_count(None).is_err());
    }

    #[test]
    fn committed_offsets_must_reach_every_end() {
        let c = contents(&[3, 0, 2]);
        assert_eq!(c.check_committed(&[3, 0, 2]), Ok(()));
        assert_eq!(
            c.check_committed(&[3, 0, 1]),
            Err(
                "committed offsets are not at the end of every partition: partition 2 at 1 of 2"
                    .into()
            )
        );
        // Missing entries count as nothing committed.
        assert!(c.check_committed(&[3]).is_err());
    }

    #[test]
    fn the_shortfall_names_every_partition_and_its_failures() {
        let c = contents(&[3, 2]);
        let counts = Counts {
            finished: vec![3, 1],
            failed: vec![0, 1],
        };
        assert_eq!(
            c.shortfall(&counts),
            "counted 4 of 5 records: p0=3/3 p1=1/2 (1 failed to decode)"
        );
    }

    #[test]
    fn contents_survive_the_line_from_the_child_process() {
        let c = Contents::new(vec![
            PartitionEnd { records: 3, end: 9 },
            PartitionEnd { records: 0, end: 0 },
        ]);
        assert_eq!(c.to_line(), "contents=3:9,0:0");
        assert_eq!(Contents::from_line(&c.to_line()), Ok(c));
    }

    #[test]
    fn a_line_that_is_not_contents_is_an_error() {
        for line in ["", "contents=", "contents=3", "contents=3:x", "records=3:3"] {
            assert!(Contents::from_line(line).is_err(), "{line:?}");
        }
    }

    #[test]
    fn the_summary_gives_the_total_and_each_partition() {
        assert_eq!(
            contents(&[3, 0, 2]).summary(),
            "records=5 per_partition=3,0,2"
        );
    }
}
