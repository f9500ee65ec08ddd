//! Waiting for the end of a turn (`API.md` §10).
//!
//! A [`TurnWaiter`] is created **before** the prompt is sent (so no event of the turn can be
//! missed), then [`TurnWaiter::wait`] follows the session's events:
//!
//! * the turn has started once our user message (`message.updated` with our id), an assistant
//!   message whose `parentID` is our id, or a busy/retry status shows up;
//! * it is over at the next idle of that session; `session.error` seen on the way means it
//!   failed, and an error before any sign of start (unknown agent) fails at once because no
//!   idle will ever follow;
//! * the assistant messages of the turn are then read over HTTP, waiting (briefly) for the
//!   last one to be finalised, since in error and abort cases the first idle comes before
//!   `time.completed` is set.
//!
//! When the stream is down (or events were lost), the waiter falls back to polling
//! `GET /session/status` and the messages: every 500 ms while the session is busy, backing
//! off to 5 s while nothing moves, and it only trusts a "done" observation after 3 identical
//! polls. Three consecutive failures to reach the server end the wait with
//! [`TurnError::ServerLost`]. Every wait has a deadline.

// A turn error carries the turn's messages so the caller needs no second request; it is
// returned once per turn, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::client::Client;
use crate::error::Error;
use crate::event::{EventKind, KindSet, RawEvent};
use crate::ids::{MessageId, SessionId};
use crate::router::{Delivery, EventRouter, Missed, StreamState, Subscription};
use crate::types::{
    ErrorData, ErrorName, Finish, MessageError, MessageInfo, MessageWithParts, PermissionRequest,
    Prompt, SessionStatus, Tokens,
};

/// How long to wait, after the turn's idle, for OpenCode to finalise the last assistant
/// message (observed ≈20 ms; bounded by the deadline too).
const FINALISE_GRACE: Duration = Duration::from_secs(3);
/// Fastest poll interval (session busy, or confirming a "done" observation).
const POLL_MIN: Duration = Duration::from_millis(500);
/// Slowest poll interval (nothing happening).
const POLL_MAX: Duration = Duration::from_secs(5);
/// Identical "done" observations needed when polling.
const STABLE_POLLS: u32 = 3;
/// Consecutive unreachable-server errors that mean the server is gone.
const LOST_AFTER: u32 = 3;

/// The result of a finished turn.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct TurnOutput {
    /// Session.
    pub session_id: SessionId,
    /// Our user message id.
    pub message_id: MessageId,
    /// The assistant messages of the turn (one per model step), oldest first.
    pub messages: Vec<MessageWithParts>,
    /// Tokens summed over the turn's messages.
    pub tokens: Tokens,
    /// Cost summed over the turn's messages.
    pub cost: f64,
}

impl TurnOutput {
    fn new(session_id: SessionId, message_id: MessageId, messages: Vec<MessageWithParts>) -> Self {
        let mut tokens = Tokens::default();
        let mut cost = 0.0;
        for m in &messages {
            tokens.add(&m.info.tokens);
            cost += m.info.cost;
        }
        Self {
            session_id,
            message_id,
            messages,
            tokens,
            cost,
        }
    }

    /// The last assistant message.
    pub fn last(&self) -> Option<&MessageWithParts> {
        self.messages.last()
    }

    /// Text of the last assistant message.
    pub fn text(&self) -> String {
        self.last().map(MessageWithParts::text).unwrap_or_default()
    }

    /// Finish reason of the last message.
    pub fn finish(&self) -> Option<&Finish> {
        self.last().and_then(|m| m.info.finish.as_ref())
    }
}

