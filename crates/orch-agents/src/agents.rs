//! The agents: built-in definitions of the four roles, and overrides from a JSON file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use orch_core::AgentRole;

use crate::backend::ModelSpec;
use serde::{Deserialize, Deserializer, Serialize};

/// The name of the overrides file inside a project's `.orchestrator/` directory.
pub const AGENTS_FILE: &str = "agents.json";

/// A permission action, as written in the agents file (strict: unknown values are errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Allowed without asking.
    Allow,
    /// The orchestrator is asked, and answers by policy.
    Ask,
    /// Not offered to the model.
    Deny,
}

/// One permission, as in `opencode.json`: an action for every pattern, or an action per pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Permission {
    /// The same action for everything.
    All(Action),
    /// An action per glob pattern, in order (later patterns win in OpenCode).
    Patterns(BTreeMap<String, Action>),
}

/// The definition of one agent: what OpenCode is told about it and how the mission uses it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentDef {
    /// The OpenCode agent name (`orch-worker`, …).
    pub name: String,
    /// The role it plays in a mission.
    pub role: AgentRole,
    /// One line on its purpose.
    pub description: String,
    /// The system prompt. It always carries the marker `[orch-agent:ROLE]`, so scripted
    /// models (see `orch-testkit`) and logs can tell agents apart.
    pub prompt: String,
    /// Permissions by key (`edit`, `bash`, `read`, `task`, `question`, `webfetch`, …).
    pub permission: BTreeMap<String, Permission>,
    /// The model, when not the mission's default.
    pub model: Option<ModelSpec>,
}

impl AgentDef {
    /// Whether the agent may call `permission` on anything (not denied outright).
    pub fn may(&self, permission: &str) -> bool {
        match self.permission.get(permission) {
            Some(Permission::All(Action::Deny)) => false,
            Some(Permission::Patterns(map)) => map.values().any(|a| *a != Action::Deny),
            _ => true,
        }
    }
}

/// The marker carried by every built-in prompt.
pub fn role_marker(role: AgentRole) -> String {
    format!("[orch-agent:{}]", role.as_str())
}

fn perms(entries: &[(&str, Action)]) -> BTreeMap<String, Permission> {
    entries
        .iter()
        .map(|(k, a)| ((*k).to_owned(), Permission::All(*a)))
        .collect()
}

/// The built-in definition of `role`.
pub fn builtin(role: AgentRole) -> AgentDef {
    use Action::{Allow, Ask, Deny};
    let marker = role_marker(role);
    let (description, body, permission) = match role {
        AgentRole::Commander => (
            "Drives a mission; consulted only when the plan stops making progress",
            COMMANDER_PROMPT,
            perms(&[
                ("edit", Deny),
                ("bash", Deny),
                ("task", Deny),
                ("question", Deny),
                ("webfetch", Deny),
                ("read", Allow),
                ("glob", Allow),
                ("grep", Allow),
                ("list", Allow),
            ]),
        ),
        AgentRole::Planner => (
            "Reads the code and writes a file-level plan; never edits",
            PLANNER_PROMPT,
            perms(&[
                ("edit", Deny),
                ("bash", Deny),
                ("task", Deny),
                ("question", Deny),
                ("webfetch", Deny),
                ("read", Allow),
                ("glob", Allow),
                ("grep", Allow),
                ("list", Allow),
                ("todowrite", Deny),
            ]),
        ),
        AgentRole::Worker => (
            "Implements one plan item, editing only the files the item owns",
            WORKER_PROMPT,
            // `edit` asks: the session's own rules allow the item's files, and the
            // orchestrator rejects every other edit request by policy.
            perms(&[
                ("edit", Ask),
                ("bash", Deny),
                ("task", Deny),
                ("question", Deny),
                ("webfetch", Deny),
                ("external_directory", Deny),
                ("read", Allow),
                ("glob", Allow),
                ("grep", Allow),
                ("list", Allow),
                ("todowrite", Allow),
            ]),
        ),
        AgentRole::Reviewer => (
            "Reviews one unit or the whole, runs the tests, answers a verdict; never edits",
            REVIEWER_PROMPT,
            perms(&[
                ("edit", Deny),
                ("bash", Allow),
                ("task", Deny),
                ("question", Deny),
                ("webfetch", Deny),
                ("external_directory", Deny),
                ("read", Allow),
                ("glob", Allow),
                ("grep", Allow),
                ("list", Allow),
            ]),
        ),
    };
    AgentDef {
        name: format!("orch-{}", role.as_str()),
        role,
        description: description.to_owned(),
        prompt: format!("{marker}\n{body}"),
        permission,
        model: None,
    }
}

