//! End-to-end tests of the OpenCode plugin (`integrations/opencode-plugin/`) on real servers of
//! both generations: the plugin installed in a project by `task_cli install --plugin`, the
//! engine named by `TASK_CLI` in the server's environment, the scripted model as the only
//! model. A user session runs `/task` through the server's command endpoint (V1
//! `POST /session/{id}/command {command, arguments}`, V2 `POST /api/session/{id}/command
//! {name, text}`), and the tests check what the user would see: the mission completes
//! (`.orchestrator/report.json`), its sessions are children of the user's session, the toasts
//! were emitted (V1 `tui.toast.show` events; V2 the plugin's `rpc.orch.task.toast` events,
//! which its TUI entry shows), the summary is in the session without a model answer, and
//! `/task-stop` stops a running mission within 2 s.
//!
//! A missing OpenCode generation skips its tests, except under `CI`, where it fails them.
//! Every wait is bounded: a task_cli without the plugin's side of the contract fails with the
//! engine's own error (which the plugin posts in the session), not a hang.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{BIN, alive, items_script, run, task_cli, text};
use orch_testkit::opencode::{TestServer, find_generation};
use orch_testkit::{Generation, Script, ScriptedModel};
use serde_json::{Value, json};

/// The V1 command turn: the plugin's hidden `orch-task` agent acknowledges the command.
const RELAY_RULE: &str = r#"
[[rule]]
name = "relay"
agent = "orch-task"
[[rule.reply]]
text = "Noted."
"#;

const MISSION_TIMEOUT: Duration = Duration::from_secs(240);

// ---------------------------------------------------------------------------------------------
// The tests

#[test]
fn v1_task_command_runs_a_mission_under_the_user_session() {
    mission_completes(Generation::V1);
}

#[test]
fn v2_task_command_runs_a_mission_under_the_user_session() {
    mission_completes(Generation::V2);
}

#[test]
fn v1_task_stop_stops_a_running_mission_within_two_seconds() {
    stop_within_two_seconds(Generation::V1);
}

#[test]
fn v2_task_stop_stops_a_running_mission_within_two_seconds() {
    stop_within_two_seconds(Generation::V2);
}