/// Why a turn did not end normally.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TurnError {
    /// The turn failed: model/provider error (after OpenCode's own retries), unknown agent or
    /// model, … `error.data.status_code` carries the upstream HTTP status for `APIError`.
    #[error("turn {message_id} of session {session_id} failed: {error}")]
    Failed {
        /// Session.
        session_id: SessionId,
        /// Our user message.
        message_id: MessageId,
        /// What OpenCode reported.
        error: MessageError,
        /// Assistant messages of the turn as stored.
        messages: Vec<MessageWithParts>,
    },
    /// The turn was aborted.
    #[error("turn {message_id} of session {session_id} was aborted")]
    Aborted {
        /// Session.
        session_id: SessionId,
        /// Our user message.
        message_id: MessageId,
        /// Assistant messages of the turn as stored (partial text included).
        messages: Vec<MessageWithParts>,
    },
    /// The deadline passed first. The turn may still be running (abort it if you give up).
    #[error("turn {message_id} of session {session_id} still running after {waited:?} (last status {last_status:?}{})", pending_permission.as_ref().map(|p| format!(", waiting for permission {} on {:?}", p.permission, p.patterns)).unwrap_or_default())]
    Deadline {
        /// Session.
        session_id: SessionId,
        /// Our user message.
        message_id: MessageId,
        /// How long we waited.
        waited: Duration,
        /// Last status seen.
        last_status: Option<SessionStatus>,
        /// A permission request that was pending (a turn waiting for one never ends by
        /// itself).
        pending_permission: Option<Box<PermissionRequest>>,
    },
    /// The server stopped answering.
    #[error(
        "opencode server lost while waiting for turn {message_id} of session {session_id}: {source}"
    )]
    ServerLost {
        /// Session.
        session_id: SessionId,
        /// Our user message.
        message_id: MessageId,
        /// The last connection error.
        #[source]
        source: Error,
    },
    /// The session was deleted while we waited.
    #[error("session {session_id} was deleted during turn {message_id}")]
    Deleted {
        /// Session.
        session_id: SessionId,
        /// Our user message.
        message_id: MessageId,
    },
    /// A request failed for another reason (unknown session, bad credentials…).
    #[error(transparent)]
    Client(#[from] Error),
}

impl TurnError {
    /// The upstream HTTP status of a provider error (`APIError`), e.g. 429 or 500.
    pub fn upstream_status(&self) -> Option<u16> {
        match self {
            Self::Failed { error, .. } => error.data.status_code,
            _ => None,
        }
    }
}

/// Waits for one turn; see the module docs. Create it with [`EventRouter::turn`] before
/// sending the prompt.
#[derive(Debug)]
pub struct TurnWaiter {
    client: Client,
    session: SessionId,
    message: MessageId,
    sub: Subscription,
    state: watch::Receiver<StreamState>,
    late: bool,
    silence: Duration,
}

/// How long a turn may stay silent (no event for its session while the stream is up) before
/// the waiter probes its state over HTTP.
pub const DEFAULT_SILENCE_PROBE: Duration = Duration::from_secs(30);

impl EventRouter {
    /// Subscribes to `session` for the turn whose user message is `message`. Call this
    /// **before** `prompt_async`, then [`TurnWaiter::wait`].
    ///
    /// # Panics
    /// On a detached router (it has no client to read messages with).
    pub fn turn(&self, session: &SessionId, message: &MessageId) -> TurnWaiter {
        let client = self
            .client()
            .cloned()
            .expect("EventRouter::turn needs a connected router (not EventRouter::detached)");
        self.turn_with_client(&client, session, message)
    }

    /// Like [`EventRouter::turn`], reading state through `client`. On a detached router
    /// (no stream) the waiter relies on polling alone.
    pub fn turn_with_client(
        &self,
        client: &Client,
        session: &SessionId,
        message: &MessageId,
    ) -> TurnWaiter {
        TurnWaiter {
            client: client.clone(),
            session: session.clone(),
            message: message.clone(),
            sub: self.subscribe_session_filtered(session.as_str(), turn_kinds()),
            state: self.watch_state(),
            late: false,
            silence: DEFAULT_SILENCE_PROBE,
        }
    }

    /// Waits for the end of the turn started by user message `message` in `session`, at the
    /// latest until `deadline`. Safe to call after `prompt_async`: it first re-reads the
    /// session over HTTP in case the turn progressed before the subscription existed.
    ///
    /// # Errors
    /// See [`TurnError`].
    pub async fn wait_idle(
        &self,
        session: &SessionId,
        message: &MessageId,
        deadline: Instant,
    ) -> Result<TurnOutput, TurnError> {
        let mut waiter = self.turn(session, message);
        waiter.late = true;
        waiter.wait(deadline).await
    }

    /// Subscribes, sends `prompt` with `prompt_async`, and waits for the turn's end.
    ///
    /// # Errors
    /// See [`TurnError`]; a failing `prompt_async` is [`TurnError::Client`].
    pub async fn run_turn(
        &self,
        session: &SessionId,
        prompt: &Prompt,
        deadline: Instant,
    ) -> Result<TurnOutput, TurnError> {
        let waiter = self.turn(session, &prompt.message_id);
        waiter.client.prompt_async(session, prompt).await?;
        waiter.wait(deadline).await
    }
}

