//! A timer accurate to tens of microseconds, for handlers that stand in for a short I/O call.
//!
//! tokio's timer works in whole milliseconds and rounds a deadline up to the next tick, so a
//! 1 ms `tokio::time::sleep` started just after a tick lasts almost 2 ms: a benchmark of "1 ms
//! handlers" would measure the rounding. This timer has one thread that sleeps until the
//! earliest deadline and completes every due wait.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

struct Due(Instant, oneshot::Sender<()>);

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

struct Timer {
    waits: Mutex<BinaryHeap<Reverse<Due>>>,
    thread: Thread,
}

fn timer() -> &'static Timer {
    static TIMER: OnceLock<Timer> = OnceLock::new();
    TIMER.get_or_init(|| {
        let thread = std::thread::Builder::new()
            .name("bench-timer".into())
            .spawn(|| {
                loop {
                    let timer = timer();
                    let now = Instant::now();
                    let mut waits = timer.waits.lock().unwrap();
                    while waits.peek().is_some_and(|Reverse(d)| d.0 <= now) {
                        let Reverse(Due(_, done)) = waits.pop().unwrap();
                        let _ = done.send(());
                    }
                    let next = waits.peek().map(|Reverse(d)| d.0 - now);
                    drop(waits);
                    std::thread::park_timeout(next.unwrap_or(Duration::from_secs(1)));
                }
            })
            .expect("timer thread")
            .thread()
            .clone();
        Timer {
            waits: Mutex::new(BinaryHeap::new()),
            thread,
        }
    })
}

/// Completes `d` after it is called (within tens of microseconds).
pub(crate) async fn sleep(d: Duration) {
    let (tx, rx) = oneshot::channel();
    let deadline = Instant::now() + d;
    let timer = timer();
    let earliest = {
        let mut waits = timer.waits.lock().unwrap();
        waits.push(Reverse(Due(deadline, tx)));
        waits.peek().is_some_and(|Reverse(d)| d.0 == deadline)
    };
    if earliest {
        timer.thread.unpark();
    }
    let _ = rx.await;
}
