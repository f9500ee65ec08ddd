//! The mission state on disk: `status`, `stop`, the pid file and the saved run settings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use orch_agents::{Journal, JournalEntry, MissionReport};
use orch_mvcc::{TODO_FILE, TodoStore};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::failure::{Failure, code};
use crate::output::{Mode, Ui, engine_lines, human, status_line};

/// The running orchestrator's pid, in the state directory.
pub(crate) const PID_FILE: &str = "orchestrator.pid";
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
    #[serde(default)]
    pub(crate) server: Option<String>,
}

impl Saved {
    pub(crate) fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let state = dir.join(".orchestrator");
        std::fs::create_dir_all(&state)?;
        std::fs::write(
            state.join(SETTINGS_FILE),
            serde_json::to_string_pretty(self)? + "\n",
        )?;
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

/// Whether a process with this pid exists (`kill -0`).
fn alive(pid: u32) -> bool {
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The pid of a live orchestrator running in `dir`, from its pid file.
pub(crate) fn running_pid(dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(dir.join(".orchestrator").join(PID_FILE)).ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    (pid != std::process::id() && alive(pid)).then_some(pid)
}

/// `task_cli stop`: SIGTERM to the orchestrator running in `dir`, then wait for it to stop.
pub(crate) fn stop(ui: &Ui, dir: &Path, wait: Duration) -> anyhow::Result<u8> {
    let pid_path = dir.join(".orchestrator").join(PID_FILE);
    let Some(pid) = running_pid(dir) else {
        if pid_path.exists() {
            let _ = std::fs::remove_file(&pid_path);
        }
        return Err(Failure::env(
            format!("no mission is running in {}", dir.display()),
            "pass the project directory with --dir; `task_cli status --dir DIR` shows its state",
        ));
    };
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    if !status.success() {
        return Err(Failure::env(
            format!("cannot signal pid {pid}"),
            "check that you own the process",
        ));
    }
    ui.notice(format!(
        "sent SIGTERM to the orchestrator (pid {pid}); waiting for it to stop"
    ));
    let start = Instant::now();
    while start.elapsed() < wait {
        if !alive(pid) || !pid_path.exists() {
            ui.notice(format!(
                "stopped; resume with `task_cli resume --dir {}`",
                dir.display()
            ));
            ui.json(&json!({"event": "stopped", "pid": pid}));
            return Ok(code::SUCCESS);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(Failure::env(
        format!(
            "pid {pid} is still running after {:.0} s",
            wait.as_secs_f64()
        ),
        format!("wait a little longer, or end it with `kill -INT {pid}` twice"),
    ))
}

/// `task_cli status`.
pub(crate) fn status(ui: &Ui, dir: &Path) -> anyhow::Result<u8> {
    let state = dir.join(".orchestrator");
    if !state.join(TODO_FILE).is_file() {
        return Err(Failure::env(
            format!(
                "no mission in {} ({} is missing)",
                dir.display(),
                state.join(TODO_FILE).display()
            ),
            "pass the project directory with --dir, or start a mission with `task_cli run \"...\"`",
        ));
    }
    let store = TodoStore::open(&state).map_err(|e| {
        Failure::env(
            format!("cannot open the plan store: {e}"),
            "run `task_cli doctor --dir DIR`",
        )
    })?;
    let (version, plan) = store.snapshot().map_err(|e| {
        Failure::env(
            format!("cannot read the plan: {e}"),
            "fix TODO.md at the line named above, or run `task_cli doctor --dir DIR`",
        )
    })?;
    let audit = store.verify();
    let journal = Journal::read(&state);
    let report: Option<MissionReport> = std::fs::read_to_string(state.join("report.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let saved = Saved::load(dir).ok().flatten();
    let running = running_pid(dir);
    let counts = plan.counts();

    if ui.mode() == Mode::Json {
        let items: Vec<_> = plan
            .items
            .iter()
            .map(|i| json!({"id": i.id.as_str(), "summary": i.summary, "state": i.state.as_str(), "files": i.files, "attempts": i.attempts}))
            .collect();
        let journal_json = match &journal {
            Ok(j) => {
                json!({"records": j.records.len(), "open_sessions": j.open_sessions().len(), "repaired_bytes": j.repaired_bytes})
            }
            Err(e) => json!({"error": e.to_string()}),
        };
        ui.json(&json!({
            "event": "status",
            "dir": dir,
            "mission": saved.as_ref().map(|s| s.mission.clone()),
            "running_pid": running,
            "plan": {"title": plan.title, "version": version, "items": items, "finished": plan.is_finished()},
            "audit": match &audit {
                Ok(s) => json!({"ok": true, "records": s.records, "last_version": s.last_version, "last_hash": s.last_hash}),
                Err(e) => json!({"ok": false, "error": e.to_string()}),
            },
            "journal": journal_json,
            "report": report,
        }));
        return Ok(if audit.is_ok() {
            code::SUCCESS
        } else {
            code::MISSION_FAILED
        });
    }

    let mut out = String::new();
    out.push_str(&format!("Project: {}\n", dir.display()));
    if let Some(saved) = &saved {
        out.push_str(&format!("Mission: {}\n", saved.mission));
    }
    out.push_str(&match running {
        Some(pid) => format!(
            "State:   running (pid {pid}); stop it with `task_cli stop --dir {}`\n",
            dir.display()
        ),
        None if plan.is_finished() => "State:   finished\n".to_owned(),
        None => format!(
            "State:   not running, unfinished; continue with `task_cli resume --dir {}`\n",
            dir.display()
        ),
    });
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
    out.push_str(&match &audit {
        Ok(s) => format!("\nAudit:   verified — {} records, last version {}, head {}\n", s.records, s.last_version, short(&s.last_hash)),
        Err(e) => format!("\nAudit:   FAILED to verify: {e}\n         (the plan history was changed outside the orchestrator)\n"),
    });
    match &journal {
        Ok(j) => {
            let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
            let mut pids: Vec<u32> = Vec::new();
            for record in &j.records {
                let kind = match &record.entry {
                    JournalEntry::Event { .. } => "events",
                    JournalEntry::SessionOpened { .. } => "sessions opened",
                    JournalEntry::SessionClosed { .. } => "sessions closed",
                    JournalEntry::Reconciled { .. } => "reconciled",
                    JournalEntry::StaleSessionsClosed { .. } => "stale sessions closed",
                    _ => "other",
                };
                *kinds.entry(kind).or_default() += 1;
                if !pids.contains(&record.pid) {
                    pids.push(record.pid);
                }
            }
            let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
            out.push_str(&format!(
                "Journal: {} records from {} run(s): {}; {} session(s) open{}\n",
                j.records.len(),
                pids.len(),
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
        let (status, _) = status_line(&report.status);
        out.push_str(&format!(
            "\nLast run: {status} in {:.1}s, {} rounds, {} retries, {} tokens, cost {:.4}\n",
            report.elapsed.as_secs_f64(),
            report.rounds,
            report.retries,
            human(report.total_tokens().total()),
            report.total_cost()
        ));
        for (role, usage) in &report.usage {
            out.push_str(&format!(
                "  {:<10} {:>3} turns  {:>7} tokens  cost {:.4}\n",
                role.to_string(),
                usage.turns,
                human(usage.tokens.total()),
                usage.cost
            ));
        }
        for line in engine_lines(&report.engine) {
            out.push_str(&format!("{line}\n"));
        }
    }
    print!("{out}");
    Ok(if audit.is_ok() {
        code::SUCCESS
    } else {
        code::MISSION_FAILED
    })
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
