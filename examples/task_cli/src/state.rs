//! The mission state on disk: `status`, `stop` and the saved run settings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use orch_agents::{Journal, JournalEntry, MissionReport, RunLock, RunLockError, RunState};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::Limits;
use crate::failure::{Failure, code};
use crate::lifecycle::{self, Existing};
use crate::output::{Mode, Ui, engine_lines};

/// The settings a mission was started with (for `resume`).
pub(crate) const SETTINGS_FILE: &str = "task_cli.json";
/// `model_script` value of a demo mission.
pub(crate) const BUILTIN_DEMO: &str = "builtin:demo";

/// What `run` saves so that `resume` can continue with the same settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Saved {
    pub(crate) mission: String,
    #[serde(default)]
    pub(crate) model: Option<String>,
    #[serde(default)]
    pub(crate) model_script: Option<String>,
    /// The one `--server` of files written before several were allowed (read only).
    #[serde(default, skip_serializing)]
    pub(crate) server: Option<String>,
    /// The `--server` URLs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) servers: Vec<String>,
    /// The forced OpenCode generation (`--opencode-generation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) opencode_generation: Option<String>,
    /// Started with `--standalone`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) standalone: bool,
    /// The limit flags it was started with (a resume's flags win over them).
    #[serde(default)]
    pub(crate) limits: Limits,
}

impl Saved {
    /// The `--server` URLs it was started with.
    pub(crate) fn servers(&self) -> Vec<String> {
        if self.servers.is_empty() {
            self.server.iter().cloned().collect()
        } else {
            self.servers.clone()
        }
    }

