//! The application: runs brokers' subscribers until a signal, then shuts down cleanly.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ackstream_core::{BackendError, BoxError, Broker, ConfigError, Runnable, Shutdown};
use futures_util::future::BoxFuture;
use tokio::task::JoinSet;

use crate::observe::{DEFAULT_STUCK_AFTER, Monitor, Stop};

type Hook = Box<dyn FnOnce() -> BoxFuture<'static, Result<(), BoxError>> + Send>;

/// Default bound on how long shutdown (or a revoke) waits for in-flight handlers.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs subscribers: `App::new(broker).run().await` consumes until SIGINT or SIGTERM, then stops
/// fetching, drains in-flight handlers (bounded by [`drain_timeout`](Self::drain_timeout)),
/// commits what finished and leaves the consumer groups.
///
/// ```
/// use ackstream::prelude::*;
/// use ackstream::memory::MemoryBroker;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), ackstream::BoxError> {
/// let broker = MemoryBroker::new();
/// broker.subscriber("events").handle(|body: String| async move { println!("{body}") });
/// let app = App::new(broker)
///     .on_startup(|| async { println!("starting"); Ok(()) })
///     .on_shutdown(|| async { println!("stopped"); Ok(()) })
///     .spawn();
/// app.shutdown().await?; // programmatic shutdown, as a signal would do
/// # Ok(())
/// # }
/// ```
#[must_use = "an App does nothing until run"]
pub struct App {
    brokers: Vec<Arc<dyn Runnable>>,
    startup: Vec<Hook>,
    shutdown_hooks: Vec<Hook>,
    drain_timeout: Duration,
    shutdown: Shutdown,
    stuck_after: Duration,
    /// The HTTP endpoint's listener, bound by [`App::http`] (or why it could not be).
    #[cfg(feature = "http")]
    http: Option<std::io::Result<std::net::TcpListener>>,
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field("brokers", &self.brokers.len())
            .field("drain_timeout", &self.drain_timeout)
            .finish_non_exhaustive()
    }
}

impl App {
    /// An app running one broker's subscribers.
    pub fn new(broker: impl Broker) -> Self {
        Self {
            brokers: vec![broker.core().clone()],
            startup: Vec::new(),
            shutdown_hooks: Vec::new(),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            shutdown: Shutdown::new(),
            stuck_after: DEFAULT_STUCK_AFTER,
            #[cfg(feature = "http")]
            http: None,
        }
    }

    /// How long one unfinished record may hold its partition's commit back before the
    /// partition counts as stuck: one warning names it, `/health/ready` fails and the status
    /// page marks it until the commit moves (see [`observe`](crate::observe)). Default
    /// [`DEFAULT_STUCK_AFTER`].
    pub fn stuck_after(mut self, limit: Duration) -> Self {
        self.stuck_after = limit;
        self
    }

    /// Serves `/metrics`, `/health/live`, `/health/ready` and the status page `/` on `addr`
    /// while the app runs (the address is bound here: port 0 picks a free one, see
    /// [`http_addr`](Self::http_addr); a bind failure is the error of [`run`](Self::run)).
    ///
    /// ```
    /// use ackstream::prelude::*;
    /// use ackstream::memory::MemoryBroker;
    /// let app = App::new(MemoryBroker::new()).http("127.0.0.1:0");
    /// assert!(app.http_addr().is_some_and(|a| a.ip().is_loopback()));
    /// ```
    #[cfg(feature = "http")]
    pub fn http(mut self, addr: impl std::net::ToSocketAddrs) -> Self {
        let listener = std::net::TcpListener::bind(addr).and_then(|l| {
            l.set_nonblocking(true)?;
            Ok(l)
        });
        self.http = Some(listener);
        self
    }