const COMMANDER_PROMPT: &str = "\
You are the Commander of a software mission run by an orchestrator. The orchestrator schedules \
the work itself; you are consulted only when the plan stops making progress. Read the plan and \
the notes you are given, find why items keep failing or stalling, and answer in a few lines: \
the cause, and one concrete change to the plan or to the failing items' instructions.";

const PLANNER_PROMPT: &str = "\
You are the Planner of a software mission. Read the project (read, glob, grep, list; you \
cannot edit or run commands) and break the mission into small items that can be implemented \
and reviewed independently. Every item owns the files it creates or changes, and no two items \
that may run at the same time own the same file. Use dependencies for order. Answer with the \
plan only, in exactly the TODO.md format you are given, and nothing else.";

const WORKER_PROMPT: &str = "\
You are a Worker in a software mission. You implement exactly one plan item. You may edit only \
the files the item owns; edits to other files are rejected. Read what you need, make the \
change completely (no placeholders, no TODOs), and end with a short summary of what you \
changed. If reviewer notes from an earlier attempt are given, address every one of them.";

const REVIEWER_PROMPT: &str = "\
You are the Reviewer of a software mission. You verify work; you never edit files. Read the \
item, its diff and the files, run the tests or commands that prove the work (bash), and judge \
it against the item. End your answer with exactly one verdict line: `VERDICT: PASS`, or \
`VERDICT: FAIL: <the reasons, concrete enough for the next attempt to fix>`.";

/// An error in the agents file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file does not parse or holds an unknown key or a bad value.
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// The file parses but does not make a usable set of agents.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn model_ref<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<ModelSpec>, D::Error> {
    let text = Option::<String>::deserialize(deserializer)?;
    text.map(|t| {
        ModelSpec::parse(&t).ok_or_else(|| {
            serde::de::Error::custom(format!("model {t:?} is not of the form provider/model"))
        })
    })
    .transpose()
}

fn model_refs<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<ModelSpec>, D::Error> {
    Vec::<String>::deserialize(deserializer)?
        .into_iter()
        .map(|t| {
            ModelSpec::parse(&t).ok_or_else(|| {
                serde::de::Error::custom(format!("model {t:?} is not of the form provider/model"))
            })
        })
        .collect()
}

/// Settings for one agent in the agents file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentOverride {
    /// Required for an additional agent; must match for a built-in one.
    #[serde(default)]
    pub role: Option<AgentRole>,
    /// Replaces the description.
    #[serde(default)]
    pub description: Option<String>,
    /// Replaces the prompt (the role marker is kept).
    #[serde(default)]
    pub prompt: Option<String>,
    /// Appended to the prompt.
    #[serde(default)]
    pub append_prompt: Option<String>,
    /// Permissions merged over the role's (key by key).
    #[serde(default)]
    pub permission: BTreeMap<String, Permission>,
    /// The model for this agent (`provider/model`).
    #[serde(default, deserialize_with = "model_ref")]
    pub model: Option<ModelSpec>,
}

/// The agents file: `.orchestrator/agents.json`.
///
/// ```json
/// {
///   "model": "anthropic/claude-sonnet-4",
///   "fallback_models": ["openai/gpt-5"],
///   "agents": {
///     "worker": { "append_prompt": "Follow rustfmt style.", "model": "openai/gpt-5" },
///     "security-reviewer": { "role": "reviewer", "prompt": "You audit for security bugs…" }
///   },
///   "use": { "reviewer": "security-reviewer" }
/// }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentsFile {
    /// The default model of every role (`provider/model`).
    #[serde(default, deserialize_with = "model_ref")]
    pub model: Option<ModelSpec>,
    /// Models to try, in order, when a role's model stays unavailable.
    #[serde(default, deserialize_with = "model_refs")]
    pub fallback_models: Vec<ModelSpec>,
    /// Overrides of the built-in agents (keyed `commander`, `planner`, `worker`, `reviewer`)
    /// and additional agents (any other name; `role` and `prompt` required).
    #[serde(default)]
    pub agents: BTreeMap<String, AgentOverride>,
    /// Which agent plays a role, when not the built-in one.
    #[serde(default, rename = "use")]
    pub use_for: BTreeMap<AgentRole, String>,
}

