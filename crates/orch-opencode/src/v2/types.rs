//! Request and response shapes of the OpenCode 2 HTTP API (2.1.2), except messages
//! ([`super::message`]).
//!
//! Every response type tolerates unknown fields, and every closed set of strings has an
//! `Other(String)` variant that keeps values a newer server may send.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::ids::{MessageId, PermissionId, SessionId};
use crate::types::{Tokens, open_enum};

open_enum!(
    /// The effect of a permission rule.
    Effect {
        /// The action runs without asking.
        Allow = "allow",
        /// A permission request is raised (`permission.asked`) and the tool waits for a reply.
        Ask = "ask",
        /// The action fails inside the turn (`permission.rejected`); a fully denied action
        /// removes its tools from the model's list.
        Deny = "deny",
    }
);

open_enum!(
    /// How an execution ended (`Session.outcome`, the `idle` history entry).
    Outcome {
        /// It finished.
        Succeeded = "succeeded",
        /// It failed (provider error after OpenCode's retries, unknown agent or model…).
        Failed = "failed",
        /// It was interrupted.
        Interrupted = "interrupted",
    }
);

open_enum!(
    /// When a prompt is delivered to a running execution.
    Delivery {
        /// At the next step boundary (the default).
        Steer = "steer",
        /// After the agent's final answer, still in the same execution.
        Queue = "queue",
    }
);

open_enum!(
    /// The answer to a permission request.
    Decision {
        /// Allow this one call.
        Once = "once",
        /// Allow and **save a project-wide permission** that overrides `ask` in every session
        /// of the project from then on. Orchestrators should never send it.
        Always = "always",
        /// Reject. With a message the tool fails with it and the turn goes on; without one
        /// the whole execution ends `interrupted` (`reason: "shutdown"`).
        Reject = "reject",
    }
);

open_enum!(
    /// The `mode` of an agent.
    AgentMode {
        /// Selectable as a session's agent.
        Primary = "primary",
        /// Only run by the `subagent` tool.
        Subagent = "subagent",
        /// Both.
        All = "all",
    }
);

/// A model: `{providerID, id, variant?}` (V1's `modelID` is `id` here).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ModelRef {
    /// Provider id, e.g. `anthropic`.
    #[serde(rename = "providerID")]
    pub provider_id: String,
    /// Model id within the provider.
    pub id: String,
    /// Variant (`default` when the server fills it in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl ModelRef {
    /// `provider/model` without a variant.
    pub fn new(provider_id: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            provider_id: provider_id.into(),
            id: id.into(),
            variant: None,
        }
    }

    /// With a variant.
    #[must_use]
    pub fn variant(mut self, variant: impl Into<String>) -> Self {
        self.variant = Some(variant.into());
        self
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider_id, self.id)
    }
}

/// A permission rule: `{action, resource, effect}`. In a ruleset the **last** matching rule
/// wins, and session rules are evaluated after the agent's.
///
/// Resources are globs relative to the session directory (`*` crosses `/`; an absolute
/// resource matches nothing); for `shell` the resource is the command text, checked part by
/// part for chained commands.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PermissionRule {
    /// `edit` (covers `write` and `edit`), `read`, `shell`, `external_directory`,
    /// `subagent`, `question`, `*`, …
    pub action: String,
    /// The glob the rule applies to.
    pub resource: String,
    /// What happens.
    pub effect: Effect,
}

impl PermissionRule {
    /// A rule.
    pub fn new(action: impl Into<String>, resource: impl Into<String>, effect: Effect) -> Self {
        Self {
            action: action.into(),
            resource: resource.into(),
            effect,
        }
    }

    /// `action` on `resource` is allowed.
    pub fn allow(action: impl Into<String>, resource: impl Into<String>) -> Self {
        Self::new(action, resource, Effect::Allow)
    }

    /// `action` on `resource` asks.
    pub fn ask(action: impl Into<String>, resource: impl Into<String>) -> Self {
        Self::new(action, resource, Effect::Ask)
    }

    /// `action` on `resource` is denied.
    pub fn deny(action: impl Into<String>, resource: impl Into<String>) -> Self {
        Self::new(action, resource, Effect::Deny)
    }

