//! Helpers shared by the end-to-end tests of `task_cli`: the binary with a clean
//! environment, its output, and scripts for the scripted model.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_task_cli");

/// A home of this test process for `task_cli` (HOME and the XDG directories), under the
/// target directory: no test reads or writes the machine user's OpenCode data, config or
/// background service (a test that wants a service points XDG_STATE_HOME at its own).
/// Homes of test processes that have ended are removed.
pub fn isolated_home() -> &'static Path {
    static HOME: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    HOME.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("task_cli-homes");
        if let Ok(entries) = std::fs::read_dir(&root) {
            for entry in entries.flatten() {
                let ended = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u32>().ok())
                    .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
                if ended {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let home = root.join(std::process::id().to_string());
        for sub in ["config", "data", "state", "cache"] {
            std::fs::create_dir_all(home.join(sub)).expect("a test home");
        }
        home
    })
}

/// The CLI with a clean environment: no colours, no terminal, OpenCode from the project's
/// install (so `demo` does not try to install it; `OPENCODE_BIN` picks the generation), a
/// home of the tests' own ([`isolated_home`]).
pub fn task_cli(cwd: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(cwd)
        .env("NO_COLOR", "1")
        .env_remove("TASK_LOG")
        .env_remove("OPENCODE_SERVER_PASSWORD")
        .env_remove("OPENCODE_SERVER_USERNAME")
        .env("HOME", isolated_home())
        .env("XDG_CONFIG_HOME", isolated_home().join("config"))
        .env("XDG_DATA_HOME", isolated_home().join("data"))
        .env("XDG_STATE_HOME", isolated_home().join("state"))
        .env("XDG_CACHE_HOME", isolated_home().join("cache"))
        .env("OPENCODE_BIN", orch_testkit::opencode::require_binary())
        .stdin(Stdio::null());
    cmd
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("task_cli runs")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `task_cli --json ARGS [--model-script SCRIPT] --dir PROJECT`, run to its end in `cwd`.
pub fn json_run(cwd: &Path, args: &[&str], script: Option<&Path>, project: &Path) -> Output {
    let mut cmd = task_cli(cwd);
    cmd.arg("--json").args(args);
    if let Some(script) = script {
        cmd.arg("--model-script").arg(script);
    }
    run(cmd.arg("--dir").arg(project))
}

/// Every stdout line parsed as JSON (the test fails on a line that is not).
pub fn json_lines(output: &Output) -> Vec<Value> {
    text(&output.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

pub fn events_named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

pub fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

pub fn python_tests_pass(dir: &Path) -> bool {
    Command::new("python3")
        .args(["-m", "unittest", "-q"])
        .current_dir(dir)
        .output()
        .expect("python3 runs")
        .status
        .success()
}

pub fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            panic!("task_cli did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `signal` (`INT`, `TERM`, `KILL`) to `pid`; whether it was delivered.
pub fn signal(pid: u32, signal: &str) -> bool {
    Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Children of `pid` (through `pgrep -P`).
pub fn children(pid: u32) -> Vec<u32> {
    let out = Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .output()
        .expect("pgrep runs");
    text(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Every descendant of `pid`, parents first.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut tree = children(pid);
    let mut i = 0;
    while i < tree.len() {
        let more = children(tree[i]);
        tree.extend(more);
        i += 1;
    }
    tree
}

/// Whether a process with this pid exists.
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.split(' ').nth(2) == Some("Z"))
}

/// A `task_cli --json …` child whose stdout lines arrive on a channel as they are printed.
pub struct Live {
    pub child: Child,
    pub lines: mpsc::Receiver<Value>,
    pub seen: Vec<Value>,
    stderr: std::thread::JoinHandle<String>,
}

impl Live {
    /// Spawns `cmd` (which must use `--json`).
    pub fn spawn(mut cmd: Command) -> Live {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("task_cli starts");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(value) = serde_json::from_str::<Value>(&line)
                    && tx.send(value).is_err()
                {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        Live {
            child,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    /// Waits for the first line (from now on) for which `pick` holds, and returns it.
    pub fn wait_line(
        &mut self,
        what: &str,
        timeout: Duration,
        pick: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pick(&line) {
                        return line;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    panic!("no {what} within {timeout:?}; saw {:?}", self.seen);
                }
            }
        }
    }

    /// Waits for the process to exit; its exit code, every stdout line and its stderr.
    pub fn finish(mut self, timeout: Duration) -> (Option<i32>, Vec<Value>, String) {
        let code = wait_child(&mut self.child, timeout);
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        let stderr = self.stderr.join().unwrap_or_default();
        (code, self.seen, stderr)
    }
}

/// A script for the scripted model: a plan of independent items `T1..Tn`, each writing
/// `f<i>.txt` (the Worker's answer waits `worker_delay_ms`), reviewed and integrated with a
/// plain PASS. `extra` rules come first (they win).
pub fn items_script(items: usize, worker_delay_ms: u64, extra: &str) -> String {
    let mut plan = String::from("# Files\\n\\n");
    for i in 1..=items {
        plan.push_str(&format!("- [ ] T{i}: file {i}\\n  - files: f{i}.txt\\n"));
    }
    let mut out = format!(
        r#"models = ["fake-model"]

{extra}

[[rule]]
name = "title"
kind = "title"
[[rule.reply]]
text = "Files session"

[[rule]]
name = "compaction"
kind = "compaction"
[[rule.reply]]
text = "Summary."

[[rule]]
name = "plan"
agent = "planner"
[[rule.reply]]
text = "{plan}"
"#
    );
    for i in 1..=items {
        out.push_str(&format!(
            r#"
[[rule]]
name = "T{i} write"
agent = "worker"
user = "Your item: T{i}:"
tool_result = false
[[rule.reply]]
delay_ms = {worker_delay_ms}
tool_calls = [{{ name = "write", arguments = {{ filePath = "f{i}.txt", content = "file {i}\n" }} }}]
"#
        ));
    }
    out.push_str(
        r#"
[[rule]]
name = "worker done"
agent = "worker"
last_tool = "write"
[[rule.reply]]
text = "Done."

[[rule]]
name = "review pass"
agent = "reviewer"
[[rule.reply]]
text = "Looks right.\nVERDICT: PASS"
"#,
    );
    out
}

/// Writes `script` to `dir/name` and returns the path.
pub fn write_script(dir: &Path, name: &str, script: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, script).expect("script written");
    orch_testkit::Script::from_toml_str(script).expect("the test script parses");
    path
}