impl AgentsFile {
    /// Parses the file's text; errors carry `path` and the line and column.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] for bad JSON, unknown keys and bad values.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        serde_json::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            line: e.line(),
            column: e.column(),
            message: strip_position(&e.to_string()),
        })
    }

    /// Reads and parses a file.
    ///
    /// # Errors
    /// [`ConfigError::Read`] or as [`AgentsFile::parse`].
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// The agents of a mission: one per role, plus any additional ones, and the models.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSet {
    agents: BTreeMap<String, AgentDef>,
    roles: BTreeMap<AgentRole, String>,
    /// The default model (`None`: OpenCode's configured default).
    pub model: Option<ModelSpec>,
    /// Fallback models, in order.
    pub fallback_models: Vec<ModelSpec>,
}

impl Default for AgentSet {
    fn default() -> Self {
        Self::builtin()
    }
}

impl AgentSet {
    /// The four built-in agents.
    pub fn builtin() -> Self {
        let mut agents = BTreeMap::new();
        let mut roles = BTreeMap::new();
        for role in AgentRole::ALL {
            let def = builtin(role);
            roles.insert(role, def.name.clone());
            agents.insert(def.name.clone(), def);
        }
        AgentSet {
            agents,
            roles,
            model: None,
            fallback_models: Vec::new(),
        }
    }

    /// The built-ins with `project/.orchestrator/agents.json` applied, when it exists.
    ///
    /// # Errors
    /// As [`AgentSet::with_file`].
    pub fn for_project(project: &Path) -> Result<Self, ConfigError> {
        let path = project.join(".orchestrator").join(AGENTS_FILE);
        if path.exists() {
            Self::builtin().with_file(&AgentsFile::load(&path)?, &path)
        } else {
            Ok(Self::builtin())
        }
    }

