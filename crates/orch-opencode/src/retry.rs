//! OpenCode's own retries of failed model calls, as a turn's caller sees them.
//!
//! OpenCode 2 announces each retry with a durable `session.retry.scheduled {attempt, at,
//! error: {type, status, retryAfterMs, …}}` (about 10 retries, ≈80–95 s before it fails the
//! execution): [`crate::v2::TurnWaiter`] turns each into the same [`RetryNotice`], with the
//! upstream status and `Retry-After` it carries.
//!
//! OpenCode retries a failing model call by itself (`API.md` §11: up to 5 retries, waiting
//! `Retry-After` when the provider sends one, else 2 s doubling, capped at 30 s) and only
//! says so with `session.status {type: "retry", attempt, message, next}` between its `busy`
//! statuses. A [`RetryNotice`] is one such status; the turn waiter hands them to its caller
//! live ([`crate::TurnWaiter::notify_retries`]) and keeps them in the turn's outcome
//! ([`crate::TurnOutput::retries`], [`crate::TurnError::retries`]), so an outage OpenCode
//! absorbed is visible and countable even when the turn then succeeds.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::ids::SessionId;

/// One retry OpenCode announced: it failed a model call and will try again.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryNotice {
    /// The session whose turn is retrying.
    pub session_id: SessionId,
    /// The retry's number: 1 for the first retry of a model call (OpenCode 2 numbers the
    /// next *attempt*, 2 for the first retry: it is converted).
    pub attempt: u32,
    /// The provider's error message, as OpenCode reports it.
    pub message: String,
    /// How long OpenCode waits before the next attempt, from `next` as seen when the notice
    /// was received (zero when that moment had passed). With a `Retry-After` from the
    /// provider, this is it.
    pub wait: Duration,
    /// When the next attempt is due, in epoch milliseconds (OpenCode's `next`).
    pub next_at_ms: u64,
    /// The upstream HTTP status: OpenCode 2 reports it; for OpenCode 1, when the message
    /// names one (its retry status does not carry it; the final failure does, in
    /// [`crate::ErrorData::status_code`]).
    pub status: Option<u16>,
    /// The provider's `Retry-After` (OpenCode 2 only; OpenCode waits at least this long,
    /// see [`RetryNotice::wait`]).
    pub retry_after: Option<Duration>,
    /// OpenCode 2's error type (`provider.rate-limit`, `provider.internal`, …).
    pub error_type: Option<String>,
}

impl RetryNotice {
    /// A notice for a `retry` status seen now.
    pub(crate) fn new(session_id: SessionId, attempt: u32, message: String, next: u64) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let status = status_in(&message);
        Self {
            session_id,
            attempt,
            message,
            wait: Duration::from_millis(next.saturating_sub(now)),
            next_at_ms: next,
            status,
            retry_after: None,
            error_type: None,
        }
    }

    /// A notice for an OpenCode 2 `session.retry.scheduled` seen now (`attempt` as the
    /// event numbers it: the next attempt).
    pub(crate) fn from_v2(
        session_id: SessionId,
        attempt: u32,
        at: u64,
        error: &crate::v2::StructuredError,
    ) -> Self {
        let mut notice = Self::new(
            session_id,
            attempt.saturating_sub(1),
            error.message.clone(),
            at,
        );
        notice.status = error.status.or(notice.status);
        notice.retry_after = error.retry_after();
        notice.error_type = Some(error.kind.clone());
        notice
    }

    /// Whether the provider is rate limiting: HTTP 429, or a message OpenCode classifies as
    /// a rate limit (`rate limit`, `too many requests`, …).
    pub fn is_rate_limit(&self) -> bool {
        if self.status == Some(429) || self.error_type.as_deref() == Some("provider.rate-limit") {
            return true;
        }
        let m = self.message.to_ascii_lowercase();
        [
            "rate limit",
            "rate-limit",
            "rate_limit",
            "too many requests",
            "too_many_requests",
            "rate increased too quickly",
        ]
        .iter()
        .any(|p| m.contains(p))
    }

    /// Whether this notice repeats `other` (the same status seen twice, e.g. by an event
    /// and by a poll).
    pub(crate) fn repeats(&self, other: &RetryNotice) -> bool {
        self.attempt == other.attempt && self.next_at_ms == other.next_at_ms
    }
}

