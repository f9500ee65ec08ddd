//! What the user sees: live progress (indicatif) with log lines above the bars, plain lines,
//! quiet output, or JSON lines; and the final summary.

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use orch_agents::{AgentRole, MissionEvent, MissionReport, MissionStatus, Verdict};
use serde_json::{Value, json};
use tracing_subscriber::fmt::MakeWriter;

/// How output is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Live bars on stderr (a terminal, colours allowed).
    Fancy,
    /// One line per event on stderr (not a terminal, or `NO_COLOR`, or `--plain`).
    Plain,
    /// Only the summary (`--quiet`).
    Quiet,
    /// One JSON object per line on stdout (`--json`).
    Json,
}

impl Mode {
    /// The mode for these flags and this terminal.
    pub(crate) fn detect(json: bool, quiet: bool, plain: bool) -> Mode {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        if json {
            Mode::Json
        } else if quiet {
            Mode::Quiet
        } else if plain
            || no_color
            || !std::io::stderr().is_terminal()
            || !std::io::stdout().is_terminal()
        {
            Mode::Plain
        } else {
            Mode::Fancy
        }
    }
}

/// The output of one command.
#[derive(Debug, Clone)]
pub(crate) struct Ui {
    mode: Mode,
    multi: MultiProgress,
    start: Instant,
}

impl Ui {
    pub(crate) fn new(mode: Mode) -> Ui {
        let multi = if mode == Mode::Fancy {
            MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10))
        } else {
            MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
        };
        Ui {
            mode,
            multi,
            start: Instant::now(),
        }
    }

    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }

    /// Sends `tracing` logs (filter `filter`, `RUST_LOG` syntax) to stderr, above the bars.
    pub(crate) fn init_tracing(&self, filter: &str) {
        let filter = tracing_subscriber::EnvFilter::try_new(filter)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(LogWriter {
                multi: self.multi.clone(),
            })
            .with_target(false)
            .with_ansi(self.mode == Mode::Fancy)
            .without_time()
            .try_init();
    }

    /// A line for humans above the bars (stderr); nothing in quiet and JSON modes.
    pub(crate) fn note(&self, text: impl AsRef<str>) {
        match self.mode {
            Mode::Fancy => {
                let _ = self.multi.println(text.as_ref());
            }
            Mode::Plain => eprintln!(
                "[{:>6.1}s] {}",
                self.start.elapsed().as_secs_f64(),
                text.as_ref()
            ),
            Mode::Quiet | Mode::Json => {}
        }
    }

    /// A line that matters even in quiet mode (stderr); a JSON `notice` in JSON mode.
    pub(crate) fn notice(&self, text: impl AsRef<str>) {
        match self.mode {
            Mode::Fancy => {
                let _ = self.multi.println(text.as_ref());
            }
            Mode::Plain | Mode::Quiet => eprintln!("{}", text.as_ref()),
            Mode::Json => self.json(&json!({"event": "notice", "message": text.as_ref()})),
        }
    }

    /// One JSON object on stdout (JSON mode only).
    pub(crate) fn json(&self, value: &Value) {
        if self.mode == Mode::Json {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{value}");
            let _ = out.flush();
        }
    }

    /// A setup step: a spinner in fancy mode, a line in plain mode, a `step` JSON event.
    pub(crate) fn step(&self, text: &str) -> Step {
        self.json(&json!({"event": "step", "message": text}));
        let bar = if self.mode == Mode::Fancy {
            let bar = self.multi.add(ProgressBar::new_spinner());
            bar.set_style(spinner_style());
            bar.set_prefix("setup");
            bar.set_message(text.to_owned());
            bar.enable_steady_tick(Duration::from_millis(100));
            Some(bar)
        } else {
            self.note(text);
            None
        };
        Step {
            bar,
            ui: self.clone(),
            text: text.to_owned(),
        }
    }

    fn add_spinner(&self, prefix: &str, message: String) -> Option<ProgressBar> {
        if self.mode != Mode::Fancy {
            return None;
        }
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(spinner_style());
        bar.set_prefix(prefix.to_owned());
        bar.set_message(message);
        bar.enable_steady_tick(Duration::from_millis(100));
        Some(bar)
    }

    /// Clears every bar (before the summary).
    pub(crate) fn clear(&self) {
        let _ = self.multi.clear();
    }
}