    /// Applies an agents file (`path` is used in error messages).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`]: an additional agent without `role` or `prompt`, a built-in
    /// override whose `role` differs, a `use` naming an unknown agent or one of another role.
    pub fn with_file(mut self, file: &AgentsFile, path: &Path) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        if file.model.is_some() {
            self.model.clone_from(&file.model);
        }
        self.fallback_models
            .extend(file.fallback_models.iter().cloned());
        for (key, over) in &file.agents {
            let builtin_role = AgentRole::ALL.into_iter().find(|r| r.as_str() == key);
            let mut def = match builtin_role {
                Some(role) => {
                    if over.role.is_some_and(|r| r != role) {
                        return Err(invalid(format!(
                            "agents.{key}: a built-in agent cannot change its role"
                        )));
                    }
                    builtin(role)
                }
                None => {
                    let role = over.role.ok_or_else(|| {
                        invalid(format!("agents.{key}: an additional agent needs a `role`"))
                    })?;
                    if over.prompt.is_none() {
                        return Err(invalid(format!(
                            "agents.{key}: an additional agent needs a `prompt`"
                        )));
                    }
                    AgentDef {
                        name: key.clone(),
                        description: format!("{key} ({role})"),
                        ..builtin(role)
                    }
                }
            };
            if let Some(description) = &over.description {
                def.description.clone_from(description);
            }
            if let Some(prompt) = &over.prompt {
                def.prompt = format!("{}\n{prompt}", role_marker(def.role));
            }
            if let Some(extra) = &over.append_prompt {
                def.prompt = format!("{}\n\n{extra}", def.prompt);
            }
            for (k, v) in &over.permission {
                def.permission.insert(k.clone(), v.clone());
            }
            if over.model.is_some() {
                def.model.clone_from(&over.model);
            }
            self.agents.insert(def.name.clone(), def);
        }
        for (role, name) in &file.use_for {
            let def = self
                .agents
                .get(name)
                .or_else(|| self.agents.get(&format!("orch-{name}")))
                .or_else(|| {
                    AgentRole::ALL
                        .into_iter()
                        .find(|r| r.as_str() == name)
                        .and_then(|r| self.agents.get(&builtin(r).name))
                })
                .ok_or_else(|| invalid(format!("use.{role}: no agent named {name:?}")))?;
            if def.role != *role {
                return Err(invalid(format!(
                    "use.{role}: agent {name:?} has role {}",
                    def.role
                )));
            }
            self.roles.insert(*role, def.name.clone());
        }
        Ok(self)
    }

    /// The agent playing `role`.
    pub fn for_role(&self, role: AgentRole) -> &AgentDef {
        self.roles
            .get(&role)
            .and_then(|name| self.agents.get(name))
            .unwrap_or_else(|| {
                // Every role is filled at construction and `use` only re-points to an
                // existing agent of that role, so this branch is unreachable in practice.
                self.agents
                    .values()
                    .find(|a| a.role == role)
                    .expect("every role has an agent")
            })
    }

    /// The model for `role`: the agent's own, else the set's default.
    pub fn model_for(&self, role: AgentRole) -> Option<ModelSpec> {
        self.for_role(role)
            .model
            .clone()
            .or_else(|| self.model.clone())
    }

    /// Every agent (built-in and additional), by name.
    pub fn agents(&self) -> impl Iterator<Item = &AgentDef> {
        self.agents.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path() -> PathBuf {
        PathBuf::from("/p/.orchestrator/agents.json")
    }

    #[test]
    fn builtins_carry_markers_and_role_permissions() {
        let set = AgentSet::builtin();
        for role in AgentRole::ALL {
            let def = set.for_role(role);
            assert!(def.prompt.starts_with(&role_marker(role)), "{role}");
            assert!(!def.may("task"), "{role} must not spawn sub-agents");
        }
        assert!(!set.for_role(AgentRole::Planner).may("edit"));
        assert!(!set.for_role(AgentRole::Reviewer).may("edit"));
        assert!(set.for_role(AgentRole::Reviewer).may("bash"));
        assert!(set.for_role(AgentRole::Worker).may("edit"));
    }

    #[test]
    fn overrides_and_additional_agents_apply() {
        let text = r#"{
          "model": "p/default",
          "fallback_models": ["p/backup"],
          "agents": {
            "worker": {"append_prompt": "Use tabs.", "permission": {"bash": "allow"}, "model": "p/w"},
            "sec": {"role": "reviewer", "prompt": "Audit security."}
          },
          "use": {"reviewer": "sec"}
        }"#;
        let file = AgentsFile::parse(text, &path()).unwrap();
        let set = AgentSet::builtin().with_file(&file, &path()).unwrap();
        let worker = set.for_role(AgentRole::Worker);
        assert!(worker.prompt.ends_with("Use tabs."));
        assert!(worker.prompt.starts_with("[orch-agent:worker]"));
        assert_eq!(worker.permission["bash"], Permission::All(Action::Allow));
        assert_eq!(set.model_for(AgentRole::Worker), ModelSpec::parse("p/w"));
        assert_eq!(
            set.model_for(AgentRole::Planner),
            ModelSpec::parse("p/default")
        );
        let reviewer = set.for_role(AgentRole::Reviewer);
        assert_eq!(reviewer.name, "sec");
        assert_eq!(reviewer.prompt, "[orch-agent:reviewer]\nAudit security.");
        assert_eq!(set.fallback_models, vec![ModelSpec::new("p", "backup")]);
        assert_eq!(set.agents().count(), 5);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_line_and_column() {
        let cases = [
            (
                "{\n  \"agents\": {\"worker\": {\"promt\": \"x\"}}\n}",
                2,
                "promt",
            ),
            // A bad value is reported where the parser stopped, just past the value (here
            // the closing brace on line 4); the message quotes the value.
            (
                "{\n\n  \"model\": \"no-slash\"\n}",
                4,
                "\"no-slash\" is not of the form provider/model",
            ),
            (
                "{\"agents\": {\"worker\": {\"permission\": {\"edit\": \"maybe\"}}}}",
                1,
                "untagged",
            ),
            ("{\"use\": {\"boss\": \"x\"}}", 1, "boss"),
            ("{\"agents\": [", 1, "expected a map"),
            ("{\"agents\": {", 1, "EOF"),
        ];
        for (text, line, needle) in cases {
            match AgentsFile::parse(text, &path()).unwrap_err() {
                ConfigError::Parse {
                    line: l,
                    column,
                    message,
                    ..
                } => {
                    assert_eq!(l, line, "{text}: {message}");
                    assert!(column > 0);
                    assert!(message.contains(needle), "{text}: {message}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn inconsistent_files_are_invalid() {
        let cases = [
            r#"{"agents": {"x": {"prompt": "p"}}}"#,
            r#"{"agents": {"x": {"role": "worker"}}}"#,
            r#"{"agents": {"worker": {"role": "planner"}}}"#,
            r#"{"use": {"worker": "nobody"}}"#,
            r#"{"use": {"worker": "reviewer"}}"#,
        ];
        for text in cases {
            let file = AgentsFile::parse(text, &path()).unwrap();
            let err = AgentSet::builtin().with_file(&file, &path()).unwrap_err();
            assert!(
                matches!(err, ConfigError::Invalid { .. }),
                "{text}: {err:?}"
            );
        }
    }
}