/// The HTTP status a retry message names: a standalone 429 or 5xx (as in `HTTP 503` or
/// `529 Overloaded`), or the reason phrase of 429.
fn status_in(message: &str) -> Option<u16> {
    let named = message
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| w.len() == 3)
        .filter_map(|w| w.parse::<u16>().ok())
        .find(|s| *s == 429 || (500..600).contains(s));
    named.or_else(|| {
        let m = message.to_ascii_lowercase();
        (m.contains("too many requests") || m.contains("too_many_requests")).then_some(429)
    })
}

/// The delay a provider asked for in its response headers: `retry-after-ms` (milliseconds),
/// else `retry-after` (seconds, or an HTTP date), as OpenCode itself reads them. Header
/// names are matched case-insensitively.
pub(crate) fn retry_after(headers: &BTreeMap<String, String>) -> Option<Duration> {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    };
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = get("retry-after")?;
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = http_date(value)?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form `Retry-After` dates
/// must take (RFC 9110 §5.6.7).
fn http_date(s: &str) -> Option<SystemTime> {
    let mut parts = s.split_ascii_whitespace();
    let _weekday = parts.next()?;
    let day: u64 = parts.next()?.parse().ok()?;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let name = parts.next()?;
    let month = MONTHS.iter().position(|m| *m == name)? as u64 + 1;
    let year: u64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    if parts.next()? != "GMT" || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm), for years from 1970.
    let (y, mo) = if month <= 2 {
        (year.checked_sub(1)?, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * mo + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    Some(UNIX_EPOCH + Duration::from_secs(days * 86_400 + h * 3600 + m * 60 + sec))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn retry_after_reads_milliseconds_seconds_and_dates() {
        assert_eq!(
            retry_after(&headers(&[("retry-after", "3")])),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            retry_after(&headers(&[
                ("Retry-After", "1.5"),
                ("retry-after-ms", "250")
            ])),
            Some(Duration::from_millis(250))
        );
        assert_eq!(retry_after(&headers(&[("content-type", "x")])), None);
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")])), None);
        // A date in the past means "now".
        assert_eq!(
            retry_after(&headers(&[(
                "retry-after",
                "Sun, 06 Nov 1994 08:49:37 GMT"
            )])),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn http_dates_are_exact() {
        let t = http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(t.duration_since(UNIX_EPOCH).unwrap().as_secs(), 784_111_777);
        let t = http_date("Thu, 01 Jan 1970 00:00:00 GMT").unwrap();
        assert_eq!(t, UNIX_EPOCH);
        let t = http_date("Tue, 29 Feb 2028 23:59:59 GMT").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_835_481_599
        );
        assert!(http_date("Sun, 06 Nov 1994 08:49:37 UTC").is_none());
        assert!(http_date("06 Nov 1994").is_none());
    }

    #[test]
    fn a_notice_names_the_status_its_message_names() {
        let n = |m: &str| RetryNotice::new("ses_1".into(), 1, m.into(), 0);
        assert_eq!(n("HTTP 503 Service Unavailable").status, Some(503));
        assert_eq!(n("Too Many Requests").status, Some(429));
        assert!(n("Too Many Requests").is_rate_limit());
        assert!(n("Rate limit exceeded").is_rate_limit());
        assert_eq!(n("Rate limit exceeded").status, None);
        assert_eq!(n("Internal server error (fake)").status, None);
        assert_eq!(n("timeout after 1500 ms, 200 tokens").status, None);
        assert_eq!(
            n("scripted").wait,
            Duration::ZERO,
            "a past `next` waits nothing"
        );
    }
}
