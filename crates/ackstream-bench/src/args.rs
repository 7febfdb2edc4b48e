//! Command line of `ackstream-bench`.

pub(crate) const USAGE: &str = "\
usage: ackstream-bench --bootstrap HOST:PORT --topic T --count N --produce [--partitions P] [--keyed]
       ackstream-bench --bootstrap HOST:PORT --topic T [--count N] --policy POLICY [--concurrency K]
                       [--ordering ORDERING] [--handler-sleep-ms MS] [--quiet-timeout-s S]
                       [--slow-partition N --slow-ms MS] [--config key=value]...
       ackstream-bench --bootstrap HOST:PORT --topic T --read-contents [--quiet-timeout-s S]
                       [--config key=value]...
       ackstream-bench --memory --count N [--policy POLICY] [--no-consume] [--observe [--traced]]
       ackstream-bench --amplification [--memory | --bootstrap HOST:PORT --topic T] --count N
                       [--policy POLICY] [--concurrency K] [--ordering ORDERING]
                       [--fail-every F] [--handler-sleep-ms MS] [--partitions P]
                       [--quiet-timeout-s S] [--config key=value]...
       ackstream-bench --bootstrap HOST:PORT --topic T [--count N] --pipeline raw|ackstream
                       --output OUT [--concurrency K] [--ordering ORDERING]
                       [--quiet-timeout-s S] [--config key=value]...
POLICY: raw | ack_first | ack | nack_on_error | manual
ORDERING: partition (default) | key | unordered
--produce spreads records round-robin over the partitions; with --keyed the key chooses the
partition (librdkafka's partitioner), so partitions hold different numbers of records.
A consuming run first reads every partition of T to its end and then consumes exactly the
records found (--count, if given, must be their total); it fails after S seconds (default 30)
without progress. --read-contents does only that read (in a child process of every
consuming run) and prints `contents=<records>:<end>,...`, one pair per partition.
--concurrency K sets max_workers(K) (not for raw); --handler-sleep-ms makes the handler await
a timer of MS milliseconds (standing in for I/O) before it finishes. --slow-partition N makes
the handler of partition N's records await --slow-ms MS instead (0: none), and the run measures
the other partitions only: it ends when they are done and prints `others_msgs_per_s=`.
--observe (a policy run, on Kafka or --memory) turns observability on as an app would: spans
for every delivery (no subscriber installed: no exporter), and the HTTP endpoint with /metrics
(the monitor's samples, the duration histogram's timing). --traced adds a listener: an
OpenTelemetry tracer (tracing-opentelemetry over the SDK, with no exporter) records every span,
and trace context is propagated in headers (`observe::otel::tracing()`).
--amplification nacks the first attempt of one record in F (default 10) and counts deliveries
until every record succeeded once (POLICY default nack_on_error; not ack_first, which acks
before the handler runs; with --memory, P partitions, default 4).
--pipeline publishes each record's payload to OUT (created with T's partitions) and counts an
input once its output is confirmed: raw, an rdkafka loop storing the offset after the confirmed
prefix in the delivery callback; ackstream, publish_to(OUT) under nack_on_error (--concurrency
and --ordering for it only). OUT must then hold at least as many records as T.";

/// Parsed arguments.
#[derive(Debug)]
pub(crate) struct Args {
    /// `--bootstrap`: the Kafka bootstrap servers.
    pub(crate) bootstrap: String,
    /// `--topic`.
    pub(crate) topic: String,
    /// `--count`: records to produce or publish (required with `--produce`, `--memory` and
    /// `--amplification`); for a run consuming a Kafka topic, optional: the total the topic
    /// must hold.
    pub(crate) count: Option<u64>,
    /// `--policy`: `raw` or an ack policy's name.
    pub(crate) policy: String,
    /// `max_workers`; `None` leaves the default (one record at a time per partition).
    pub(crate) concurrency: Option<usize>,
    /// `--ordering`.
    pub(crate) ordering: ackstream::KeepOrder,
    /// `--handler-sleep-ms`: the handler awaits a timer this long (standing in for I/O).
    pub(crate) handler_sleep: Option<std::time::Duration>,
    /// `--slow-partition N --slow-ms MS`: partition N's handler awaits MS (the others are
    /// measured).
    pub(crate) slow: Option<(i32, std::time::Duration)>,
    /// `--produce`: create the topic and fill it.
    pub(crate) produce: bool,
    /// With `produce`: records are keyed and the key chooses the partition.
    pub(crate) keyed: bool,
    /// Per-record cost on the in-memory broker instead of Kafka.
    pub(crate) memory: bool,
    /// With `memory`: publish only.
    pub(crate) no_consume: bool,
    /// `--observe`: spans, metrics and the HTTP endpoint on.
    pub(crate) observe: bool,
    /// `--traced`: with `--observe`, an OpenTelemetry tracer with no exporter listens.
    pub(crate) traced: bool,
    /// `--partitions`: of the topic `--produce` creates (or of the in-memory one).
    pub(crate) partitions: i32,
    /// librdkafka settings for every client of every variant.
    pub(crate) config: Vec<(String, String)>,
    /// Deliveries per record under nacks (`amplification.rs`), on Kafka or, with `memory`, on
    /// the in-memory broker.
    pub(crate) amplification: bool,
    /// With `amplification`: the first attempt of one record in this many is nacked.
    pub(crate) fail_every: u64,
    /// `--read-contents`: read the topic to its end and print what it holds as one line (what
    /// a consuming run starts itself with, in a child process: see `contents.rs`).
    pub(crate) read_contents: bool,
    /// `--quiet-timeout-s`: a consuming run that makes no progress for this long ends with an
    /// error naming what it counted against what it expected.
    pub(crate) quiet_timeout: std::time::Duration,
    /// `--pipeline`: `raw` or `ackstream`, publishing every record to `output`.
    pub(crate) pipeline: Option<String>,
    /// `--output`: the topic `--pipeline` publishes to.
    pub(crate) output: String,
}