/// A running setup step; finish it with [`Step::done`].
#[derive(Debug)]
pub(crate) struct Step {
    bar: Option<ProgressBar>,
    ui: Ui,
    text: String,
}

impl Step {
    /// Ends the step with a result line.
    pub(crate) fn done(self, result: impl AsRef<str>) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
            self.ui
                .note(format!("✓ {}: {}", self.text, result.as_ref()));
        } else {
            self.ui.note(format!("  {}", result.as_ref()));
        }
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner:.cyan} {prefix:>9.bold} {msg} {elapsed:.dim}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

/// Writes `tracing` lines above the bars (through `MultiProgress::suspend`).
#[derive(Debug, Clone)]
struct LogWriter {
    multi: MultiProgress,
}

/// One log line being written; flushed on drop.
#[derive(Debug)]
struct LogLine {
    multi: MultiProgress,
    buf: Vec<u8>,
}

impl Write for LogLine {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        self.multi.suspend(|| {
            let _ = std::io::stderr().lock().write_all(&buf);
        });
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine {
            multi: self.multi.clone(),
            buf: Vec::new(),
        }
    }
}

/// A running item's line.
#[derive(Debug)]
struct ItemLine {
    bar: Option<ProgressBar>,
    attempt: u32,
    lane: usize,
    warm: bool,
    tokens: u64,
    role: AgentRole,
}

impl ItemLine {
    fn render(&self, item: &str) {
        if let Some(bar) = &self.bar {
            bar.set_prefix(self.role.to_string());
            let lane = if self.warm {
                format!("lane {}, warm", self.lane)
            } else {
                format!("lane {}", self.lane)
            };
            let doing = if self.role == AgentRole::Reviewer {
                "reviewing"
            } else {
                "working"
            };
            bar.set_message(format!(
                "{item} {doing} (attempt {}, {lane}) · {} tokens",
                self.attempt,
                human(self.tokens)
            ));
        }
    }
}

/// Turns mission events into progress output.
#[derive(Debug)]
pub(crate) struct Progress {
    ui: Ui,
    overall: Option<ProgressBar>,
    planner: Option<ProgressBar>,
    integration: Option<ProgressBar>,
    items: HashMap<String, ItemLine>,
    total: usize,
    done: usize,
    dir: PathBuf,
}

impl Progress {
    pub(crate) fn new(ui: &Ui, dir: &Path) -> Progress {
        Progress {
            dir: dir.to_owned(),
            ui: ui.clone(),
            overall: None,
            planner: None,
            integration: None,
            items: HashMap::new(),
            total: 0,
            done: 0,
        }
    }

