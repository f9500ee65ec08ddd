//! Domain types shared by the whole orchestrator: roles, ids, priorities and task states.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The role an agent session plays in a mission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentRole {
    /// Deterministic mission driver; at most one per mission by default.
    Commander,
    /// Turns a mission into a plan.
    Planner,
    /// Implements one plan item.
    Worker,
    /// Reviews a finished unit and gives a verdict.
    Reviewer,
}

impl AgentRole {
    /// Every role, in pipeline order.
    pub const ALL: [AgentRole; 4] = [
        AgentRole::Commander,
        AgentRole::Planner,
        AgentRole::Worker,
        AgentRole::Reviewer,
    ];

    /// The lower-case name used in configs and logs (`"worker"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            AgentRole::Commander => "commander",
            AgentRole::Planner => "planner",
            AgentRole::Worker => "worker",
            AgentRole::Reviewer => "reviewer",
        }
    }

    /// The seed concurrency limit for the role (Commander 1, the others 10).
    pub const fn default_limit(self) -> usize {
        match self {
            AgentRole::Commander => 1,
            AgentRole::Planner | AgentRole::Worker | AgentRole::Reviewer => 10,
        }
    }
}

impl fmt::Display for AgentRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Scheduling priority. Ordered so that `High > Normal > Low`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Background work; refused under memory pressure.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Served before every waiting `Normal` and `Low` request.
    High,
}

impl Priority {
    /// Every priority, highest first (the order waiters are served in).
    pub const SERVE_ORDER: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    /// Index into per-priority arrays: High 0, Normal 1, Low 2.
    pub const fn index(self) -> usize {
        match self {
            Priority::High => 0,
            Priority::Normal => 1,
            Priority::Low => 2,
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        })
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps an id.
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Takes the inner string back.
            pub fn into_inner(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }
    };
}

string_id!(
    /// Identifies one task (a plan item attempt, a review, a planning call).
    TaskId
);
string_id!(
    /// Identifies one mission (one `/task` request).
    MissionId
);

/// Lifecycle state of a task.
///
/// Legal moves: `Pending → Running`, `Pending → Cancelled` (cancelled before it started) and
/// `Running → Completed | Failed | Cancelled | TimedOut`. The last four are terminal. A retry
/// is a new task (or a new attempt number), never a move out of a terminal state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Created, waiting for a slot.
    Pending,
    /// Holding a slot, doing work.
    Running,
    /// Finished successfully.
    Completed,
    /// Finished with an error.
    Failed,
    /// Stopped by the caller or by shutdown.
    Cancelled,
    /// Stopped because it ran past its deadline.
    TimedOut,
}

impl TaskState {
    /// Every state.
    pub const ALL: [TaskState; 6] = [
        TaskState::Pending,
        TaskState::Running,
        TaskState::Completed,
        TaskState::Failed,
        TaskState::Cancelled,
        TaskState::TimedOut,
    ];

    /// Whether no transition leaves this state.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Completed | TaskState::Failed | TaskState::Cancelled | TaskState::TimedOut
        )
    }

    /// Whether `self → to` is a legal move.
    pub const fn can_transition_to(self, to: TaskState) -> bool {
        matches!(
            (self, to),
            (TaskState::Pending, TaskState::Running)
                | (TaskState::Pending, TaskState::Cancelled)
                | (
                    TaskState::Running,
                    TaskState::Completed
                        | TaskState::Failed
                        | TaskState::Cancelled
                        | TaskState::TimedOut
                )
        )
    }

    /// Returns `to` if the move is legal.
    ///
    /// # Errors
    /// [`TransitionError`] naming both states when the move is illegal.
    pub fn transition(self, to: TaskState) -> Result<TaskState, TransitionError> {
        if self.can_transition_to(to) {
            Ok(to)
        } else {
            Err(TransitionError {
                task: None,
                from: self,
                to,
            })
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TaskState::Pending => "pending",
            TaskState::Running => "running",
            TaskState::Completed => "completed",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
            TaskState::TimedOut => "timed out",
        })
    }
}

