//! The four-agent mission pipeline: one request becomes a mission that a Commander drives
//! through a Planner, parallel Workers and a Reviewer.
//!
//! The **Commander** is Rust, not a language model: a deterministic state machine
//! ([`Mission`]) that asks agents for plans, code and verdicts in formats it parses
//! ([`protocol`]) and keeps the plan in a versioned `TODO.md` (`orch-mvcc`).
//!
//! 1. **Plan.** A Planner turn answers with a plan in the `TODO.md` format; a plan that does not
//!    parse or validate is sent back with the error (at most `plan_retries` times).
//! 2. **Schedule.** An item is ready when its dependencies are done and no running item owns
//!    any of its files. Ready items go to Worker lanes through `orch-queue`'s affinity
//!    scheduler (a follow-up on the same files goes to the lane whose session has their
//!    context; idle lanes steal), under `orch-core`'s concurrency controller (per-role slots,
//!    priorities, auto-scaling), a circuit breaker per model (with fallback models) and the
//!    retry policy for transient errors.
//! 3. **Work.** A Worker session may edit only its item's files: OpenCode enforces it through
//!    per-session permission rules, and edit requests outside them are rejected by policy.
//! 4. **Review.** Each unit is reviewed with its diff; the Reviewer runs the tests and answers
//!    `VERDICT: PASS` or `VERDICT: FAIL: <reasons>`. A FAIL sends the item back with the notes;
//!    after `max_attempts` the item fails and its dependants are blocked.
//! 5. **Integrate.** When every item is done, a final review runs the whole suite; a FAIL may
//!    add fix-up items (bounded rounds).
//!
//! Guards: stagnation detection on the plan's progress hash, a loop breaker for repeated tool
//! calls, a round limit, token and cost budgets, one stop signal that reaches every wait, a
//! deadline on every turn. Every step is published as a [`MissionEvent`]; the end is a
//! [`MissionReport`] (also written to `.orchestrator/report.json`).
//!
//! Turns run on an [`AgentBackend`]: [`OpencodeBackend`] (a real OpenCode 1 server, sessions
//! pooled per role by `orch-pool`), [`OpencodeV2Backend`] (the same on OpenCode 2),
//! [`AnyOpencode`] (whichever a server is), or [`SimulatedBackend`] (latency, failures and
//! token use drawn from distributions, for dry runs and benchmarks).
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use orch_agents::{Latency, Mission, MissionSpec, MissionStatus, SimulatedBackend};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let backend = SimulatedBackend::builder()
//!     .latency(Latency::Fixed(Duration::from_millis(1)))
//!     .build(); // plans three items, passes every review
//! let project = tempfile::tempdir().unwrap();
//! let report = Mission::new(Arc::new(backend), MissionSpec::new("build a thing", project.path()))
//!     .run()
//!     .await
//!     .unwrap();
//! assert_eq!(report.status, MissionStatus::Completed);
//! assert_eq!(report.items.len(), 3);
//! # });
//! ```
// The README's examples are compiled as doc tests (as a new crate would use them).
#![cfg_attr(doctest, doc = include_str!("../README.md"))]
#![forbid(unsafe_code)]

mod agents;
pub mod backend;
mod events;
pub mod git;
mod hooks;
mod journal;
mod mission;
mod plan_writer;
mod policy;
pub mod protocol;
mod ready;
mod run_lock;
mod supervisor;
mod totals;

pub use agents::{
    AGENTS_FILE, Action, AgentDef, AgentOverride, AgentSet, AgentsFile, ConfigError, Permission,
    builtin, role_marker,
};
pub use backend::any::{AnyOpencode, AnySession};
pub use backend::guard::{GuardConfig, Guarded};
pub use backend::hooks::Hooked;
pub use backend::opencode::{
    OpencodeBackend, OpencodeBackendConfig, SessionManager, SessionPoolStats, SessionReset,
};
pub use backend::opencode2::{OpencodeV2Backend, OpencodeV2Session};
pub use backend::simulated::{Latency, SimulatedBackend, SimulatedBackendBuilder};
pub use backend::{
    AgentBackend, BackendError, Disposition, EditScope, ModelSpec, NoticeSink, PermissionDecision,
    SessionSpec, TokenUsage, ToolCallRecord, TurnNotice, TurnReport, TurnRequest, ignore_notices,
};
pub use events::{
    CommitReport, GitReport, ItemReport, MissionEvent, MissionReport, MissionStatus, RoleUsage,
};
pub use git::{GitError, GitMode, MissionGit};
pub use hooks::{HookEvent, MissionHooks};
pub use journal::{
    JOURNAL_FILE, Journal, JournalContents, JournalEntry, JournalError, JournalRecord,
};
pub use mission::item::{IllegalChange, ItemChange, apply as apply_item_change};
pub use mission::{Mission, MissionConfig, MissionError, MissionSpec};
pub use orch_core::{AgentRole, HookDecision, HookPhase, HookRegistry, HookSpec};
pub use policy::PolicyConfig;
pub use protocol::{FixUp, ProtocolError, Verdict};
pub use ready::ReadyIndex;
pub use run_lock::{Holder, PID_FILE, RUN_LOCK_FILE, RunInfo, RunLock, RunLockError, RunState};
pub use supervisor::Supervisor;
pub use totals::{MissionTotals, RunSummary};
