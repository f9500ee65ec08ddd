//! Waiting for the end of an OpenCode 2 turn (docs/opencode-v2.md §6).
//!
//! A [`TurnWaiter`] is created **before** the prompt is sent, subscribed to its session's
//! turn events ([`super::KindSet::turn`]), then [`TurnWaiter::wait`] follows them:
//!
//! * the turn is the execution during which `session.inbox.delivered {inboxID: our id}`
//!   arrives: the next execution of an idle session, or the running one of a busy session
//!   (our input joins it);
//! * it ends at the first `session.execution.succeeded|failed|interrupted` of the session
//!   **after** that delivery: succeeded is a [`TurnOutput`]; failed a
//!   [`TurnError::Failed`] with the upstream status and `Retry-After`; interrupted a
//!   [`TurnError::Interrupted`] with its reason (`user`: an interrupt or a delete;
//!   `shutdown`: a permission rejected without a message, or the server stopping);
//! * its output is read with one `GET …/message?order=desc&limit=N` page (`N` from the steps
//!   the events showed): the entries after our user message up to the first `idle` entry,
//!   whose id is the terminal event's with `evt_` → `msg_` (some endings leave none: the turn
//!   is then everything after our message);
//! * an execution that ends **without** our delivery is checked over HTTP: our input still in
//!   the inbox of an idle session after a *failed* execution (an unknown agent) fails our
//!   turn ([`TurnError::Failed`] with `delivered: false`), and the input is withdrawn from
//!   the inbox so that a later prompt does not carry it along;
//! * `session.retry.scheduled` (OpenCode retries a failed model call ≈10 times over 80–95 s)
//!   becomes a [`RetryNotice`], sent live to [`TurnWaiter::notify_retries`] and counted in
//!   the outcome;
//! * `permission.asked` / `permission.replied` keep the pending request, reported with a
//!   [`TurnError::Deadline`]; an interrupt drops it (as the server does, silently).
//!
//! When the stream is down, a subscriber lagged, the stream reconnected, or the session was
//! silent for [`crate::DEFAULT_SILENCE_PROBE`], the waiter re-reads the state (the stream has
//! no replay): `GET /api/session/active`, the inbox, and the history back to our message,
//! every 500 ms (up to 2 s while nothing changes). A history ending without an `idle` entry
//! is only trusted after two identical reads. Three consecutive failures to reach the server
//! end the wait with [`TurnError::ServerLost`]. At the deadline the session is interrupted on
//! the server ([`TurnWaiter::interrupt_on_deadline`]) and the wait ends with
//! [`TurnError::Deadline`].

// A turn error carries the turn's messages so the caller needs no second request; it is
// returned once per turn, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::event::RawEvent;
use crate::ids::{MessageId, SessionId};
use crate::retry::RetryNotice;
use crate::router::{Delivery, Missed, StreamState, Subscription};
use crate::types::Tokens;

use super::client::Client;
use super::error::Error;
use super::event::{Event, InterruptReason};
use super::message::{AssistantMessage, Finish, IdleMessage, Message, MessageQuery, ToolCall};
use super::types::{ModelRef, Outcome, PermissionRequest, StructuredError};

/// Fastest poll interval.
const POLL_MIN: Duration = Duration::from_millis(500);
/// Slowest poll interval (nothing changing).
const POLL_MAX: Duration = Duration::from_secs(2);
/// Consecutive unreachable-server errors that mean the server is gone.
const LOST_AFTER: u32 = 3;
/// How long to wait for the last assistant entry to be finalised after the end.
const FINALISE_GRACE: Duration = Duration::from_secs(3);
/// How long the interrupt sent at the deadline may take.
const INTERRUPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest history page (the server's maximum).
const MAX_PAGE: u32 = 200;

/// The result of a finished turn.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct TurnOutput {
    /// Session.
    pub session_id: SessionId,
    /// Our user message id.
    pub message_id: MessageId,
    /// The turn's model steps (assistant entries), oldest first.
    pub messages: Vec<AssistantMessage>,
    /// Tokens summed over the steps.
    pub tokens: Tokens,
    /// Cost summed over the steps.
    pub cost: f64,
    /// The retries OpenCode made during the turn (model errors it absorbed), oldest first.
    pub retries: Vec<RetryNotice>,
}

impl TurnOutput {
    fn new(
        session_id: SessionId,
        message_id: MessageId,
        messages: Vec<AssistantMessage>,
        retries: Vec<RetryNotice>,
    ) -> Self {
        let (tokens, cost) = sum(&messages);
        Self {
            session_id,
            message_id,
            messages,
            tokens,
            cost,
            retries,
        }
    }

