//! How the OpenCode 2 backend enforces an [`EditScope`]: session rules that ask for every
//! edit and allow the scope's files (paths relative to the session directory: OpenCode 2
//! normalises every spelling of a project file), deny writes outside the project and
//! questions nobody would answer; and the policy answer to the edit requests that still
//! arrive.

use std::path::Path;

use orch_opencode::v2::{PermissionReply, PermissionRequest, PermissionRule};

use crate::backend::EditScope;
use crate::backend::opencode::permissions::rejection;

/// The session rules of a session of `scope` (the last matching rule wins): edits ask unless
/// the scope owns the file; nothing outside the project; no sub-agents, no questions.
pub(crate) fn session_rules(scope: &EditScope) -> Vec<PermissionRule> {
    let mut rules = vec![PermissionRule::ask("edit", "*")];
    rules.extend(
        scope
            .as_slice()
            .iter()
            .map(|f| PermissionRule::allow("edit", f.trim_start_matches("./"))),
    );
    // Commands: every one asks (rejected and recorded by the orchestrator) but the allowed.
    rules.extend(
        crate::backend::opencode::permissions::command_rules(scope).map(|(pattern, allow)| {
            if allow {
                PermissionRule::allow("shell", pattern)
            } else {
                PermissionRule::ask("shell", pattern)
            }
        }),
    );
    rules.push(PermissionRule::deny("external_directory", "*"));
    rules.push(PermissionRule::deny("subagent", "*"));
    rules.push(PermissionRule::deny("question", "*"));
    rules
}

/// `resource` (relative to `dir`, or absolute) as a project-relative path.
fn relative<'a>(dir: &Path, resource: &'a str) -> std::borrow::Cow<'a, str> {
    let resource = resource.trim_start_matches("./");
    match Path::new(resource).strip_prefix(dir) {
        Ok(rel) => rel.to_string_lossy().into_owned().into(),
        Err(_) => resource.into(),
    }
}

/// The policy's answer to a request that reached the orchestrator during a turn of a
/// session of project `dir` and `scope`: edits inside the scope are allowed once; anything
/// else is rejected with a message the agent reads (a reject without one would end the turn,
/// see `docs/opencode-v2.md` §9). Never `always`: that would be saved for the whole project.
pub(crate) fn decide(
    dir: &Path,
    request: &PermissionRequest,
    scope: &EditScope,
) -> (PermissionReply, bool) {
    let allowed = request.action == "edit"
        && !request.resources.is_empty()
        && request.resources.iter().all(|r| {
            let r = relative(dir, r);
            scope
                .as_slice()
                .iter()
                .any(|f| f.trim_start_matches("./") == r)
        });
    if allowed {
        (PermissionReply::once(), true)
    } else {
        (
            PermissionReply::reject_with(rejection(&request.action, scope)),
            false,
        )
    }
}

/// The files a request is about, as a person reads them (relative to the project when
/// inside it).
pub(crate) fn shown_paths(dir: &Path, request: &PermissionRequest) -> Vec<String> {
    request
        .resources
        .iter()
        .map(|r| relative(dir, r).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(action: &str, resource: &str) -> PermissionRequest {
        serde_json::from_value(serde_json::json!({
            "id": "per_1",
            "sessionID": "ses_1",
            "action": action,
            "resources": [resource],
        }))
        .expect("a request")
    }

    #[test]
    fn only_edits_inside_the_scope_are_allowed() {
        let dir = Path::new("/work/p");
        let scope = EditScope::files(["src/a.py"]);
        assert!(decide(dir, &request("edit", "src/a.py"), &scope).1);
        assert!(decide(dir, &request("edit", "/work/p/src/a.py"), &scope).1);
        assert!(!decide(dir, &request("edit", "src/b.py"), &scope).1);
        assert!(!decide(dir, &request("shell", "rm -rf /"), &scope).1);
        assert_eq!(
            shown_paths(dir, &request("edit", "/work/p/src/b.py")),
            ["src/b.py"]
        );
    }

    #[test]
    fn rules_ask_for_edits_allow_the_scope_and_deny_the_outside() {
        let rules = session_rules(&EditScope::files(["./a.rs"]));
        let json = serde_json::to_value(&rules).unwrap();
        let rules = json.as_array().unwrap();
        assert_eq!(rules[0]["effect"], "ask");
        assert!(
            rules
                .iter()
                .any(|r| r["resource"] == "a.rs" && r["effect"] == "allow")
        );
        assert!(
            rules
                .iter()
                .any(|r| r["action"] == "external_directory" && r["effect"] == "deny")
        );
        assert!(rules.iter().all(|r| r["action"] != "shell"));
        let with = serde_json::to_value(session_rules(
            &EditScope::files(["a.rs"]).commands(["cargo test*"]),
        ))
        .unwrap();
        let shell: Vec<(&str, &str)> = with
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == "shell")
            .map(|r| {
                (
                    r["resource"].as_str().unwrap(),
                    r["effect"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(shell, [("*", "ask"), ("cargo test*", "allow")]);
    }
}
