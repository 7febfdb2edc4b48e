//! How long a failed record waits before it is delivered again.
//!
//! Under `NackOnError` a handler failure (an error or a panic) nacks its record; without a wait
//! a record that always fails would be redelivered in a hot loop, burning a core. So failures
//! back off, exponentially by default (100 ms, 200 ms, 400 ms, ... up to 30 s). An explicit
//! nack keeps its own delay (none unless `nack_after`), since the handler chose it.

use std::time::Duration;

/// The wait before a failed record's next attempt: `initial`, multiplied by `factor` after
/// each failed attempt, never more than `max`.
///
/// ```
/// use std::time::Duration;
/// use ackstream_core::Backoff;
/// let b = Backoff::default();
/// assert_eq!(b.delay(1), Some(Duration::from_millis(100)));
/// assert_eq!(b.delay(2), Some(Duration::from_millis(200)));
/// assert_eq!(b.delay(40), Some(Duration::from_secs(30)));
/// assert_eq!(Backoff::none().delay(3), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    factor: u32,
    max: Duration,
}

impl Default for Backoff {
    /// 100 ms, doubling, up to 30 s.
    fn default() -> Self {
        Self::exponential(Duration::from_millis(100), Duration::from_secs(30))
    }
}

impl Backoff {
    /// `initial` after the first failure, doubling after each further one, at most `max`.
    pub fn exponential(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            factor: 2,
            max,
        }
    }

    /// The same wait after every failure.
    pub fn fixed(delay: Duration) -> Self {
        Self {
            initial: delay,
            factor: 1,
            max: delay,
        }
    }

    /// No wait: a failed record is delivered again at once.
    pub fn none() -> Self {
        Self::fixed(Duration::ZERO)
    }

    /// The wait after the failure of attempt `attempt` (1 for the first); `None` for no wait.
    pub fn delay(&self, attempt: u32) -> Option<Duration> {
        let mut delay = self.initial;
        for _ in 1..attempt {
            if delay >= self.max {
                break;
            }
            delay = delay.saturating_mul(self.factor);
        }
        let delay = delay.min(self.max);
        (!delay.is_zero()).then_some(delay)
    }
}