    /// A Worker's ruleset: edits denied except to `files` (paths relative to the session
    /// directory), nothing outside the project (`external_directory` denied: OpenCode 2's
    /// `build` agent allows it without asking), and no questions to a user who is not there.
    pub fn edit_only<I, S>(files: I) -> Vec<PermissionRule>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut rules = vec![PermissionRule::deny("edit", "*")];
        rules.extend(files.into_iter().map(|f| PermissionRule::allow("edit", f)));
        rules.push(PermissionRule::deny("external_directory", "*"));
        rules.push(PermissionRule::deny("question", "*"));
        rules
    }
}

/// `location: {directory}` of a session or an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Location {
    /// Absolute directory.
    pub directory: String,
}

impl Location {
    /// The location of `directory` (must be absolute: a relative one is a 500).
    pub fn new(directory: impl Into<String>) -> Self {
        Self {
            directory: directory.into(),
        }
    }
}

/// Times of a session, in epoch milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct SessionTime {
    /// Created.
    #[serde(default)]
    pub created: u64,
    /// Last updated.
    #[serde(default)]
    pub updated: u64,
    /// When the last execution ended.
    #[serde(default)]
    pub idle: Option<u64>,
    /// Archived.
    #[serde(default)]
    pub archived: Option<u64>,
}

/// A session (`Session.Info`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Session {
    /// `ses_…`.
    pub id: SessionId,
    /// The parent (sub-agent sessions).
    #[serde(rename = "parentID", default)]
    pub parent_id: Option<SessionId>,
    /// Project (hash of the git root commit; `global` for a git repository without one).
    #[serde(rename = "projectID", default)]
    pub project_id: String,
    /// Title.
    #[serde(default)]
    pub title: String,
    /// The sticky agent.
    #[serde(default)]
    pub agent: Option<String>,
    /// The sticky model.
    #[serde(default)]
    pub model: Option<ModelRef>,
    /// Cumulative cost (USD).
    #[serde(default)]
    pub cost: f64,
    /// Cumulative tokens.
    #[serde(default)]
    pub tokens: Tokens,
    /// Outcome of the last **finished** execution (not set by every ending: a plain
    /// permission reject or a killed server leaves it unchanged).
    #[serde(default)]
    pub outcome: Option<Outcome>,
    /// Times.
    #[serde(default)]
    pub time: SessionTime,
    /// The session's own permission rules.
    #[serde(default)]
    pub permissions: Option<Vec<PermissionRule>>,
    /// Metadata given at creation or by `PATCH`.
    #[serde(default)]
    pub metadata: Option<Value>,
    /// The session's directory.
    pub location: Location,
    /// Sub-directory of the project, when the directory is one.
    #[serde(default)]
    pub subpath: Option<String>,
}

/// `POST /api/session`.
#[derive(Clone, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct CreateSession {
    /// Our own id (must start with `ses`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<SessionId>,
    /// Title (an untitled session asks the model for one, in parallel with its first turn).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Parent session (must exist).
    #[serde(rename = "parentID", skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<SessionId>,
    /// The sticky agent (not validated here: an unknown one fails the first turn).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The sticky model (not validated here either).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelRef>,
    /// The directory: only the body sets it (`?directory=` is ignored by this route).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// Free metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// The session's permission rules.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Vec<PermissionRule>>,
}

impl CreateSession {
    /// An untitled session in the server's directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// A titled session.
    pub fn titled(title: impl Into<String>) -> Self {
        Self {
            title: Some(title.into()),
            ..Self::default()
        }
    }

    /// In `directory` (absolute).
    #[must_use]
    pub fn directory(mut self, directory: impl Into<String>) -> Self {
        self.location = Some(Location::new(directory));
        self
    }

    /// A child of `parent`.
    #[must_use]
    pub fn parent(mut self, parent: SessionId) -> Self {
        self.parent_id = Some(parent);
        self
    }

    /// With this sticky agent.
    #[must_use]
    pub fn agent(mut self, agent: impl Into<String>) -> Self {
        self.agent = Some(agent.into());
        self
    }

    /// With this sticky model.
    #[must_use]
    pub fn model(mut self, model: ModelRef) -> Self {
        self.model = Some(model);
        self
    }

    /// With these permission rules.
    #[must_use]
    pub fn permissions(mut self, rules: Vec<PermissionRule>) -> Self {
        self.permissions = Some(rules);
        self
    }

