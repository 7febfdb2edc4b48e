//! Command line of `ackstream-bench`.

pub(crate) const USAGE: &str = "\
usage: ackstream-bench --bootstrap HOST:PORT --topic T --count N --produce [--partitions P]
       ackstream-bench --bootstrap HOST:PORT --topic T --count N --policy POLICY [--concurrency K]
                       [--config key=value]...
POLICY: raw | ack_first | ack | nack_on_error | manual";

/// Parsed arguments.
#[derive(Debug)]
pub(crate) struct Args {
    pub(crate) bootstrap: String,
    pub(crate) topic: String,
    pub(crate) count: u64,
    pub(crate) policy: String,
    pub(crate) concurrency: usize,
    pub(crate) produce: bool,
    pub(crate) partitions: i32,
    /// librdkafka settings for every client of every variant.
    pub(crate) config: Vec<(String, String)>,
}

impl Args {
    pub(crate) fn parse(mut it: impl Iterator<Item = String>) -> Result<Self, String> {
        let (mut bootstrap, mut topic, mut count, mut policy) = (None, None, None, None);
        let mut args = Args {
            bootstrap: String::new(),
            topic: String::new(),
            count: 0,
            policy: String::new(),
            concurrency: 1,
            produce: false,
            partitions: 4,
            config: Vec::new(),
        };
        while let Some(flag) = it.next() {
            let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--bootstrap" => bootstrap = Some(value()?),
                "--topic" => topic = Some(value()?),
                "--count" => count = Some(value()?.parse().map_err(|e| format!("--count: {e}"))?),
                "--policy" => policy = Some(value()?),
                "--concurrency" => {
                    args.concurrency = value()?
                        .parse()
                        .map_err(|e| format!("--concurrency: {e}"))?;
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
                "--produce" => args.produce = true,
                "-h" | "--help" => return Err("help requested".into()),
                other => return Err(format!("unknown argument {other}")),
            }
        }
        args.bootstrap = bootstrap.ok_or("--bootstrap is required")?;
        args.topic = topic.ok_or("--topic is required")?;
        args.count = count.ok_or("--count is required")?;
        if !args.produce {
            let p = policy.ok_or("--policy is required (or --produce)")?;
            if !["raw", "ack_first", "ack", "nack_on_error", "manual"].contains(&p.as_str()) {
                return Err(format!("unknown policy {p}"));
            }
            args.policy = p;
        }
        if args.concurrency != 1 {
            return Err(
                "--concurrency above 1 is not supported yet (one record at a time per partition)"
                    .into(),
            );
        }
        Ok(args)
    }
}
