//! `--memory`: the framework's own cost per record, on the in-memory broker (no Kafka, no
//! decoding): a handler that takes the `Bytes` payload and does nothing.
//!
//! Prints `ns_per_record=` (wall time from the first record to the N-th, over N) and
//! `allocs_per_record=` (heap allocations made meanwhile, counted by the bench's global
//! allocator, over N). With `--no-consume` it only publishes, so that instruction counts under
//! `valgrind --tool=callgrind` can be differenced (see `scripts/bench-cost`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ackstream::Admin;
use ackstream::memory::MemoryBroker;
use ackstream::prelude::*;
use bytes::Bytes;
use tokio::sync::Notify;

use crate::args::Args;
use crate::{alloc_count, count_allocations};

pub(crate) async fn run(args: &Args) -> Result<(), String> {
    let policy: AckPolicy = args.policy.parse()?;
    count_allocations();
    let broker = MemoryBroker::new();
    broker
        .create_topic("cost", 1)
        .await
        .map_err(|e| e.to_string())?;
    let payload = Bytes::from(vec![b'x'; 100]);
    let count = args.count();
    for _ in 0..count {
        broker
            .publish("cost", payload.clone())
            .partition(0)
            .await
            .map_err(|e| e.to_string())?;
    }
    if args.no_consume {
        println!("published={count}");
        return Ok(());
    }
    let seen = Arc::new(AtomicU64::new(0));
    let done = Arc::new(Notify::new());
    let start = Arc::new(std::sync::OnceLock::<(Instant, u64)>::new());
    let (s, d, st) = (seen.clone(), done.clone(), start.clone());
    let count_one = move || {
        let n = s.fetch_add(1, Ordering::Relaxed) + 1;
        if n == 1 {
            let _ = st.set((Instant::now(), alloc_count()));
        }
        if n == count {
            d.notify_one();
        }
    };
    let subscriber = broker
        .subscriber("cost")
        .group_id("cost")
        .auto_offset_reset(OffsetReset::Earliest)
        .ack_policy(policy);
    if policy == AckPolicy::Manual {
        subscriber.handle(move |body: Bytes, msg: KafkaMessage| {
            std::hint::black_box(body);
            count_one();
            async move {
                msg.ack().await?;
                Ok::<(), HandlerError>(())
            }
        });
    } else {
        subscriber.handle(move |body: Bytes| {
            std::hint::black_box(body);
            count_one();
            std::future::ready(())
        });
    }
    let app = crate::observed(App::new(broker.clone()), &broker, args)
        .drain_timeout(Duration::from_secs(10))
        .spawn();
    done.notified().await;
    let (end, allocs_end) = (Instant::now(), alloc_count());
    app.shutdown().await.map_err(|e| e.to_string())?;
    let (first, allocs_first) = *start.get().ok_or("no record handled")?;
    let per = (count - 1).max(1) as f64;
    let committed = broker.committed_now("cost", "cost", 0);
    if committed != Some(count as i64) {
        return Err(format!("committed {committed:?}, expected {count}"));
    }
    println!(
        "ns_per_record={:.0}",
        end.duration_since(first).as_nanos() as f64 / per
    );
    println!(
        "allocs_per_record={:.3}",
        (allocs_end - allocs_first) as f64 / per
    );
    println!(
        "msgs_per_s={:.0}",
        per / end.duration_since(first).as_secs_f64()
    );
    Ok(())
}
