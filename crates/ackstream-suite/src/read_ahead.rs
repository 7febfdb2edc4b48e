//! The read-ahead budget: a subscriber's partitions share one [`BufferBudget`], and a record a
//! partition may not hold yet is fetched again later, never lost, never handled twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ackstream::BufferBudget;
use ackstream::extract::{Offset, Partition};
use ackstream::prelude::*;
use tokio::sync::{Notify, mpsc};

use crate::{Fixture, unique};

const PARTITIONS: i32 = 4;
const PER_PARTITION: usize = 200;

/// Publishes `PER_PARTITION` records of about 100 bytes to every partition, partitions side by
/// side.
async fn fill<B: Broker>(broker: &B, topic: &str) {
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..PARTITIONS {
        let (broker, topic) = (broker.clone(), topic.to_owned());
        tasks.spawn(async move {
            for i in 0..PER_PARTITION {
                broker
                    .publish(&topic, format!("{i:0>100}"))
                    .partition(p)
                    .await
                    .expect("publish");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("publisher task");
    }
}

/// With a budget of 200 records (or 32 KiB) for four partitions of 200 records each, most records are refused at first and
/// read again later; every one is handled exactly once and in its partition's order, and a
/// partition whose handler is stuck holds only its part: the others finish meanwhile.
pub async fn under_a_tiny_read_ahead_budget_every_record_is_handled_once_in_order<F: Fixture>(
    fx: &F,
) {
    let broker = fx.connect();
    let (topic, group) = (unique("readahead"), unique("group"));
    fx.create_topic(&topic, PARTITIONS).await;
    fill(&broker, &topic).await;
    let handled: Arc<Mutex<HashMap<i32, Vec<i64>>>> = Arc::default();
    let gate = Arc::new(Notify::new());
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<i32>();
    let (h, g) = (handled.clone(), gate.clone());
    fx.subscriber(&broker, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(false)
        .buffer(BufferBudget::new(32 * 1024, 200))
        .handle(move |Partition(p): Partition, Offset(o): Offset| {
            let (h, g, done) = (h.clone(), g.clone(), done_tx.clone());
            async move {
                if p == 0 && o == 0 {
                    g.notified().await; // stuck until the others are done
                }
                let mut handled = h.lock().unwrap();
                let offsets = handled.entry(p).or_default();
                offsets.push(o);
                if offsets.len() == PER_PARTITION {
                    done.send(p).unwrap();
                }
            }
        });
    let app = App::new(broker.clone()).spawn();
    let mut finished: Vec<i32> = Vec::new();
    while finished.len() < PARTITIONS as usize - 1 {
        finished.push(done_rx.recv().await.expect("a partition finished"));
    }
    finished.sort_unstable();
    assert_eq!(
        finished,
        vec![1, 2, 3],
        "the others finish while partition 0 is stuck"
    );
    gate.notify_one();
    assert_eq!(done_rx.recv().await, Some(0));
    app.shutdown().await.unwrap();
    let handled = handled.lock().unwrap().clone();
    let expected: Vec<i64> = (0..PER_PARTITION as i64).collect();
    for p in 0..PARTITIONS {
        assert_eq!(
            handled[&p], expected,
            "partition {p}: each record once, in order"
        );
        assert_eq!(
            fx.committed(&group, &topic, p).await,
            Some(PER_PARTITION as i64)
        );
    }
}

/// The scenarios of this file, for `behaviour_suite!`: one test each per broker. A scenario
/// missing here would never run; `every_scenario_is_listed` fails if one is.
#[doc(hidden)]
#[macro_export]
macro_rules! __scenarios_read_ahead {
    ($attrs:tt $fixture:expr) => {
        $crate::__module_tests!($attrs $fixture, read_ahead,
            under_a_tiny_read_ahead_budget_every_record_is_handled_once_in_order,
        );
    };
}