/// Default of `--quiet-timeout-s`: well past the few seconds tansu takes to let a consumer
/// join its group.
pub(crate) const DEFAULT_QUIET_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl Args {
    /// `--count` where [`parse`](Self::parse) requires it (`--produce`, `--memory`,
    /// `--amplification`).
    pub(crate) fn count(&self) -> u64 {
        self.count.expect("Args::parse requires --count here")
    }

    /// Parses the arguments after the program name.
    pub(crate) fn parse(mut it: impl Iterator<Item = String>) -> Result<Self, String> {
        let (mut bootstrap, mut topic, mut policy) = (None, None, None);
        let (mut slow_partition, mut slow_ms) = (None, None);
        let mut args = Args {
            bootstrap: String::new(),
            topic: String::new(),
            count: None,
            policy: String::new(),
            concurrency: None,
            ordering: ackstream::KeepOrder::Partition,
            handler_sleep: None,
            slow: None,
            produce: false,
            keyed: false,
            memory: false,
            no_consume: false,
            observe: false,
            traced: false,
            partitions: 4,
            config: Vec::new(),
            amplification: false,
            fail_every: 10,
            read_contents: false,
            quiet_timeout: DEFAULT_QUIET_TIMEOUT,
            pipeline: None,
            output: String::new(),
        };
        while let Some(flag) = it.next() {
            let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--bootstrap" => bootstrap = Some(value()?),
                "--topic" => topic = Some(value()?),
                "--count" => {
                    args.count = Some(value()?.parse().map_err(|e| format!("--count: {e}"))?);
                }
                "--policy" => policy = Some(value()?),
                "--concurrency" => {
                    let k: usize = value()?
                        .parse()
                        .map_err(|e| format!("--concurrency: {e}"))?;
                    if k == 0 {
                        return Err("--concurrency must be at least 1".into());
                    }
                    args.concurrency = Some(k);
                }
                "--ordering" => args.ordering = value()?.parse()?,
                "--handler-sleep-ms" => {
                    let ms: u64 = value()?
                        .parse()
                        .map_err(|e| format!("--handler-sleep-ms: {e}"))?;
                    args.handler_sleep = Some(std::time::Duration::from_millis(ms));
                }
                "--slow-partition" => {
                    let p: i32 = value()?
                        .parse()
                        .map_err(|e| format!("--slow-partition: {e}"))?;
                    slow_partition = Some(p);
                }
                "--slow-ms" => {
                    let ms: u64 = value()?.parse().map_err(|e| format!("--slow-ms: {e}"))?;
                    slow_ms = Some(std::time::Duration::from_millis(ms));
                }
                "--partitions" => {
                    args.partitions = value()?.parse().map_err(|e| format!("--partitions: {e}"))?;
                }
                "--config" => {
                    let kv = value()?;
                    let (k, v) = kv
                        .split_once('=')
                        .ok_or_else(|| format!("--config {kv}: expected key=value"))?;
                    args.config.push((k.to_owned(), v.to_owned()));
                }
                "--fail-every" => {
                    let f: u64 = value()?.parse().map_err(|e| format!("--fail-every: {e}"))?;
                    if f == 0 {
                        return Err("--fail-every must be at least 1".into());
                    }
                    args.fail_every = f;
                }
                "--quiet-timeout-s" => {
                    let s: u64 = value()?
                        .parse()
                        .map_err(|e| format!("--quiet-timeout-s: {e}"))?;
                    if s == 0 {
                        return Err("--quiet-timeout-s must be at least 1".into());
                    }
                    args.quiet_timeout = std::time::Duration::from_secs(s);
                }
                "--pipeline" => args.pipeline = Some(value()?),
                "--output" => args.output = value()?,
                "--amplification" => args.amplification = true,
                "--keyed" => args.keyed = true,
                "--read-contents" => args.read_contents = true,
                "--produce" => args.produce = true,
                "--memory" => args.memory = true,
                "--no-consume" => args.no_consume = true,
                "--observe" => args.observe = true,
                "--traced" => args.traced = true,
                "-h" | "--help" => return Err("help requested".into()),
                other => return Err(format!("unknown argument {other}")),
            }
        }
        if args.keyed && !args.produce {
            return Err("--keyed is for --produce".into());
        }
        if args.read_contents {
            args.bootstrap = bootstrap.ok_or("--bootstrap is required")?;
            args.topic = topic.ok_or("--topic is required")?;
            return Ok(args);
        }
        if args.count.is_none() && (args.produce || args.memory || args.amplification) {
            return Err("--count is required".into());
        }
        if let Some(variant) = &args.pipeline {
            if !["raw", "ackstream"].contains(&variant.as_str()) {
                return Err(format!(
                    "unknown --pipeline variant {variant} (raw | ackstream)"
                ));
            }
            if args.output.is_empty() {
                return Err("--pipeline needs --output".into());
            }
            if variant == "raw" && args.concurrency.is_some() {
                return Err("raw is a plain sequential loop: no --concurrency".into());
            }
            if args.produce || args.memory || args.amplification || policy.is_some() {
                return Err(
                    "--pipeline takes no --produce, --memory, --amplification or --policy".into(),
                );
            }
            args.bootstrap = bootstrap.ok_or("--bootstrap is required")?;
            args.topic = topic.ok_or("--topic is required")?;
            if args.output == args.topic {
                return Err("--output must be another topic than --topic".into());
            }
            return Ok(args);
        }
        if args.amplification {
            args.policy = policy.unwrap_or_else(|| "nack_on_error".into());
            let p: ackstream::AckPolicy = args.policy.parse()?;
            if p == ackstream::AckPolicy::AckFirst {
                return Err(
                    "--amplification: ack_first acks before the handler, so it never nacks".into(),
                );
            }
            if args.produce || args.no_consume {
                return Err("--amplification takes no --produce or --no-consume".into());
            }
            if !args.memory {
                args.bootstrap = bootstrap.ok_or("--bootstrap is required")?;
                args.topic = topic.ok_or("--topic is required")?;
            }
            return Ok(args);
        }
        if args.memory {
            args.policy = policy.unwrap_or_else(|| "nack_on_error".into());
            if args.policy == "raw" {
                return Err("--memory measures the framework: no raw".into());
            }
            return Ok(args);
        }
        args.bootstrap = bootstrap.ok_or("--bootstrap is required")?;
        args.topic = topic.ok_or("--topic is required")?;
        if !args.produce {
            let p = policy.ok_or("--policy is required (or --produce)")?;
            if !["raw", "ack_first", "ack", "nack_on_error", "manual"].contains(&p.as_str()) {
                return Err(format!("unknown policy {p}"));
            }
            args.policy = p;
        }
        args.slow = match (slow_partition, slow_ms) {
            (Some(p), Some(ms)) => Some((p, ms)),
            (None, None) => None,
            _ => return Err("--slow-partition and --slow-ms go together".into()),
        };
        if args.policy == "raw" && args.slow.is_some() {
            return Err("raw has no handler to slow down: no --slow-partition".into());
        }
        if args.policy == "raw" && (args.concurrency.is_some() || args.handler_sleep.is_some()) {
            return Err(
                "raw is a plain sequential loop: no --concurrency or --handler-sleep-ms".into(),
            );
        }
        Ok(args)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Args, DEFAULT_QUIET_TIMEOUT};

    fn parse(line: &str) -> Result<Args, String> {
        Args::parse(line.split_whitespace().map(str::to_owned))
    }

    const KAFKA: &str = "--bootstrap 127.0.0.1:9092 --topic t";

    #[test]
    fn a_consuming_run_needs_no_count() {
        let args = parse(&format!("{KAFKA} --policy ack_first")).unwrap();
        assert_eq!(args.count, None);
        assert_eq!(args.policy, "ack_first");
    }

    #[test]
    fn a_consuming_run_keeps_a_given_count_to_check() {
        let args = parse(&format!("{KAFKA} --policy raw --count 7")).unwrap();
        assert_eq!(args.count, Some(7));
    }

    #[test]
    fn producing_and_the_other_modes_need_a_count() {
        for line in [
            format!("{KAFKA} --produce"),
            "--memory".to_owned(),
            "--amplification --memory".to_owned(),
            format!("--amplification {KAFKA}"),
        ] {
            assert_eq!(parse(&line).unwrap_err(), "--count is required", "{line}");
        }
        assert_eq!(
            parse(&format!("{KAFKA} --produce --count 3"))
                .unwrap()
                .count(),
            3
        );
    }

    #[test]
    fn the_quiet_timeout_defaults_to_30_s_and_takes_seconds() {
        let args = parse(&format!("{KAFKA} --policy ack")).unwrap();
        assert_eq!(args.quiet_timeout, DEFAULT_QUIET_TIMEOUT);
        assert_eq!(DEFAULT_QUIET_TIMEOUT, Duration::from_secs(30));
        let args = parse(&format!("{KAFKA} --policy ack --quiet-timeout-s 5")).unwrap();
        assert_eq!(args.quiet_timeout, Duration::from_secs(5));
    }

    #[test]
    fn a_quiet_timeout_of_zero_or_not_a_number_is_refused() {
        assert_eq!(
            parse(&format!("{KAFKA} --policy ack --quiet-timeout-s 0")).unwrap_err(),
            "--quiet-timeout-s must be at least 1"
        );
        assert!(
            parse(&format!("{KAFKA} --policy ack --quiet-timeout-s 1.5"))
                .unwrap_err()
                .starts_with("--quiet-timeout-s:")
        );
        assert_eq!(
            parse(&format!("{KAFKA} --policy ack --quiet-timeout-s")).unwrap_err(),
            "--quiet-timeout-s needs a value"
        );
    }

    #[test]
    fn keyed_is_for_produce_only() {
        let args = parse(&format!("{KAFKA} --produce --count 3 --keyed")).unwrap();
        assert!(args.keyed);
        assert!(
            !parse(&format!("{KAFKA} --produce --count 3"))
                .unwrap()
                .keyed
        );
        assert_eq!(
            parse(&format!("{KAFKA} --policy raw --keyed")).unwrap_err(),
            "--keyed is for --produce"
        );
    }

    #[test]
    fn a_consuming_run_needs_a_known_policy() {
        assert_eq!(
            parse(KAFKA).unwrap_err(),
            "--policy is required (or --produce)"
        );
        assert_eq!(
            parse(&format!("{KAFKA} --policy fast")).unwrap_err(),
            "unknown policy fast"
        );
    }

    #[test]
    fn read_contents_needs_only_the_topic() {
        let args = parse(&format!("{KAFKA} --read-contents --quiet-timeout-s 5")).unwrap();
        assert!(args.read_contents);
        assert_eq!(args.quiet_timeout, Duration::from_secs(5));
        assert_eq!(
            parse("--topic t --read-contents").unwrap_err(),
            "--bootstrap is required"
        );
    }

    #[test]
    fn raw_takes_no_concurrency_or_handler_sleep() {
        assert!(parse(&format!("{KAFKA} --policy raw --concurrency 4")).is_err());
        assert!(parse(&format!("{KAFKA} --policy raw --handler-sleep-ms 1")).is_err());
        assert!(parse(&format!("{KAFKA} --policy ack --concurrency 4")).is_ok());
    }

    #[test]
    fn a_pipeline_needs_a_known_variant_and_another_output_topic() {
        let args = parse(&format!("{KAFKA} --pipeline raw --output out --count 4")).unwrap();
        assert_eq!(args.pipeline.as_deref(), Some("raw"));
        assert_eq!(args.output, "out");
        assert_eq!(args.count, Some(4));
        assert!(
            parse(&format!(
                "{KAFKA} --pipeline ackstream --output out --concurrency 8"
            ))
            .is_ok()
        );
        assert_eq!(
            parse(&format!("{KAFKA} --pipeline raw")).unwrap_err(),
            "--pipeline needs --output"
        );
        assert!(parse(&format!("{KAFKA} --pipeline fast --output out")).is_err());
        assert!(parse(&format!("{KAFKA} --pipeline raw --output t")).is_err());
        assert!(
            parse(&format!(
                "{KAFKA} --pipeline raw --output out --concurrency 2"
            ))
            .is_err()
        );
        assert!(parse(&format!("{KAFKA} --pipeline raw --output out --policy ack")).is_err());
    }

    #[test]
    fn a_slow_partition_needs_its_delay() {
        let base = "--bootstrap b --topic t --policy ack";
        let args = parse(&format!("{base} --slow-partition 2 --slow-ms 100")).unwrap();
        assert_eq!(args.slow, Some((2, Duration::from_millis(100))));
        assert!(parse(&format!("{base} --slow-partition 2")).is_err());
        assert!(parse(&format!("{base} --slow-ms 100")).is_err());
        assert!(
            parse("--bootstrap b --topic t --policy raw --slow-partition 0 --slow-ms 1").is_err()
        );
    }
}
