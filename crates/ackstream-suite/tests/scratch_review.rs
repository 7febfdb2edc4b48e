//! SCRATCH (review of the in-process redelivery change): delete after use.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ackstream::prelude::*;
use ackstream::{Ordering, TopicPartition};
use ackstream_suite::{Fixture, MemoryFixture, Recorder, unique};
use tokio::sync::mpsc;

const DELAY: Duration = Duration::from_millis(300);

/// Records 0 and 1 return unsettled (Manual); record 2's handler nacks both (so two retries
/// wait at once), then acks itself. Record 0's second attempt nacks itself *during its run*
/// (with a delay). Under `Partition` ordering, record 1's second attempt must not start before
/// record 0's third (its in-run nack's redelivery), nor before record 0's delay ran out.
async fn batch(workers: Option<usize>) -> Vec<(i64, u32, Instant)> {
    let fx = MemoryFixture::new();
    let broker = fx.connect();
    let (topic, group) = (unique("scratch"), unique("group"));
    fx.create_topic(&topic, 1).await;
    for i in 0..4 {
        broker
            .publish(&topic, format!("r{i}"))
            .partition(0)
            .await
            .unwrap();
    }
    let parked: Arc<Mutex<Vec<KafkaMessage>>> = Arc::default();
    let (tx, mut rx) = mpsc::unbounded_channel::<(i64, u32, Instant)>();
    let mut sub = fx
        .subscriber(&broker, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .no_ack(true)
        .ordering(Ordering::Partition);
    if let Some(n) = workers {
        sub = sub.max_workers(n);
    }
    let slot = parked.clone();
    sub.handle(move |msg: KafkaMessage| {
        let (slot, tx) = (slot.clone(), tx.clone());
        async move {
            let (o, a) = (msg.offset(), msg.attempt());
            tx.send((o, a, Instant::now())).unwrap();
            match (o, a) {
                (0 | 1, 1) => slot.lock().unwrap().push(msg.clone()),
                (2, 1) => {
                    let parked: Vec<KafkaMessage> = std::mem::take(&mut *slot.lock().unwrap());
                    assert_eq!(parked.len(), 2);
                    for m in parked {
                        m.nack().await.unwrap();
                    }
                    msg.ack().await.unwrap();
                }
                (0, 2) => {
                    msg.nack_after(DELAY).await.unwrap();
                }
                _ => {
                    msg.ack().await.unwrap();
                }
            }
        }
    });
    let recorder = Recorder::attach(&broker);
    let app = App::new(broker.clone()).spawn();
    let p = TopicPartition::new(topic.as_str(), 0);
    recorder
        .wait_for("the end stored", |r| r.stored(&p).last() == Some(&4))
        .await;
    app.shutdown().await.unwrap();
    let mut runs = Vec::new();
    while let Ok(r) = rx.try_recv() {
        runs.push(r);
    }
    runs
}

fn verdict(label: &str, runs: &[(i64, u32, Instant)]) {
    let t0 = runs[0].2;
    let order: Vec<(i64, u32, Duration)> = runs.iter().map(|r| (r.0, r.1, r.2 - t0)).collect();
    eprintln!("{label}: starts {order:?}");
    let nack0 = runs.iter().find(|r| (r.0, r.1) == (0, 2)).unwrap().2;
    let third0 = runs.iter().find(|r| (r.0, r.1) == (0, 3)).unwrap().2;
    let second1 = runs.iter().find(|r| (r.0, r.1) == (1, 2)).unwrap().2;
    assert!(
        second1 >= third0,
        "{label}: record 1 (attempt 2) started {:?} after record 0's in-run nack (delay {DELAY:?}), \
         {:?} before record 0's redelivery",
        second1 - nack0,
        third0 - second1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scratch_one_at_a_time_batch_of_retries() {
    let runs = batch(None).await;
    verdict("one at a time (partition.rs)", &runs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scratch_concurrent_batch_of_retries() {
    let runs = batch(Some(4)).await;
    verdict("max_workers(4) (concurrent.rs)", &runs);
}

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as At};

/// A record whose handler always nacks (no delay) on a current-thread runtime: does anything
/// else on the runtime still run? A watchdog thread judges after 3 s.
async fn always_nack_starves(workers: Option<usize>) {
    static TICKED: AtomicBool = AtomicBool::new(false);
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let fx = MemoryFixture::new();
    let broker = fx.connect();
    let (topic, group) = (unique("hot"), unique("group"));
    fx.create_topic(&topic, 1).await;
    broker.publish(&topic, "poison").partition(0).await.unwrap();
    let mut sub = fx
        .subscriber(&broker, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false);
    if let Some(n) = workers {
        sub = sub.max_workers(n);
    }
    sub.handle(|_m: KafkaMessage| async {
        RUNS.fetch_add(1, At::Relaxed);
        Err::<(), HandlerError>(NackMessage.into())
    });
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(3));
        let (t, r) = (TICKED.load(At::Relaxed), RUNS.load(At::Relaxed));
        eprintln!("watchdog: other task ticked = {t}, handler runs = {r}");
        if !t {
            eprintln!("STARVED: the partition task never yielded");
            std::process::exit(3);
        }
    });
    let app = App::new(broker.clone()).spawn();
    tokio::spawn(async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        TICKED.store(true, At::Relaxed);
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), app.shutdown()).await;
    eprintln!("runs after shutdown: {}", RUNS.load(At::Relaxed));
}

#[tokio::test]
async fn scratch_hot_nack_one_at_a_time_current_thread() {
    always_nack_starves(None).await;
}

#[tokio::test]
async fn scratch_hot_nack_concurrent_current_thread() {
    always_nack_starves(Some(2)).await;
}

/// `nack_after(Duration::MAX)`: the framework panics inside the settle, after the tracker
/// marked the record nacked but before the retry is kept: is it ever delivered again, and does
/// the commit ever pass it?
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scratch_nack_after_huge_delay() {
    let fx = MemoryFixture::new();
    let broker = fx.connect();
    let (topic, group) = (unique("huge"), unique("group"));
    fx.create_topic(&topic, 1).await;
    for i in 0..3 {
        broker.publish(&topic, format!("r{i}")).partition(0).await.unwrap();
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<(i64, u32)>();
    fx.subscriber(&broker, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .no_ack(true)
        .handle(move |msg: KafkaMessage| {
            let tx = tx.clone();
            async move {
                tx.send((msg.offset(), msg.attempt())).unwrap();
                if msg.offset() == 0 {
                    let r = msg.nack_after(Duration::MAX).await;
                    eprintln!("nack_after returned {r:?}");
                } else {
                    msg.ack().await.unwrap();
                }
            }
        });
    let recorder = Recorder::attach(&broker);
    let app = App::new(broker.clone()).spawn();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let p = TopicPartition::new(topic.as_str(), 0);
    let mut runs = Vec::new();
    while let Ok(r) = rx.try_recv() {
        runs.push(r);
    }
    eprintln!("runs {runs:?}, stored {:?}, settles of 0: {:?}", recorder.stored(&p), recorder.settles(&p, 0));
    app.shutdown().await.unwrap();
    eprintln!("committed {:?}", fx.committed(&group, &topic, 0).await);
}
