//! The app-wide shutdown signal: a cancellation token to await, and a flag that partition tasks
//! read on every record (an atomic load, where the token's own check takes a lock).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;

/// Fires once, for everything an app runs. Cheap to clone; clones share the signal.
///
/// ```
/// use ackstream_core::Shutdown;
/// let shutdown = Shutdown::new();
/// assert!(!shutdown.is_triggered());
/// shutdown.clone().trigger();
/// assert!(shutdown.is_triggered() && shutdown.token().is_cancelled());
/// ```
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    triggered: Arc<AtomicBool>,
    token: CancellationToken,
}

impl Shutdown {
    /// A signal that has not fired.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fires the signal: the flag first, so whoever sees the token cancelled sees the flag set.
    pub fn trigger(&self) {
        self.triggered.store(true, Ordering::Release);
        self.token.cancel();
    }

    /// Whether the signal fired (an atomic load).
    pub fn is_triggered(&self) -> bool {
        self.triggered.load(Ordering::Acquire)
    }

    /// The token, cancelled when the signal fires, for awaiting it.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}