    /// The last step.
    pub fn last(&self) -> Option<&AssistantMessage> {
        self.messages.last()
    }

    /// The text of the last step (the final answer).
    pub fn text(&self) -> String {
        self.last().map(AssistantMessage::text).unwrap_or_default()
    }

    /// Why the last step ended.
    pub fn finish(&self) -> Option<&Finish> {
        self.last().and_then(|m| m.finish.as_ref())
    }

    /// Every tool call of the turn, in order.
    pub fn tool_calls(&self) -> impl Iterator<Item = &ToolCall> {
        self.messages.iter().flat_map(AssistantMessage::tool_calls)
    }

    /// The model of the last step.
    pub fn model(&self) -> Option<&ModelRef> {
        self.last().and_then(|m| m.model.as_ref())
    }

    /// The files the turn's steps changed (relative to the session directory), in order,
    /// without repeats.
    pub fn files(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for f in self
            .messages
            .iter()
            .filter_map(|m| m.snapshot.as_ref())
            .flat_map(|s| &s.files)
        {
            if !out.contains(f) {
                out.push(f.clone());
            }
        }
        out
    }
}

fn sum(messages: &[AssistantMessage]) -> (Tokens, f64) {
    let mut tokens = Tokens::default();
    let mut cost = 0.0;
    for m in messages {
        tokens.add(&m.tokens);
        cost += m.cost;
    }
    (tokens, cost)
}

/// Why an OpenCode 2 turn did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TurnError {
    /// The execution failed: a provider error after OpenCode's own retries (with the upstream
    /// status and `Retry-After`), an unknown agent or model, …
    #[error("turn {message_id} of session {session_id} failed: {error}{}", if *delivered { "" } else { " (the input was never delivered)" })]
    Failed {
        /// Session.
        session_id: SessionId,
        /// Our user message.
        message_id: MessageId,
        /// What OpenCode reported.
        error: StructuredError,
        /// The turn's steps as stored.
        messages: Vec<AssistantMessage>,
        /// The retries OpenCode made before giving up, oldest first.
        retries: Vec<RetryNotice>,
        /// Whether our input reached the execution. `false` (an unknown agent): the input
        /// was withdrawn from the inbox, nothing ran.
        delivered: bool,
    },
    /// The execution was interrupted.
    #[error("turn {message_id} of session {session_id} was interrupted ({reason})")]
    Interrupted {
        /// Session.
        session_id: SessionId,
        /// Our user message.
        message_id: MessageId,
        /// Why: `user` (an interrupt or a delete) or `shutdown` (a permission rejected
        /// without a message, or the server stopping); unknown when the end was read from
        /// history.
        reason: InterruptReason,
        /// The turn's steps as stored (partial text included).
        messages: Vec<AssistantMessage>,
        /// The retries OpenCode made during the turn, oldest first.
        retries: Vec<RetryNotice>,
    },
    /// The deadline passed first. The session was interrupted on the server (unless turned
    /// off with [`TurnWaiter::interrupt_on_deadline`]).
    #[error("turn {message_id} of session {session_id} still running after {waited:?}{}{}", pending_permission.as_ref().map(|p| format!(", waiting for permission {} on {:?}", p.action, p.resources)).unwrap_or_default(), match interrupted { Some(true) => "; interrupted", Some(false) => "; nothing to interrupt", None => "" })]
    Deadline {
        /// Session.
        session_id: SessionId,
        /// Our user message.
        message_id: MessageId,
        /// How long we waited.
        waited: Duration,
        /// A permission request that was pending (a turn waiting for one never ends by
        /// itself).
        pending_permission: Option<Box<PermissionRequest>>,
        /// The retries OpenCode made so far.
        retries: Vec<RetryNotice>,
        /// What the interrupt sent at the deadline answered (`None`: not sent, or it
        /// failed).
        interrupted: Option<bool>,
    },
    /// The server stopped answering (connection refused, reset or timed out, three times
    /// in a row while the stream was down).
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
    /// Our input left the inbox without being delivered (someone withdrew it), or was never
    /// admitted.
    #[error("input {message_id} of session {session_id} was withdrawn before it was delivered")]
    Withdrawn {
        /// Session.
        session_id: SessionId,
        /// Our user message.
        message_id: MessageId,
    },
    /// A request failed for another reason (bad credentials, …), or the prompt itself.
    #[error(transparent)]
    Client(#[from] Error),
}

impl TurnError {
    /// The upstream HTTP status of a provider error (429, 500, …).
    pub fn upstream_status(&self) -> Option<u16> {
        match self {
            Self::Failed { error, .. } => error.status,
            _ => None,
        }
    }

