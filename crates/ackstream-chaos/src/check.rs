//! `check`: reads the processed-id logs (or, with `--topic`, the output topic the `pipeline`
//! scenario's consumers published to) and counts what was lost and what was repeated.

use crate::args::Args;

/// The error `check` returns when an id was never processed (the process exits with 1).
pub(crate) const LOST: &str = "records were lost";

/// How often each id in `0..count` was processed, from the logs' text.
fn tally<'a>(count: u64, logs: impl Iterator<Item = &'a str>) -> Result<Vec<u32>, String> {
    let mut seen = vec![0u32; count as usize];
    for text in logs {
        // A log cut mid-line by a kill has no newline after its last id: that id was not
        // fully written, so it does not count.
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        for line in complete.lines() {
            let id: u64 = line
                .parse()
                .map_err(|e| format!("bad log line {line:?}: {e}"))?;
            let slot = seen
                .get_mut(id as usize)
                .ok_or_else(|| format!("id {id} was never produced (count {count})"))?;
            *slot += 1;
        }
    }
    Ok(seen)
}

pub(crate) fn run(a: &Args) -> Result<(), String> {
    let texts: Vec<String> = if a.topic.is_empty() {
        // A log not created yet (its consumer has not started) holds nothing.
        a.files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap_or_default())
            .collect()
    } else {
        let bootstrap = Args::required(&a.bootstrap, "--bootstrap")?;
        vec![crate::collect::read_to_end(bootstrap, &a.topic)?]
    };
    let seen = tally(a.count, texts.iter().map(String::as_str))?;
    let distinct = seen.iter().filter(|&&n| n > 0).count() as u64;
    if a.seen {
        println!("{distinct}");
        return Ok(());
    }
    let lost = a.count - distinct;
    let duplicates: u64 = seen.iter().map(|&n| u64::from(n.saturating_sub(1))).sum();
    println!(
        "scenario={} records={} lost={lost} duplicates={duplicates}",
        a.scenario, a.count
    );
    if lost > 0 {
        let first: Vec<usize> = (0..seen.len()).filter(|&i| seen[i] == 0).take(10).collect();
        eprintln!("first lost ids: {first:?}");
        return Err(LOST.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_counts_and_repeats_are_duplicates() {
        let seen = tally(3, ["0\n1\n", "1\n2\n"].into_iter()).unwrap();
        assert_eq!(seen, vec![1, 2, 1]);
    }

    #[test]
    fn an_id_cut_off_by_a_kill_does_not_count() {
        let seen = tally(3, ["0\n1\n2"].into_iter()).unwrap();
        assert_eq!(seen, vec![1, 1, 0]);
    }

    #[test]
    fn an_id_never_produced_is_an_error() {
        assert!(tally(2, ["5\n"].into_iter()).is_err());
    }
}