    pub(crate) fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let state = dir.join(".orchestrator");
        std::fs::create_dir_all(&state)?;
        // Whole or not at all: a crash never leaves half a settings file.
        let tmp = state.join(format!("{SETTINGS_FILE}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, serde_json::to_string_pretty(self)? + "\n")?;
        std::fs::rename(&tmp, state.join(SETTINGS_FILE))?;
        Ok(())
    }

    pub(crate) fn load(dir: &Path) -> anyhow::Result<Option<Saved>> {
        let path = dir.join(".orchestrator").join(SETTINGS_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
                Failure::env(
                    format!("cannot read {}: {e}", path.display()),
                    "delete it and pass the mission text to `task_cli run` again",
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// `task_cli stop`: SIGTERM to the run that holds `dir` (proven by the run lock), then wait
/// for it to end. Changes nothing on disk.
pub(crate) fn stop(ui: &Ui, dir: &Path, wait: Duration) -> anyhow::Result<u8> {
    let state = dir.join(".orchestrator");
    let holder = match RunLock::signal(&state, rustix::process::Signal::TERM) {
        Ok(holder) => holder,
        Err(RunLockError::NotRunning { stale, .. }) => {
            return Err(Failure::env(
                format!(
                    "no mission is running in {}{}",
                    dir.display(),
                    stale
                        .map(|s| format!(
                            " (a stale pid file names pid {}, a run that ended without cleaning up; it was not signalled)",
                            s.pid
                        ))
                        .unwrap_or_default()
                ),
                format!(
                    "`task_cli status --dir {}` shows the mission's state",
                    dir.display()
                ),
            ));
        }
        Err(e) => {
            return Err(Failure::env(
                format!("cannot stop the mission in {}: {e}", dir.display()),
                "check that you own the process",
            ));
        }
    };
    let pid = holder.pid;
    ui.notice(format!(
        "sent SIGTERM to the orchestrator (pid {pid}{}); waiting for it to stop",
        holder
            .info
            .as_ref()
            .map(|i| format!(", run {}", i.run_id))
            .unwrap_or_default()
    ));
    let start = Instant::now();
    while start.elapsed() < wait {
        match RunLock::state(&state) {
            Ok(RunState::Running(now)) if now.pid == pid => {}
            _ => {
                ui.notice(format!(
                    "stopped; resume with `task_cli resume --dir {}`",
                    dir.display()
                ));
                ui.json(&json!({"event": "stopped", "pid": pid}));
                return Ok(code::SUCCESS);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(Failure::env(
        format!(
            "pid {pid} is still running after {}",
            crate::output::secs(wait)
        ),
        format!(
            "wait a little longer (`task_cli stop --dir {} --wait 60`), or press Ctrl-C twice in its terminal",
            dir.display()
        ),
    ))
}

/// `task_cli status`.
pub(crate) fn status(ui: &Ui, dir: &Path) -> anyhow::Result<u8> {
    let state = dir.join(".orchestrator");
    let run = RunLock::state(&state).unwrap_or(RunState::Idle);
    let existing = lifecycle::inspect(dir)?;
    let report: Option<MissionReport> = std::fs::read_to_string(state.join("report.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    if matches!(existing, Existing::Nothing)
        && report.is_none()
        && !matches!(run, RunState::Running(_))
    {
        return Err(Failure::env(
            format!("no mission in {}", dir.display()),
            "pass the project directory with --dir, or start a mission with `task_cli run \"...\"`",
        ));
    }
    let plan = lifecycle::read_plan(dir)?;
    let audit = plan
        .as_ref()
        .map(|_| lifecycle::open_store(dir).map(|store| store.verify()))
        .transpose()?;
    let journal = Journal::read(&state);
    let (word, advice) = state_words(dir, &run, &existing);
    let stale = match &run {
        RunState::Stale(info) => Some(info),
        _ => None,
    };
    let audit_ok = !matches!(audit, Some(Err(_)));

    if ui.mode() == Mode::Json {
        let plan_json = plan.as_ref().map(|(version, plan)| {
            let items: Vec<_> = plan
                .items
                .iter()
                .map(|i| json!({"id": i.id.as_str(), "summary": i.summary, "state": i.state.as_str(), "files": i.files, "attempts": i.attempts}))
                .collect();
            json!({"title": plan.title, "version": version, "items": items, "finished": plan.is_finished()})
        });
        let journal_json = match &journal {
            Ok(j) => {
                json!({"records": j.records.len(), "open_sessions": j.open_sessions().len(), "repaired_bytes": j.repaired_bytes})
            }
            Err(e) => json!({"error": e.to_string()}),
        };
        let (running_pid, run_id) = match &run {
            RunState::Running(h) => (Some(h.pid), h.info.as_ref().map(|i| i.run_id.clone())),
            _ => (None, None),
        };
        ui.json(&json!({
            "event": "status",
            "dir": dir,
            "mission": existing.mission(),
            "state": word,
            "advice": advice,
            "running_pid": running_pid,
            "run_id": run_id,
            "stale_pid_file": stale.map(|s| json!({"pid": s.pid, "run_id": s.run_id})),
            "plan": plan_json,
            "audit": match &audit {
                Some(Ok(s)) => json!({"ok": true, "records": s.records, "last_version": s.last_version, "last_hash": s.last_hash}),
                Some(Err(e)) => json!({"ok": false, "error": e.to_string()}),
                None => Value::Null,
            },
            "journal": journal_json,
            "git": crate::git::status_json(dir),
            "report": report,
        }));
        return Ok(if audit_ok {
            code::SUCCESS
        } else {
            code::MISSION_FAILED
        });
    }

    let mut out = String::new();
    out.push_str(&format!("Project: {}\n", dir.display()));
    if let Some(mission) = existing.mission() {
        out.push_str(&format!("Mission: {mission}\n"));
    }
    out.push_str(&format!("State:   {word}"));
    if let Some(advice) = &advice {
        out.push_str(&format!("; {advice}"));
    }
    out.push('\n');
    if let Some(info) = stale {
        out.push_str(&format!(
            "         (a stale pid file names pid {}{}: a run that ended without cleaning up; the next run removes it)\n",
            info.pid,
            if info.run_id.is_empty() {
                String::new()
            } else {
                format!(", run {}", info.run_id)
            }
        ));
    }
    if let Some((version, plan)) = &plan {
        let counts = plan.counts();
        out.push_str(&format!(
            "\nPlan \"{}\" v{version}: {} done, {} in progress, {} in review, {} pending, {} failed\n",
            plan.title,
            counts.done,
            counts.in_progress,
            counts.in_review,
            counts.pending,
            counts.failed
        ));
        for item in &plan.items {
            out.push_str(&format!(
                "  [{}] {:<4} {:<11} {}  ({})\n",
                item.state.marker(),
                item.id.as_str(),
                item.state.as_str(),
                item.summary,
                item.files.join(", ")
            ));
        }
    }
    if let Some(git) = crate::git::status_text(dir) {
        out.push_str(&git);
    }
    match &audit {
        Some(Ok(s)) => out.push_str(&format!(
            "\nAudit:   verified — {} records, last version {}, head {}\n",
            s.records,
            s.last_version,
            short(&s.last_hash)
        )),
        Some(Err(e)) => out.push_str(&format!(
            "\nAudit:   FAILED to verify: {e}\n         (the plan history was changed outside the orchestrator)\n"
        )),
        None => {}
    }
    match &journal {
        Ok(j) => {
            let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
            for record in &j.records {
                let kind = match &record.entry {
                    JournalEntry::Event { .. } => "events",
                    JournalEntry::SessionOpened { .. } => "sessions opened",
                    JournalEntry::SessionClosed { .. } => "sessions closed",
                    JournalEntry::Reconciled { .. } => "reconciled",
                    JournalEntry::StaleSessionsClosed { .. } => "stale sessions closed",
                    JournalEntry::ItemsReset { .. } => "retries",
                    _ => "other",
                };
                *kinds.entry(kind).or_default() += 1;
            }
            let runs = orch_agents::MissionTotals::from_records(&j.records)
                .runs
                .len();
            let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
            out.push_str(&format!(
                "Journal: {} records from {runs} run(s): {}; {} session(s) open{}\n",
                j.records.len(),
                kinds.join(", "),
                j.open_sessions().len(),
                if j.repaired_bytes > 0 {
                    format!("; {} torn bytes cut", j.repaired_bytes)
                } else {
                    String::new()
                }
            ));
        }
        Err(e) => out.push_str(&format!("Journal: unreadable: {e}\n")),
    }
    if let Some(report) = &report {
        out.push_str("\nLast report:\n");
        out.push_str(&crate::output::totals_lines(report));
        for line in engine_lines(&report.engine) {
            out.push_str(&format!("{line}\n"));
        }
    }
    print!("{out}");
    Ok(if audit_ok {
        code::SUCCESS
    } else {
        code::MISSION_FAILED
    })
}

/// The state word of `status` and what to do about it.
fn state_words(dir: &Path, run: &RunState, existing: &Existing) -> (&'static str, Option<String>) {
    let d = dir.display();
    if let RunState::Running(holder) = run {
        return (
            "running",
            Some(format!(
                "pid {}{}; stop it with `task_cli stop --dir {d}`",
                holder.pid,
                holder
                    .info
                    .as_ref()
                    .map(|i| format!(", run {}", i.run_id))
                    .unwrap_or_default()
            )),
        );
    }
    match existing {
        Existing::Nothing => ("no mission", None),
        Existing::Unplanned { .. } => (
            "not planned",
            Some(format!(
                "the planning was interrupted or failed; plan it again with `task_cli resume --dir {d}`"
            )),
        ),
        Existing::Unfinished { .. } => (
            "unfinished",
            Some(format!("continue with `task_cli resume --dir {d}`")),
        ),
        Existing::Failed {
            failed, blocked, ..
        } => (
            "failed",
            Some(format!(
                "{} failed{}; retry with `task_cli retry --dir {d}`",
                failed.join(", "),
                if blocked.is_empty() {
                    String::new()
                } else {
                    format!(" (blocking {})", blocked.join(", "))
                }
            )),
        ),
        Existing::DoneButFailed { mission, reason } => (
            "failed",
            Some(format!(
                "every item is done but the mission failed: {reason}; plan it anew with `task_cli run {} --dir {d}`",
                shell_quote(mission)
            )),
        ),
        Existing::Done { .. } => ("finished", None),
    }
}

/// `text` as one shell word (single quotes).
pub(crate) fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// The project directory: `--dir` or the current directory, made absolute.
pub(crate) fn project_dir(dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = match dir {
        Some(dir) => dir.to_owned(),
        None => std::env::current_dir()?,
    };
    let dir = if dir.is_absolute() {
        dir
    } else {
        std::env::current_dir()?.join(dir)
    };
    Ok(std::fs::canonicalize(&dir).unwrap_or(dir))
}
