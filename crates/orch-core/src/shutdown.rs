//! Shutdown manager: one cancellation token for every loop, and prioritised cleanup handlers
//! that each run under a timeout.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

type HandlerFn = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

struct Entry {
    name: String,
    priority: i32,
    timeout: Duration,
    seq: u64,
    run: HandlerFn,
}

/// How one handler ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HandlerStatus {
    /// It finished in time.
    Completed,
    /// It ran past its timeout and was aborted.
    TimedOut,
    /// It panicked; the message, if it was a string.
    Panicked(String),
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandlerReport {
    /// Handler name.
    pub name: String,
    /// Its priority (lower ran first).
    pub priority: i32,
    /// How it ended.
    pub status: HandlerStatus,
    /// Time it took (the timeout, if it timed out).
    pub elapsed: Duration,
}

/// What a shutdown did, handler by handler, in the order they ran.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShutdownReport {
    /// Every handler, in run order.
    pub handlers: Vec<HandlerReport>,
}

impl ShutdownReport {
    /// Names of the handlers that timed out.
    pub fn timed_out(&self) -> Vec<&str> {
        self.with_status(|s| *s == HandlerStatus::TimedOut)
    }

    /// Names of the handlers that panicked.
    pub fn panicked(&self) -> Vec<&str> {
        self.with_status(|s| matches!(s, HandlerStatus::Panicked(_)))
    }

    /// Whether every handler completed in time.
    pub fn is_clean(&self) -> bool {
        self.handlers
            .iter()
            .all(|h| h.status == HandlerStatus::Completed)
    }

    fn with_status(&self, f: impl Fn(&HandlerStatus) -> bool) -> Vec<&str> {
        self.handlers
            .iter()
            .filter(|h| f(&h.status))
            .map(|h| h.name.as_str())
            .collect()
    }
}

/// Registering a handler failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShutdownError {
    /// Shutdown had already started; the handler was not registered and will not run.
    #[error("shutdown already started, handler {name} not registered")]
    AlreadyShuttingDown {
        /// The handler's name.
        name: String,
    },
}

/// Coordinates shutdown. Share it with `Arc`.
///
/// [`shutdown`](Self::shutdown) cancels the token (every loop watching it stops), then runs the
/// handlers one at a time, lowest priority number first (ties in registration order), each
/// under its timeout. It is idempotent: later and concurrent calls wait for and return the same
/// report.
pub struct ShutdownManager {
    token: CancellationToken,
    default_timeout: Duration,
    handlers: Mutex<(Vec<Entry>, u64, bool)>,
    report: tokio::sync::OnceCell<ShutdownReport>,
}

impl fmt::Debug for ShutdownManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = self.handlers.lock();
        f.debug_struct("ShutdownManager")
            .field("cancelled", &self.token.is_cancelled())
            .field("default_timeout", &self.default_timeout)
            .field(
                "handlers",
                &h.0.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Default for ShutdownManager {
    fn default() -> Self {
        Self::new(Duration::from_secs(5))
    }
}

impl ShutdownManager {
    /// A manager whose handlers time out after `default_timeout` (seed: 5 s).
    pub fn new(default_timeout: Duration) -> Self {
        Self {
            token: CancellationToken::new(),
            default_timeout,
            handlers: Mutex::new((Vec::new(), 0, false)),
            report: tokio::sync::OnceCell::new(),
        }
    }

    /// The stop flag. Clone it into every loop and every wait.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Whether shutdown has started.
    pub fn is_shutting_down(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Registers a handler with the default timeout. Lower `priority` runs first.
    ///
    /// # Errors
    /// [`ShutdownError::AlreadyShuttingDown`] once shutdown has started.
    pub fn register<F, Fut>(
        &self,
        name: impl Into<String>,
        priority: i32,
        handler: F,
    ) -> Result<(), ShutdownError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.register_with_timeout(name, priority, self.default_timeout, handler)
    }

    /// Registers a handler with its own timeout.
    ///
    /// # Errors
    /// [`ShutdownError::AlreadyShuttingDown`] once shutdown has started.
    pub fn register_with_timeout<F, Fut>(
        &self,
        name: impl Into<String>,
        priority: i32,
        timeout: Duration,
        handler: F,
    ) -> Result<(), ShutdownError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let name = name.into();
        let mut h = self.handlers.lock();
        if h.2 {
            return Err(ShutdownError::AlreadyShuttingDown { name });
        }
        let seq = h.1;
        h.1 += 1;
        h.0.push(Entry {
            name,
            priority,
            timeout,
            seq,
            run: Box::new(move || Box::pin(handler())),
        });
        Ok(())
    }

    /// Cancels the token and runs every handler once. Must be called within a tokio runtime.
    pub async fn shutdown(&self) -> ShutdownReport {
        self.token.cancel();
        self.report
            .get_or_init(|| self.run_handlers())
            .await
            .clone()
    }

    async fn run_handlers(&self) -> ShutdownReport {
        let mut entries = {
            let mut h = self.handlers.lock();
            h.2 = true;
            std::mem::take(&mut h.0)
        };
        entries.sort_by_key(|e| (e.priority, e.seq));
        let mut report = ShutdownReport::default();
        for e in entries {
            let start = Instant::now();
            let mut task = tokio::spawn((e.run)());
            let status = match tokio::time::timeout(e.timeout, &mut task).await {
                Ok(Ok(())) => HandlerStatus::Completed,
                Ok(Err(err)) => {
                    let msg = err.try_into_panic().ok().and_then(|p| {
                        p.downcast_ref::<&str>()
                            .map(|s| (*s).to_owned())
                            .or_else(|| p.downcast_ref::<String>().cloned())
                    });
                    HandlerStatus::Panicked(msg.unwrap_or_default())
                }
                Err(_) => {
                    task.abort();
                    HandlerStatus::TimedOut
                }
            };
            if status != HandlerStatus::Completed {
                tracing::warn!(handler = %e.name, ?status, "shutdown handler did not complete");
            }
            report.handlers.push(HandlerReport {
                name: e.name,
                priority: e.priority,
                status,
                elapsed: start.elapsed(),
            });
        }
        report
    }

    /// Spawns a task that calls [`shutdown`](Self::shutdown) on SIGINT or SIGTERM (Ctrl-C only
    /// on non-Unix), or when the token is cancelled by someone else.
    pub fn spawn_signal_listener(self: &Arc<Self>) -> tokio::task::JoinHandle<ShutdownReport> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            tokio::select! {
                r = wait_for_signal() => {
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "cannot listen for signals; waiting for the token");
                        this.token.cancelled().await;
                    }
                }
                () = this.token.cancelled() => {}
            }
            this.shutdown().await
        })
    }
}

