//! The orchestrator's agents as OpenCode configuration: one `agent` entry each, for
//! `opencode.json` (installed with `orch_opencode::ConfigInstaller`) or an isolated server's
//! global config.

use serde_json::{Value, json};

use crate::agents::{AgentDef, AgentSet};

/// An agent's entry for the `agent` section of `opencode.json`.
pub fn agent_entry(def: &AgentDef) -> Value {
    let permission: serde_json::Map<String, Value> = def
        .permission
        .iter()
        .map(|(key, value)| {
            let value = serde_json::to_value(value).unwrap_or(Value::Null);
            (key.clone(), value)
        })
        .collect();
    let mut entry = json!({
        "description": def.description,
        "mode": "primary",
        "prompt": def.prompt,
        "permission": permission,
    });
    if let Some(model) = &def.model {
        entry["model"] = json!(model.to_string());
    }
    entry
}

/// What `orch_opencode::ConfigInstaller` installs for `agents` (one `agent` entry each).
pub fn install_spec(agents: &AgentSet) -> orch_opencode::InstallSpec {
    agents
        .agents()
        .fold(orch_opencode::InstallSpec::new(), |spec, a| {
            spec.agent(a.name.clone(), agent_entry(a))
        })
}

/// The `agent` section for `opencode.json`.
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
    fn a_worker_asks_for_edits_and_is_a_primary_agent() {
        let set = AgentSet::builtin();
        let entry = agent_entry(set.for_role(AgentRole::Worker));
        assert_eq!(entry["permission"]["edit"], "ask");
        assert_eq!(entry["mode"], "primary");
        let all = config_agents(&set);
        assert_eq!(all.as_object().map(|o| o.len()), Some(4));
    }
}
