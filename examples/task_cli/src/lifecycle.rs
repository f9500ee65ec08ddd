//! What a project directory holds, and what `run`, `resume` and `retry` do with it.
//!
//! Every command that changes a mission first owns the directory ([`lock`]: the run lock of
//! `orch-agents`, held until the command ends), then reads what is there ([`inspect`]), then
//! decides; a refused command has written nothing.
//!
//! - `run "<mission>"`: nothing there, or the same mission unplanned or unfinished →
//!   continue (or plan it); a finished mission (all done, or ended with failed items) → its
//!   state is archived under `.orchestrator/history/` and the new one is planned; a different
//!   mission while one is unfinished → refused, naming `resume` and `--new` (which archives).
//! - `resume`: an unplanned mission (planning interrupted or failed) is planned again; an
//!   unfinished one continues; one that ended with failed items says `retry`.
//! - `retry [ITEM…]`: failed items and the items they blocked go back to pending with their
//!   attempts reset (a commit in the audit log, a record in the journal), then it continues.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use orch_agents::{
    Journal, JournalEntry, MissionEvent, MissionReport, MissionStatus, RunLock, RunLockError,
};
use orch_mvcc::{ItemId, ItemState, Plan, TODO_FILE, TodoStore};

use crate::failure::Failure;
use crate::state::{SETTINGS_FILE, Saved};

/// The state directory of a project.
pub(crate) fn state_dir(dir: &Path) -> PathBuf {
    dir.join(".orchestrator")
}

/// Owns `dir` for this command (until the lock is dropped), or says who does.
pub(crate) fn lock(dir: &Path) -> anyhow::Result<RunLock> {
    match RunLock::acquire(&state_dir(dir)) {
        Ok(lock) => Ok(lock),
        Err(RunLockError::Held { holder, .. }) => Err(Failure::env(
            format!(
                "another task_cli (pid {}{}) is running a mission in {}",
                holder.pid,
                holder
                    .info
                    .as_ref()
                    .map(|i| format!(", run {}", i.run_id))
                    .unwrap_or_default(),
                dir.display()
            ),
            format!(
                "wait for it to end (`task_cli status --dir {0}` shows it), or stop it with `task_cli stop --dir {0}`",
                dir.display()
            ),
        )),
        Err(e) => Err(Failure::env(
            format!("cannot take the run lock of {}: {e}", dir.display()),
            "check that the directory is writable",
        )),
    }
}

/// What a directory holds.
#[derive(Debug)]
pub(crate) enum Existing {
    /// No mission.
    Nothing,
    /// A mission whose planning never committed a plan (interrupted, or the Planner failed).
    Unplanned { mission: String },
    /// A plan with items that can still run.
    Unfinished { mission: String },
    /// Every item done and the mission completed.
    Done { mission: String },
    /// Every item done, but the mission failed after them (its integration review).
    DoneButFailed { mission: String, reason: String },
    /// Items failed, and nothing else can run: every open item is blocked by a failed one.
    Failed {
        mission: String,
        failed: Vec<String>,
        blocked: Vec<String>,
    },
}

impl Existing {
    /// The mission text, if there is a mission.
    pub(crate) fn mission(&self) -> Option<&str> {
        match self {
            Existing::Nothing => None,
            Existing::Unplanned { mission }
            | Existing::Unfinished { mission }
            | Existing::Done { mission }
            | Existing::DoneButFailed { mission, .. }
            | Existing::Failed { mission, .. } => Some(mission),
        }
    }
}

/// Two mission texts are the same mission when they differ only in surrounding whitespace.
pub(crate) fn same_mission(a: &str, b: &str) -> bool {
    a.trim() == b.trim()
}

/// Opens the plan store of `dir` with errors that say what to do.
pub(crate) fn open_store(dir: &Path) -> anyhow::Result<TodoStore> {
    TodoStore::open(state_dir(dir)).map_err(|e| {
        Failure::env(
            format!("cannot open the plan store: {e}"),
            format!("run `task_cli doctor --dir {}`", dir.display()),
        )
    })
}