    /// Renders one event.
    pub(crate) fn event(&mut self, event: &MissionEvent) {
        if self.ui.mode == Mode::Json {
            if let Ok(value) = serde_json::to_value(event) {
                self.ui.json(&value);
            }
            return;
        }
        match event {
            MissionEvent::Started {
                mission,
                resumed,
                restart,
            } => {
                let verb = match (*resumed, *restart) {
                    (_, n) if n > 0 => "resuming on the new server",
                    (true, _) => "resuming",
                    (false, _) => "mission",
                };
                self.ui.note(format!("{verb}: {mission}"));
                if *resumed {
                    // No plan_committed follows: take the figures from the plan on disk.
                    let store = orch_mvcc::TodoStore::open(self.dir.join(".orchestrator"));
                    if let Ok((version, plan)) = store.and_then(|s| s.snapshot()) {
                        self.done = plan.counts().done;
                        self.plan_committed(version, plan.items.len());
                    }
                } else {
                    self.planner = self.ui.add_spinner("planner", "planning".into());
                }
            }
            MissionEvent::PlanRejected { attempt, error } => {
                self.ui
                    .note(format!("! plan attempt {attempt} rejected: {error}"));
            }
            MissionEvent::PlanCommitted { version, items } => {
                self.ui.note(format!("plan v{version}: {items} items"));
                self.plan_committed(*version, *items);
            }
            MissionEvent::ItemStarted {
                item,
                attempt,
                lane,
                warm,
            } => {
                let line = ItemLine {
                    bar: self.ui.add_spinner("worker", String::new()),
                    attempt: *attempt,
                    lane: *lane,
                    warm: *warm,
                    tokens: 0,
                    role: AgentRole::Worker,
                };
                line.render(item);
                if line.bar.is_none() {
                    self.ui.note(format!(
                        "worker   {item} started (attempt {attempt}, lane {lane}{})",
                        if *warm { ", warm" } else { "" }
                    ));
                }
                if let Some(old) = self.items.insert(item.clone(), line)
                    && let Some(bar) = old.bar
                {
                    bar.finish_and_clear();
                }
            }
            MissionEvent::TurnFinished {
                role,
                item,
                tokens,
                elapsed_ms,
                tool_calls,
                ..
            } => {
                let total = tokens.total();
                if let Some(line) = item.as_ref().and_then(|i| self.items.get_mut(i)) {
                    line.tokens += total;
                    if *role == AgentRole::Worker {
                        line.role = AgentRole::Reviewer;
                    }
                    if let Some(item) = item {
                        line.render(item);
                    }
                }
                if self.ui.mode == Mode::Plain {
                    self.ui.note(format!(
                        "{role:<8} {} turn finished: {} tokens, {tool_calls} tool calls, {}",
                        item.as_deref().unwrap_or("-"),
                        human(total),
                        secs(Duration::from_millis(*elapsed_ms))
                    ));
                }
            }
            // A turn abandoned by a stop or a lost server is not news: the stop notice (or
            // the reconnection) says so.
            MissionEvent::TurnFailed {
                abandoned: true, ..
            } => {}
            MissionEvent::TurnFailed {
                role, item, error, ..
            } => {
                self.ui.note(format!(
                    "! {role} turn failed{}: {error}",
                    item.as_deref()
                        .map(|i| format!(" on {i}"))
                        .unwrap_or_default()
                ));
            }
            MissionEvent::Retrying {
                role,
                item,
                attempt,
                delay_ms,
                error,
            } => {
                self.ui.note(format!(
                    "↻ {role}{} retry {attempt} in {}: {error}",
                    item.as_deref().map(|i| format!(" {i}")).unwrap_or_default(),
                    secs(Duration::from_millis(*delay_ms))
                ));
            }
            MissionEvent::UpstreamRetry {
                role,
                item,
                model,
                attempt,
                wait_ms,
                message,
                status,
                rate_limited,
            } => {
                self.ui.note(upstream_retry_line(
                    *role,
                    item.as_deref(),
                    model,
                    *attempt,
                    Duration::from_millis(*wait_ms),
                    message,
                    *status,
                    *rate_limited,
                ));
            }
            MissionEvent::Permission { item, decision } if !decision.allowed => {
                self.ui.note(format!(
                    "⊘ {} asked for `{}` on {} — rejected by policy",
                    item.as_deref().unwrap_or("an agent"),
                    decision.permission,
                    decision.patterns.join(", ")
                ));
            }
            MissionEvent::Reviewed { item, verdict } => match verdict {
                Verdict::Pass => self.ui.note(format!("✓ {item} review: PASS")),
                Verdict::Fail { reasons } => {
                    self.ui.note(format!("✗ {item} review: FAIL: {reasons}"));
                }
            },
            MissionEvent::ItemDone { item, attempts } => {
                if let Some(line) = self.items.remove(item)
                    && let Some(bar) = line.bar
                {
                    bar.finish_and_clear();
                }
                self.done += 1;
                if let Some(bar) = &self.overall {
                    bar.set_position(self.done as u64);
                }
                self.ui.note(format!(
                    "✓ {item} done ({attempts} attempt{}) [{}/{}]",
                    if *attempts == 1 { "" } else { "s" },
                    self.done,
                    self.total
                ));
                if self.done == self.total && self.integration.is_none() {
                    self.integration = self
                        .ui
                        .add_spinner("reviewer", "integration review of the whole".into());
                }
            }
            MissionEvent::ItemFailed {
                item,
                reason,
                blocked,
            } => {
                if let Some(line) = self.items.remove(item)
                    && let Some(bar) = line.bar
                {
                    bar.finish_and_clear();
                }
                let blocked = if blocked.is_empty() {
                    String::new()
                } else {
                    format!(" (blocks {})", blocked.join(", "))
                };
                self.ui.note(format!("✗ {item} failed: {reason}{blocked}"));
            }
            MissionEvent::IntegrationReviewed {
                round,
                verdict,
                fixups,
            } => {
                if let Some(bar) = self.integration.take() {
                    bar.finish_and_clear();
                }
                match verdict {
                    Verdict::Pass => self.ui.note(format!("✓ integration review {round}: PASS")),
                    Verdict::Fail { reasons } => self.ui.note(format!(
                        "✗ integration review {round}: FAIL: {reasons}; fix-ups: {}",
                        fixups.join(", ")
                    )),
                }
            }
            MissionEvent::Stagnation {
                unchanged,
                escalated,
                diagnosis,
            } => {
                self.ui.note(format!(
                    "! the plan has not changed for {unchanged} rounds{}{}",
                    if *escalated { "; stopping" } else { "" },
                    diagnosis
                        .as_deref()
                        .map(|d| format!(": {d}"))
                        .unwrap_or_default()
                ));
            }
            MissionEvent::LoopDetected { item, detail } => {
                self.ui.note(format!("! {item}: loop detected: {detail}"));
            }
            MissionEvent::BudgetExceeded {
                budget,
                used,
                limit,
            } => {
                self.ui.note(format!(
                    "! {budget} budget exceeded: {used} of {limit}; no new work starts"
                ));
            }
            MissionEvent::Reconnecting { attempt, reason } => {
                self.ui.note(format!(
                    "⟳ the OpenCode server was lost ({reason}); reconnecting (attempt {attempt}), then resuming"
                ));
            }
            MissionEvent::GitBranch {
                branch,
                worktree,
                base_branch,
                resumed,
                uncommitted,
            } => {
                self.ui.note(format!(
                    "git: {} branch {branch} (from {base_branch}), worked on in {}",
                    if *resumed {
                        "on the mission's"
                    } else {
                        "a new"
                    },
                    worktree.display()
                ));
                if !uncommitted.is_empty() {
                    self.ui.notice(format!(
                        "your uncommitted changes ({}) stay in your checkout and are not part of the mission, which starts from your last commit",
                        uncommitted.join(", ")
                    ));
                }
            }
            MissionEvent::ItemCommitted {
                item, sha, branch, ..
            } => {
                let short = sha.get(..10).unwrap_or(sha);
                self.ui
                    .note(format!("⎇ {item} committed on {branch} ({short})"));
            }
            MissionEvent::MergeConflict { item, paths } => {
                self.ui.note(format!(
                    "⚠ {item} conflicts with the mission's branch on {}: sent back to be redone",
                    paths.join(", ")
                ));
            }
            MissionEvent::Finished { .. } => self.finish(),
            _ => {}
        }
    }

