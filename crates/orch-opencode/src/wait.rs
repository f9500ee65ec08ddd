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
//! * in error and abort cases the first idle comes before the last assistant message is
//!   finalised (`time.completed`, `error`): the waiter then waits (at most 3 s) for the
//!   `message.updated` that finalises it;
//! * the turn's assistant messages are read with **one** `GET /session/{id}/message?limit=N`,
//!   `N` being the number of messages the events showed since the prompt (usually the
//!   turn's own steps). The session's history is never read, and no `GET /session/status` is
//!   needed since the idle event said it. The page must hold every message the events named;
//!   if it does not, the waiter falls back to the reads below.
//!
//! When the stream is down or events were lost (lag, reconnection, a late
//! [`crate::EventRouter::wait_idle`]), the waiter falls back to polling: `GET /session/status`, and
//! only when the session is not running, the newest messages, paging back with the `before`
//! cursor (pages doubling from 4) until our user message; a first page without it is
//! followed by one `GET …/message/{id}` that tells whether it exists at all. It polls every
//! 500 ms while the session is busy, backs off to 5 s while nothing moves, and only trusts a
//! "done" observation after 3 identical polls. Three consecutive failures to reach the
//! server end the wait with [`TurnError::ServerLost`]. Every wait has a deadline.
//!
//! Requests per turn on the normal path (stream up): `prompt_async` and one page of the
//! turn's size, whatever the session's history (before: `GET /session/status` and the whole
//! history, polled every 25 ms until an errored turn was finalised).
//!
//! OpenCode's own retries of failed model calls (`retry` statuses, seen on events or by a
//! poll) are kept as [`RetryNotice`]s in the outcome, and handed to the caller as they come
//! when it asked for them ([`TurnWaiter::notify_retries`]).

// A turn error carries the turn's messages so the caller needs no second request; it is
// returned once per turn, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::client::Client;
use crate::error::Error;
use crate::event::RawEvent;
use crate::ids::{MessageId, SessionId};
use crate::retry::RetryNotice;
use crate::router::{Delivery, Missed, StreamState, Subscription};
use crate::types::{
    ErrorData, ErrorName, Finish, MessageError, MessageInfo, MessageWithParts, PermissionRequest,
    SessionStatus, Tokens,
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
    /// The retries OpenCode made during the turn (model errors it absorbed), oldest first.
    pub retries: Vec<RetryNotice>,
}

