//! Randomized faults against whole missions, bounded: the orchestrator killed, the OpenCode
//! server killed (also exactly as items start and as reviews pass), SIGINT, 429 and 5xx
//! bursts and stalled streams from the model, at random instants. Every run must end with
//! every item done exactly once, the files right, the report's totals equal to the sums of
//! the journal, and no process left behind.
//!
//! `FAULT_RUNS` (default 6) bounds the runs; `FAULT_SEED` replays one sequence (the seed is
//! printed on failure).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Live, alive, descendants, items_script, read, task_cli, write_script};
use serde_json::Value;

const ITEMS: usize = 4;
const LONG: Duration = Duration::from_secs(240);

#[derive(Debug, Clone, Copy)]
enum Fault {
    KillOrchestrator,
    KillServerAtStart,
    KillServerAtReview,
    KillServerAnytime,
    Sigint,
    RateLimitBurst,
    ServerErrorBurst,
    Stall,
}

const FAULTS: [Fault; 8] = [
    Fault::KillOrchestrator,
    Fault::KillServerAtStart,
    Fault::KillServerAtReview,
    Fault::KillServerAnytime,
    Fault::Sigint,
    Fault::RateLimitBurst,
    Fault::ServerErrorBurst,
    Fault::Stall,
];

/// Model faults on one item's Worker, as script rules that win over the normal ones.
fn model_faults(fault: Fault, item: usize) -> String {
    let reply = match fault {
        Fault::RateLimitBurst => {
            r#"error = { status = 429, message = "rate limited", retry_after = 1 }
times = 2"#
        }
        Fault::ServerErrorBurst => {
            r#"error = { status = 503, message = "overloaded" }
times = 2"#
        }
        Fault::Stall => r#"fault = "stall""#,
        _ => return String::new(),
    };
    format!(
        r#"[[rule]]
name = "fault on T{item}"
agent = "worker"
user = "Your item: T{item}:"
tool_result = false
exhausted = "skip"
[[rule.reply]]
{reply}
"#
    )
}

/// Every process under `pid` now, to check later that none is left.
fn track(seen: &mut BTreeSet<u32>, pid: u32) {
    seen.extend(descendants(pid));
}

struct Outcome {
    resumes: usize,
}