    /// Shows (or updates) the overall bar for a plan of `items` items.
    fn plan_committed(&mut self, _version: u64, items: usize) {
        if let Some(bar) = self.planner.take() {
            bar.finish_and_clear();
        }
        self.total = items;
        if self.ui.mode == Mode::Fancy {
            let bar = self.overall.get_or_insert_with(|| {
                let bar = self.ui.multi.insert(0, ProgressBar::new(items as u64));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix:>9.bold} [{bar:30.green/dim}] {pos}/{len} items {elapsed:.dim}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.set_prefix("progress");
                bar
            });
            bar.set_length(items as u64);
            bar.set_position(self.done as u64);
        }
    }

    /// Clears every remaining bar.
    pub(crate) fn finish(&mut self) {
        for bar in [
            self.planner.take(),
            self.integration.take(),
            self.overall.take(),
        ]
        .into_iter()
        .flatten()
        {
            bar.finish_and_clear();
        }
        for (_, line) in self.items.drain() {
            if let Some(bar) = line.bar {
                bar.finish_and_clear();
            }
        }
    }
}

/// The progress line of a model call the server retries by itself:
/// `⏳ worker T3: rate-limited by fake/m (HTTP 429); OpenCode retries in 8.0 s, attempt 3`.
#[allow(clippy::too_many_arguments)]
fn upstream_retry_line(
    role: AgentRole,
    item: Option<&str>,
    model: &str,
    attempt: u32,
    wait: Duration,
    message: &str,
    status: Option<u16>,
    rate_limited: bool,
) -> String {
    let what = if rate_limited {
        "rate-limited"
    } else {
        "model call failed"
    };
    let status = status.map(|s| format!(" (HTTP {s})")).unwrap_or_default();
    format!(
        "⏳ {role}{}: {what} by {model}{status}; OpenCode retries in {}, attempt {attempt} — {message}",
        item.map(|i| format!(" {i}")).unwrap_or_default(),
        secs(wait)
    )
}

