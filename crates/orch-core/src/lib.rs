//! The policy layer between a mission and its agent sessions.
//!
//! Every piece stands alone; `orch-agents` composes them:
//!
//! - **Domain types** ([`AgentRole`], [`TaskId`], [`MissionId`], [`Priority`], [`TaskState`],
//!   [`Task`]): task states move only along legal transitions (`pending → running →
//!   completed | failed | cancelled | timed out`); anything else is a [`TransitionError`].
//! - **Concurrency** ([`ConcurrencyController`]): per-key slot limits (a role, a provider or a
//!   model). `acquire(key, priority).await` waits in a per-priority FIFO queue and returns a
//!   [`ConcurrencyToken`] that frees its slot when dropped, also on panic or cancellation.
//!   Outcomes recorded on the token drive auto-scaling between a floor and the configured cap
//!   (never above it). Low-priority work is refused while memory use, read from the cgroup
//!   limit or `/proc/meminfo` through an injectable [`MemoryReader`], is above a threshold.
//! - **Circuit breaker** ([`CircuitBreaker`], [`CircuitBreakers`] per key): one atomic word of
//!   state, a failure ring for "N failures within a window", a half-open state that admits a
//!   bounded number of probes, and a [`Clock`] that tests move by hand ([`ManualClock`]).
//! - **Retry** ([`RetryPolicy`]): exponential backoff with jitter on `backon`, with error
//!   classes ([`ErrorClass`]): rate limits honour `Retry-After`, network errors retry, session
//!   errors abort, parse errors get one more try.
//! - **Shutdown** ([`ShutdownManager`]): one `CancellationToken` for every loop, and
//!   prioritised cleanup handlers, each under a timeout, run once.
//! - **Hooks** ([`HookRegistry`]): hooks in phases, ordered by declared dependencies (a cycle
//!   is an error that names its hooks), that inspect, modify or veto an event.
//! - **Progress** ([`ProgressTracker`], [`LoopBreaker`]): blake3 hashes of the plan state
//!   detect stagnation; repeated identical tool calls or turns break loops.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use orch_core::{
//!     AgentRole, BreakerConfig, CircuitBreakers, ConcurrencyController, Priority,
//!     ProgressSignal, ProgressTracker,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let slots = ConcurrencyController::new(); // Commander 1, Planner/Worker/Reviewer 10
//! let breakers: CircuitBreakers<String> = CircuitBreakers::new(BreakerConfig::default());
//! let mut progress = ProgressTracker::default();
//!
//! // One Worker turn: a slot, then the provider's breaker.
//! let token = slots.acquire(AgentRole::Worker, Priority::Normal).await?;
//! let reply = breakers
//!     .get("anthropic")
//!     .call(|| async { Ok::<_, std::io::Error>("done") })
//!     .await?;
//! assert_eq!(reply, "done");
//! token.success(); // frees the slot and feeds auto-scaling
//!
//! // Each mission round, hash the plan.
//! assert_eq!(progress.observe(b"- [x] item 1"), ProgressSignal::Progressing);
//! let _ = slots.acquire_timeout(AgentRole::Worker, Priority::High, Duration::from_secs(1)).await?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(doctest, doc = include_str!("../README.md"))]

mod breaker;
mod clock;
mod controller;
mod domain;
mod hooks;
mod memory;
mod progress;
mod retry;
mod shutdown;

pub use breaker::{
    BreakerConfig, BreakerError, BreakerPermit, BreakerState, CircuitBreaker, CircuitBreakers,
    Rejected,
};
pub use clock::{Clock, ManualClock, MonotonicClock};
pub use controller::{
    AcquireError, ByPriority, ConcurrencyController, ConcurrencyToken, ControllerBuilder,
    ControllerStats, KeySlots, KeyStats, LimitConfig, SlotKey, WaitStats,
};
pub use domain::{AgentRole, MissionId, Priority, Task, TaskId, TaskState, TransitionError};
pub use hooks::{
    Hook, HookDecision, HookError, HookOutcome, HookPhase, HookRegistry, HookRegistryBuilder,
    HookSpec,
};
pub use memory::{
    FixedMemoryReader, MemoryReader, MemoryUsage, SystemMemoryReader, parse_cgroup_limit,
    parse_meminfo,
};
pub use progress::{
    LoopBreaker, LoopReason, LoopVerdict, ProgressHash, ProgressSignal, ProgressTracker,
};
pub use retry::{Classify, ErrorClass, RetryDecision, RetryPolicy, parse_retry_after};
pub use shutdown::{
    HandlerReport, HandlerStatus, ShutdownError, ShutdownManager, ShutdownReport, wait_for_signal,
};
pub use tokio_util::sync::CancellationToken;