impl TurnOutput {
    fn new(
        session_id: SessionId,
        message_id: MessageId,
        messages: Vec<MessageWithParts>,
        retries: Vec<RetryNotice>,
    ) -> Self {
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
            retries,
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
        /// The retries OpenCode made before giving up, oldest first.
        retries: Vec<RetryNotice>,
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
        /// The retries OpenCode made during the turn, oldest first.
        retries: Vec<RetryNotice>,
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
        /// The retries OpenCode made so far (a storm of them is a long silent turn).
        retries: Vec<RetryNotice>,
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
        /// The retries OpenCode made before the server was lost.
        retries: Vec<RetryNotice>,
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

    /// The retries OpenCode made during the turn (empty when the turn did not run).
    pub fn retries(&self) -> &[RetryNotice] {
        match self {
            Self::Failed { retries, .. }
            | Self::Aborted { retries, .. }
            | Self::Deadline { retries, .. }
            | Self::ServerLost { retries, .. } => retries,
            _ => &[],
        }
    }

    /// How long the provider asked to wait before trying again: its `Retry-After` (or
    /// `retry-after-ms`) as OpenCode reported it with the failure, else the wait OpenCode
    /// announced with its last retry.
    pub fn retry_after(&self) -> Option<Duration> {
        let from_headers = match self {
            Self::Failed { error, .. } => error.data.retry_after(),
            _ => None,
        };
        from_headers.or_else(|| self.retries().last().map(|r| r.wait))
    }
}

/// Waits for one turn; see the module docs. Create it with [`crate::EventRouter::turn`] before
/// sending the prompt.
#[derive(Debug)]
pub struct TurnWaiter {
    client: Client,
    session: SessionId,
    message: MessageId,
    sub: Subscription,
    state: watch::Receiver<StreamState>,
    late: bool,
    /// Subscribed while the stream was up: no event of the turn can have been missed yet.
    complete: bool,
    silence: Duration,
    retries: Retries,
    /// The session was seen running (a busy or retry status, from an event or a probe) since
    /// the wait began: until then an idle session with our user message and no assistant
    /// message may simply not have started the turn yet (a busy server takes a while).
    went_busy: bool,
}

/// The retry statuses seen during the turn, and where to send them live.
#[derive(Debug, Default)]
struct Retries {
    seen: Vec<RetryNotice>,
    notify: Option<mpsc::UnboundedSender<RetryNotice>>,
}

impl Retries {
    /// Records a `retry` status of the session (once, however often it is seen).
    fn record(&mut self, session: &SessionId, status: &SessionStatus) {
        let SessionStatus::Retry {
            attempt,
            message,
            next,
        } = status
        else {
            return;
        };
        let notice = RetryNotice::new(session.clone(), *attempt, message.clone(), *next);
        if self.seen.last().is_some_and(|last| notice.repeats(last)) {
            return;
        }
        if let Some(tx) = &self.notify {
            // A caller that stopped listening does not stop the turn.
            let _ = tx.send(notice.clone());
        }
        self.seen.push(notice);
    }
}

/// How long a turn may stay silent (no event for its session while the stream is up) before
/// the waiter probes its state over HTTP.
pub const DEFAULT_SILENCE_PROBE: Duration = Duration::from_secs(30);

impl TurnWaiter {
    /// A waiter on `sub` (subscribed to `session` before the prompt); see
    /// [`crate::EventRouter::turn`].
    pub(crate) fn new(
        client: Client,
        session: SessionId,
        message: MessageId,
        sub: Subscription,
        state: watch::Receiver<StreamState>,
    ) -> Self {
        let complete = matches!(*state.borrow(), StreamState::Connected);
        Self {
            client,
            session,
            message,
            sub,
            state,
            late: false,
            complete,
            silence: DEFAULT_SILENCE_PROBE,
            retries: Retries::default(),
            went_busy: false,
        }
    }

    /// For a wait that may start after the prompt: the turn is first re-read over HTTP.
    pub(crate) fn late(mut self) -> Self {
        self.late = true;
        self.complete = false;
        self
    }
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
        !self.running && self.user_exists && settled(&self.turn)
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

/// [`TurnWaiter::ended`]: a probe shows the turn over when it is done and the turn has an
/// assistant message or the session went busy since the wait began.
fn turn_ended(probe: &Probe, went_busy: bool) -> bool {
    probe.done() && (went_busy || !probe.turn.is_empty())
}

/// Whether the last message of a turn is final (`time.completed` or an error). A turn with
/// no assistant message is final once the session is idle: OpenCode creates the assistant
/// message when a step starts, long before the idle.
fn settled(turn: &[MessageWithParts]) -> bool {
    turn.last().is_none_or(|m| is_final(&m.info))
}

fn is_final(info: &MessageInfo) -> bool {
    info.is_completed() || info.error.is_some()
}

/// What the turn's `message.updated` events said. While `complete` holds (subscribed while
/// connected, before the prompt; nothing lagged or dropped since) every message created
/// since the prompt is known here, so the turn is read with one exact page and its
/// finalisation is awaited on events instead of polled.
#[derive(Debug, Default)]
struct Seen {
    complete: bool,
    /// Our user message: `(created, id)`.
    user: Option<(u64, MessageId)>,
    /// The turn's assistant messages, latest state, in creation order.
    turn: Vec<MessageInfo>,
    /// Other messages of the session seen since subscribing: `(created, id)`.
    others: Vec<(u64, MessageId)>,
}

impl Seen {
    fn record(&mut self, info: MessageInfo, ours: &MessageId) {
        if info.id == *ours {
            self.user = Some((info.time.created, info.id));
        } else if info.parent_id.as_ref() == Some(ours) && info.is_assistant() {
            match self.turn.iter_mut().find(|m| m.id == info.id) {
                Some(known) => *known = info,
                None => {
                    let at = self.turn.partition_point(|m| {
                        (m.time.created, &m.id) <= (info.time.created, &info.id)
                    });
                    self.turn.insert(at, info);
                }
            }
        } else if !self.others.iter().any(|(_, id)| *id == info.id) {
            self.others.push((info.time.created, info.id));
        }
    }