    /// The retries OpenCode made during the turn.
    pub fn retries(&self) -> &[RetryNotice] {
        match self {
            Self::Failed { retries, .. }
            | Self::Interrupted { retries, .. }
            | Self::Deadline { retries, .. }
            | Self::ServerLost { retries, .. } => retries,
            _ => &[],
        }
    }

    /// How long the provider asked to wait: the failure's `Retry-After`, else the last
    /// retry's.
    pub fn retry_after(&self) -> Option<Duration> {
        let own = match self {
            Self::Failed { error, .. } => error.retry_after(),
            _ => None,
        };
        own.or_else(|| self.retries().last().and_then(|r| r.retry_after))
    }

    /// The turn's steps as stored, for the errors that carry them.
    pub fn messages(&self) -> &[AssistantMessage] {
        match self {
            Self::Failed { messages, .. } | Self::Interrupted { messages, .. } => messages,
            _ => &[],
        }
    }
}

/// How an execution ended, from its terminal event or from history.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Ending {
    Succeeded,
    Failed(StructuredError),
    Interrupted(InterruptReason),
}

impl Ending {
    fn of_idle(idle: &IdleMessage) -> Self {
        match &idle.outcome {
            Outcome::Succeeded => Ending::Succeeded,
            Outcome::Failed => Ending::Failed(idle.error.clone().unwrap_or_default()),
            _ => Ending::Interrupted(InterruptReason::Unknown),
        }
    }

    /// A turn that ended without an `idle` entry: judged by its last step.
    fn of_steps(steps: &[AssistantMessage]) -> Self {
        match steps.last().and_then(|m| m.error.as_ref()) {
            Some(e) if e.is_aborted() => Ending::Interrupted(InterruptReason::Unknown),
            Some(e) => Ending::Failed(e.clone()),
            None if steps.is_empty() => Ending::Interrupted(InterruptReason::Unknown),
            None => Ending::Succeeded,
        }
    }
}

/// What one event means for our turn.
#[derive(Debug, PartialEq)]
pub(crate) enum Step {
    Continue,
    Retry(RetryNotice),
    /// Our execution ended; the terminal event's id.
    Ended(Ending, Option<String>),
    /// An execution ended without our input delivered.
    EndedUndelivered(Ending),
    Deleted,
    Withdrawn,
}

/// The synchronous state of one turn: what its session's events said so far.
#[derive(Debug)]
pub(crate) struct Tracker {
    session: SessionId,
    message: MessageId,
    delivered: bool,
    steps: Vec<MessageId>,
    pending: Option<PermissionRequest>,
}

impl Tracker {
    pub(crate) fn new(session: SessionId, message: MessageId) -> Self {
        Self {
            session,
            message,
            delivered: false,
            steps: Vec::new(),
            pending: None,
        }
    }

    /// Moves the turn's state on one event of its session.
    pub(crate) fn handle(&mut self, raw: &RawEvent) -> Step {
        let event = match raw.decode_v2() {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring undecodable event");
                return Step::Continue;
            }
        };
        if event.session_id().is_some_and(|s| *s != self.session) {
            return Step::Continue;
        }
        let terminal = |this: &mut Tracker, ending: Ending| {
            this.pending = None;
            if this.delivered {
                Step::Ended(ending, raw.id().map(str::to_owned))
            } else {
                Step::EndedUndelivered(ending)
            }
        };
        match event {
            Event::InboxDelivered { inbox_id, .. } if inbox_id == self.message => {
                self.delivered = true;
            }
            Event::InboxCancelled { inbox_id, .. }
                if inbox_id == self.message && !self.delivered =>
            {
                return Step::Withdrawn;
            }
            Event::StepStarted {
                assistant_message_id,
                ..
            } if self.delivered && !self.steps.contains(&assistant_message_id) => {
                self.steps.push(assistant_message_id);
            }
            Event::RetryScheduled {
                attempt, at, error, ..
            } => {
                return Step::Retry(RetryNotice::from_v2(
                    self.session.clone(),
                    attempt,
                    at,
                    &error,
                ));
            }
            Event::PermissionAsked(req) => self.pending = Some(*req),
            Event::PermissionReplied { request_id, .. }
                if self.pending.as_ref().is_some_and(|p| p.id == request_id) =>
            {
                self.pending = None;
            }
            Event::ExecutionSucceeded { .. } => return terminal(self, Ending::Succeeded),
            Event::ExecutionFailed { error, .. } => return terminal(self, Ending::Failed(error)),
            Event::ExecutionInterrupted { reason, .. } => {
                return terminal(self, Ending::Interrupted(reason));
            }
            Event::SessionDeleted { .. } => return Step::Deleted,
            _ => {}
        }
        Step::Continue
    }

    /// History entries to read for the turn: its steps, our message, the idle entry, and
    /// some slack for switches and merged inputs.
    fn page_hint(&self) -> u32 {
        (self.steps.len() as u32 + 6).min(MAX_PAGE)
    }
}

