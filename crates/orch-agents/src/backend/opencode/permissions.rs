//! How the OpenCode backend enforces an [`EditScope`]: per-session permission rules that
//! allow exactly the scope's files (in every form OpenCode may report them), and a policy
//! answer for the edit requests that still reach us.

use std::path::Path;

use orch_opencode::{PermissionAction, PermissionReply, PermissionRequest, PermissionRule};

use crate::backend::EditScope;

/// The patterns under which OpenCode may report an edit of `file` (relative to the project
/// `dir`): OpenCode gives edit patterns relative to the project's worktree root, which is the
/// git root, or `/` outside a repository, so every ancestor-relative form is listed.
pub fn edit_patterns(dir: &Path, file: &str) -> Vec<String> {
    let file = file.trim_start_matches("./");
    let mut patterns = vec![file.to_owned()];
    let mut prefix = Vec::new();
    for component in dir.components().rev() {
        if let std::path::Component::Normal(name) = component {
            prefix.insert(0, name.to_string_lossy().into_owned());
            patterns.push(format!("{}/{file}", prefix.join("/")));
        }
    }
    patterns
}

/// Whether an edit request for `pattern` (or the absolute `filepath` OpenCode reports in its
/// metadata) targets one of `files` of the project at `dir`.
pub fn edit_allowed(dir: &Path, files: &[String], pattern: &str, filepath: Option<&str>) -> bool {
    files.iter().any(|f| {
        filepath.is_some_and(|abs| Path::new(abs) == dir.join(f.trim_start_matches("./")))
            || edit_patterns(dir, f).iter().any(|p| p == pattern)
    })
}

/// Session rules for a Worker of the project at `dir` whose item owns `files`: edits of those
/// files are allowed, every other edit asks (and the orchestrator rejects it), and sub-agents
/// and questions are denied. OpenCode applies the last matching rule, and `PATCH` appends, so
/// the same list also re-scopes a reused session: the leading `edit *` rule cancels the
/// previous item's files.
pub fn worker_session_rules(dir: &Path, files: &[String]) -> Vec<PermissionRule> {
    let mut rules = vec![
        PermissionRule::new("edit", "*", PermissionAction::Ask),
        PermissionRule::new("task", "*", PermissionAction::Deny),
        PermissionRule::new("question", "*", PermissionAction::Deny),
    ];
    for file in files {
        rules.extend(
            edit_patterns(dir, file)
                .into_iter()
                .map(|p| PermissionRule::new("edit", p, PermissionAction::Allow)),
        );
    }
    rules
}

/// The session rules of a session of `scope` in the project at `dir`: the Worker rules of
/// its files ([`worker_session_rules`]) and, when the scope allows commands, `bash` asking for
/// every command but the allowed ones (the orchestrator rejects and records the others; a
/// `deny` would not be seen). The last matching rule wins, so these follow the agent's own.
pub fn session_rules(dir: &Path, scope: &EditScope) -> Vec<PermissionRule> {
    let mut rules = worker_session_rules(dir, scope.as_slice());
    rules.extend(command_rules(scope).map(|(pattern, allow)| {
        let action = if allow {
            PermissionAction::Allow
        } else {
            PermissionAction::Ask
        };
        PermissionRule::new("bash", pattern, action)
    }));
    rules
}

/// The shell rules of a scope that allows commands, in order: `(pattern, allowed)`, first
/// `*` asking, then each allowed pattern. Nothing when the scope leaves commands to the agent.
pub(crate) fn command_rules(scope: &EditScope) -> impl Iterator<Item = (&str, bool)> {
    let commands = scope.allowed_commands();
    let ask = (!commands.is_empty()).then_some(("*", false));
    ask.into_iter()
        .chain(commands.iter().map(|c| (c.as_str(), true)))
}

/// The policy's answer to a permission request that reached the orchestrator during a turn
/// of a session whose project is `dir` and whose scope is `scope`: edits inside the scope
/// are allowed once; anything else is rejected with a message the agent reads.
pub(crate) fn decide(
    dir: &Path,
    request: &PermissionRequest,
    scope: &EditScope,
) -> (PermissionReply, Option<String>) {
    let files = scope.as_slice();
    let filepath = request.metadata.get("filepath").and_then(|v| v.as_str());
    let allowed = request.permission == "edit"
        && !request.patterns.is_empty()
        && request
            .patterns
            .iter()
            .all(|p| edit_allowed(dir, files, p, filepath));
    if allowed {
        return (PermissionReply::Once, None);
    }
    (
        PermissionReply::Reject,
        Some(rejection(&request.permission, scope)),
    )
}

