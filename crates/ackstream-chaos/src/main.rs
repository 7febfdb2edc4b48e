//! `ackstream-chaos`: the parts `scripts/chaos` puts together to crash, churn and cut a consumer
//! group and then check that no record was lost.
//!
//! ```text
//! ackstream-chaos produce --bootstrap B --topic T --count N [--partitions P] [--output OUT]
//! ackstream-chaos consume --bootstrap B --topic T --group G (--log FILE | --output OUT)
//!                         [--work-ms MS] [--fail-every K]
//! ackstream-chaos collect --bootstrap B --topic OUT --log FILE
//! ackstream-chaos proxy   --listen ADDR --upstream ADDR [--outage-ms MS]
//! ackstream-chaos check   --count N [--scenario NAME] [--seen] FILE...
//! ackstream-chaos check   --count N [--scenario NAME] --bootstrap B --topic OUT
//! ```
//!
//! - `produce` writes records `{"id": i}` for i in 0..N, keyed `i % 1000`.
//! - `consume` runs an ackstream subscriber (`NackOnError`, 16 workers, key ordering) whose
//!   handler appends the id to FILE (one `write` per id, so it survives a kill -9) *before*
//!   the record is settled; the first attempt of every K-th id fails, to exercise nacks. It
//!   stops cleanly on SIGTERM/SIGINT. With `--output OUT` it logs nothing and returns
//!   `{"id": i}` instead, published to OUT by `publish_to` before the input is acked.
//! - `collect` follows OUT from the beginning and appends each record's id to FILE (the log
//!   format of `consume`), until SIGTERM.
//! - `proxy` relays TCP to the broker; SIGUSR1 cuts every connection and refuses new ones for
//!   the outage; SIGTERM/SIGINT stop it.
//! - `check` reads the logs: with `--seen`, prints how many distinct ids were processed;
//!   otherwise prints `scenario=NAME records=N lost=L duplicates=D` and fails if L > 0. With
//!   `--topic OUT` it reads OUT to its end instead of logs (duplicates: records beyond one per
//!   id).

mod args;
mod check;
mod collect;
mod consume;
mod produce;
mod proxy;

use serde::{Deserialize, Serialize};

/// The record every scenario produces and consumes.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ChaosRecord {
    pub(crate) id: u64,
}

fn main() {
    let mut argv = std::env::args().skip(1);
    let command = argv.next().unwrap_or_default();
    let parsed = args::Args::parse(argv);
    let result = parsed.and_then(|a| match command.as_str() {
        "check" => check::run(&a),
        "produce" | "consume" | "collect" | "proxy" => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                match command.as_str() {
                    "produce" => produce::run(&a).await,
                    "consume" => consume::run(&a).await,
                    "collect" => collect::run(&a).await,
                    _ => proxy::run(&a).await,
                }
            })
        }
        other => Err(format!("unknown command {other:?}\n{}", args::USAGE)),
    });
    if let Err(e) = result {
        eprintln!("ackstream-chaos {command}: {e}");
        std::process::exit(match e.as_str() {
            check::LOST => 1,
            _ => 2,
        });
    }
}