/// A duration for people: `850 ms`, `5.0 s`, `2 min 5 s`, `1 h 3 min`.
pub(crate) fn secs(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", d.as_secs_f64())
    } else if ms < 3_600_000 {
        format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1_000)
    } else {
        format!("{} h {} min", ms / 3_600_000, (ms % 3_600_000) / 60_000)
    }
}

/// A cost with four decimals; never `-0.0000`.
pub(crate) fn money(cost: f64) -> String {
    let cost = if cost.abs() < 0.00005 { 0.0 } else { cost };
    format!("{cost:.4}")
}

/// `1234` → `1.2k`.
pub(crate) fn human(n: u64) -> String {
    if n >= 1_000_000 {
        format!("{:.1}M", n as f64 / 1e6)
    } else if n >= 1_000 {
        format!("{:.1}k", n as f64 / 1e3)
    } else {
        n.to_string()
    }
}

fn figure(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.2}")
    }
}

/// The engine's figures, grouped by prefix (`pool`, `lanes`, `breaker`, `slots`, …).
pub(crate) fn engine_lines(engine: &BTreeMap<String, f64>) -> Vec<String> {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, value) in engine {
        let (group, rest) = match key.split_once('.') {
            Some((group, rest)) => (group, rest),
            None => ("engine", key.as_str()),
        };
        let shown = if rest.ends_with("state") && group == "breaker" {
            match *value as i64 {
                0 => "closed".to_owned(),
                1 => "half-open".to_owned(),
                _ => "open".to_owned(),
            }
        } else {
            figure(*value)
        };
        groups
            .entry(group.to_owned())
            .or_default()
            .push(format!("{rest} {shown}"));
    }
    groups
        .into_iter()
        .map(|(group, parts)| format!("{group:>11}: {}", parts.join(", ")))
        .collect()
}

/// The status word and the exit code of a report.
pub(crate) fn status_line(status: &MissionStatus) -> (String, u8) {
    use crate::failure::code;
    let exit = match status {
        MissionStatus::Completed => code::SUCCESS,
        MissionStatus::Failed { .. } | MissionStatus::BudgetExceeded { .. } => code::MISSION_FAILED,
        MissionStatus::Stopped => code::STOPPED,
        MissionStatus::ServerLost { .. } => code::ENVIRONMENT,
    };
    (status.describe(), exit)
}

/// How a run ended, in a word or two.
fn run_status(status: Option<&MissionStatus>) -> &'static str {
    match status {
        None => "ended without a report (killed)",
        Some(MissionStatus::Completed) => "completed",
        Some(MissionStatus::Failed { .. }) => "failed",
        Some(MissionStatus::Stopped) => "stopped",
        Some(MissionStatus::BudgetExceeded { .. }) => "budget exceeded",
        Some(MissionStatus::ServerLost { .. }) => "server lost",
    }
}

