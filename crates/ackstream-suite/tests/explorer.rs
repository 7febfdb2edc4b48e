//! The schedule explorer against the in-memory broker: 2,000 seeded schedules per run, in four
//! tests so they run side by side. A failure names its seed; replay it alone with
//! `ACKSTREAM_EXPLORER_SEED=<seed> cargo test -p ackstream-suite --test explorer`.

use ackstream_suite::MemoryFixture;
use ackstream_suite::explorer::{Mix, explore};

/// Schedules run at once within one test: most of a schedule's time is spent on timers.
const PARALLEL: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explorer_seeds_1_to_500() {
    explore(&MemoryFixture::new(), 1..501, PARALLEL, Mix::Membership).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explorer_seeds_501_to_1000() {
    explore(&MemoryFixture::new(), 501..1001, PARALLEL, Mix::Membership).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explorer_seeds_1001_to_1500() {
    explore(&MemoryFixture::new(), 1001..1501, PARALLEL, Mix::Membership).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explorer_seeds_1501_to_2000() {
    explore(&MemoryFixture::new(), 1501..2001, PARALLEL, Mix::Membership).await;
}
