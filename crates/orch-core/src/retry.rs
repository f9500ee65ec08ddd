//! Retry policy with exponential backoff, jitter and error classes, on top of `backon`.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable, Sleeper};
use serde::{Deserialize, Serialize};

/// How an error should be treated by the retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The provider asked us to slow down: retry, never sooner than `retry_after`.
    RateLimit {
        /// The server's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// Connection reset, timeout, 5xx: retry with backoff.
    Network,
    /// The session itself is broken (gone, aborted, permission denied): do not retry.
    Session,
    /// The answer could not be parsed: one more try (see [`RetryPolicy::parse_retries`]).
    Parse,
}

/// Errors that know their [`ErrorClass`].
pub trait Classify {
    /// The class of this error.
    fn class(&self) -> ErrorClass;
}

/// What the policy says after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again after this delay (before jitter and `Retry-After`).
    RetryAfter(Duration),
    /// Give up and return the error.
    GiveUp,
}

/// Exponential backoff with jitter and per-class rules.
///
/// Defaults (the seed): first retry after 1 s, doubling (1 s, 2 s, 4 s, 8 s), at most 5
/// attempts in total, delays capped at 60 s, jitter on (adds up to one more delay at random),
/// one extra try for a parse error.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Delay before the first retry.
    pub initial_delay: Duration,
    /// Growth factor per retry.
    pub factor: f32,
    /// Largest delay between attempts (a longer `Retry-After` is still honoured).
    pub max_delay: Duration,
    /// Attempts in total, the first included.
    pub max_attempts: u32,
    /// Add random jitter in `[0, delay)` to each delay.
    pub jitter: bool,
    /// Retries allowed for [`ErrorClass::Parse`] errors.
    pub parse_retries: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_secs(1),
            factor: 2.0,
            max_delay: Duration::from_secs(60),
            max_attempts: 5,
            jitter: true,
            parse_retries: 1,
        }
    }
}

impl RetryPolicy {
    /// The same policy without jitter (deterministic delays).
    pub fn without_jitter(mut self) -> Self {
        self.jitter = false;
        self
    }

    /// Sets the total number of attempts.
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// The backon builder for this policy's delays.
    pub fn backoff(&self) -> ExponentialBuilder {
        let b = ExponentialBuilder::default()
            .with_min_delay(self.initial_delay)
            .with_factor(self.factor)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_attempts.saturating_sub(1) as usize);
        if self.jitter { b.with_jitter() } else { b }
    }

    /// Pure decision after attempt number `attempt` (1-based) failed with `class`, given
    /// how many parse errors happened so far (this one included). Mirrors what
    /// [`run_with`](Self::run_with) does, without jitter.
    pub fn decide(&self, class: ErrorClass, attempt: u32, parse_errors: u32) -> RetryDecision {
        if attempt >= self.max_attempts {
            return RetryDecision::GiveUp;
        }
        match class {
            ErrorClass::Session => return RetryDecision::GiveUp,
            ErrorClass::Parse if parse_errors > self.parse_retries => return RetryDecision::GiveUp,
            _ => {}
        }
        let exp = self
            .factor
            .powi(i32::try_from(attempt - 1).unwrap_or(i32::MAX));
        let base = Duration::try_from_secs_f32(self.initial_delay.as_secs_f32() * exp)
            .unwrap_or(self.max_delay)
            .min(self.max_delay);
        match class {
            ErrorClass::RateLimit {
                retry_after: Some(ra),
            } => RetryDecision::RetryAfter(base.max(ra)),
            _ => RetryDecision::RetryAfter(base),
        }
    }

    /// Runs `op` until it succeeds or the policy gives up, sleeping with tokio.
    ///
    /// # Errors
    /// The last error, once it is not retryable or the attempts are used up.
    pub async fn run<T, E, F, Fut>(&self, op: F) -> Result<T, E>
    where
        E: Classify,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.run_with(op, E::class, backon::TokioSleeper).await
    }

    /// Runs `op` with an explicit classifier and sleeper (a recording sleeper in tests).
    ///
    /// # Errors
    /// The last error, once it is not retryable or the attempts are used up.
    pub async fn run_with<T, E, F, Fut, C, S>(&self, op: F, classify: C, sleeper: S) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Fn(&E) -> ErrorClass,
        S: Sleeper,
    {
        let parse_errors = AtomicU32::new(0);
        let parse_retries = self.parse_retries;
        op.retry(self.backoff())
            .sleep(sleeper)
            .when(|e| match classify(e) {
                ErrorClass::Session => false,
                ErrorClass::Parse => parse_errors.fetch_add(1, Ordering::Relaxed) < parse_retries,
                ErrorClass::RateLimit { .. } | ErrorClass::Network => true,
            })
            .adjust(|e, delay| match (classify(e), delay) {
                (
                    ErrorClass::RateLimit {
                        retry_after: Some(ra),
                    },
                    Some(d),
                ) => Some(d.max(ra)),
                (_, d) => d,
            })
            .notify(|e, delay| {
                tracing::debug!(class = ?classify(e), ?delay, "retrying after error");
            })
            .await
    }
}

