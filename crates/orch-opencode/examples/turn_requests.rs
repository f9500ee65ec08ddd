//! Requests, response bytes and latency of a turn's completion detection against a real
//! `opencode serve` (scripted model, `"snapshot": false`), with sessions whose history grows.
//!
//! `P` sessions run `T` turns each, in parallel; every session starts with 30 stored `noReply`
//! notes and every turn is a Worker-like tool call followed by a text answer (3 messages), so
//! the history grows by 3 messages a turn. Two completion strategies run on fresh sessions,
//! alternating:
//!
//! * `legacy`: what `TurnWaiter` did before: wait for the session's idle event, then
//!   `GET /session/status` and `GET /session/{id}/message` (the whole history);
//! * `waiter`: `EventRouter::turn` + `TurnWaiter::wait` (one page of the turn's size).
//!
//! `cargo run --release -p orch-opencode --example turn_requests -- [P] [T] [rounds]`
//! (defaults 8 sessions, 12 turns, 2 rounds; needs OpenCode, see `scripts/install-opencode.sh`).

use std::time::{Duration, Instant};

use orch_opencode::{
    Client, CreateSession, Delivery, Event, EventRouter, KindSet, ModelRef, Prompt, RouterConfig,
    ServerBuilder, SessionId, SessionStatus,
};
use orch_testkit::opencode::{
    IsolatedHome, TestProject, fake_provider_config, merge_json, process_tree_cpu,
};
use orch_testkit::{Reply, Rule, Script, ScriptedModel};
use serde_json::json;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Legacy,
    Waiter,
}

#[derive(Default)]
struct Totals {
    turns: u64,
    /// CPU time of the server process and its children.
    server_cpu: Duration,
    requests: u64,
    bytes: u64,
    latency: Duration,
    wall: Duration,
}

impl Totals {
    fn add(&mut self, t: &Totals) {
        self.turns += t.turns;
        self.server_cpu += t.server_cpu;
        self.requests += t.requests;
        self.bytes += t.bytes;
        self.latency += t.latency;
        self.wall += t.wall;
    }

