//! The orchestrator's agents as OpenCode 2 configuration (`agents.<name>`: `system`,
//! `description`, `mode`, `permissions` as a rule list), for a project's `opencode.json(c)`
//! or an isolated server's global config.
//!
//! The agents file speaks OpenCode 1's permission map (`{"edit": "ask", "bash": {"pytest*":
//! "allow"}}`); here each key becomes rules (`bash` → `shell`, `task` → `subagent`), in order,
//! the last matching rule winning as in OpenCode 2.

use serde_json::{Value, json};

use crate::agents::{Action, AgentDef, AgentSet, Permission};

/// The OpenCode 2 action of an OpenCode 1 permission key.
fn action(key: &str) -> &str {
    match key {
        "bash" => "shell",
        "task" => "subagent",
        other => other,
    }
}

fn effect(action: Action) -> &'static str {
    match action {
        Action::Allow => "allow",
        Action::Ask => "ask",
        Action::Deny => "deny",
    }
}

/// The rules of an agent's permission map, in order.
pub(crate) fn rules(def: &AgentDef) -> Vec<Value> {
    let mut out = Vec::new();
    for (key, permission) in &def.permission {
        match permission {
            Permission::All(a) => {
                out.push(json!({"action": action(key), "resource": "*", "effect": effect(*a)}));
            }
            Permission::Patterns(map) => {
                for (pattern, a) in map {
                    out.push(
                        json!({"action": action(key), "resource": pattern, "effect": effect(*a)}),
                    );
                }
            }
        }
    }
    out
}

/// An agent's entry for the `agents` section of an OpenCode 2 `opencode.json`.
pub fn agent_entry(def: &AgentDef) -> Value {
    let mut entry = json!({
        "description": def.description,
        "mode": "primary",
        "system": def.prompt,
        "permissions": rules(def),
    });
    if let Some(model) = &def.model {
        entry["model"] = json!(model.to_string());
    }
    entry
}

/// What `orch_opencode::ConfigInstaller` installs into an OpenCode 2 project config.
pub fn install_spec(agents: &AgentSet) -> orch_opencode::InstallSpec {
    agents
        .agents()
        .fold(orch_opencode::InstallSpec::new(), |spec, a| {
            spec.entry(["agents", a.name.as_str()], agent_entry(a))
        })
}

/// The `agents` section for an OpenCode 2 `opencode.json`.
pub fn config_agents(agents: &AgentSet) -> Value {
    Value::Object(
        agents
            .agents()
            .map(|a| (a.name.clone(), agent_entry(a)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_core::AgentRole;

    #[test]
    fn a_worker_asks_for_edits_in_v2_rules() {
        let set = AgentSet::builtin();
        let entry = agent_entry(set.for_role(AgentRole::Worker));
        assert_eq!(entry["mode"], "primary");
        assert!(
            entry["system"]
                .as_str()
                .unwrap()
                .starts_with("[orch-agent:worker]")
        );
        let rules = entry["permissions"].as_array().unwrap();
        assert!(rules.contains(&json!({"action": "edit", "resource": "*", "effect": "ask"})));
        assert!(rules.contains(&json!({"action": "shell", "resource": "*", "effect": "deny"})));
        assert!(rules.contains(&json!({"action": "subagent", "resource": "*", "effect": "deny"})));
    }
}