/// Reads the plan of `dir`, if it has one.
pub(crate) fn read_plan(dir: &Path) -> anyhow::Result<Option<(u64, Plan)>> {
    if !state_dir(dir).join(TODO_FILE).is_file() {
        return Ok(None);
    }
    let (version, plan) = open_store(dir)?.snapshot().map_err(|e| {
        Failure::env(
            format!(
                "cannot read {}: {e}",
                state_dir(dir).join(TODO_FILE).display()
            ),
            "fix TODO.md at the line named above, or run `task_cli doctor`",
        )
    })?;
    Ok(Some((version, plan)))
}

/// The mission text of `dir`: the saved settings, else the journal's first `started` event,
/// else the plan's title.
fn mission_text(dir: &Path, saved: Option<&Saved>, plan: Option<&Plan>) -> Option<String> {
    if let Some(saved) = saved {
        return Some(saved.mission.clone());
    }
    let from_journal = Journal::read(&state_dir(dir)).ok().and_then(|j| {
        j.records.into_iter().find_map(|r| match r.entry {
            JournalEntry::Event {
                event: MissionEvent::Started { mission, .. },
            } => Some(mission),
            _ => None,
        })
    });
    from_journal.or_else(|| plan.map(|p| p.title.clone()))
}

/// The failed items of `plan` and the open items they block (transitively).
pub(crate) fn failed_and_blocked(plan: &Plan) -> (Vec<String>, Vec<String>) {
    let failed: Vec<&ItemId> = plan
        .items
        .iter()
        .filter(|i| i.state == ItemState::Failed)
        .map(|i| &i.id)
        .collect();
    let blocked = blocked_by(plan, &failed);
    (
        failed.iter().map(ToString::to_string).collect(),
        blocked.into_iter().collect(),
    )
}

/// Open items that depend, directly or not, on one of `roots`.
fn blocked_by(plan: &Plan, roots: &[&ItemId]) -> BTreeSet<String> {
    let mut blocked = BTreeSet::new();
    let mut frontier: Vec<ItemId> = roots.iter().map(|i| (*i).clone()).collect();
    while let Some(id) = frontier.pop() {
        for item in &plan.items {
            if item.deps.contains(&id)
                && !item.state.is_terminal()
                && blocked.insert(item.id.to_string())
            {
                frontier.push(item.id.clone());
            }
        }
    }
    blocked
}

/// The status of the last report in `dir`, if it has one that reads.
fn last_status(dir: &Path) -> Option<MissionStatus> {
    let text = std::fs::read_to_string(state_dir(dir).join("report.json")).ok()?;
    serde_json::from_str::<MissionReport>(&text)
        .ok()
        .map(|r| r.status)
}

/// What `dir` holds. Reads only.
pub(crate) fn inspect(dir: &Path) -> anyhow::Result<Existing> {
    let saved = Saved::load(dir)?;
    let plan = read_plan(dir)?.map(|(_, plan)| plan);
    let Some(mission) = mission_text(dir, saved.as_ref(), plan.as_ref()) else {
        return Ok(Existing::Nothing);
    };
    let Some(plan) = plan.filter(|p| !p.items.is_empty()) else {
        return Ok(Existing::Unplanned { mission });
    };
    let (failed, blocked) = failed_and_blocked(&plan);
    let open = plan.items.iter().filter(|i| !i.state.is_terminal()).count();
    if open > blocked.len() {
        return Ok(Existing::Unfinished { mission });
    }
    if failed.is_empty() {
        // Every item is done: the mission is over once its last run says so. A run that
        // stopped (or lost its server, or hit a budget) before or during the integration
        // review left it unfinished.
        Ok(match last_status(dir) {
            Some(MissionStatus::Completed) => Existing::Done { mission },
            Some(MissionStatus::Failed { reason }) => Existing::DoneButFailed { mission, reason },
            _ => Existing::Unfinished { mission },
        })
    } else {
        Ok(Existing::Failed {
            mission,
            failed,
            blocked,
        })
    }
}