    /// Whether the events show the turn's last assistant message finalised.
    fn settled(&self) -> bool {
        self.turn.last().is_none_or(is_final)
    }

    /// How many of the session's newest messages are the turn's assistant messages and the
    /// other messages created after our user message (all of them if it was not seen).
    fn newest(&self) -> usize {
        let newer = match &self.user {
            Some((created, id)) => self
                .others
                .iter()
                .filter(|(c, i)| (c, i) > (created, id))
                .count(),
            None => self.others.len(),
        };
        self.turn.len() + newer
    }
}

/// First page size when reading back to our user message without event knowledge.
const FIRST_PAGE: usize = 4;
/// Largest page when paging back (pages double from the first one).
const MAX_PAGE: usize = 1024;

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

    /// The client the waiter reads the turn with.
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Probes the turn's state over HTTP whenever its session shows no event for `silence`
    /// while the stream is up (default [`DEFAULT_SILENCE_PROBE`]): a turn whose end was missed
    /// is finished, and a vanished session is reported instead of waited on.
    #[must_use]
    pub fn probe_after(mut self, silence: Duration) -> Self {
        self.silence = silence.max(Duration::from_millis(100));
        self
    }

    /// Sends each retry OpenCode announces during the turn (`session.status` `retry`: a
    /// model call failed and will be tried again) to `tx` as it comes, so the caller can
    /// count the errors OpenCode absorbs and show the wait while the turn is silent. The
    /// same notices end up in [`TurnOutput::retries`] / [`TurnError::retries`] either way.
    #[must_use]
    pub fn notify_retries(mut self, tx: mpsc::UnboundedSender<RetryNotice>) -> Self {
        self.retries.notify = Some(tx);
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
        let mut seen = Seen {
            complete: self.complete,
            ..Seen::default()
        };

        if self.late
            && let Some(end) = self.probe_finished(&mut seen, &mut started, &error).await?
        {
            return end;
        }

        loop {
            let connected = matches!(*self.state.borrow_and_update(), StreamState::Connected);
            if !connected {
                seen.complete = false;
                match self
                    .poll_until(deadline, begin, &last_status, &pending, &mut seen)
                    .await?
                {
                    PollEnd::Done(turn) => return self.outcome(error, turn),
                    PollEnd::Reconnected => {
                        if let Some(end) =
                            self.probe_finished(&mut seen, &mut started, &error).await?
                        {
                            return end;
                        }
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
                    if let Some(end) = self.probe_finished(&mut seen, &mut started, &error).await? {
                        return end;
                    }
                    continue;
                }
            };
            match delivery {
                None => {
                    // Router shut down: fall back to polling on the next iteration.
                    seen.complete = false;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Some(Delivery::Missed(Missed::Lagged { .. } | Missed::Reconnected)) => {
                    seen.complete = false;
                    if let Some(end) = self.probe_finished(&mut seen, &mut started, &error).await? {
                        return end;
                    }
                }
                Some(Delivery::Missed(_)) => seen.complete = false,
                Some(Delivery::Event(raw)) => {
                    match self.on_event(
                        &raw,
                        &mut started,
                        &mut error,
                        &mut last_status,
                        &mut pending,
                        &mut seen,
                    )? {
                        Step::Continue => {}
                        Step::Finished => {
                            return self.finish(error, deadline, seen).await;
                        }
                        Step::Failed(e) => {
                            return Err(TurnError::Failed {
                                session_id: self.session.clone(),
                                message_id: self.message.clone(),
                                error: e,
                                messages: Vec::new(),
                                retries: std::mem::take(&mut self.retries.seen),
                            });
                        }
                    }
                }
            }
        }
    }

    fn on_event(
        &mut self,
        raw: &RawEvent,
        started: &mut bool,
        error: &mut Option<MessageError>,
        last_status: &mut Option<SessionStatus>,
        pending: &mut Option<PermissionRequest>,
        seen: &mut Seen,
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
            E::MessageUpdated { info } => {
                if self.belongs(&info) {
                    *started = true;
                }
                seen.record(*info, &self.message);
            }
            E::SessionStatus { status, .. } => {
                self.retries.record(&self.session, &status);
                let idle = status == SessionStatus::Idle;
                if status.is_running() {
                    *started = true;
                    self.went_busy = true;
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
                let e = e.map_or_else(
                    || MessageError {
                        name: ErrorName::Unknown,
                        data: ErrorData::default(),
                    },
                    |e| *e,
                );
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
            E::PermissionAsked(req) => *pending = Some(*req),
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

    fn is_turn_message(&self, m: &MessageWithParts) -> bool {
        m.info.is_assistant() && m.info.parent_id.as_ref() == Some(&self.message)
    }

    fn deadline_error(
        &mut self,
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
            retries: std::mem::take(&mut self.retries.seen),
        }
    }

    fn lost(&mut self, source: Error) -> TurnError {
        TurnError::ServerLost {
            session_id: self.session.clone(),
            message_id: self.message.clone(),
            source,
            retries: std::mem::take(&mut self.retries.seen),
        }
    }

    /// Probes the turn over HTTP: its outcome when the probe shows it finished (idle, our
    /// user message stored, the last assistant message final); otherwise notes whether it
    /// has started.
    async fn probe_finished(
        &mut self,
        seen: &mut Seen,
        started: &mut bool,
        error: &Option<MessageError>,
    ) -> Result<Option<Result<TurnOutput, TurnError>>, TurnError> {
        let probe = self.probe(seen).await?;
        if self.ended(&probe) {
            return Ok(Some(self.outcome(error.clone(), probe.turn)));
        }
        *started |= probe.user_exists || probe.running;
        Ok(None)
    }

    /// Whether a probe shows the turn over: [`Probe::done`], and either an assistant message
    /// of the turn exists or the session was seen running since the wait began. An idle
    /// session whose turn has no message yet may not have started it: OpenCode stores our user
    /// message at once but starts the loop later, seconds later on a busy new server.
    fn ended(&self, probe: &Probe) -> bool {
        turn_ended(probe, self.went_busy)
    }

    /// The session's status, then (only when it is not running) the turn's messages.
    async fn probe(&mut self, seen: &mut Seen) -> Result<Probe, Error> {
        let status = self.client.session_status().await?.remove(&self.session);
        if let Some(status) = &status {
            self.retries.record(&self.session, status);
        }
        let running = status.as_ref().is_some_and(SessionStatus::is_running);
        self.went_busy |= running;
        if running {
            // Not done whatever the messages say; they are read once it is idle.
            return Ok(Probe {
                running,
                user_exists: seen.user.is_some(),
                turn: Vec::new(),
            });
        }
        let (user_exists, turn) = self.read_turn(seen).await?;
        Ok(Probe {
            running,
            user_exists,
            turn,
        })
    }

    /// Reads the session's newest messages, paging back (with doubling pages) until our user
    /// message; returns whether it exists and the turn's assistant messages. When a first
    /// page does not reach it and it was never seen, one `GET …/message/{id}` tells whether
    /// it exists at all before older pages are read.
    async fn read_turn(&self, seen: &mut Seen) -> Result<(bool, Vec<MessageWithParts>), Error> {
        let mut limit = (seen.newest() + 1).max(FIRST_PAGE);
        let mut before = None;
        let mut turn: Vec<MessageWithParts> = Vec::new();
        let mut checked = seen.user.is_some();
        loop {
            let page = self
                .client
                .messages_page(&self.session, limit as u32, before.as_ref())
                .await?;
            let mut found = false;
            let mut older: Vec<MessageWithParts> = Vec::new();
            for m in page.messages {
                if m.info.id == self.message {
                    found = true;
                    if seen.user.is_none() {
                        seen.user = Some((m.info.time.created, m.info.id.clone()));
                    }
                } else if self.is_turn_message(&m) {
                    older.push(m);
                }
            }
            older.append(&mut turn);
            turn = older;
            if found {
                return Ok((true, turn));
            }
            let Some(cursor) = page.before else {
                return Ok((false, turn));
            };
            if !checked {
                checked = true;
                match self.client.message(&self.session, &self.message).await {
                    Ok(user) => {
                        seen.user = Some((user.info.time.created, user.info.id));
                    }
                    Err(e) if e.is_not_found() => return Ok((false, turn)),
                    Err(e) => return Err(e),
                }
            }
            before = Some(cursor);
            limit = (limit * 2).min(MAX_PAGE);
        }
    }

    /// Polls while the stream is down. Returns when the turn is done (3 stable polls, with
    /// the turn's messages) or the stream is back.
    async fn poll_until(
        &mut self,
        deadline: Instant,
        begin: Instant,
        last_status: &Option<SessionStatus>,
        pending: &Option<PermissionRequest>,
        seen: &mut Seen,
    ) -> Result<PollEnd, TurnError> {
        let mut interval = POLL_MIN;
        let mut stable = 0;
        let mut last_fp = None;
        let mut failures = 0;
        loop {
            if matches!(*self.state.borrow_and_update(), StreamState::Connected) {
                return Ok(PollEnd::Reconnected);
            }
            match self.probe(seen).await {
                Ok(probe) => {
                    failures = 0;
                    let fp = probe.fingerprint();
                    if self.ended(&probe) {
                        stable = if last_fp == Some(fp) { stable + 1 } else { 1 };
                        if stable >= STABLE_POLLS {
                            return Ok(PollEnd::Done(probe.turn));
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

    /// After the turn's idle: waits (briefly) for the last assistant message to be
    /// finalised, reads the turn's messages and classifies the outcome.
    ///
    /// With complete event knowledge the finalisation is awaited on `message.updated` and
    /// the turn is read with one page of exactly its size; otherwise (or when that page does
    /// not hold every message the events named) the messages are polled every 25 ms.
    async fn finish(
        &mut self,
        mut error: Option<MessageError>,
        deadline: Instant,
        mut seen: Seen,
    ) -> Result<TurnOutput, TurnError> {
        let until = (Instant::now() + FINALISE_GRACE).min(deadline);
        if seen.complete {
            self.await_final(&mut error, until, &mut seen).await?;
        }
        if seen.complete {
            if seen.turn.is_empty() {
                return self.outcome(error, Vec::new());
            }
            let page = self
                .client
                .messages_page(&self.session, seen.newest() as u32, None)
                .await;
            match page {
                Ok(page) => {
                    let turn: Vec<MessageWithParts> = page
                        .messages
                        .into_iter()
                        .filter(|m| self.is_turn_message(m))
                        .collect();
                    let whole = seen
                        .turn
                        .iter()
                        .all(|k| turn.iter().any(|m| m.info.id == k.id));
                    if whole && (settled(&turn) || Instant::now() >= until) {
                        return self.outcome(error, turn);
                    }
                }
                Err(e) if e.is_unreachable() => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut failures = 0;
        let turn = loop {
            match self.read_turn(&mut seen).await {
                Ok((_, turn)) => {
                    failures = 0;
                    if settled(&turn) || Instant::now() >= until {
                        break turn;
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
        self.outcome(error, turn)
    }

    /// Follows the session's events until they show the turn's last message finalised, at
    /// most until `until`. Any sign of lost events clears `seen.complete`.
    async fn await_final(
        &mut self,
        error: &mut Option<MessageError>,
        until: Instant,
        seen: &mut Seen,
    ) -> Result<(), TurnError> {
        let (mut started, mut status, mut pending) = (true, None, None);
        while !seen.settled() && seen.complete {
            if !matches!(*self.state.borrow_and_update(), StreamState::Connected) {
                seen.complete = false;
                break;
            }
            let delivery = tokio::select! {
                () = tokio::time::sleep_until(until) => break,
                d = self.sub.recv() => d,
                _ = self.state.changed() => continue,
            };
            match delivery {
                Some(Delivery::Event(raw)) => {
                    // A second idle or error is expected here; deletion ends the wait.
                    self.on_event(&raw, &mut started, error, &mut status, &mut pending, seen)?;
                }
                Some(Delivery::Missed(_)) | None => seen.complete = false,
            }
        }
        Ok(())
    }

    /// Classifies a finished turn.
    fn outcome(
        &mut self,
        error: Option<MessageError>,
        turn: Vec<MessageWithParts>,
    ) -> Result<TurnOutput, TurnError> {
        let stored_error = turn.last().and_then(|m| m.info.error.clone());
        let error = error.or(stored_error);
        let session_id = self.session.clone();
        let message_id = self.message.clone();
        let retries = std::mem::take(&mut self.retries.seen);
        match error {
            Some(e) if e.name == ErrorName::Aborted => Err(TurnError::Aborted {
                session_id,
                message_id,
                messages: turn,
                retries,
            }),
            Some(e) => Err(TurnError::Failed {
                session_id,
                message_id,
                error: e,
                messages: turn,
                retries,
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
                        retries,
                    });
                }
                Ok(TurnOutput::new(session_id, message_id, turn, retries))
            }
        }
    }
}

enum PollEnd {
    Done(Vec<MessageWithParts>),
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
        // Idle with our message and nothing else: over only once the session was seen busy
        // (a busy new server stores the prompt long before it starts the turn).
        assert!(!turn_ended(&p(false, true, vec![]), false));
        assert!(turn_ended(&p(false, true, vec![]), true));
        assert!(turn_ended(&p(false, true, vec![done]), false));
    }

    fn info(
        id: &str,
        role: &str,
        parent: Option<&str>,
        created: u64,
        completed: bool,
    ) -> MessageInfo {
        let mut v = serde_json::json!({
            "id": id, "sessionID": "ses_1", "role": role,
            "time": {"created": created}
        });
        if let Some(p) = parent {
            v["parentID"] = p.into();
        }
        if completed {
            v["time"]["completed"] = (created + 1).into();
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn seen_counts_the_turn_and_newer_messages_only() {
        let ours = MessageId::new("msg_5");
        let mut seen = Seen::default();
        // The previous turn's user message, updated late (older than ours).
        seen.record(info("msg_1", "user", None, 10, false), &ours);
        seen.record(info("msg_5", "user", None, 50, false), &ours);
        seen.record(info("msg_6", "assistant", Some("msg_5"), 60, false), &ours);
        assert!(!seen.settled());
        seen.record(info("msg_6", "assistant", Some("msg_5"), 60, true), &ours);
        assert!(seen.settled());
        // A compaction pair inside the turn, then the next step.
        seen.record(info("msg_7", "user", None, 70, false), &ours);
        seen.record(info("msg_8", "assistant", Some("msg_7"), 80, true), &ours);
        seen.record(info("msg_9", "assistant", Some("msg_5"), 90, false), &ours);
        assert_eq!(seen.turn.len(), 2);
        assert!(!seen.settled(), "the last step is still open");
        assert_eq!(seen.newest(), 4, "two steps and the compaction pair");
        // Updates of a known message do not add to the count.
        seen.record(info("msg_7", "user", None, 70, false), &ours);
        assert_eq!(seen.newest(), 4);
        // Without our user message every other message counts.
        let mut blind = Seen::default();
        blind.record(info("msg_1", "user", None, 10, false), &ours);
        blind.record(info("msg_6", "assistant", Some("msg_5"), 60, true), &ours);
        assert_eq!(blind.newest(), 2);
    }

    #[test]
    fn an_empty_turn_is_settled_and_an_open_last_step_is_not() {
        let done = msg(
            r#"{"info":{"id":"msg_2","sessionID":"ses_1","role":"assistant","parentID":"msg_1","time":{"created":1},"error":{"name":"MessageAbortedError"}},"parts":[]}"#,
        );
        let open = msg(
            r#"{"info":{"id":"msg_3","sessionID":"ses_1","role":"assistant","parentID":"msg_1","time":{"created":2}},"parts":[]}"#,
        );
        assert!(settled(&[]));
        assert!(settled(std::slice::from_ref(&done)));
        assert!(!settled(&[done, open]));
    }

    #[test]
    fn each_retry_is_recorded_and_sent_once() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut retries = Retries {
            notify: Some(tx),
            ..Retries::default()
        };
        let session = SessionId::new("ses_1");
        let retry = |attempt, next| SessionStatus::Retry {
            attempt,
            message: "Rate limit exceeded".into(),
            next,
        };
        retries.record(&session, &SessionStatus::Busy);
        retries.record(&session, &retry(1, 10));
        // The same status again (an event and a poll both saw it).
        retries.record(&session, &retry(1, 10));
        retries.record(&session, &retry(2, 20));
        let attempts: Vec<u32> = retries.seen.iter().map(|r| r.attempt).collect();
        assert_eq!(attempts, [1, 2]);
        assert_eq!(rx.try_recv().unwrap().attempt, 1);
        assert_eq!(rx.try_recv().unwrap().next_at_ms, 20);
        assert!(rx.try_recv().is_err());
        // A caller that stopped listening does not stop the recording.
        drop(rx);
        retries.record(&session, &retry(3, 30));
        assert_eq!(retries.seen.len(), 3);
    }

    #[test]
    fn retry_after_prefers_the_providers_header_then_the_last_retry() {
        let error: MessageError = serde_json::from_value(serde_json::json!({
            "name": "APIError",
            "data": {"message": "Rate limit exceeded", "statusCode": 429,
                     "responseHeaders": {"retry-after": "7", "x-odd": 1}}
        }))
        .unwrap();
        let notice = RetryNotice::new("ses_1".into(), 5, "Rate limit exceeded".into(), 0);
        let failed = |error: MessageError| TurnError::Failed {
            session_id: "ses_1".into(),
            message_id: "msg_1".into(),
            error,
            messages: Vec::new(),
            retries: vec![notice.clone()],
        };
        assert_eq!(
            failed(error.clone()).retry_after(),
            Some(Duration::from_secs(7))
        );
        let mut bare = error;
        bare.data.response_headers = None;
        assert_eq!(failed(bare).retry_after(), Some(notice.wait));
        let deleted = TurnError::Deleted {
            session_id: "ses_1".into(),
            message_id: "msg_1".into(),
        };
        assert_eq!(deleted.retry_after(), None);
        assert!(deleted.retries().is_empty());
    }

    #[test]
    fn output_sums_tokens_and_cost() {
        let a = msg(
            r#"{"info":{"id":"msg_2","sessionID":"ses_1","role":"assistant","parentID":"msg_1","cost":0.5,"tokens":{"input":10,"output":5,"reasoning":0,"cache":{"read":1,"write":0}},"time":{"created":1,"completed":2},"finish":"tool-calls"},"parts":[]}"#,
        );
        let b = msg(
            r#"{"info":{"id":"msg_3","sessionID":"ses_1","role":"assistant","parentID":"msg_1","cost":0.25,"tokens":{"input":20,"output":7,"reasoning":1,"cache":{"read":0,"write":2}},"time":{"created":3,"completed":4},"finish":"stop"},"parts":[]}"#,
        );
        let out = TurnOutput::new("ses_1".into(), "msg_1".into(), vec![a, b], Vec::new());
        assert_eq!(out.tokens.input, 30);
        assert_eq!(out.tokens.output, 12);
        assert_eq!(out.tokens.cache.read, 1);
        assert_eq!(out.tokens.cache.write, 2);
        assert!((out.cost - 0.75).abs() < 1e-9);
        assert_eq!(out.finish(), Some(&Finish::Stop));
    }
}
