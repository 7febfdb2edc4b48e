//! Command line of `ackstream-bench`.

pub(crate) const USAGE: &str = "\
usage: ackstream-bench --bootstrap HOST:PORT --topic T --count N --produce [--partitions P] [--keyed]
       ackstream-bench --bootstrap HOST:PORT --topic T --count N --policy POLICY [--concurrency K]
                       [--ordering ORDERING] [--handler-sleep-ms MS] [--config key=value]...
       ackstream-bench --memory --count N [--policy POLICY] [--no-consume]
       ackstream-bench --amplification [--memory | --bootstrap HOST:PORT --topic T] --count N
                       [--policy POLICY] [--concurrency K] [--ordering ORDERING]
                       [--fail-every F] [--handler-sleep-ms MS] [--partitions P]
                       [--config key=value]...
POLICY: raw | ack_first | ack | nack_on_error | manual
ORDERING: partition (default) | key | unordered
--produce spreads records round-robin over the partitions; with --keyed the key chooses the
partition (librdkafka's partitioner), so partitions hold different numbers of records.
--concurrency K sets max_workers(K) (not for raw); --handler-sleep-ms makes the handler await
a timer of MS milliseconds (standing in for I/O) before it finishes.
--amplification nacks the first attempt of one record in F (default 10) and counts deliveries
until every record succeeded once (POLICY default nack_on_error; not ack_first, which acks
before the handler runs; with --memory, P partitions, default 4).";

/// Parsed arguments.
#[derive(Debug)]
pub(crate) struct Args {
    pub(crate) bootstrap: String,
    pub(crate) topic: String,
    pub(crate) count: u64,
    pub(crate) policy: String,
    /// `max_workers`; `None` leaves the default (one record at a time per partition).
    pub(crate) concurrency: Option<usize>,
    pub(crate) ordering: ackstream::Ordering,
    pub(crate) handler_sleep: Option<std::time::Duration>,
    pub(crate) produce: bool,
    /// With `produce`: records are keyed and the key chooses the partition.
    pub(crate) keyed: bool,
    /// Per-record cost on the in-memory broker instead of Kafka.
    pub(crate) memory: bool,
    /// With `memory`: publish only.
    pub(crate) no_consume: bool,
    pub(crate) partitions: i32,
    /// librdkafka settings for every client of every variant.
    pub(crate) config: Vec<(String, String)>,
    /// Deliveries per record under nacks (`amplification.rs`), on Kafka or, with `memory`, on
    /// the in-memory broker.
    pub(crate) amplification: bool,
    /// With `amplification`: the first attempt of one record in this many is nacked.
    pub(crate) fail_every: u64,
}

impl Args {
    pub(crate) fn parse(mut it: impl Iterator<Item = String>) -> Result<Self, String> {
        let (mut bootstrap, mut topic, mut count, mut policy) = (None, None, None, None);
        let mut args = Args {
            bootstrap: String::new(),
            topic: String::new(),
            count: 0,
            policy: String::new(),
            concurrency: None,
            ordering: ackstream::Ordering::Partition,
            handler_sleep: None,
            produce: false,
            keyed: false,
            memory: false,
            no_consume: false,
            partitions: 4,
            config: Vec::new(),
            amplification: false,
            fail_every: 10,
        };
        while let Some(flag) = it.next() {
            let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--bootstrap" => bootstrap = Some(value()?),
                "--topic" => topic = Some(value()?),
                "--count" => count = Some(value()?.parse().map_err(|e| format!("--count: {e}"))?),
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
                "--amplification" => args.amplification = true,
                "--keyed" => args.keyed = true,
                "--produce" => args.produce = true,
                "--memory" => args.memory = true,
                "--no-consume" => args.no_consume = true,
                "-h" | "--help" => return Err("help requested".into()),
                other => return Err(format!("unknown argument {other}")),
            }
        }
        args.count = count.ok_or("--count is required")?;
        if args.keyed && !args.produce {
            return Err("--keyed is for --produce".into());
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
    use super::Args;

    fn parse(line: &str) -> Result<Args, String> {
        Args::parse(line.split_whitespace().map(str::to_owned))
    }

    const KAFKA: &str = "--bootstrap 127.0.0.1:9092 --topic t";

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
            parse(&format!("{KAFKA} --policy raw --count 3 --keyed")).unwrap_err(),
            "--keyed is for --produce"
        );
    }
}