    /// With this id (must start with `ses`).
    #[must_use]
    pub fn id(mut self, id: SessionId) -> Self {
        self.id = Some(id);
        self
    }

    /// With metadata.
    #[must_use]
    pub fn metadata(mut self, metadata: Value) -> Self {
        self.metadata = Some(metadata);
        self
    }
}

/// `PATCH /api/session/{id}`.
#[derive(Clone, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct UpdateSession {
    /// New title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// New metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// The new ruleset: it **replaces** the session's rules (`[]` clears them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Vec<PermissionRule>>,
    /// Archive or unarchive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archived: Option<bool>,
}

impl UpdateSession {
    /// Nothing changed yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the title.
    #[must_use]
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// Replaces the permission rules.
    #[must_use]
    pub fn permissions(mut self, rules: Vec<PermissionRule>) -> Self {
        self.permissions = Some(rules);
        self
    }

    /// Archives (or unarchives).
    #[must_use]
    pub fn archived(mut self, archived: bool) -> Self {
        self.archived = Some(archived);
        self
    }
}

/// `GET /api/session` filters. Without any, every session of every directory, newest first,
/// at most 50.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ListSessions {
    /// Children of this session only.
    pub parent_id: Option<SessionId>,
    /// Only root sessions (`parentID=null`).
    pub roots: bool,
    /// Only sessions of this directory.
    pub directory: Option<String>,
    /// Text search in titles.
    pub search: Option<String>,
    /// Page size.
    pub limit: Option<u32>,
    /// `false` hides archived sessions (they are listed by default).
    pub archived: Option<bool>,
}

impl ListSessions {
    /// No filter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Children of `parent`.
    pub fn children_of(parent: SessionId) -> Self {
        Self {
            parent_id: Some(parent),
            ..Self::default()
        }
    }

    /// Sessions of `directory`.
    #[must_use]
    pub fn directory(mut self, directory: impl Into<String>) -> Self {
        self.directory = Some(directory.into());
        self
    }

    /// At most `limit`.
    #[must_use]
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }
}

/// `POST /api/session/{id}/prompt`. There is no agent, model or system text here: OpenCode 2
/// silently drops them (use [`super::Client::set_agent`] / [`super::Client::set_model`], which
/// are sticky).
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Prompt {
    /// Our message id (`msg_…`, unique across the whole server). Re-sending the same prompt
    /// to the same session returns the stored record without admitting it twice.
    pub id: MessageId,
    /// The text.
    pub text: String,
    /// Delivery to a running execution (default `steer`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Delivery>,
    /// `false` stores the input in the inbox without starting an execution.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume: Option<bool>,
    /// Free metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

impl Prompt {
    /// A text prompt with a freshly generated id ([`MessageId::generate`]).
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            id: MessageId::generate(),
            text: text.into(),
            delivery: None,
            resume: None,
            metadata: None,
        }
    }

    /// With this id.
    #[must_use]
    pub fn id(mut self, id: MessageId) -> Self {
        self.id = id;
        self
    }

    /// Delivered this way to a running execution.
    #[must_use]
    pub fn delivery(mut self, delivery: Delivery) -> Self {
        self.delivery = Some(delivery);
        self
    }
}

/// The input as the server stored it in the session's inbox (the answer of a prompt, and
/// `GET …/inbox`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct InboxItem {
    /// The message id (ours, for a prompt that gave one).
    pub id: MessageId,
    /// Session.
    #[serde(rename = "sessionID")]
    pub session_id: SessionId,
    /// `user` or `synthetic`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// What was stored: `{text, …}`. A re-sent prompt gets the **stored** payload back, not
    /// the one it sent.
    #[serde(default)]
    pub payload: Value,
    /// The delivery.
    #[serde(default)]
    pub delivery: Option<Delivery>,
    /// Times (`created`: when it was enqueued).
    #[serde(default)]
    pub time: Value,
}

impl InboxItem {
    /// `payload.text`.
    pub fn text(&self) -> Option<&str> {
        self.payload.get("text").and_then(Value::as_str)
    }
}

/// `POST /api/session/{id}/command`: a configured or plugin command, by name without a slash.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Command {
    /// The command name (`review`, not `/review`).
    pub name: String,
    /// The raw arguments.
    pub text: String,
    /// Delivery to a running execution.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Delivery>,
}