/// Parses an HTTP `Retry-After` value in its delta-seconds form (`"120"`, `"1.5"`).
/// Returns `None` for HTTP dates, negatives and junk.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let secs: f64 = v.parse().ok()?;
    Duration::try_from_secs_f64(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use proptest::prelude::*;
    use std::sync::Arc;

    #[derive(Debug, Clone, PartialEq)]
    struct E(ErrorClass);
    impl Classify for E {
        fn class(&self) -> ErrorClass {
            self.0
        }
    }

    type Delays = Arc<Mutex<Vec<Duration>>>;

    fn recorder() -> (
        Delays,
        impl Fn(Duration) -> std::future::Ready<()> + 'static,
    ) {
        let delays: Delays = Arc::default();
        let d = delays.clone();
        (delays, move |dur| {
            d.lock().push(dur);
            std::future::ready(())
        })
    }

    async fn run_script(
        policy: RetryPolicy,
        script: Vec<ErrorClass>,
    ) -> (Result<u32, E>, Vec<Duration>, u32) {
        let (delays, sleeper) = recorder();
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let r = policy
            .run_with(
                move || {
                    let n = c.fetch_add(1, Ordering::Relaxed) as usize;
                    let out = script.get(n).map(|cl| Err(E(*cl))).unwrap_or(Ok(n as u32));
                    async move { out }
                },
                E::class,
                sleeper,
            )
            .await;
        let d = delays.lock().clone();
        (r, d, calls.load(Ordering::Relaxed))
    }

    #[tokio::test]
    async fn network_errors_back_off_exponentially_up_to_five_attempts() {
        let p = RetryPolicy::default().without_jitter();
        let (r, delays, calls) = run_script(p, vec![ErrorClass::Network; 10]).await;
        assert_eq!(r, Err(E(ErrorClass::Network)));
        assert_eq!(calls, 5);
        let secs: Vec<u64> = delays.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, vec![1, 2, 4, 8]);
    }

    #[tokio::test]
    async fn succeeds_after_transient_errors() {
        let p = RetryPolicy::default().without_jitter();
        let (r, delays, _) = run_script(p, vec![ErrorClass::Network, ErrorClass::Network]).await;
        assert_eq!(r, Ok(2));
        assert_eq!(delays.len(), 2);
    }

    #[tokio::test]
    async fn session_error_aborts_at_once() {
        let (r, delays, calls) =
            run_script(RetryPolicy::default(), vec![ErrorClass::Session]).await;
        assert_eq!(r, Err(E(ErrorClass::Session)));
        assert_eq!((delays.len(), calls), (0, 1));
    }

    #[tokio::test]
    async fn parse_error_gets_one_more_try() {
        let p = RetryPolicy::default().without_jitter();
        let (r, _, calls) = run_script(p, vec![ErrorClass::Parse; 3]).await;
        assert_eq!((r, calls), (Err(E(ErrorClass::Parse)), 2));
        let (r, _, _) = run_script(p, vec![ErrorClass::Parse]).await;
        assert_eq!(r, Ok(1));
    }

    #[tokio::test]
    async fn rate_limit_honours_retry_after() {
        let p = RetryPolicy::default().without_jitter();
        let rl = ErrorClass::RateLimit {
            retry_after: Some(Duration::from_secs(7)),
        };
        let (r, delays, _) = run_script(p, vec![rl, rl, rl, rl]).await;
        assert_eq!(r, Ok(4));
        let secs: Vec<u64> = delays.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, vec![7, 7, 7, 8]);
    }

    #[tokio::test]
    async fn jitter_stays_below_double_delay() {
        let (_, delays, _) = run_script(RetryPolicy::default(), vec![ErrorClass::Network; 5]).await;
        for (i, d) in delays.iter().enumerate() {
            let base = Duration::from_secs(1 << i);
            assert!(*d >= base && *d < base * 2, "{d:?} vs {base:?}");
        }
    }

    #[test]
    fn decide_matches_run() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.decide(ErrorClass::Network, 1, 0),
            RetryDecision::RetryAfter(Duration::from_secs(1))
        );
        assert_eq!(
            p.decide(ErrorClass::Network, 4, 0),
            RetryDecision::RetryAfter(Duration::from_secs(8))
        );
        assert_eq!(p.decide(ErrorClass::Network, 5, 0), RetryDecision::GiveUp);
        assert_eq!(
            p.decide(ErrorClass::Parse, 1, 1),
            RetryDecision::RetryAfter(Duration::from_secs(1))
        );
        assert_eq!(p.decide(ErrorClass::Parse, 2, 2), RetryDecision::GiveUp);
        assert_eq!(p.decide(ErrorClass::Session, 1, 0), RetryDecision::GiveUp);
    }

    #[test]
    fn retry_after_parses_seconds_only() {
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after(""), None);
    }

    proptest! {
        #[test]
        fn retry_after_never_panics(s in "\\PC*") {
            let _ = parse_retry_after(&s);
        }

        #[test]
        fn retry_after_roundtrips_integers(n in 0u64..1_000_000) {
            prop_assert_eq!(parse_retry_after(&n.to_string()), Some(Duration::from_secs(n)));
        }

        #[test]
        fn decide_never_exceeds_attempts_or_cap(attempt in 1u32..20, parse in 0u32..4, ra in 0u64..200) {
            let p = RetryPolicy::default();
            for class in [ErrorClass::Network, ErrorClass::Parse, ErrorClass::RateLimit { retry_after: Some(Duration::from_secs(ra)) }] {
                match p.decide(class, attempt, parse) {
                    RetryDecision::GiveUp => {}
                    RetryDecision::RetryAfter(d) => {
                        prop_assert!(attempt < p.max_attempts);
                        prop_assert!(d <= p.max_delay.max(Duration::from_secs(ra)));
                    }
                }
            }
        }
    }
}