    /// The address the HTTP endpoint listens on, if [`http`](Self::http) bound one.
    #[cfg(feature = "http")]
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.http.as_ref()?.as_ref().ok()?.local_addr().ok()
    }

    /// The monitor of this app's subscribers (those registered so far).
    pub fn monitor(&self) -> Monitor {
        Monitor::of_brokers(&self.brokers, self.stuck_after)
    }

    /// Also runs another broker's subscribers.
    pub fn with_broker(mut self, broker: impl Broker) -> Self {
        self.brokers.push(broker.core().clone());
        self
    }

    /// How long shutdown and revokes wait for in-flight handlers before cancelling them (their
    /// records are then not committed). Default [`DEFAULT_DRAIN_TIMEOUT`].
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Runs `hook` before any subscriber starts; an error stops the app before it consumes.
    pub fn on_startup<F, Fut>(mut self, hook: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        self.startup.push(Box::new(move || Box::pin(hook())));
        self
    }

    /// Runs `hook` after every subscriber has drained and committed.
    pub fn on_shutdown<F, Fut>(mut self, hook: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        self.shutdown_hooks.push(Box::new(move || Box::pin(hook())));
        self
    }

    /// A handle that shuts the app down from anywhere.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shutdown.clone())
    }

    /// Runs until SIGINT (Ctrl-C) or SIGTERM, or until a [`ShutdownHandle`] fires.
    pub async fn run(self) -> Result<(), AppError> {
        self.run_until(termination_signal()).await
    }

    /// Runs until `signal` completes, or until a [`ShutdownHandle`] fires.
    pub async fn run_until(self, signal: impl Future<Output = ()> + Send) -> Result<(), AppError> {
        let monitor = self.monitor();
        self.run_watched(signal, monitor).await
    }

    async fn run_watched(
        mut self,
        signal: impl Future<Output = ()> + Send,
        monitor: Monitor,
    ) -> Result<(), AppError> {
        for broker in &self.brokers {
            broker.check().map_err(AppError::Config)?;
        }
        let (finished, stop) = tokio::sync::watch::channel(false);
        let stop = Stop(stop);
        #[cfg(feature = "http")]
        if let Some(listener) = self.http.take() {
            // `/metrics` has a duration histogram: sample handler durations.
            for broker in &self.brokers {
                broker.time_handlers();
            }
            let listener = listener
                .and_then(tokio::net::TcpListener::from_std)
                .map_err(AppError::Http)?;
            tracing::info!(addr = ?listener.local_addr().ok(), "serving metrics, health and status");
            tokio::spawn(crate::observe::http::serve(
                listener,
                monitor.clone(),
                stop.clone(),
            ));
        }
        tokio::spawn(monitor.clone().run(stop));
        let result = self.run_subscribers(signal).await;
        let _ = finished.send(true);
        result
    }

    async fn run_subscribers(
        self,
        signal: impl Future<Output = ()> + Send,
    ) -> Result<(), AppError> {
        for hook in self.startup {
            hook().await.map_err(AppError::Hook)?;
        }
        let mut subscribers = JoinSet::new();
        for broker in &self.brokers {
            for run in broker.start(&self.shutdown, self.drain_timeout) {
                subscribers.spawn(run);
            }
        }
        tracing::info!(subscribers = subscribers.len(), "app started");
        let mut result = Ok(());
        tokio::pin!(signal);
        loop {
            tokio::select! {
                () = &mut signal => break,
                () = self.shutdown.token().cancelled() => break,
                done = subscribers.join_next() => match done {
                    None => break,
                    Some(outcome) => {
                        if let Err(e) = flatten(outcome) {
                            tracing::error!(error = %e, "subscriber stopped; shutting down");
                            result = Err(e);
                            break;
                        }
                    }
                },
            }
        }
        tracing::info!("shutting down: draining in-flight handlers and committing");
        self.shutdown.trigger();
        while let Some(outcome) = subscribers.join_next().await {
            if let Err(e) = flatten(outcome) {
                tracing::error!(error = %e, "subscriber failed during shutdown");
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        for hook in self.shutdown_hooks {
            if let Err(e) = hook().await {
                tracing::error!(error = %e, "shutdown hook failed");
                if result.is_ok() {
                    result = Err(AppError::Hook(e));
                }
            }
        }
        result
    }

    /// Runs the app on a background task (no signal handling); for tests and embedding.
    pub fn spawn(self) -> RunningApp {
        let handle = self.shutdown_handle();
        let monitor = self.monitor();
        #[cfg(feature = "http")]
        let http_addr = self.http_addr();
        let task = tokio::spawn(self.run_watched(std::future::pending(), monitor.clone()));
        RunningApp {
            handle,
            task,
            monitor,
            #[cfg(feature = "http")]
            http_addr,
        }
    }
}

fn flatten(
    outcome: Result<Result<(), BackendError>, tokio::task::JoinError>,
) -> Result<(), AppError> {
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(AppError::Subscriber(e)),
        Err(e) => Err(AppError::Task(e.to_string())),
    }
}

async fn termination_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}

/// Shuts an app down (as SIGTERM would). Cheap to clone.
#[derive(Clone, Debug)]
pub struct ShutdownHandle(Shutdown);

impl ShutdownHandle {
    /// Starts the shutdown: stop fetching, drain, commit, leave.
    pub fn shutdown(&self) {
        self.0.trigger();
    }
}

/// An app running on a background task; see [`App::spawn`].
#[derive(Debug)]
pub struct RunningApp {
    handle: ShutdownHandle,
    task: tokio::task::JoinHandle<Result<(), AppError>>,
    monitor: Monitor,
    #[cfg(feature = "http")]
    http_addr: Option<std::net::SocketAddr>,
}

impl RunningApp {
    /// The monitor of the app's subscribers: their status, readiness, stuck partitions.
    pub fn monitor(&self) -> Monitor {
        self.monitor.clone()
    }

    /// Where the app's HTTP endpoint listens (see [`App::http`]).
    #[cfg(feature = "http")]
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.http_addr
    }

    /// A handle to shut it down from elsewhere.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.handle.clone()
    }

    /// Shuts the app down and waits until it has drained and committed.
    pub async fn shutdown(self) -> Result<(), AppError> {
        self.handle.shutdown();
        self.join().await
    }

    /// Waits for the app to stop by itself (e.g. a subscriber failed).
    pub async fn join(self) -> Result<(), AppError> {
        self.task
            .await
            .unwrap_or_else(|e| Err(AppError::Task(e.to_string())))
    }
}

/// Why an app stopped with an error.
#[derive(Debug)]
#[non_exhaustive]
pub enum AppError {
    /// A subscriber cannot run as configured (found before anything was consumed).
    Config(ConfigError),
    /// A startup or shutdown hook failed.
    Hook(BoxError),
    /// A subscriber's consumer failed.
    Subscriber(BackendError),
    /// A subscriber task panicked or was cancelled.
    Task(String),
    /// The HTTP endpoint could not listen (see [`App::http`]).
    Http(std::io::Error),
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::Config(e) => write!(f, "configuration: {e}"),
            AppError::Hook(e) => write!(f, "lifecycle hook failed: {e}"),
            AppError::Subscriber(e) => write!(f, "subscriber failed: {e}"),
            AppError::Task(e) => write!(f, "subscriber task failed: {e}"),
            AppError::Http(e) => write!(f, "HTTP endpoint: {e}"),
        }
    }
}

impl std::error::Error for AppError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AppError::Config(e) => Some(e),
            AppError::Subscriber(e) => Some(e),
            AppError::Hook(e) => Some(e.as_ref()),
            AppError::Http(e) => Some(e),
            AppError::Task(_) => None,
        }
    }
}