fn one_run(tmp: &Path, rng: &mut fastrand::Rng, n: usize) -> Result<Outcome, String> {
    let fault = FAULTS[rng.usize(..FAULTS.len())];
    let project = tmp.join(format!("run{n}"));
    let victim = rng.usize(1..=ITEMS);
    let script = write_script(
        tmp,
        &format!("run{n}.toml"),
        &items_script(ITEMS, rng.u64(200..800), &model_faults(fault, victim)),
    );
    let mut tree = BTreeSet::new();
    let mut resumes = 0;
    // The run's temporary directory, where the scripted model's isolated OpenCode homes go.
    let temp = tmp.join(format!("tmp{n}"));
    std::fs::create_dir(&temp).map_err(|e| e.to_string())?;
    let start = |cmd: &str| {
        let mut c = task_cli(tmp);
        c.env("TMPDIR", &temp).args(["--json", cmd]);
        if cmd == "run" {
            c.arg("files").arg("--model-script").arg(&script);
        }
        c.args(["--workers", "2", "--turn-timeout", "8", "--dir"])
            .arg(&project);
        Live::spawn(c)
    };
    let mut live = start("run");
    let describe = format!("run {n}: {fault:?} (item T{victim})");
    eprintln!("{describe}");
    let delay = Duration::from_millis(rng.u64(300..4_000));
    // Inject the process fault, if any.
    let stopped = match fault {
        Fault::KillOrchestrator | Fault::Sigint | Fault::KillServerAnytime => {
            live.wait_line("the mission to start", LONG, |l| l["event"] == "started");
            std::thread::sleep(delay);
            track(&mut tree, live.child.id());
            match fault {
                Fault::KillOrchestrator => common::signal(live.child.id(), "KILL"),
                Fault::Sigint => common::signal(live.child.id(), "INT"),
                _ => kill_server(live.child.id()),
            }
        }
        Fault::KillServerAtStart => {
            live.wait_line("an item to start", LONG, |l| l["event"] == "item_started");
            kill_server(live.child.id())
        }
        Fault::KillServerAtReview => {
            live.wait_line("a review to pass", LONG, |l| {
                l["event"] == "reviewed" && l["verdict"]["verdict"] == "pass"
            });
            kill_server(live.child.id())
        }
        _ => false,
    };
    track(&mut tree, live.child.id());
    let (mut code, _, mut stderr) = live.finish(LONG);
    // A killed or interrupted orchestrator is resumed until the mission completes.
    while code != Some(0) {
        if resumes >= 3 {
            return Err(format!(
                "{describe}: not completed after {resumes} resumes (exit {code:?}, fault injected: {stopped}):\n{stderr}"
            ));
        }
        resumes += 1;
        let mut live = start("resume");
        live.wait_line("the resumed mission to start", LONG, |l| {
            l["event"] == "started" || l["event"] == "report"
        });
        track(&mut tree, live.child.id());
        (code, _, stderr) = live.finish(LONG);
    }
    check(&project, &describe)?;
    // No process left behind: every process seen under an orchestrator has ended.
    let deadline = Instant::now() + Duration::from_secs(10);
    while tree.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let left: Vec<u32> = tree.iter().copied().filter(|p| alive(*p)).collect();
    if !left.is_empty() {
        for pid in &left {
            let _ = common::signal(*pid, "KILL");
        }
        return Err(format!("{describe}: processes left behind: {left:?}"));
    }
    // No isolated home left behind either: a killed orchestrator's goes with its server
    // (OpenCode's own runtime files in TMPDIR are not ours).
    let homes = || -> Vec<String> {
        std::fs::read_dir(&temp)
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| name.starts_with("orch-"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !homes().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let left = homes();
    if !left.is_empty() {
        return Err(format!("{describe}: left in TMPDIR: {left:?}"));
    }
    Ok(Outcome { resumes })
}

/// Kills the OpenCode server under the orchestrator `pid`; whether one was there.
fn kill_server(pid: u32) -> bool {
    let tree = descendants(pid);
    for child in tree.iter().rev() {
        let _ = common::signal(*child, "KILL");
    }
    !tree.is_empty()
}

/// The mission's end state: every item done exactly once, files right, totals from the
/// journal.
fn check(project: &Path, describe: &str) -> Result<(), String> {
    let report: Value = serde_json::from_str(&read(project, ".orchestrator/report.json"))
        .map_err(|e| format!("{describe}: report.json: {e}"))?;
    if report["status"]["status"] != "completed" {
        return Err(format!("{describe}: not completed: {report}"));
    }
    for i in 1..=ITEMS {
        let file = read(project, &format!("f{i}.txt"));
        if file != format!("file {i}\n") {
            return Err(format!("{describe}: f{i}.txt holds {file:?}"));
        }
    }
    let state = project.join(".orchestrator");
    let journal = orch_agents::Journal::read(&state).map_err(|e| e.to_string())?;
    let done = journal.done_counts();
    if done.len() != ITEMS || done.values().any(|n| *n != 1) {
        return Err(format!("{describe}: items done {done:?}"));
    }
    let totals = orch_agents::MissionTotals::from_records(&journal.records);
    let turns: u64 = totals.usage.values().map(|u| u.turns).sum();
    let reported: u64 = report["usage"]
        .as_object()
        .map(|u| u.values().filter_map(|r| r["turns"].as_u64()).sum())
        .unwrap_or(0);
    let tokens = totals.tokens().total();
    let reported_tokens: u64 = report["usage"]
        .as_object()
        .map(|u| {
            u.values()
                .map(|r| {
                    ["input", "output", "reasoning", "cache_read", "cache_write"]
                        .iter()
                        .filter_map(|k| r["tokens"][k].as_u64())
                        .sum::<u64>()
                })
                .sum()
        })
        .unwrap_or(0);
    let runs = report["runs"].as_array().map_or(0, Vec::len);
    if (turns, tokens, runs) != (reported, reported_tokens, totals.runs.len()) {
        return Err(format!(
            "{describe}: the report says {reported} turns, {reported_tokens} tokens, {runs} runs; the journal {turns}, {tokens}, {}",
            totals.runs.len()
        ));
    }
    let elapsed_ms = report["elapsed"]["secs"].as_u64().unwrap_or(0) * 1_000
        + report["elapsed"]["nanos"].as_u64().unwrap_or(0) / 1_000_000;
    if elapsed_ms != totals.elapsed().as_millis() as u64 {
        return Err(format!(
            "{describe}: elapsed {elapsed_ms} ms in the report, {} ms in the journal",
            totals.elapsed().as_millis()
        ));
    }
    Ok(())
}

#[test]
fn missions_survive_random_faults() {
    let runs: usize = std::env::var("FAULT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let seed: u64 = std::env::var("FAULT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let mut rng = fastrand::Rng::with_seed(seed);
    let tmp = tempfile::tempdir().unwrap();
    let mut resumes = 0;
    for n in 0..runs {
        match one_run(tmp.path(), &mut rng, n) {
            Ok(outcome) => resumes += outcome.resumes,
            Err(e) => panic!("FAULT_SEED={seed} FAULT_RUNS={runs}: {e}"),
        }
    }
    eprintln!("{runs} runs with faults (seed {seed}), {resumes} resumes: all completed");
}