/// What one HTTP look at the session showed.
#[derive(Debug, PartialEq)]
enum Observation {
    /// An execution is running.
    Running,
    /// Our input waits in the inbox of an idle session.
    Undelivered,
    /// Our message is in history and the session is idle: the entries after it, up to (and
    /// without) the first idle entry, and that entry.
    Finished {
        steps: Vec<AssistantMessage>,
        idle: Option<Box<IdleMessage>>,
    },
    /// Neither in the inbox nor in history.
    Missing,
}

/// The turn's steps after our message, and the first idle entry after it, from history
/// entries in chronological order; `None` when our message is not among them.
fn slice_turn(
    entries: &[Message],
    ours: &MessageId,
    idle_id: Option<&MessageId>,
) -> Option<(Vec<AssistantMessage>, Option<IdleMessage>)> {
    let start = entries.iter().position(|m| m.id() == ours)?;
    let mut steps = Vec::new();
    let mut idle = None;
    for m in &entries[start + 1..] {
        match m {
            Message::Assistant(a) => steps.push((**a).clone()),
            Message::Idle(i) => {
                // The first idle after our message ends our execution. When the terminal
                // event's id names another one, our execution left none (a plain reject):
                // the turn still stops there.
                if idle_id.is_none_or(|id| *id == i.id) {
                    idle = Some(i.clone());
                }
                break;
            }
            _ => {}
        }
    }
    Some((steps, idle))
}

/// Polling state.
#[derive(Debug, Default)]
struct Poll {
    /// Consecutive unreachable errors.
    failures: u32,
    /// The last inconclusive observation that needs a second look.
    unsure: Option<String>,
    /// After an inconclusive look while the stream is up, the next one comes this soon
    /// (doubling up to the silence interval) unless an event of the session arrives: the
    /// end may have been published before the subscription existed.
    again: Option<Duration>,
}

/// Waits for one OpenCode 2 turn; see the module docs. Create it with
/// [`crate::EventRouter::turn_v2`] before sending the prompt.
#[derive(Debug)]
pub struct TurnWaiter {
    client: Client,
    session: SessionId,
    message: MessageId,
    sub: Subscription,
    state: watch::Receiver<StreamState>,
    late: bool,
    silence: Duration,
    interrupt_on_deadline: bool,
    retries: Vec<RetryNotice>,
    notify: Option<mpsc::UnboundedSender<RetryNotice>>,
}

impl TurnWaiter {
    pub(crate) fn new(
        client: Client,
        session: SessionId,
        message: MessageId,
        sub: Subscription,
        state: watch::Receiver<StreamState>,
    ) -> Self {
        Self {
            client,
            session,
            message,
            sub,
            state,
            late: false,
            silence: crate::wait::DEFAULT_SILENCE_PROBE,
            interrupt_on_deadline: true,
            retries: Vec::new(),
            notify: None,
        }
    }

    /// For a wait that may start after the prompt: the turn is first read over HTTP.
    pub(crate) fn late(mut self) -> Self {
        self.late = true;
        self
    }

    /// The session.
    pub fn session_id(&self) -> &SessionId {
        &self.session
    }

    /// Our user message id.
    pub fn message_id(&self) -> &MessageId {
        &self.message
    }

    /// The client the waiter reads the turn with.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Probes the turn over HTTP whenever its session shows no event for `silence` while the
    /// stream is up (default [`crate::DEFAULT_SILENCE_PROBE`]).
    #[must_use]
    pub fn probe_after(mut self, silence: Duration) -> Self {
        self.silence = silence.max(Duration::from_millis(100));
        self
    }

    /// Whether to interrupt the session on the server when the deadline passes (default
    /// `true`: OpenCode 2 never ends a stalled model stream or an unanswered permission
    /// request by itself).
    #[must_use]
    pub fn interrupt_on_deadline(mut self, on: bool) -> Self {
        self.interrupt_on_deadline = on;
        self
    }

    /// Sends each retry OpenCode announces during the turn (`session.retry.scheduled`) to
    /// `tx` as it comes; the same notices end up in [`TurnOutput::retries`] /
    /// [`TurnError::retries`] either way.
    #[must_use]
    pub fn notify_retries(mut self, tx: mpsc::UnboundedSender<RetryNotice>) -> Self {
        self.notify = Some(tx);
        self
    }