impl Command {
    /// `name` with `text` as its arguments.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            text: text.into(),
            delivery: None,
        }
    }
}

/// An error as OpenCode 2 reports it for a step, a tool or an execution
/// (`Session.StructuredError`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StructuredError {
    /// `provider.rate-limit`, `provider.internal`, `provider.invalid-request`,
    /// `provider.no-route`, `tool.execution`, `permission.rejected`, `aborted`, `unknown`, …
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The message.
    #[serde(default)]
    pub message: String,
    /// The upstream HTTP status (200 for an error inside a stream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The upstream body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<ErrorResponse>,
    /// The provider's `Retry-After`, in milliseconds.
    #[serde(
        rename = "retryAfterMs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub retry_after_ms: Option<u64>,
}

impl StructuredError {
    /// The provider's `Retry-After`.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        self.retry_after_ms.map(std::time::Duration::from_millis)
    }

    /// Whether the provider rate-limited the call.
    pub fn is_rate_limit(&self) -> bool {
        self.status == Some(429) || self.kind == "provider.rate-limit"
    }

    /// Whether it is an interruption (`aborted`).
    pub fn is_aborted(&self) -> bool {
        self.kind == "aborted"
    }
}

impl fmt::Display for StructuredError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)?;
        if let Some(status) = self.status {
            write!(f, " (HTTP {status})")?;
        }
        Ok(())
    }
}

/// The upstream response of a provider error.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ErrorResponse {
    /// The body, verbatim.
    #[serde(default)]
    pub body: String,
}

/// Where a permission request comes from.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct PermissionSource {
    /// `tool`, …
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The assistant message of the tool call.
    #[serde(rename = "messageID", default)]
    pub message_id: Option<MessageId>,
    /// The tool call id.
    #[serde(default)]
    pub id: Option<String>,
}

/// A pending permission request (`permission.asked`, `GET …/permission`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct PermissionRequest {
    /// `per_…`.
    pub id: PermissionId,
    /// Session.
    #[serde(rename = "sessionID")]
    pub session_id: SessionId,
    /// The action (`edit`, `shell`, `external_directory`, …).
    pub action: String,
    /// The resources asked for (`["asked.txt"]`, `["/tmp/outside/*"]`).
    #[serde(default)]
    pub resources: Vec<String>,
    /// What an `always` reply would save.
    #[serde(default)]
    pub save: Vec<String>,
    /// Details (for edits: the diff).
    #[serde(default)]
    pub metadata: Value,
    /// The tool call that asked.
    #[serde(default)]
    pub source: Option<PermissionSource>,
    /// A message, when a plugin or client asked.
    #[serde(default)]
    pub message: Option<String>,
}

/// `POST …/permission/{id}/reply`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct PermissionReply {
    /// The decision.
    pub decision: Decision,
    /// With [`Decision::Reject`]: the tool fails with this message and the turn goes on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl PermissionReply {
    /// Allow this one call.
    pub fn once() -> Self {
        Self {
            decision: Decision::Once,
            message: None,
        }
    }

    /// Reject with a message for the model: the tool fails with it and the turn goes on.
    pub fn reject_with(message: impl Into<String>) -> Self {
        Self {
            decision: Decision::Reject,
            message: Some(message.into()),
        }
    }

    /// Reject without a message: **the whole execution ends** `interrupted`
    /// (`reason: "shutdown"`), leaves no `idle` entry, and the session counts as suspended
    /// (a background service resumes it when it starts).
    pub fn reject() -> Self {
        Self {
            decision: Decision::Reject,
            message: None,
        }
    }

    /// Allow and save a project-wide permission (see [`Decision::Always`]): never a default.
    pub fn always() -> Self {
        Self {
            decision: Decision::Always,
            message: None,
        }
    }
}

/// A saved (`always`) permission.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct SavedPermission {
    /// `psv_…`.
    pub id: String,
    /// Project.
    #[serde(rename = "projectID", default)]
    pub project_id: String,
    /// Action.
    #[serde(default)]
    pub action: String,
    /// Resource.
    #[serde(default)]
    pub resource: String,
}