/// What the agent reads when the orchestrator rejects its `permission` request in a session
/// of `scope` (either generation).
pub(crate) fn rejection(permission: &str, scope: &EditScope) -> String {
    let files = scope.as_slice();
    if permission == "edit" {
        format!(
            "The orchestrator rejected this edit: this item owns only {}. Do not edit other files.",
            if files.is_empty() {
                "no files".to_owned()
            } else {
                files.join(", ")
            }
        )
    } else if matches!(permission, "bash" | "shell") && !scope.allowed_commands().is_empty() {
        format!(
            "The orchestrator rejected this command: only commands matching {} may run here \
             (`*` matches anything). Run one of those instead.",
            scope
                .allowed_commands()
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        format!("The orchestrator does not allow `{permission}` for this agent.")
    }
}

/// The files an edit request of the project at `dir` is about, as a person reads them:
/// relative to the project when inside it, else absolute. OpenCode's patterns are relative to
/// the git root, or to `/` outside a repository (`tmp/x/a.txt` for `/tmp/x/a.txt`); its
/// `filepath` metadata is the absolute path.
pub(crate) fn shown_paths(dir: &Path, request: &PermissionRequest) -> Vec<String> {
    let Some(abs) = request.metadata.get("filepath").and_then(|v| v.as_str()) else {
        return request.patterns.clone();
    };
    let abs = std::path::Path::new(abs);
    vec![
        abs.strip_prefix(dir)
            .unwrap_or(abs)
            .to_string_lossy()
            .into_owned(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_requests_show_the_path_the_agent_asked_for() {
        let request = |pattern: &str, filepath: &str| -> PermissionRequest {
            serde_json::from_value(serde_json::json!({
                "id": "per_1",
                "sessionID": "ses_1",
                "permission": "edit",
                "patterns": [pattern],
                "metadata": {"filepath": filepath},
                "always": [],
            }))
            .expect("a permission request")
        };
        let dir = std::path::Path::new("/work/p");
        // Outside a repository OpenCode drops the leading slash; the decision keeps it.
        assert_eq!(
            shown_paths(dir, &request("etc/passwd", "/etc/passwd")),
            ["/etc/passwd"]
        );
        assert_eq!(
            shown_paths(dir, &request("work/p/src/a.rs", "/work/p/src/a.rs")),
            ["src/a.rs"]
        );
    }

    #[test]
    fn worker_rules_allow_every_root_relative_form_of_the_owned_files() {
        let dir = Path::new("/tmp/proj");
        let rules = worker_session_rules(dir, &["src/a.rs".into()]);
        assert_eq!(
            rules[0],
            PermissionRule::new("edit", "*", PermissionAction::Ask)
        );
        let allowed: Vec<&str> = rules
            .iter()
            .filter(|r| r.action == PermissionAction::Allow)
            .map(|r| r.pattern.as_str())
            .collect();
        assert_eq!(allowed, ["src/a.rs", "proj/src/a.rs", "tmp/proj/src/a.rs"]);
    }

    #[test]
    fn edit_allowed_matches_patterns_and_absolute_paths_only_for_owned_files() {
        let dir = Path::new("/tmp/proj");
        let files = vec!["calc.py".to_owned()];
        assert!(edit_allowed(dir, &files, "calc.py", None));
        assert!(edit_allowed(dir, &files, "tmp/proj/calc.py", None));
        assert!(edit_allowed(dir, &files, "x", Some("/tmp/proj/calc.py")));
        assert!(!edit_allowed(
            dir,
            &files,
            "other.py",
            Some("/tmp/proj/other.py")
        ));
        assert!(!edit_allowed(dir, &files, "tmp/proj/sub/calc.py", None));
        assert!(!edit_allowed(dir, &[], "calc.py", None));
    }

    #[test]
    fn only_edits_inside_the_scope_are_allowed_and_others_told_why() {
        let request = |permission: &str, pattern: &str| -> PermissionRequest {
            serde_json::from_value(serde_json::json!({
                "id": "per_1",
                "sessionID": "ses_1",
                "permission": permission,
                "patterns": [pattern],
                "metadata": {},
                "always": [],
            }))
            .expect("a permission request")
        };
        let dir = Path::new("/tmp/proj");
        let scope = EditScope::files(["calc.py"]);
        assert_eq!(
            decide(dir, &request("edit", "calc.py"), &scope),
            (PermissionReply::Once, None)
        );
        let (reply, message) = decide(dir, &request("edit", "other.py"), &scope);
        assert_eq!(reply, PermissionReply::Reject);
        assert!(message.unwrap().contains("owns only calc.py"));
        let (reply, message) = decide(dir, &request("bash", "rm -rf /"), &scope);
        assert_eq!(reply, PermissionReply::Reject);
        assert!(message.unwrap().contains("does not allow `bash`"));
        let (reply, message) = decide(
            dir,
            &request("bash", "rm -rf /"),
            &scope.clone().commands(["python3 -m unittest*"]),
        );
        assert_eq!(reply, PermissionReply::Reject);
        assert!(message.unwrap().contains("`python3 -m unittest*`"));
    }

    #[test]
    fn allowed_commands_follow_an_asking_catch_all() {
        let dir = Path::new("/tmp/proj");
        let scope = EditScope::files(["a.py"]).commands(["python3 -m unittest*", "ls"]);
        let rules = session_rules(dir, &scope);
        let bash: Vec<(&str, PermissionAction)> = rules
            .iter()
            .filter(|r| r.permission == "bash")
            .map(|r| (r.pattern.as_str(), r.action.clone()))
            .collect();
        assert_eq!(
            bash,
            [
                ("*", PermissionAction::Ask),
                ("python3 -m unittest*", PermissionAction::Allow),
                ("ls", PermissionAction::Allow),
            ]
        );
        // Without commands, the agent's own rules decide: no shell rule at all.
        assert!(
            session_rules(dir, &EditScope::files(["a.py"]))
                .iter()
                .all(|r| r.permission != "bash")
        );
    }
}