    fn record_retry(&mut self, notice: RetryNotice) {
        if self.retries.last().is_some_and(|last| notice.repeats(last)) {
            return;
        }
        if let Some(tx) = &self.notify {
            // A caller that stopped listening does not stop the turn.
            let _ = tx.send(notice.clone());
        }
        self.retries.push(notice);
    }

    /// Waits until the turn ends or `deadline` passes.
    ///
    /// # Errors
    /// See [`TurnError`].
    pub async fn wait(mut self, deadline: Instant) -> Result<TurnOutput, TurnError> {
        let begin = Instant::now();
        let mut tracker = Tracker::new(self.session.clone(), self.message.clone());
        let mut poll = Poll::default();
        if self.late {
            if let Some(end) = self.probe(&tracker, None, &mut poll).await? {
                return end;
            }
            poll.again = Some(POLL_MIN);
        }
        loop {
            let connected = matches!(*self.state.borrow_and_update(), StreamState::Connected);
            if !connected {
                if let Some(end) = self
                    .poll_while_down(deadline, begin, &tracker, &mut poll)
                    .await?
                {
                    return end;
                }
                continue;
            }
            let delivery = tokio::select! {
                () = tokio::time::sleep_until(deadline) => {
                    return Err(self.deadline_error(begin, &tracker).await);
                }
                d = self.sub.recv() => d,
                _ = self.state.changed() => continue,
                () = tokio::time::sleep(poll.again.unwrap_or(self.silence).min(self.silence)) => {
                    if let Some(end) = self.probe(&tracker, None, &mut poll).await? {
                        return end;
                    }
                    poll.again = Some(poll.again.map_or(POLL_MIN, |d| d * 2).min(self.silence));
                    continue;
                }
            };
            match delivery {
                None => {
                    // Router shut down: poll from now on.
                    if let Some(end) = self.probe(&tracker, None, &mut poll).await? {
                        return end;
                    }
                    tokio::time::sleep(POLL_MIN).await;
                }
                Some(Delivery::Missed(Missed::Lagged { .. } | Missed::Reconnected)) => {
                    if let Some(end) = self.probe(&tracker, None, &mut poll).await? {
                        return end;
                    }
                    poll.again = Some(POLL_MIN);
                }
                // Disconnected: the next iteration polls until the stream is back.
                Some(Delivery::Missed(_)) => {}
                Some(Delivery::Event(raw)) => match tracker.handle(&raw) {
                    Step::Continue => poll.again = None,
                    Step::Retry(notice) => self.record_retry(notice),
                    Step::Ended(ending, event_id) => {
                        let idle_id = event_id
                            .and_then(|id| id.strip_prefix("evt_").map(|s| format!("msg_{s}")))
                            .map(MessageId::from);
                        return self.finish(ending, idle_id, &tracker, deadline).await;
                    }
                    Step::EndedUndelivered(ending) => {
                        if let Some(end) = self.probe(&tracker, Some(ending), &mut poll).await? {
                            return end;
                        }
                        poll.again = Some(POLL_MIN);
                    }
                    Step::Deleted => return Err(self.deleted()),
                    Step::Withdrawn => return Err(self.withdrawn()),
                },
            }
        }
    }