/// An agent (`GET /api/agent`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Agent {
    /// Id (the name sessions use).
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Its configured model (**not** applied to sessions by OpenCode 2.1.2: set the session
    /// model).
    #[serde(default)]
    pub model: Option<ModelRef>,
    /// Its system prompt (replaces the harness prompt).
    #[serde(default)]
    pub system: Option<String>,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Mode.
    #[serde(default)]
    pub mode: Option<AgentMode>,
    /// Hidden from pickers.
    #[serde(default)]
    pub hidden: bool,
    /// The effective rules.
    #[serde(default)]
    pub permissions: Vec<PermissionRule>,
}

/// A command (`GET /api/command`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct CommandInfo {
    /// The name.
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
}

/// `GET /api/info`: the server's version and process.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct ServerInfo {
    /// `2.1.2`.
    pub version: String,
    /// The server's process id.
    pub pid: u32,
    /// Where it listens.
    #[serde(default)]
    pub urls: Vec<String>,
    /// Other fields (`paths`, `capabilities`).
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// `GET /api/session/active` entry.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct ActiveSession {
    /// `running`.
    #[serde(rename = "type", default)]
    pub kind: String,
}

/// A page of sessions.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct SessionPage {
    /// The sessions.
    #[serde(rename = "data")]
    pub sessions: Vec<Session>,
    /// Opaque cursors.
    #[serde(default)]
    pub cursor: Option<Value>,
}

/// `GET /api/location`: what the server makes of a directory.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct LocationInfo {
    /// The directory.
    pub directory: String,
    /// Its project (`{id, directory, canonical}`).
    #[serde(default)]
    pub project: Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_session_serializes_v2_names_and_skips_unset_fields() {
        let body = CreateSession::titled("w")
            .directory("/p")
            .agent("build")
            .model(ModelRef::new("fake", "fake-model"))
            .permissions(PermissionRule::edit_only(["src/a.py"]));
        let v = serde_json::to_value(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "title": "w",
                "agent": "build",
                "model": {"providerID": "fake", "id": "fake-model"},
                "location": {"directory": "/p"},
                "permissions": [
                    {"action": "edit", "resource": "*", "effect": "deny"},
                    {"action": "edit", "resource": "src/a.py", "effect": "allow"},
                    {"action": "external_directory", "resource": "*", "effect": "deny"},
                    {"action": "question", "resource": "*", "effect": "deny"},
                ],
            })
        );
    }

    #[test]
    fn a_session_as_the_server_sends_it_decodes() {
        let s: Session = serde_json::from_str(
            r#"{"id":"ses_db27efb31ffeh7iRFTbvWIimUJ","projectID":"f649","agent":"build",
            "model":{"id":"fake-model","providerID":"fake","variant":"default"},"cost":0,
            "tokens":{"input":0,"output":0,"reasoning":0,"cache":{"read":0,"write":0}},
            "time":{"created":1796596630754,"updated":1796596630754},"title":"full","metadata":{"k":"v"},
            "permissions":[{"action":"edit","resource":"*","effect":"ask"}],"location":{"directory":"/home/user/project"},
            "outcome":"interrupted","brandNew":1}"#,
        )
        .unwrap();
        assert_eq!(s.title, "full");
        assert_eq!(s.outcome, Some(Outcome::Interrupted));
        assert_eq!(s.model.unwrap().variant.as_deref(), Some("default"));
        assert_eq!(s.permissions.unwrap()[0].effect, Effect::Ask);
        assert_eq!(s.location.directory, "/home/user/project");
    }

    #[test]
    fn prompts_carry_no_agent_or_model() {
        let p = Prompt::text("hi").id(MessageId::new("msg_x"));
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            serde_json::json!({"id": "msg_x", "text": "hi"})
        );
        let r = PermissionReply::reject_with("no");
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"decision": "reject", "message": "no"})
        );
    }

    #[test]
    fn structured_errors_keep_status_and_retry_after() {
        let e: StructuredError = serde_json::from_str(
            r#"{"type":"provider.rate-limit","message":"Rate limit exceeded","status":429,"response":{"body":"{}"},"retryAfterMs":2000}"#,
        )
        .unwrap();
        assert!(e.is_rate_limit());
        assert_eq!(e.retry_after(), Some(std::time::Duration::from_secs(2)));
        assert_eq!(
            e.to_string(),
            "provider.rate-limit: Rate limit exceeded (HTTP 429)"
        );
    }
}