/// The figures of a report, summed over every run: status, time, turns, tokens, cost, by
/// role, and one line per run when there was more than one.
pub(crate) fn totals_lines(report: &MissionReport) -> String {
    let mut out = String::new();
    let (status, _) = status_line(&report.status);
    let turns: u64 = report.usage.values().map(|u| u.turns).sum();
    let runs = report.runs.len().max(1);
    out.push_str(&format!(
        "  {status} in {} over {runs} run{} — {turns} turns, {} tokens, cost {}, {} rounds, {} retries{}\n",
        secs(report.elapsed),
        if runs == 1 { "" } else { "s" },
        human(report.total_tokens().total()),
        money(report.total_cost()),
        report.rounds,
        report.retries,
        if report.upstream_retries > 0 {
            format!(
                ", {} model errors retried by OpenCode",
                report.upstream_retries
            )
        } else {
            String::new()
        }
    ));
    for (role, usage) in &report.usage {
        let mut extra = Vec::new();
        if usage.failed_turns > 0 {
            extra.push(format!("{} failed", usage.failed_turns));
        }
        if usage.abandoned_turns > 0 {
            extra.push(format!("{} abandoned", usage.abandoned_turns));
        }
        out.push_str(&format!(
            "  {:<10} {:>3} turns{}  {:>7} tokens (in {}, out {})  cost {}  busy {}\n",
            role.to_string(),
            usage.turns,
            if extra.is_empty() {
                String::new()
            } else {
                format!(" ({})", extra.join(", "))
            },
            human(usage.tokens.total()),
            human(usage.tokens.input),
            human(usage.tokens.output),
            money(usage.cost),
            secs(Duration::from_millis(usage.busy_ms))
        ));
    }
    if report.runs.len() > 1 {
        for (n, run) in report.runs.iter().enumerate() {
            let why = match (run.restart, run.resumed) {
                (r, _) if r > 0 => format!("after server replacement {r}"),
                (_, true) => "resumed".to_owned(),
                (_, false) => "started".to_owned(),
            };
            out.push_str(&format!(
                "  run {}: {why}, {} — {}, {} turns{}, {} tokens, cost {}\n",
                n + 1,
                run_status(run.status.as_ref()),
                secs(Duration::from_millis(run.elapsed_ms)),
                run.turns,
                if run.abandoned_turns > 0 {
                    format!(" ({} abandoned)", run.abandoned_turns)
                } else {
                    String::new()
                },
                human(run.tokens.total()),
                money(run.cost)
            ));
        }
    }
    out
}

/// The human summary of a report.
pub(crate) fn summary(report: &MissionReport, dir: &Path) -> String {
    let mut out = String::new();
    let (status, _) = status_line(&report.status);
    out.push_str(&format!(
        "\nMission {status} in {} — {} rounds, plan v{}, {} retries\n",
        secs(report.elapsed),
        report.rounds,
        report.plan_version,
        report.retries
    ));
    if !report.items.is_empty() {
        out.push_str("\nItems:\n");
    }
    for item in &report.items {
        let mark = match item.state.as_str() {
            "done" => "✓",
            "failed" => "✗",
            _ => "·",
        };
        let blocked = if item.blocked_by.is_empty() {
            String::new()
        } else {
            format!(" — blocked by {}", item.blocked_by.join(", "))
        };
        out.push_str(&format!(
            "  {mark} {:<4} {:<8} {} attempt(s)  {}{blocked}\n",
            item.id, item.state, item.attempts, item.summary
        ));
    }
    out.push_str("\nUsage (the whole mission):\n");
    out.push_str(&totals_lines(report));
    if !report.models.is_empty() {
        let models: Vec<String> = report
            .models
            .iter()
            .map(|(m, n)| format!("{m} ({n} turns)"))
            .collect();
        out.push_str(&format!("  models: {}\n", models.join(", ")));
    }
    let rejected = report.permissions.iter().filter(|p| !p.allowed).count();
    if !report.permissions.is_empty() {
        out.push_str(&format!(
            "  permissions: {} asked, {rejected} rejected by policy\n",
            report.permissions.len()
        ));
    }
    if !report.engine.is_empty() {
        out.push_str("\nEngine (this run):\n");
        for line in engine_lines(&report.engine) {
            out.push_str(&format!("{line}\n"));
        }
    }
    if let Some(git) = &report.git {
        out.push_str(&git_lines(git, dir));
    }
    out.push_str(&format!("\nProject: {}\n", dir.display()));
    let todo = dir.join(".orchestrator/TODO.md");
    if todo.is_file() {
        out.push_str(&format!("Plan:    {}\n", todo.display()));
    }
    out.push_str(&format!(
        "Report:  {}\n",
        dir.join(".orchestrator/report.json").display()
    ));
    out
}