    /// Polls until the turn ends, the deadline passes, or the stream is back (`None`).
    async fn poll_while_down(
        &mut self,
        deadline: Instant,
        begin: Instant,
        tracker: &Tracker,
        poll: &mut Poll,
    ) -> Result<Option<Result<TurnOutput, TurnError>>, TurnError> {
        let mut interval = POLL_MIN;
        loop {
            if Instant::now() >= deadline {
                return Err(self.deadline_error(begin, tracker).await);
            }
            let before = poll.unsure.clone();
            if let Some(end) = self.probe(tracker, None, poll).await? {
                return Ok(Some(end));
            }
            interval = if poll.unsure == before && poll.failures == 0 {
                (interval * 2).min(POLL_MAX)
            } else {
                POLL_MIN
            };
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                () = tokio::time::sleep(interval) => {}
                changed = self.state.changed() => {
                    if changed.is_ok()
                        && matches!(*self.state.borrow_and_update(), StreamState::Connected)
                    {
                        // Back: events published meanwhile are lost, so look once more
                        // before following the stream again.
                        if let Some(end) = self.probe(tracker, None, poll).await? {
                            return Ok(Some(end));
                        }
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Reads the session's state; the turn's outcome when it shows the turn over.
    /// `hint`: the ending of an execution that just ended without our delivery.
    async fn probe(
        &mut self,
        tracker: &Tracker,
        hint: Option<Ending>,
        poll: &mut Poll,
    ) -> Result<Option<Result<TurnOutput, TurnError>>, TurnError> {
        let seen = match self.observe(tracker).await {
            Ok(o) => {
                poll.failures = 0;
                o
            }
            Err(e) if e.is_unreachable() => {
                poll.failures += 1;
                if poll.failures >= LOST_AFTER {
                    return Err(self.lost(e));
                }
                return Ok(None);
            }
            Err(e) if e.is_not_found() => return Err(self.deleted()),
            Err(e) => return Err(TurnError::Client(e)),
        };
        // An observation that needs a second look to be trusted.
        let mut confirm = |key: String| -> bool {
            if poll.unsure.as_deref() == Some(key.as_str()) {
                true
            } else {
                poll.unsure = Some(key);
                false
            }
        };
        match seen {
            Observation::Running => {
                poll.unsure = None;
                Ok(None)
            }
            Observation::Finished {
                steps,
                idle: Some(idle),
            } => Ok(Some(self.conclude(Ending::of_idle(&idle), steps))),
            Observation::Finished { steps, idle: None } => {
                let key = format!(
                    "finished:{}:{:?}",
                    steps.len(),
                    steps.last().map(|s| s.is_final())
                );
                match hint {
                    Some(ending) => Ok(Some(self.conclude(ending, steps))),
                    None if confirm(key) => {
                        Ok(Some(self.conclude(Ending::of_steps(&steps), steps)))
                    }
                    None => Ok(None),
                }
            }
            Observation::Undelivered => {
                let sure = matches!(hint, Some(Ending::Failed(_))) || confirm("undelivered".into());
                if !sure {
                    return Ok(None);
                }
                // Nothing will deliver it but a later prompt, which would then carry it
                // along: withdraw it.
                if let Err(e) = self.client.cancel_inbox(&self.session, &self.message).await {
                    tracing::warn!(error = %e, "cannot withdraw an undelivered input");
                }
                let error = match hint {
                    Some(Ending::Failed(e)) => e,
                    _ => self
                        .newest_error()
                        .await
                        .unwrap_or_else(|| StructuredError {
                            kind: "undelivered".into(),
                            message: "the input was not delivered to any execution".into(),
                            ..StructuredError::default()
                        }),
                };
                Ok(Some(Err(TurnError::Failed {
                    session_id: self.session.clone(),
                    message_id: self.message.clone(),
                    error,
                    messages: Vec::new(),
                    retries: std::mem::take(&mut self.retries),
                    delivered: false,
                })))
            }
            Observation::Missing => {
                if confirm("missing".into()) {
                    Ok(Some(Err(self.withdrawn())))
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// The error of the newest `idle` entry (why an execution failed before delivering).
    async fn newest_error(&self) -> Option<StructuredError> {
        let page = self
            .client
            .messages(&self.session, &MessageQuery::newest(1).kind("idle"))
            .await
            .ok()?;
        match page.messages.into_iter().next() {
            Some(Message::Idle(idle)) => idle.error,
            _ => None,
        }
    }

    /// One look: running? our input still in the inbox? the history back to our message.
    async fn observe(&self, tracker: &Tracker) -> Result<Observation, Error> {
        let active = self.client.is_active(&self.session).await?;
        let inbox = self.client.inbox(&self.session).await?;
        if inbox.iter().any(|i| i.id == self.message) {
            return Ok(if active {
                Observation::Running
            } else {
                Observation::Undelivered
            });
        }
        if active {
            return Ok(Observation::Running);
        }
        Ok(match self.read_turn(tracker.page_hint(), None).await? {
            Some((steps, idle)) => Observation::Finished {
                steps,
                idle: idle.map(Box::new),
            },
            None => Observation::Missing,
        })
    }

    /// Reads history newest-first until our message (pages from `hint` entries, doubling):
    /// the turn's steps and its idle entry, or `None` when our message is not there.
    async fn read_turn(
        &self,
        hint: u32,
        idle_id: Option<&MessageId>,
    ) -> Result<Option<(Vec<AssistantMessage>, Option<IdleMessage>)>, Error> {
        let mut limit = hint.clamp(4, MAX_PAGE);
        let mut query = MessageQuery::newest(limit);
        // Newest first; reversed into chronological order once our message is found.
        let mut newest_first: Vec<Message> = Vec::new();
        loop {
            let page = self.client.messages(&self.session, &query).await?;
            let count = page.messages.len();
            let found = page.messages.iter().any(|m| *m.id() == self.message);
            newest_first.extend(page.messages);
            if found {
                newest_first.reverse();
                return Ok(slice_turn(&newest_first, &self.message, idle_id));
            }
            let next = page
                .cursor
                .next
                .filter(|_| count as u32 >= limit && count > 0);
            let Some(cursor) = next else {
                return Ok(None);
            };
            limit = (limit * 2).min(MAX_PAGE);
            query = MessageQuery::after(cursor, limit);
        }
    }

    /// The turn's outcome once its execution ended (terminal event after our delivery).
    async fn finish(
        &mut self,
        ending: Ending,
        idle_id: Option<MessageId>,
        tracker: &Tracker,
        deadline: Instant,
    ) -> Result<TurnOutput, TurnError> {
        let grace = (Instant::now() + FINALISE_GRACE).min(deadline);
        loop {
            let read = match self.read_turn(tracker.page_hint(), idle_id.as_ref()).await {
                Ok(r) => r,
                Err(e) if e.is_not_found() => return Err(self.deleted()),
                Err(e) => return Err(TurnError::Client(e)),
            };
            let steps = read.map(|(steps, _)| steps).unwrap_or_default();
            let settled = steps.last().is_none_or(AssistantMessage::is_final);
            if settled || Instant::now() >= grace {
                return self.conclude(ending, steps);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn conclude(
        &mut self,
        ending: Ending,
        steps: Vec<AssistantMessage>,
    ) -> Result<TurnOutput, TurnError> {
        let retries = std::mem::take(&mut self.retries);
        match ending {
            Ending::Succeeded => Ok(TurnOutput::new(
                self.session.clone(),
                self.message.clone(),
                steps,
                retries,
            )),
            Ending::Failed(error) => Err(TurnError::Failed {
                session_id: self.session.clone(),
                message_id: self.message.clone(),
                error,
                messages: steps,
                retries,
                delivered: true,
            }),
            Ending::Interrupted(reason) => Err(TurnError::Interrupted {
                session_id: self.session.clone(),
                message_id: self.message.clone(),
                reason,
                messages: steps,
                retries,
            }),
        }
    }

    async fn deadline_error(&mut self, begin: Instant, tracker: &Tracker) -> TurnError {
        let waited = begin.elapsed();
        let interrupted = if self.interrupt_on_deadline {
            match tokio::time::timeout(INTERRUPT_TIMEOUT, self.client.interrupt(&self.session))
                .await
            {
                Ok(Ok(done)) => Some(done),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, session = %self.session, "interrupt at the deadline failed");
                    None
                }
                Err(_) => None,
            }
        } else {
            None
        };
        TurnError::Deadline {
            session_id: self.session.clone(),
            message_id: self.message.clone(),
            waited,
            pending_permission: tracker.pending.clone().map(Box::new),
            retries: std::mem::take(&mut self.retries),
            interrupted,
        }
    }

    fn lost(&mut self, source: Error) -> TurnError {
        TurnError::ServerLost {
            session_id: self.session.clone(),
            message_id: self.message.clone(),
            source,
            retries: std::mem::take(&mut self.retries),
        }
    }

    fn deleted(&self) -> TurnError {
        TurnError::Deleted {
            session_id: self.session.clone(),
            message_id: self.message.clone(),
        }
    }

    fn withdrawn(&self) -> TurnError {
        TurnError::Withdrawn {
            session_id: self.session.clone(),
            message_id: self.message.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds a captured stream to a tracker for `session`'s input `message`; the steps that
    /// were not `Continue`.
    fn replay(stream: &str, session: &str, message: &str) -> Vec<Step> {
        let mut t = Tracker::new(session.into(), message.into());
        stream
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| RawEvent::parse_v2_str(d).unwrap())
            .filter(|r| r.session_id() == Some(session))
            .map(|r| t.handle(&r))
            .filter(|s| *s != Step::Continue)
            .collect()
    }

    fn first_session(stream: &str) -> (String, String) {
        let enq = stream
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| RawEvent::parse_v2_str(d).unwrap())
            .find(|r| r.kind_v2() == super::super::EventKind::InboxEnqueued)
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(enq.properties_json()).unwrap();
        (
            v["sessionID"].as_str().unwrap().to_owned(),
            v["inboxID"].as_str().unwrap().to_owned(),
        )
    }

    #[test]
    fn a_write_turn_ends_succeeded_after_our_delivery() {
        let s = include_str!("../../tests/data/v2/events-write-turn.sse");
        let (sid, mid) = first_session(s);
        let steps = replay(s, &sid, &mid);
        assert!(
            matches!(steps.as_slice(), [Step::Ended(Ending::Succeeded, Some(id))] if id.starts_with("evt_")),
            "{steps:?}"
        );
        // Another input of the session is not ours: the same end is not our turn.
        let other = replay(s, &sid, "msg_someone_else");
        assert!(
            matches!(
                other.as_slice(),
                [Step::EndedUndelivered(Ending::Succeeded)]
            ),
            "{other:?}"
        );
    }

    #[test]
    fn retries_then_failure_carry_status_and_retry_after() {
        let s = include_str!("../../tests/data/v2/events-429-retries-then-failed.sse");
        let (sid, mid) = first_session(s);
        let steps = replay(s, &sid, &mid);
        let retries: Vec<&RetryNotice> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Retry(n) => Some(n),
                _ => None,
            })
            .collect();
        assert_eq!(retries.len(), 10, "{steps:?}");
        assert_eq!(retries[0].attempt, 1, "the first retry is number 1");
        assert!(
            retries
                .iter()
                .all(|n| n.status == Some(429) && n.is_rate_limit())
        );
        assert_eq!(retries[0].retry_after, Some(Duration::from_secs(2)));
        match steps.last() {
            Some(Step::Ended(Ending::Failed(e), _)) => {
                assert_eq!(e.status, Some(429));
                assert_eq!(e.retry_after_ms, Some(2000));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn interrupts_and_plain_rejects_end_interrupted_with_their_reason() {
        for (stream, reason) in [
            (
                include_str!("../../tests/data/v2/events-interrupt.sse"),
                InterruptReason::User,
            ),
            (
                include_str!("../../tests/data/v2/events-permission-reject.sse"),
                InterruptReason::Shutdown,
            ),
        ] {
            let (sid, mid) = first_session(stream);
            let steps = replay(stream, &sid, &mid);
            assert!(
                matches!(steps.last(), Some(Step::Ended(Ending::Interrupted(r), _)) if *r == reason),
                "{steps:?}"
            );
        }
    }

    #[test]
    fn a_reject_with_a_message_lets_the_turn_go_on_and_clears_the_pending_request() {
        let s = include_str!("../../tests/data/v2/events-permission-reject-with-message.sse");
        let (sid, mid) = first_session(s);
        let mut t = Tracker::new(sid.as_str().into(), mid.as_str().into());
        let mut asked = false;
        let mut end = None;
        for raw in s
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| RawEvent::parse_v2_str(d).unwrap())
            .filter(|r| r.session_id() == Some(sid.as_str()))
        {
            let step = t.handle(&raw);
            asked |= t.pending.is_some();
            if step != Step::Continue {
                end = Some(step);
            }
        }
        assert!(asked);
        assert!(t.pending.is_none());
        assert!(
            matches!(end, Some(Step::Ended(Ending::Succeeded, _))),
            "{end:?}"
        );
    }

    #[test]
    fn the_turn_is_sliced_from_history_after_our_message_up_to_the_idle() {
        let page: super::super::MessagePage =
            serde_json::from_str(include_str!("../../tests/data/v2/messages-write-turn.json"))
                .unwrap();
        // This capture is oldest first (`order=asc`).
        let entries = page.messages;
        let user = entries
            .iter()
            .find_map(|m| match m {
                Message::User(u) => Some(u.id.clone()),
                _ => None,
            })
            .unwrap();
        let (steps, idle) = slice_turn(&entries, &user, None).unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(idle.unwrap().outcome, Outcome::Succeeded);
        let out = TurnOutput::new("ses_1".into(), user.clone(), steps, Vec::new());
        assert_eq!(out.tool_calls().next().unwrap().name, "write");
        assert_eq!(out.finish(), Some(&Finish::Stop));
        assert!(out.tokens.input > 0);
        assert_eq!(out.files(), ["hello.txt"]);
        assert!(slice_turn(&entries, &MessageId::new("msg_nope"), None).is_none());
    }

    #[test]
    fn an_ending_without_idle_is_judged_by_its_last_step() {
        let page: super::super::MessagePage = serde_json::from_str(include_str!(
            "../../tests/data/v2/messages-permission-reject.json"
        ))
        .unwrap();
        let steps: Vec<AssistantMessage> = page
            .messages
            .iter()
            .filter_map(Message::as_assistant)
            .take(1)
            .cloned()
            .collect();
        assert_eq!(
            Ending::of_steps(&steps),
            Ending::Interrupted(InterruptReason::Unknown)
        );
        assert_eq!(
            Ending::of_steps(&[]),
            Ending::Interrupted(InterruptReason::Unknown)
        );
    }
}
