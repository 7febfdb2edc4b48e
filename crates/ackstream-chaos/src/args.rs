//! Command line of `ackstream-chaos` (one flat set of flags; each command reads its own).

pub(crate) const USAGE: &str = "\
usage: ackstream-chaos produce --bootstrap B --topic T --count N [--partitions P] [--output OUT]
       ackstream-chaos consume --bootstrap B --topic T --group G (--log FILE | --output OUT)
                               [--work-ms MS] [--fail-every K]
       ackstream-chaos collect --bootstrap B --topic OUT --log FILE
       ackstream-chaos proxy --listen ADDR --upstream ADDR [--outage-ms MS]
       ackstream-chaos check --count N [--scenario NAME] [--seen] FILE...
       ackstream-chaos check --count N [--scenario NAME] --bootstrap B --topic OUT";

/// Parsed flags.
#[derive(Debug, Default)]
pub(crate) struct Args {
    pub(crate) bootstrap: String,
    pub(crate) topic: String,
    pub(crate) group: String,
    pub(crate) log: String,
    /// `--output`: the topic `consume` publishes each id to (instead of logging it), which
    /// `produce` creates too.
    pub(crate) output: String,
    pub(crate) count: u64,
    pub(crate) partitions: i32,
    pub(crate) work_ms: u64,
    pub(crate) fail_every: u64,
    pub(crate) listen: String,
    pub(crate) upstream: String,
    pub(crate) outage_ms: u64,
    pub(crate) scenario: String,
    pub(crate) seen: bool,
    /// Positional arguments (the log files of `check`).
    pub(crate) files: Vec<String>,
}

impl Args {
    pub(crate) fn parse(mut it: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut a = Args {
            partitions: 4,
            work_ms: 2,
            fail_every: 97,
            outage_ms: 2000,
            scenario: "chaos".into(),
            ..Args::default()
        };
        while let Some(flag) = it.next() {
            let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
            let number = |v: String| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
            match flag.as_str() {
                "--bootstrap" => a.bootstrap = value()?,
                "--topic" => a.topic = value()?,
                "--group" => a.group = value()?,
                "--log" => a.log = value()?,
                "--output" => a.output = value()?,
                "--listen" => a.listen = value()?,
                "--upstream" => a.upstream = value()?,
                "--scenario" => a.scenario = value()?,
                "--count" => a.count = number(value()?)?,
                "--work-ms" => a.work_ms = number(value()?)?,
                "--fail-every" => a.fail_every = number(value()?)?.max(1),
                "--outage-ms" => a.outage_ms = number(value()?)?,
                "--partitions" => {
                    a.partitions = value()?.parse().map_err(|e| format!("--partitions: {e}"))?;
                }
                "--seen" => a.seen = true,
                f if f.starts_with("--") => return Err(format!("unknown flag {f}\n{USAGE}")),
                _ => a.files.push(flag),
            }
        }
        Ok(a)
    }

    /// `value` if it was given, else an error naming `flag`.
    pub(crate) fn required<'a>(value: &'a str, flag: &str) -> Result<&'a str, String> {
        if value.is_empty() {
            Err(format!("{flag} is required\n{USAGE}"))
        } else {
            Ok(value)
        }
    }
}