/// The summary's git section: the branch, its commits, how to merge it.
pub(crate) fn git_lines(git: &orch_agents::GitReport, dir: &Path) -> String {
    let mut out = format!(
        "\nGit: branch {} from {} — {} commit(s)\n",
        git.branch,
        git.base_branch,
        git.commits.len()
    );
    for commit in &git.commits {
        let short = commit.sha.get(..10).unwrap_or(&commit.sha);
        out.push_str(&format!("  {short} {}\n", commit.subject));
    }
    if let Some(tree) = &git.worktree {
        out.push_str(&format!("  worktree: {}\n", tree.display()));
    }
    if !git.commits.is_empty() {
        out.push_str(&format!(
            "  merge it: task_cli merge --dir {} (or: {})\n",
            crate::state::shell_quote(&dir.display().to_string()),
            git.merge_command
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_numbers() {
        assert_eq!(human(999), "999");
        assert_eq!(human(1_250), "1.2k");
        assert_eq!(human(3_400_000), "3.4M");
    }

    #[test]
    fn engine_figures_are_grouped_and_breaker_states_named() {
        let engine: BTreeMap<String, f64> = [
            ("pool.created".to_owned(), 3.0),
            ("pool.reused".to_owned(), 5.0),
            ("breaker.fake/fake-model.state".to_owned(), 2.0),
            ("lanes.warm_hit_ratio".to_owned(), 0.5),
        ]
        .into_iter()
        .collect();
        let lines = engine_lines(&engine);
        assert_eq!(lines.len(), 3);
        assert!(
            lines[0].contains("breaker: fake/fake-model.state open"),
            "{lines:?}"
        );
        assert!(lines[1].contains("lanes: warm_hit_ratio 0.50"), "{lines:?}");
        assert!(lines[2].contains("pool: created 3, reused 5"), "{lines:?}");
    }

    #[test]
    fn durations_and_costs_read_as_people_write_them() {
        assert_eq!(secs(Duration::from_nanos(5_015_087_281)), "5.0 s");
        assert_eq!(secs(Duration::from_millis(850)), "850 ms");
        assert_eq!(secs(Duration::from_secs(125)), "2 min 5 s");
        assert_eq!(secs(Duration::from_secs(3_780)), "1 h 3 min");
        assert_eq!(money(-0.0), "0.0000");
        assert_eq!(money(-1e-9), "0.0000");
        assert_eq!(money(0.12345), "0.1235");
    }

    #[test]
    fn a_report_of_several_runs_sums_them_and_lists_each() {
        let run = |turns, abandoned, restart, status| orch_agents::RunSummary {
            turns,
            abandoned_turns: abandoned,
            restart,
            status,
            elapsed_ms: 1_500,
            ..Default::default()
        };
        let report = MissionReport {
            mission: "m".into(),
            status: MissionStatus::Completed,
            items: Vec::new(),
            usage: BTreeMap::new(),
            models: BTreeMap::new(),
            permissions: Vec::new(),
            plan_version: 3,
            rounds: 7,
            retries: 0,
            upstream_retries: 0,
            engine: BTreeMap::new(),
            elapsed: Duration::from_secs(3),
            runs: vec![
                run(
                    4,
                    2,
                    0,
                    Some(MissionStatus::ServerLost { reason: "x".into() }),
                ),
                run(6, 0, 1, Some(MissionStatus::Completed)),
            ],
            git: None,
        };
        let text = totals_lines(&report);
        assert!(text.contains("completed in 3.0 s over 2 runs"), "{text}");
        assert!(text.contains("run 1: started, server lost"), "{text}");
        assert!(text.contains("(2 abandoned)"), "{text}");
        assert!(
            text.contains("run 2: after server replacement 1, completed"),
            "{text}"
        );
    }

    #[test]
    fn an_upstream_retry_says_who_what_and_when() {
        let line = upstream_retry_line(
            AgentRole::Worker,
            Some("T3"),
            "fake/m",
            3,
            Duration::from_secs(8),
            "Too Many Requests",
            Some(429),
            true,
        );
        assert_eq!(
            line,
            "⏳ worker T3: rate-limited by fake/m (HTTP 429); OpenCode retries in 8.0 s, attempt 3 — Too Many Requests"
        );
    }

    #[test]
    fn exit_codes_follow_the_status() {
        assert_eq!(status_line(&MissionStatus::Completed).1, 0);
        assert_eq!(status_line(&MissionStatus::Stopped).1, 130);
        assert_eq!(
            status_line(&MissionStatus::Failed { reason: "x".into() }).1,
            1
        );
    }
}