    /// The per-turn figures.
    fn per_turn(&self) -> String {
        let turns = self.turns.max(1) as f64;
        format!(
            "completion reads {:.2} requests/turn, {:.0} B/turn; mean turn {:.0} ms; server CPU {:.1} ms/turn; wall {:.2} s",
            self.requests as f64 / turns,
            self.bytes as f64 / turns,
            self.latency.as_secs_f64() * 1e3 / turns,
            self.server_cpu.as_secs_f64() * 1e3 / turns,
            self.wall.as_secs_f64()
        )
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let parallel = args.first().copied().unwrap_or(8);
    let turns = args.get(1).copied().unwrap_or(12);
    let rounds = args.get(2).copied().unwrap_or(2);
    let model = ScriptedModel::start(Script::new())?;
    let home = IsolatedHome::new()?;
    let mut config = fake_provider_config(&model.base_url());
    merge_json(&mut config, json!({"snapshot": false}));
    let project = TestProject::with_config(config)?;
    let server = ServerBuilder::new()
        .binary(orch_opencode::find_generation(orch_opencode::Generation::V1)?.path)
        .project_dir(project.path())
        .isolated_home(home.path())
        .remove_home_if_orphaned(true)
        .start()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let dir = project.path().to_string_lossy().into_owned();
    rt.block_on(async {
        let client = server.client().with_directory(&dir);
        // A second client (own counters) for the completion's reads.
        let counted = Client::builder(server.base_url())
            .basic_auth(server.username(), server.password())
            .directory(&dir)
            .build()?;
        let router = EventRouter::connect(client.clone(), RouterConfig::default()).await?;
        // Warm the directory's instance.
        run(
            &model,
            &client,
            &counted,
            &router,
            Mode::Waiter,
            1,
            1,
            server.pid(),
        )
        .await?;
        let mut all = [Totals::default(), Totals::default()];
        for round in 0..rounds {
            for mode in [Mode::Legacy, Mode::Waiter] {
                let t = run(
                    &model,
                    &client,
                    &counted,
                    &router,
                    mode,
                    parallel,
                    turns,
                    server.pid(),
                )
                .await?;
                println!("round {round} {mode:?}: {}", t.per_turn());
                all[mode as usize].add(&t);
            }
        }
        for (mode, a) in [Mode::Legacy, Mode::Waiter].iter().zip(&all) {
            println!(
                "{mode:?} ({parallel} sessions x {turns} turns x {rounds} rounds): {}",
                a.per_turn()
            );
        }
        Ok::<(), BoxError>(())
    })?;
    drop(server);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn run(
    model: &ScriptedModel,
    client: &Client,
    counted: &Client,
    router: &EventRouter,
    mode: Mode,
    parallel: usize,
    turns: usize,
    server_pid: u32,
) -> Result<Totals, BoxError> {
    let mut sessions = Vec::new();
    for i in 0..parallel {
        let s = client
            .create_session(&CreateSession::titled(format!("{mode:?} {i}")))
            .await?;
        model.add_rule(
            Rule::new(format!("{}-write", s.id))
                .session(s.id.as_str())
                .tool_result(false)
                .reply(Reply::tool_call(
                    "write",
                    json!({"filePath": format!("f{i}.txt"), "content": "x\n"}),
                )),
        )?;
        model.add_rule(
            Rule::new(format!("{}-text", s.id))
                .session(s.id.as_str())
                .tool_result(true)
                .reply(Reply::text("done")),
        )?;
        for n in 0..30 {
            let note = Prompt::text(format!("note {n}: {}", "context ".repeat(20))).no_reply();
            client.prompt(&s.id, &note).await?;
        }
        sessions.push(s.id);
    }
    let before = counted.stats();
    let cpu = server_cpu(server_pid);
    let wall = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for id in sessions {
        let (client, counted, router) = (client.clone(), counted.clone(), router.clone());
        tasks.spawn(async move {
            let mut latency = Duration::ZERO;
            for n in 0..turns {
                let t = Instant::now();
                let messages = turn(&client, &counted, &router, mode, &id, n).await?;
                latency += t.elapsed();
                if messages != 2 {
                    return Err(format!("{messages} messages in turn {n} of {id}").into());
                }
            }
            Ok::<_, BoxError>(latency)
        });
    }
    let mut t = Totals::default();
    while let Some(r) = tasks.join_next().await {
        t.latency += r??;
        t.turns += turns as u64;
    }
    t.wall = wall.elapsed();
    t.server_cpu = server_cpu(server_pid).saturating_sub(cpu);
    let used = counted.stats().since(&before);
    t.requests = used.requests;
    t.bytes = used.response_bytes;
    Ok(t)
}

/// One turn; returns the number of assistant messages read. Prompts go through `client`,
/// the completion's reads through `counted`.
async fn turn(
    client: &Client,
    counted: &Client,
    router: &EventRouter,
    mode: Mode,
    id: &SessionId,
    n: usize,
) -> Result<usize, BoxError> {
    let prompt = Prompt::text(format!("turn {n}"))
        .agent("build")
        .model(ModelRef::new("fake", "fake-model"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    match mode {
        Mode::Waiter => {
            let waiter = router.turn_with_client(counted, id, &prompt.message_id);
            client.prompt_async(id, &prompt).await?;
            Ok(waiter.wait(deadline).await?.messages.len())
        }
        Mode::Legacy => {
            let mut sub = router.subscribe_session_filtered(id.as_str(), KindSet::turn());
            client.prompt_async(id, &prompt).await?;
            let mut started = false;
            loop {
                let Some(Delivery::Event(raw)) =
                    tokio::time::timeout_at(deadline, sub.recv()).await?
                else {
                    return Err("events missed".into());
                };
                match raw.decode()? {
                    Event::MessageUpdated { info } if info.id == prompt.message_id => {
                        started = true
                    }
                    Event::SessionStatus { status, .. } if status.is_running() => started = true,
                    Event::SessionIdle { .. } if started => break,
                    Event::SessionStatus {
                        status: SessionStatus::Idle,
                        ..
                    } if started => break,
                    _ => {}
                }
            }
            // The reads of the old `TurnWaiter::finish` (its probe): status, whole history.
            let _running = counted.session_status().await?.contains_key(id);
            let all = counted.messages(id).await?;
            Ok(all
                .iter()
                .filter(|m| {
                    m.info.is_assistant() && m.info.parent_id.as_ref() == Some(&prompt.message_id)
                })
                .count())
        }
    }
}

/// CPU time of the server (OpenCode's launcher runs it as a child process).
fn server_cpu(pid: u32) -> Duration {
    process_tree_cpu(pid).unwrap_or_default()
}