fn turn_kinds() -> KindSet {
    KindSet::turn().with(EventKind::PermissionReplied)
}

/// What one HTTP probe saw.
#[derive(Debug, PartialEq)]
struct Probe {
    running: bool,
    user_exists: bool,
    turn: Vec<MessageWithParts>,
}

impl Probe {
    fn done(&self) -> bool {
        !self.running
            && self.user_exists
            && self
                .turn
                .last()
                .is_none_or(|m| m.info.is_completed() || m.info.error.is_some())
    }

    fn fingerprint(&self) -> (bool, bool, usize, Option<u64>) {
        (
            self.running,
            self.user_exists,
            self.turn.len(),
            self.turn.last().and_then(|m| m.info.time.completed),
        )
    }
}

enum Step {
    Continue,
    Finished,
    Failed(MessageError),
}

impl TurnWaiter {
    /// The session.
    pub fn session_id(&self) -> &SessionId {
        &self.session
    }

    /// Our user message id.
    pub fn message_id(&self) -> &MessageId {
        &self.message
    }

    /// Probes the turn's state over HTTP whenever its session shows no event for `silence`
    /// while the stream is up (default [`DEFAULT_SILENCE_PROBE`]): a turn whose end was missed
    /// is finished, and a vanished session is reported instead of waited on.
    #[must_use]
    pub fn probe_after(mut self, silence: Duration) -> Self {
        self.silence = silence.max(Duration::from_millis(100));
        self
    }

    /// Waits until the turn ends or `deadline` passes.
    ///
    /// # Errors
    /// See [`TurnError`].
    pub async fn wait(mut self, deadline: Instant) -> Result<TurnOutput, TurnError> {
        let begin = Instant::now();
        let mut started = false;
        let mut error: Option<MessageError> = None;
        let mut last_status: Option<SessionStatus> = None;
        let mut pending: Option<PermissionRequest> = None;

        if self.late {
            let probe = self.probe().await?;
            if probe.done() {
                return self.finish(None, deadline).await;
            }
            started |= probe.user_exists || probe.running;
        }

        loop {
            let connected = matches!(*self.state.borrow_and_update(), StreamState::Connected);
            if !connected {
                match self
                    .poll_until(deadline, begin, &last_status, &pending)
                    .await?
                {
                    PollEnd::Done => return self.finish(error, deadline).await,
                    PollEnd::Reconnected => {
                        let probe = self.probe().await?;
                        if probe.done() {
                            return self.finish(error, deadline).await;
                        }
                        started |= probe.user_exists || probe.running;
                        continue;
                    }
                }
            }
            let delivery = tokio::select! {
                () = tokio::time::sleep_until(deadline) => {
                    return Err(self.deadline_error(begin, last_status, pending));
                }
                d = self.sub.recv() => d,
                _ = self.state.changed() => continue,
                () = tokio::time::sleep(self.silence) => {
                    // Silent while connected: check rather than wait on an end we missed.
                    let probe = self.probe().await?;
                    if probe.done() && (started || probe.user_exists) {
                        return self.finish(error, deadline).await;
                    }
                    started |= probe.user_exists || probe.running;
                    continue;
                }
            };
            match delivery {
                None => {
                    // Router shut down: fall back to polling on the next iteration.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Some(Delivery::Missed(Missed::Lagged { .. } | Missed::Reconnected)) => {
                    let probe = self.probe().await?;
                    if probe.done() && (started || probe.user_exists) {
                        return self.finish(error, deadline).await;
                    }
                    started |= probe.user_exists || probe.running;
                }
                Some(Delivery::Missed(_)) => {}
                Some(Delivery::Event(raw)) => {
                    match self.on_event(
                        &raw,
                        &mut started,
                        &mut error,
                        &mut last_status,
                        &mut pending,
                    )? {
                        Step::Continue => {}
                        Step::Finished => return self.finish(error, deadline).await,
                        Step::Failed(e) => {
                            return Err(TurnError::Failed {
                                session_id: self.session.clone(),
                                message_id: self.message.clone(),
                                error: e,
                                messages: Vec::new(),
                            });
                        }
                    }
                }
            }
        }
    }