fn mission_completes(generation: Generation) {
    let Some(setup) = Setup::start(generation, &items_script(2, 0, RELAY_RULE)) else {
        return;
    };
    let user = setup.api.create_session("user session");
    setup.api.command(&user, "task", "make two files");

    let summary = setup.wait_summary(&user, MISSION_TIMEOUT);
    let report = setup.report();
    assert_eq!(
        report["status"]["status"], "completed",
        "report: {report:#}\nsummary: {summary}"
    );
    assert!(
        setup.dir().join("f1.txt").exists() && setup.dir().join("f2.txt").exists(),
        "the Workers' files"
    );

    // The summary: items, tokens, cost, where the report is; the model never answered it.
    assert!(
        summary.starts_with("task_cli: mission completed"),
        "{summary}"
    );
    assert!(summary.contains("Items: 2/2 done"), "{summary}");
    assert!(
        summary.contains("Tokens: ") && summary.contains("cost $"),
        "{summary}"
    );
    let report_path = setup.dir().join(".orchestrator/report.json");
    assert!(
        summary.contains(&format!("Report: {}", report_path.display())),
        "{summary}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let answered = setup
        .model
        .requests()
        .into_iter()
        .filter(|r| r.body.to_string().contains("task_cli: mission completed"))
        .count();
    assert_eq!(answered, 0, "the model was asked about the summary");

    // Every session the mission opened (seen as it was created: the engine closes them at
    // the end) descends from the user's session.
    let created = setup.events.created_sessions(generation, setup.dir());
    let parents: std::collections::HashMap<&str, Option<&str>> = created
        .iter()
        .map(|(id, parent)| (id.as_str(), parent.as_deref()))
        .collect();
    let mission_sessions: Vec<&str> = parents.keys().copied().filter(|id| *id != user).collect();
    assert!(
        mission_sessions.len() >= 3,
        "planner, workers, reviewer: {created:#?}"
    );
    for id in mission_sessions {
        let mut at = id;
        let mut hops = 0;
        while let Some(Some(parent)) = parents.get(at) {
            at = parent;
            hops += 1;
            assert!(hops < 10, "a parent cycle at {id}");
        }
        assert_eq!(
            at, user,
            "session {id} does not descend from the user's session {user} (created: {created:#?})"
        );
    }

    // The toasts: plan committed, each item done, the end.
    let toasts = setup.events.toasts(generation);
    let titles: Vec<&str> = toasts.iter().filter_map(|t| t["title"].as_str()).collect();
    for wanted in ["task: started", "task: plan committed", "task: completed"] {
        assert!(
            titles.contains(&wanted),
            "no {wanted:?} toast in {toasts:#?}"
        );
    }
    assert_eq!(
        titles.iter().filter(|t| **t == "task: item done").count(),
        2,
        "{toasts:#?}"
    );
}

fn stop_within_two_seconds(generation: Generation) {
    // The Worker's answer takes 60 s: the mission is surely running when it is stopped.
    let Some(setup) = Setup::start(generation, &items_script(1, 60_000, RELAY_RULE)) else {
        return;
    };
    let user = setup.api.create_session("user session");
    setup.api.command(&user, "task", "make one file");
    setup.wait_toast(generation, "task: plan committed", MISSION_TIMEOUT, &user);
    let pid = setup.running_pid(Duration::from_secs(20));
    let children = setup.api.children(&user);
    assert!(
        !children.is_empty(),
        "the running mission's sessions are not listed as children of {user}"
    );

    // A second /task while it runs is reported, not started.
    setup.api.command(&user, "task", "another mission");
    let reply = setup.wait_text(&user, "already running", Duration::from_secs(30));
    assert!(
        reply.contains(&format!("pid {pid}")),
        "the reply names the running engine: {reply}"
    );
    assert_eq!(setup.running_pid(Duration::from_secs(5)), pid, "one engine");

    // /task-stop: the engine is gone within 2 s of the command.
    let gone = Arc::new(Mutex::new(None::<Duration>));
    let watcher = {
        let gone = Arc::clone(&gone);
        let started = Instant::now();
        std::thread::spawn(move || {
            while started.elapsed() < Duration::from_secs(30) {
                if !alive(pid) {
                    *gone.lock().unwrap() = Some(started.elapsed());
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    setup.api.command(&user, "task-stop", "");
    watcher.join().unwrap();
    let took = gone
        .lock()
        .unwrap()
        .expect("task_cli still runs 30 s after /task-stop");
    assert!(
        took < Duration::from_secs(2),
        "/task-stop took {took:?} to stop task_cli"
    );

    let summary = setup.wait_summary(&user, Duration::from_secs(30));
    assert!(
        summary.contains("stopped by the user"),
        "the summary says it was stopped: {summary}"
    );
    assert_eq!(setup.report()["status"]["status"], "stopped");
    let titles: Vec<String> = setup
        .events
        .toasts(generation)
        .iter()
        .filter_map(|t| t["title"].as_str().map(str::to_owned))
        .collect();
    assert!(titles.iter().any(|t| t == "task: stopped"), "{titles:?}");
}

// ---------------------------------------------------------------------------------------------
// Set-up: model, project, install, server, event stream

struct Setup {
    // Field order is drop order: the event reader and the server go before the project.
    events: EventLog,
    api: Api,
    server: TestServer,
    model: ScriptedModel,
    project: tempfile::TempDir,
}

impl Setup {
    /// `None` when this generation of OpenCode is not installed (and `CI` is not set).
    fn start(generation: Generation, script: &str) -> Option<Setup> {
        let binary = match find_generation(generation) {
            Ok(binary) => binary,
            Err(e) if std::env::var_os("CI").is_some() => {
                panic!("OpenCode {generation} is needed (CI is set): {e}")
            }
            Err(e) => {
                eprintln!(
                    "SKIPPED: OpenCode {generation} is not installed ({e}); run scripts/install-opencode.sh"
                );
                return None;
            }
        };
        let model = ScriptedModel::start(Script::from_toml_str(script).expect("the script parses"))
            .expect("the scripted model starts");
        let project = tempfile::Builder::new()
            .prefix("orch-plugin-")
            .tempdir()
            .expect("a project directory");
        let dir = project.path();
        std::fs::create_dir_all(dir.join(".orchestrator")).unwrap();
        std::fs::write(
            dir.join(".orchestrator/task.toml"),
            "model = \"fake/fake-model\"\nworkers = 2\nturn_timeout_secs = 120\n",
        )
        .unwrap();

        // The user's two commands: the agents, then the plugin (found for this generation).
        for args in [&["install"][..], &["install", "--plugin"][..]] {
            let output = run(task_cli(dir)
                .env("OPENCODE_BIN", &binary.path)
                .args(args)
                .arg("--dir")
                .arg(dir));
            assert_eq!(
                output.status.code(),
                Some(0),
                "`task_cli {}` failed\nstdout: {}\nstderr: {}",
                args.join(" "),
                text(&output.stdout),
                text(&output.stderr)
            );
        }
        let plugin = dir.join(".opencode/plugins/orch-task");
        for file in ["index.js", "tui.js", "lib/controller.js", "orch-task.json"] {
            assert!(
                plugin.join(file).is_file(),
                "`task_cli install --plugin` did not write {}",
                plugin.join(file).display()
            );
        }
        if generation == Generation::V1 {
            assert!(
                dir.join(".opencode/plugins/orch-task.js").is_file(),
                "`task_cli install --plugin` did not write the V1 entry .opencode/plugins/orch-task.js"
            );
        }

        let server = TestServer::builder(model.base_url())
            .binary(binary)
            .project_dir(dir)
            .env("TASK_CLI", BIN)
            .start()
            .expect("OpenCode starts");
        let api = Api::new(&server, dir);
        api.wait_commands(Duration::from_secs(30));
        let events = EventLog::start(&api, generation);
        Some(Setup {
            events,
            api,
            server,
            model,
            project,
        })
    }

    fn dir(&self) -> &Path {
        self.project.path()
    }

    fn report(&self) -> Value {
        let path = self.dir().join(".orchestrator/report.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).expect("report.json parses")
    }

    /// Everything the user can read in the session, oldest first.
    fn texts(&self, session: &str) -> Vec<String> {
        self.api.texts(session)
    }

    /// The plugin's summary (it starts `task_cli: `), once posted. A summary of a run that
    /// ended without a report fails the test at once with the engine's error.
    fn wait_summary(&self, session: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            if let Some(summary) = self.texts(session).into_iter().rev().find(|t| {
                t.starts_with("task_cli: mission") || t.starts_with("task_cli: the mission ended")
            }) {
                assert!(
                    !summary.starts_with("task_cli: the mission ended"),
                    "task_cli ended without a report (is its side of the plugin contract there: \
                     run/resume --server URL --parent-session ID --opencode-generation G --json?):\n{summary}\n{}",
                    self.diagnostics(session)
                );
                return summary;
            }
            assert!(
                start.elapsed() < timeout,
                "no summary in the session within {timeout:?}\n{}",
                self.diagnostics(session)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn wait_text(&self, session: &str, needle: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            if let Some(found) = self.texts(session).into_iter().find(|t| t.contains(needle)) {
                return found;
            }
            assert!(
                start.elapsed() < timeout,
                "no {needle:?} in the session within {timeout:?}\n{}",
                self.diagnostics(session)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_toast(&self, generation: Generation, title: &str, timeout: Duration, session: &str) {
        let start = Instant::now();
        while !self
            .events
            .toasts(generation)
            .iter()
            .any(|t| t["title"] == title)
        {
            if let Some(ended) = self
                .texts(session)
                .into_iter()
                .find(|t| t.starts_with("task_cli: the mission ended"))
            {
                panic!(
                    "task_cli ended before {title:?}:\n{ended}\n{}",
                    self.diagnostics(session)
                );
            }
            assert!(
                start.elapsed() < timeout,
                "no {title:?} toast within {timeout:?}\n{}",
                self.diagnostics(session)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The pid of the task_cli run holding the project (`task_cli status --json`).
    fn running_pid(&self, timeout: Duration) -> u32 {
        let start = Instant::now();
        loop {
            let output = run(task_cli(self.dir())
                .args(["--json", "status", "--dir"])
                .arg(self.dir()));
            let status: Value = text(&output.stdout)
                .lines()
                .find_map(|l| serde_json::from_str(l).ok())
                .unwrap_or(Value::Null);
            if let Some(pid) = status["running_pid"].as_u64() {
                return u32::try_from(pid).expect("a pid");
            }
            assert!(
                start.elapsed() < timeout,
                "task_cli status names no running pid: {status}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn diagnostics(&self, session: &str) -> String {
        let log = self.server.log();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        format!(
            "session texts: {:#?}\ntoast events: {:#?}\nOpenCode log (last lines, newest first): {tail:#?}",
            self.texts(session),
            self.events.all_toasts()
        )
    }
}

// ---------------------------------------------------------------------------------------------
// A small HTTP/1.1 client (std only) for the server's API

#[derive(Clone)]
struct Api {
    host: String,
    auth: String,
    generation: Generation,
    dir: PathBuf,
}

impl Api {
    fn new(server: &TestServer, dir: &Path) -> Api {
        let host = server
            .base_url()
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let auth = base64(format!("{}:{}", server.username(), server.password()).as_bytes());
        Api {
            host,
            auth,
            generation: server.generation(),
            dir: dir.to_owned(),
        }
    }

    fn encoded_dir(&self) -> String {
        percent(&self.dir.to_string_lossy())
    }

    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
        let mut stream = TcpStream::connect(&self.host).expect("connect to OpenCode");
        // A V1 command answers after its model turn; nothing here takes longer.
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        let body = body.map(Value::to_string).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.host,
            self.auth,
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body.as_bytes()).unwrap();
        let mut reader = BufReader::new(stream);
        let (status, chunked, length) = read_head(&mut reader);
        let mut raw = Vec::new();
        if chunked {
            while let Some(chunk) = read_chunk(&mut reader) {
                raw.extend(chunk);
            }
        } else if let Some(length) = length {
            // The server may keep the connection open whatever `Connection: close` says.
            raw.resize(length, 0);
            reader
                .read_exact(&mut raw)
                .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        } else {
            reader
                .read_to_end(&mut raw)
                .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        }
        (status, String::from_utf8_lossy(&raw).into_owned())
    }

    fn json(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (status, text) = self.request(method, path, body);
        assert!(
            (200..300).contains(&status),
            "{method} {path}: HTTP {status}: {text}"
        );
        if text.trim().is_empty() {
            return Value::Null;
        }
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"))
    }

    fn create_session(&self, title: &str) -> String {
        let session = match self.generation {
            Generation::V1 => self.json(
                "POST",
                &format!("/session?directory={}", self.encoded_dir()),
                Some(&json!({ "title": title })),
            ),
            Generation::V2 => self.json(
                "POST",
                "/api/session",
                Some(&json!({ "title": title, "location": { "directory": self.dir } })),
            )["data"]
                .clone(),
        };
        session["id"].as_str().expect("a session id").to_owned()
    }

    /// Runs a command as the TUI does, through the server's command endpoint.
    fn command(&self, session: &str, name: &str, arguments: &str) {
        let (status, text) = match self.generation {
            Generation::V1 => self.request(
                "POST",
                &format!("/session/{session}/command"),
                Some(&json!({ "command": name, "arguments": arguments })),
            ),
            Generation::V2 => self.request(
                "POST",
                &format!("/api/session/{session}/command"),
                Some(&json!({ "name": name, "text": arguments })),
            ),
        };
        assert!(
            (200..300).contains(&status),
            "/{name} {arguments}: HTTP {status}: {text}"
        );
    }

    /// Waits until the server lists the plugin's commands for the project.
    fn wait_commands(&self, timeout: Duration) {
        let start = Instant::now();
        loop {
            let list = match self.generation {
                Generation::V1 => self.json(
                    "GET",
                    &format!("/command?directory={}", self.encoded_dir()),
                    None,
                ),
                Generation::V2 => self.json(
                    "GET",
                    &format!(
                        "/api/command?location%5Bdirectory%5D={}",
                        self.encoded_dir()
                    ),
                    None,
                )["data"]
                    .clone(),
            };
            let names: Vec<&str> = list
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["name"].as_str())
                .collect();
            if ["task", "task-status", "task-stop", "task-resume"]
                .iter()
                .all(|n| names.contains(n))
            {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "the plugin's commands are not listed (is the plugin installed and loading?): {names:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn children(&self, session: &str) -> Vec<Value> {
        let list = match self.generation {
            Generation::V1 => self.json("GET", &format!("/session/{session}/children"), None),
            Generation::V2 => self.json(
                "GET",
                &format!("/api/session?parentID={session}&limit=200"),
                None,
            )["data"]
                .clone(),
        };
        list.as_array().cloned().unwrap_or_default()
    }

    /// What the user reads in the session: V1 text parts, V2 text payloads and shell output.
    fn texts(&self, session: &str) -> Vec<String> {
        match self.generation {
            Generation::V1 => self
                .json("GET", &format!("/session/{session}/message"), None)
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|m| m["parts"].as_array().cloned().unwrap_or_default())
                .filter(|p| p["type"] == "text")
                .filter_map(|p| p["text"].as_str().map(str::to_owned))
                .collect(),
            Generation::V2 => self.json(
                "GET",
                &format!("/api/session/{session}/message?order=asc&limit=200"),
                None,
            )["data"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| {
                    m["output"]["output"]
                        .as_str()
                        .or_else(|| m["payload"]["text"].as_str())
                        .or_else(|| m["text"].as_str())
                        .map(str::to_owned)
                })
                .collect(),
        }
    }
}

/// The status, whether the body is chunked, and its `Content-Length` if given.
fn read_head(reader: &mut impl BufRead) -> (u16, bool, Option<usize>) {
    let mut line = String::new();
    reader.read_line(&mut line).expect("a status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP status line: {line:?}"));
    let (chunked, length) = read_headers(reader);
    (status, chunked, length)
}

/// The headers after the status line: whether the body is chunked, its `Content-Length`.
fn read_headers(reader: &mut impl BufRead) -> (bool, Option<usize>) {
    let mut line = String::new();
    let mut chunked = false;
    let mut length = None;
    loop {
        line.clear();
        reader.read_line(&mut line).expect("a header line");
        if line.trim().is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
        if let Some(value) = lower.strip_prefix("content-length:") {
            length = value.trim().parse().ok();
        }
    }
    (chunked, length)
}

/// One chunk of a chunked body; `None` at the end (or when the connection ends).
fn read_chunk(reader: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut size = String::new();
    if reader.read_line(&mut size).ok()? == 0 {
        return None;
    }
    let size = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
    if size == 0 {
        return None;
    }
    let mut chunk = vec![0; size + 2];
    reader.read_exact(&mut chunk).ok()?;
    chunk.truncate(size);
    Some(chunk)
}

fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for group in bytes.chunks(3) {
        let b = [
            group[0],
            *group.get(1).unwrap_or(&0),
            *group.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(ABC[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The event stream: where the toasts are seen

/// Every event of the server's stream, collected by a thread (V1 `/event` of the project's
/// directory, V2 the global `/api/event`). The thread ends when the server goes away.
struct EventLog {
    events: Arc<Mutex<Vec<Value>>>,
    _open: Arc<AtomicBool>,
}

impl EventLog {
    fn start(api: &Api, generation: Generation) -> EventLog {
        let path = match generation {
            Generation::V1 => format!("/event?directory={}", api.encoded_dir()),
            Generation::V2 => "/api/event".to_owned(),
        };
        let events = Arc::new(Mutex::new(Vec::new()));
        let open = Arc::new(AtomicBool::new(false));
        let (host, auth) = (api.host.clone(), api.auth.clone());
        {
            let events = Arc::clone(&events);
            let open = Arc::clone(&open);
            std::thread::spawn(move || {
                // A connection the server drops before answering is tried again.
                let deadline = Instant::now() + Duration::from_secs(20);
                let (mut reader, chunked) = loop {
                    let attempt = TcpStream::connect(&host).and_then(|mut stream| {
                        let head = format!(
                            "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {auth}\r\nAccept: text/event-stream\r\n\r\n"
                        );
                        stream.write_all(head.as_bytes())?;
                        let mut reader = BufReader::new(stream);
                        let mut line = String::new();
                        reader.read_line(&mut line)?;
                        Ok((reader, line))
                    });
                    match attempt {
                        Ok((mut reader, line)) if line.split_whitespace().nth(1) == Some("200") => {
                            let chunked = read_headers(&mut reader).0;
                            break (reader, chunked);
                        }
                        _ if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(200))
                        }
                        other => panic!(
                            "the event stream {path} does not open: {:?}",
                            other.map(|(_, l)| l)
                        ),
                    }
                };
                open.store(true, Ordering::SeqCst);
                let mut pending = String::new();
                loop {
                    let data = if chunked {
                        match read_chunk(&mut reader) {
                            Some(chunk) => chunk,
                            None => return,
                        }
                    } else {
                        let mut buf = vec![0; 8192];
                        match reader.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf[..n].to_vec(),
                        }
                    };
                    pending.push_str(&String::from_utf8_lossy(&data));
                    while let Some(at) = pending.find('\n') {
                        let line: String = pending.drain(..=at).collect();
                        if let Some(json) = line.trim_end().strip_prefix("data:")
                            && let Ok(value) = serde_json::from_str::<Value>(json.trim())
                        {
                            events.lock().unwrap().push(value);
                        }
                    }
                }
            });
        }
        let start = Instant::now();
        while !open.load(Ordering::SeqCst) {
            assert!(
                start.elapsed() < Duration::from_secs(25),
                "the event stream did not open within 25 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        EventLog {
            events,
            _open: open,
        }
    }

    /// The toasts: V1 `tui.toast.show` properties, V2 the plugin's `rpc.orch.task.toast` data.
    fn toasts(&self, generation: Generation) -> Vec<Value> {
        let (kind, field) = match generation {
            Generation::V1 => ("tui.toast.show", "properties"),
            Generation::V2 => ("rpc.orch.task.toast", "data"),
        };
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == kind)
            .map(|e| e[field].clone())
            .collect()
    }

    /// `(session, parent)` of every `session.created` event of the project directory.
    fn created_sessions(
        &self,
        generation: Generation,
        dir: &Path,
    ) -> Vec<(String, Option<String>)> {
        let dir = dir.to_string_lossy();
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "session.created")
            .filter_map(|e| {
                let (id, parent, location) = match generation {
                    Generation::V1 => {
                        let info = &e["properties"]["info"];
                        (&info["id"], &info["parentID"], &info["directory"])
                    }
                    Generation::V2 => {
                        let data = &e["data"];
                        (
                            &data["sessionID"],
                            &data["parentID"],
                            &data["location"]["directory"],
                        )
                    }
                };
                (location.as_str() == Some(dir.as_ref())).then(|| {
                    (
                        id.as_str().unwrap_or_default().to_owned(),
                        parent.as_str().map(str::to_owned),
                    )
                })
            })
            .collect()
    }

    fn all_toasts(&self) -> Vec<Value> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["type"].as_str().is_some_and(|t| t.contains("toast")))
            .cloned()
            .collect()
    }
}
