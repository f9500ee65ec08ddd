//! What the simulated-backend tests share: a three-item plan, fast settings, a recording
//! backend, and a runner.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use orch_agents::{
    AgentRole, Latency, Mission, MissionConfig, MissionEvent, MissionReport, MissionSpec,
    PolicyConfig, SimulatedBackend, TurnRequest,
};
use orch_core::RetryPolicy;
use orch_mvcc::{ItemState, TodoStore};
use parking_lot::Mutex;

pub const PLAN: &str = "\
# Build a thing

- [ ] T1: core
  - files: core.txt
- [ ] T2: feature on core
  - files: feature.txt
  - deps: T1
- [ ] T3: docs
  - files: docs.txt
";

pub fn config() -> MissionConfig {
    MissionConfig {
        workers: 2,
        reviewers: 2,
        policy: PolicyConfig {
            retry: RetryPolicy {
                initial_delay: Duration::from_millis(5),
                max_delay: Duration::from_millis(20),
                ..RetryPolicy::default()
            },
            ..PolicyConfig::default()
        },
        ..MissionConfig::default()
    }
}

pub fn fast() -> orch_agents::SimulatedBackendBuilder {
    SimulatedBackend::builder()
        .latency(Latency::Fixed(Duration::from_millis(5)))
        .plan(PLAN)
}

/// Records every turn request, and answers with `answer`.
#[derive(Clone, Default)]
pub struct Log(pub Arc<Mutex<Vec<TurnRequest>>>);

impl Log {
    /// `builder` recording every turn here and answering as a mission that passes: the
    /// plan, `done`, `VERDICT: PASS`.
    pub fn passing(&self, builder: orch_agents::SimulatedBackendBuilder) -> SimulatedBackend {
        let seen = self.clone();
        builder
            .responder(move |turn| {
                seen.0.lock().push(turn.clone());
                Ok(match turn.role {
                    AgentRole::Planner => PLAN.to_owned(),
                    AgentRole::Reviewer => "VERDICT: PASS".to_owned(),
                    _ => "done".to_owned(),
                })
            })
            .build()
    }

    pub fn prompts(&self, role: AgentRole) -> Vec<String> {
        self.0
            .lock()
            .iter()
            .filter(|t| t.role == role)
            .map(|t| t.prompt.clone())
            .collect()
    }
}

pub async fn run(
    backend: SimulatedBackend,
    config: MissionConfig,
) -> (tempfile::TempDir, MissionReport, Vec<MissionEvent>) {
    let dir = tempfile::tempdir().unwrap();
    let mission = Mission::new(
        Arc::new(backend),
        MissionSpec::new("build a thing", dir.path()).config(config),
    );
    let mut events = mission.spec().subscribe();
    let report = mission.run().await.unwrap();
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(event);
    }
    (dir, report, seen)
}

pub fn states(dir: &std::path::Path) -> Vec<(String, ItemState)> {
    let store = TodoStore::open(dir.join(".orchestrator")).unwrap();
    let (_, plan) = store.snapshot().unwrap();
    plan.items
        .iter()
        .map(|i| (i.id.to_string(), i.state))
        .collect()
}