/// The mission state files that move to the history when a new mission starts (the run
/// lock, the store's lock, `agents.json`, `task.toml` and the history stay).
const MISSION_FILES: [&str; 6] = [
    TODO_FILE,
    orch_mvcc::VERSION_FILE,
    orch_mvcc::AUDIT_FILE,
    orch_agents::JOURNAL_FILE,
    "report.json",
    SETTINGS_FILE,
];

/// Moves the mission's state files of `dir` into `.orchestrator/history/<time>-<run>/`;
/// returns that folder. Needs the run lock (`_lock`).
pub(crate) fn archive(dir: &Path, _lock: &RunLock) -> anyhow::Result<PathBuf> {
    let state = state_dir(dir);
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace(':', "");
    let mut target = state.join("history").join(&stamp);
    let mut n = 1;
    while target.exists() {
        n += 1;
        target = state.join("history").join(format!("{stamp}-{n}"));
    }
    std::fs::create_dir_all(&target).map_err(|e| {
        Failure::env(
            format!("cannot create {}: {e}", target.display()),
            "check that the directory is writable",
        )
    })?;
    for name in MISSION_FILES {
        let from = state.join(name);
        if from.exists() {
            std::fs::rename(&from, target.join(name)).map_err(|e| {
                Failure::env(
                    format!(
                        "cannot move {} to {}: {e}",
                        from.display(),
                        target.display()
                    ),
                    "check that the directory is writable",
                )
            })?;
        }
    }
    Ok(target)
}

/// Puts `items` (default: every failed item) and the items they blocked back to pending
/// with their attempts reset: one commit by `task_cli retry` in the audit log, one
/// `items_reset` record in the journal. Returns the items reset. Needs the run lock.
pub(crate) fn reset_failed(
    dir: &Path,
    items: &[String],
    _lock: &RunLock,
) -> anyhow::Result<Vec<String>> {
    let Some((_, plan)) = read_plan(dir)? else {
        return Err(Failure::env(
            format!("{} has no plan: nothing to retry", dir.display()),
            format!(
                "continue the mission with `task_cli resume --dir {}`",
                dir.display()
            ),
        ));
    };
    let roots: Vec<&ItemId> = if items.is_empty() {
        plan.items
            .iter()
            .filter(|i| i.state == ItemState::Failed)
            .map(|i| &i.id)
            .collect()
    } else {
        let mut roots = Vec::new();
        for name in items {
            let Some(item) = plan.items.iter().find(|i| i.id.as_str() == name) else {
                let ids: Vec<&str> = plan.items.iter().map(|i| i.id.as_str()).collect();
                return Err(Failure::usage(
                    format!("the plan has no item {name}"),
                    format!("name one of {}", ids.join(", ")),
                ));
            };
            if item.state != ItemState::Failed {
                return Err(Failure::usage(
                    format!(
                        "{name} is {}, not failed: only failed items are retried",
                        item.state.as_str()
                    ),
                    format!(
                        "`task_cli status --dir {}` shows the failed items",
                        dir.display()
                    ),
                ));
            }
            roots.push(&item.id);
        }
        roots
    };
    if roots.is_empty() {
        return Ok(Vec::new());
    }
    let mut reset: BTreeSet<String> = roots.iter().map(ToString::to_string).collect();
    reset.extend(blocked_by(&plan, &roots));
    let chosen = reset.clone();
    open_store(dir)?
        .update("task_cli retry", move |plan| {
            for item in &mut plan.items {
                if chosen.contains(item.id.as_str()) {
                    if item.state == ItemState::Failed {
                        item.add_note("retried: attempts reset by `task_cli retry`");
                    }
                    item.state = ItemState::Pending;
                    item.attempts = 0;
                }
            }
        })
        .map_err(|e| {
            Failure::env(
                format!("cannot reset the items: {e}"),
                format!("run `task_cli doctor --dir {}`", dir.display()),
            )
        })?;
    let reset: Vec<String> = reset.into_iter().collect();
    Journal::append_once(
        &state_dir(dir),
        JournalEntry::ItemsReset {
            items: reset.clone(),
            reason: "task_cli retry".into(),
        },
    )?;
    Ok(reset)
}