/// An illegal task-state move.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal task transition{}: {from} -> {to}", task.as_ref().map(|t| format!(" for task {t}")).unwrap_or_default())]
#[non_exhaustive]
pub struct TransitionError {
    /// The task, when known.
    pub task: Option<TaskId>,
    /// State the task was in.
    pub from: TaskState,
    /// State that was asked for.
    pub to: TaskState,
}

/// A task: id, role, priority, state and attempt number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// The task id.
    pub id: TaskId,
    /// The mission it belongs to.
    pub mission: MissionId,
    /// Which role runs it.
    pub role: AgentRole,
    /// Scheduling priority.
    pub priority: Priority,
    /// 1 for the first attempt.
    pub attempt: u32,
    state: TaskState,
}

impl Task {
    /// A new `Pending` task, attempt 1.
    pub fn new(id: TaskId, mission: MissionId, role: AgentRole, priority: Priority) -> Self {
        Self {
            id,
            mission,
            role,
            priority,
            attempt: 1,
            state: TaskState::Pending,
        }
    }

    /// Current state.
    pub fn state(&self) -> TaskState {
        self.state
    }

    /// Moves the task to `to`.
    ///
    /// # Errors
    /// [`TransitionError`] (naming the task) when the move is illegal; the state is unchanged.
    pub fn transition(&mut self, to: TaskState) -> Result<(), TransitionError> {
        match self.state.transition(to) {
            Ok(s) => {
                self.state = s;
                Ok(())
            }
            Err(mut e) => {
                e.task = Some(self.id.clone());
                Err(e)
            }
        }
    }

    /// A fresh `Pending` task for the next attempt (same id, `attempt + 1`), for a task that
    /// ended `Failed` or `TimedOut`. Returns `None` from any other state.
    pub fn retry(&self) -> Option<Task> {
        matches!(self.state, TaskState::Failed | TaskState::TimedOut).then(|| Task {
            attempt: self.attempt + 1,
            state: TaskState::Pending,
            ..self.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legal_path_runs_to_completion() {
        let mut t = Task::new("t1".into(), "m".into(), AgentRole::Worker, Priority::Normal);
        t.transition(TaskState::Running).unwrap();
        t.transition(TaskState::Completed).unwrap();
        assert_eq!(t.state(), TaskState::Completed);
        assert!(t.retry().is_none());
    }

    #[test]
    fn illegal_transition_names_task_and_states() {
        let mut t = Task::new("t9".into(), "m".into(), AgentRole::Worker, Priority::Low);
        let err = t.transition(TaskState::Completed).unwrap_err();
        assert_eq!(
            err.to_string(),
            "illegal task transition for task t9: pending -> completed"
        );
        assert_eq!(t.state(), TaskState::Pending);
    }

    #[test]
    fn terminal_states_have_no_exit() {
        for from in TaskState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in TaskState::ALL {
                assert!(from.transition(to).is_err(), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn failed_task_retries_as_new_attempt() {
        let mut t = Task::new("t".into(), "m".into(), AgentRole::Worker, Priority::High);
        t.transition(TaskState::Running).unwrap();
        t.transition(TaskState::Failed).unwrap();
        let r = t.retry().unwrap();
        assert_eq!((r.state(), r.attempt), (TaskState::Pending, 2));
    }

    #[test]
    fn serde_uses_snake_case() {
        assert_eq!(
            serde_json::to_string(&TaskState::TimedOut).unwrap(),
            "\"timed_out\""
        );
        assert_eq!(
            serde_json::to_string(&AgentRole::Worker).unwrap(),
            "\"worker\""
        );
        assert_eq!(serde_json::to_string(&TaskId::new("a")).unwrap(), "\"a\"");
        let p: Priority = serde_json::from_str("\"high\"").unwrap();
        assert_eq!(p, Priority::High);
        assert!(Priority::High > Priority::Normal && Priority::Normal > Priority::Low);
    }
}