/// Resolves on the first SIGINT or SIGTERM (Ctrl-C elsewhere).
///
/// # Errors
/// When a signal handler cannot be installed.
pub async fn wait_for_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log() -> Arc<Mutex<Vec<&'static str>>> {
        Arc::default()
    }

    #[tokio::test(start_paused = true)]
    async fn runs_by_priority_then_registration_order() {
        let m = ShutdownManager::default();
        let l = log();
        for (name, prio) in [("db", 20), ("sessions", 10), ("journal", 20), ("server", 0)] {
            let l = l.clone();
            m.register(name, prio, move || async move { l.lock().push(name) })
                .unwrap();
        }
        let report = m.shutdown().await;
        assert_eq!(*l.lock(), vec!["server", "sessions", "db", "journal"]);
        assert!(report.is_clean());
        assert!(m.token().is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn slow_handler_times_out_and_next_still_runs() {
        let m = ShutdownManager::new(Duration::from_secs(5));
        let l = log();
        m.register("slow", 0, || tokio::time::sleep(Duration::from_secs(60)))
            .unwrap();
        let l2 = l.clone();
        m.register("after", 1, move || async move { l2.lock().push("after") })
            .unwrap();
        let report = m.shutdown().await;
        assert_eq!(report.timed_out(), vec!["slow"]);
        assert_eq!(report.handlers[0].elapsed, Duration::from_secs(5));
        assert_eq!(*l.lock(), vec!["after"]);
    }

    #[tokio::test(start_paused = true)]
    async fn panicking_handler_is_reported() {
        let m = ShutdownManager::default();
        m.register("boom", 0, || async { panic!("disk gone") })
            .unwrap();
        let report = m.shutdown().await;
        assert_eq!(
            report.handlers[0].status,
            HandlerStatus::Panicked("disk gone".into())
        );
        assert_eq!(report.panicked(), vec!["boom"]);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_is_idempotent_and_closes_registration() {
        let m = Arc::new(ShutdownManager::default());
        let count = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let c = count.clone();
        m.register("once", 0, move || async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        })
        .unwrap();
        let (a, b) = tokio::join!(m.shutdown(), m.shutdown());
        let c3 = m.shutdown().await;
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(a, b);
        assert_eq!(a, c3);
        let err = m.register("late", 0, || async {}).unwrap_err();
        assert_eq!(
            err.to_string(),
            "shutdown already started, handler late not registered"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn listener_runs_shutdown_when_token_cancelled() {
        let m = Arc::new(ShutdownManager::default());
        let listener = m.spawn_signal_listener();
        m.register("x", 0, || async {}).unwrap();
        m.token().cancel();
        let report = listener.await.unwrap();
        assert_eq!(report.handlers.len(), 1);
    }
}
