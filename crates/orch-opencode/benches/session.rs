//! Requests against a real `opencode serve`: `POST /session` and `GET /session/{id}`
//! (baseline for the session pool), and reading a turn's messages on a session with a
//! history (40 stored messages): the whole history, which `TurnWaiter` read after every
//! turn before, against the newest page, which it reads now. Needs OpenCode 1
//! (`scripts/install-opencode.sh`): skipped without it, failed without it when `CI` is set.

use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use orch_opencode::{Client, CreateSession, Prompt, ServerBuilder};
use orch_testkit::opencode::{IsolatedHome, TestProject};
use orch_testkit::{Script, ScriptedModel};

#[path = "../tests/support/opencode_bin.rs"]
mod opencode_bin;

fn main() {
    let Some(bin) = opencode_bin::binary_or_skip(orch_opencode::Generation::V1) else {
        return;
    };
    let model = ScriptedModel::start(Script::new()).expect("scripted model");
    let home = IsolatedHome::new().expect("home");
    let project = TestProject::new(&model.base_url()).expect("project");
    let server = ServerBuilder::new()
        .binary(bin)
        .project_dir(project.path())
        .isolated_home(home.path())
        .remove_home_if_orphaned(true)
        .start()
        .expect("opencode serve");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = Client::builder(server.base_url())
        .basic_auth(server.username(), server.password())
        .directory(project.path().to_string_lossy())
        .build()
        .expect("client");
    // Warm the instance of this directory once.
    rt.block_on(client.create_session(&CreateSession::titled("warm-up")))
        .expect("first session");

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
        .configure_from_args();
    let mut g = c.benchmark_group("session");
    g.bench_function("create_titled", |b| {
        b.iter(|| {
            black_box(
                rt.block_on(client.create_session(&CreateSession::titled("bench")))
                    .expect("create"),
            )
        })
    });
    g.bench_function("get", |b| {
        let s = rt
            .block_on(client.create_session(&CreateSession::titled("get")))
            .expect("create");
        b.iter(|| black_box(rt.block_on(client.session(&s.id)).expect("get")))
    });
    g.finish();

    let long = rt
        .block_on(client.create_session(&CreateSession::titled("history")))
        .expect("create");
    for n in 0..40 {
        let note = Prompt::text(format!("note {n}: {}", "context ".repeat(20))).no_reply();
        rt.block_on(client.prompt(&long.id, &note)).expect("note");
    }
    let mut g = c.benchmark_group("turn_read_40_messages");
    g.bench_function("status_and_whole_history_before", |b| {
        b.iter(|| {
            let status = rt.block_on(client.session_status()).expect("status");
            let all = rt.block_on(client.messages(&long.id)).expect("messages");
            black_box((status, all))
        })
    });
    g.bench_function("newest_page_of_2_now", |b| {
        b.iter(|| {
            black_box(
                rt.block_on(client.messages_page(&long.id, 2, None))
                    .expect("page"),
            )
        })
    });
    g.finish();
    c.final_summary();
    drop(client);
    drop(rt);
    drop(server);
}