    fn on_event(
        &self,
        raw: &RawEvent,
        started: &mut bool,
        error: &mut Option<MessageError>,
        last_status: &mut Option<SessionStatus>,
        pending: &mut Option<PermissionRequest>,
    ) -> Result<Step, TurnError> {
        let event = match raw.decode() {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring undecodable event");
                return Ok(Step::Continue);
            }
        };
        use crate::event::Event as E;
        match event {
            E::MessageUpdated { info } if self.belongs(&info) => *started = true,
            E::SessionStatus { status, .. } => {
                let idle = status == SessionStatus::Idle;
                if status.is_running() {
                    *started = true;
                }
                *last_status = Some(status);
                if idle && *started {
                    return Ok(Step::Finished);
                }
            }
            E::SessionIdle { .. } => {
                *last_status = Some(SessionStatus::Idle);
                if *started {
                    return Ok(Step::Finished);
                }
            }
            E::SessionError { error: e, .. } => {
                let e = e.unwrap_or_else(|| MessageError {
                    name: ErrorName::Unknown,
                    data: ErrorData::default(),
                });
                if !*started {
                    // No busy and no message: OpenCode will never send idle (unknown agent).
                    return Ok(Step::Failed(e));
                }
                // Keep the first error (a second one is often a stack-trace variant).
                error.get_or_insert(e);
            }
            E::SessionDeleted { .. } => {
                return Err(TurnError::Deleted {
                    session_id: self.session.clone(),
                    message_id: self.message.clone(),
                });
            }
            E::PermissionAsked(req) => *pending = Some(req),
            E::PermissionReplied { request_id, .. }
                if pending.as_ref().is_some_and(|p| p.id == request_id) =>
            {
                *pending = None;
            }
            _ => {}
        }
        Ok(Step::Continue)
    }

    fn belongs(&self, info: &MessageInfo) -> bool {
        info.id == self.message || info.parent_id.as_ref() == Some(&self.message)
    }

    fn deadline_error(
        &self,
        begin: Instant,
        last_status: Option<SessionStatus>,
        pending: Option<PermissionRequest>,
    ) -> TurnError {
        TurnError::Deadline {
            session_id: self.session.clone(),
            message_id: self.message.clone(),
            waited: begin.elapsed(),
            last_status,
            pending_permission: pending.map(Box::new),
        }
    }

    fn lost(&self, source: Error) -> TurnError {
        TurnError::ServerLost {
            session_id: self.session.clone(),
            message_id: self.message.clone(),
            source,
        }
    }

    async fn probe(&self) -> Result<Probe, Error> {
        let running = self
            .client
            .session_status()
            .await?
            .get(&self.session)
            .is_some_and(SessionStatus::is_running);
        let messages = self.client.messages(&self.session).await?;
        let user_exists = messages.iter().any(|m| m.info.id == self.message);
        let turn = messages
            .into_iter()
            .filter(|m| m.info.is_assistant() && m.info.parent_id.as_ref() == Some(&self.message))
            .collect();
        Ok(Probe {
            running,
            user_exists,
            turn,
        })
    }

    /// Polls while the stream is down. Returns when the turn is done (3 stable polls) or the
    /// stream is back.
    async fn poll_until(
        &mut self,
        deadline: Instant,
        begin: Instant,
        last_status: &Option<SessionStatus>,
        pending: &Option<PermissionRequest>,
    ) -> Result<PollEnd, TurnError> {
        let mut interval = POLL_MIN;
        let mut stable = 0;
        let mut last_fp = None;
        let mut failures = 0;
        loop {
            if matches!(*self.state.borrow_and_update(), StreamState::Connected) {
                return Ok(PollEnd::Reconnected);
            }
            match self.probe().await {
                Ok(probe) => {
                    failures = 0;
                    let fp = probe.fingerprint();
                    if probe.done() {
                        stable = if last_fp == Some(fp) { stable + 1 } else { 1 };
                        if stable >= STABLE_POLLS {
                            return Ok(PollEnd::Done);
                        }
                        interval = POLL_MIN;
                    } else if probe.running {
                        stable = 0;
                        interval = POLL_MIN;
                    } else {
                        stable = 0;
                        interval = (interval * 2).min(POLL_MAX);
                    }
                    last_fp = Some(fp);
                }
                Err(e) if e.is_unreachable() => {
                    failures += 1;
                    if failures >= LOST_AFTER {
                        return Err(self.lost(e));
                    }
                    interval = POLL_MIN;
                }
                Err(e) => return Err(e.into()),
            }
            let wake = (Instant::now() + interval).min(deadline);
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                _ = self.state.changed() => {}
            }
            if Instant::now() >= deadline {
                return Err(self.deadline_error(begin, last_status.clone(), pending.clone()));
            }
        }
    }

    /// Reads the turn's messages (waiting briefly for the last one to be finalised) and
    /// classifies the outcome.
    async fn finish(
        &self,
        error: Option<MessageError>,
        deadline: Instant,
    ) -> Result<TurnOutput, TurnError> {
        let until = (Instant::now() + FINALISE_GRACE).min(deadline);
        let mut failures = 0;
        let turn = loop {
            match self.probe().await {
                Ok(probe) => {
                    failures = 0;
                    let settled = probe
                        .turn
                        .last()
                        .is_some_and(|m| m.info.is_completed() || m.info.error.is_some());
                    if settled || Instant::now() >= until {
                        break probe.turn;
                    }
                }
                Err(e) if e.is_unreachable() => {
                    failures += 1;
                    if failures >= LOST_AFTER || Instant::now() >= until {
                        return Err(self.lost(e));
                    }
                }
                Err(e) => return Err(e.into()),
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        let stored_error = turn.last().and_then(|m| m.info.error.clone());
        let error = error.or(stored_error);
        let session_id = self.session.clone();
        let message_id = self.message.clone();
        match error {
            Some(e) if e.name == ErrorName::Aborted => Err(TurnError::Aborted {
                session_id,
                message_id,
                messages: turn,
            }),
            Some(e) => Err(TurnError::Failed {
                session_id,
                message_id,
                error: e,
                messages: turn,
            }),
            None => {
                // Completed without finish and without error: aborted during a retry wait.
                let aborted = turn
                    .last()
                    .is_some_and(|m| m.info.is_completed() && m.info.finish.is_none());
                if aborted {
                    return Err(TurnError::Aborted {
                        session_id,
                        message_id,
                        messages: turn,
                    });
                }
                Ok(TurnOutput::new(session_id, message_id, turn))
            }
        }
    }
}

enum PollEnd {
    Done,
    Reconnected,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(json: &str) -> MessageWithParts {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn probe_done_requires_idle_user_and_final_message() {
        let done = msg(
            r#"{"info":{"id":"msg_2","sessionID":"ses_1","role":"assistant","parentID":"msg_1","time":{"created":1,"completed":2},"finish":"stop"},"parts":[]}"#,
        );
        let open = msg(
            r#"{"info":{"id":"msg_2","sessionID":"ses_1","role":"assistant","parentID":"msg_1","time":{"created":1}},"parts":[]}"#,
        );
        let p = |running, user_exists, turn: Vec<MessageWithParts>| Probe {
            running,
            user_exists,
            turn,
        };
        assert!(p(false, true, vec![done.clone()]).done());
        assert!(!p(true, true, vec![done.clone()]).done());
        assert!(!p(false, false, vec![]).done());
        assert!(!p(false, true, vec![open]).done());
    }

    #[test]
    fn output_sums_tokens_and_cost() {
        let a = msg(
            r#"{"info":{"id":"msg_2","sessionID":"ses_1","role":"assistant","parentID":"msg_1","cost":0.5,"tokens":{"input":10,"output":5,"reasoning":0,"cache":{"read":1,"write":0}},"time":{"created":1,"completed":2},"finish":"tool-calls"},"parts":[]}"#,
        );
        let b = msg(
            r#"{"info":{"id":"msg_3","sessionID":"ses_1","role":"assistant","parentID":"msg_1","cost":0.25,"tokens":{"input":20,"output":7,"reasoning":1,"cache":{"read":0,"write":2}},"time":{"created":3,"completed":4},"finish":"stop"},"parts":[]}"#,
        );
        let out = TurnOutput::new("ses_1".into(), "msg_1".into(), vec![a, b]);
        assert_eq!(out.tokens.input, 30);
        assert_eq!(out.tokens.output, 12);
        assert_eq!(out.tokens.cache.read, 1);
        assert_eq!(out.tokens.cache.write, 2);
        assert!((out.cost - 0.75).abs() < 1e-9);
        assert_eq!(out.finish(), Some(&Finish::Stop));
    }
}
