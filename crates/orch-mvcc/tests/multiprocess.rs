//! Several processes on one store, and writers killed with SIGKILL at random instants.
//!
//! The child processes are this test binary itself, re-run on the `child_entry` test with
//! `ORCH_MVCC_CHILD` set; in a normal run `child_entry` does nothing.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use orch_mvcc::{
    ConflictRetry, Durability, Item, ItemId, Plan, RecoveryEvent, StoreError, StoreOptions,
    TodoStore, render,
};

const CHILD_ENV: &str = "ORCH_MVCC_CHILD";
const DIR_ENV: &str = "ORCH_MVCC_DIR";
const ITEM_ENV: &str = "ORCH_MVCC_ITEM";
const COUNT_ENV: &str = "ORCH_MVCC_COUNT";
const SYNC_ENV: &str = "ORCH_MVCC_SYNC";
const STARTED: &str = "orch-mvcc-child-started";

fn open(dir: &Path, durability: Durability) -> TodoStore {
    TodoStore::open_with(
        dir,
        StoreOptions {
            durability,
            // Short backoff keeps four contending processes busy instead of asleep.
            retry: ConflictRetry {
                max_attempts: 64,
                base_delay: Duration::from_micros(20),
                max_delay: Duration::from_millis(1),
            },
            ..StoreOptions::default()
        },
    )
    .expect("store opens")
}

fn id(s: &str) -> ItemId {
    ItemId::new(s).expect("valid id")
}

/// Adds one to `item`'s attempts, retrying conflicts until it lands.
fn increment(store: &TodoStore, writer: &str, item: &str) {
    loop {
        match store.update(writer, |p| {
            p.item_mut(item).expect("item exists").attempts += 1;
        }) {
            Ok(c) => {
                assert!(c.changed);
                return;
            }
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => panic!("increment failed: {e}"),
        }
    }
}

#[test]
fn child_entry() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(std::env::var(DIR_ENV).expect("dir set"));
    let durability = if std::env::var(SYNC_ENV).is_ok() {
        Durability::Fsync
    } else {
        Durability::NoSync
    };
    let store = open(&dir, durability);
    let item = std::env::var(ITEM_ENV).expect("item set");
    match mode.as_str() {
        "increment" => {
            let count: u32 = std::env::var(COUNT_ENV)
                .expect("count set")
                .parse()
                .expect("count is a number");
            for _ in 0..count {
                increment(&store, &item, &item);
                increment(&store, &item, "shared");
            }
        }
        "forever" => {
            increment(&store, "crasher", &item);
            // Tell the parent that commits are flowing, then commit until killed.
            println!("{STARTED}");
            loop {
                increment(&store, "crasher", &item);
            }
        }
        other => panic!("unknown child mode {other}"),
    }
}

fn spawn_child(mode: &str, dir: &Path, item: &str, count: u32, sync: bool) -> Child {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary path"));
    cmd.args([
        "--exact",
        "child_entry",
        "--test-threads",
        "1",
        "--quiet",
        "--nocapture",
    ])
    .env(CHILD_ENV, mode)
    .env(DIR_ENV, dir)
    .env(ITEM_ENV, item)
    .env(COUNT_ENV, count.to_string())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    if sync {
        cmd.env(SYNC_ENV, "1");
    }
    cmd.spawn().expect("child starts")
}

#[test]
fn processes_lose_no_update() {
    const PROCESSES: usize = 4;
    const COUNT: u32 = 1_000;
    let dir = common::fast_tempdir();
    let store = open(dir.path(), Durability::NoSync);
    let mut plan = Plan::new("multi-process");
    plan.push(Item::new(id("shared"), "everyone increments this"));
    for p in 0..PROCESSES {
        plan.push(Item::new(
            id(&format!("p{p}")),
            "one process increments this",
        ));
    }
    assert_eq!(store.compare_and_swap("init", 0, plan).unwrap(), 1);

    let children: Vec<Child> = (0..PROCESSES)
        .map(|p| spawn_child("increment", dir.path(), &format!("p{p}"), COUNT, false))
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success(), "a child failed");
    }

    let (version, plan) = store.snapshot().unwrap();
    assert_eq!(
        plan.item("shared").unwrap().attempts,
        COUNT * PROCESSES as u32
    );
    for p in 0..PROCESSES {
        assert_eq!(plan.item(format!("p{p}")).unwrap().attempts, COUNT);
    }
    assert_eq!(version, 1 + 2 * u64::from(COUNT) * PROCESSES as u64);
    assert_eq!(store.verify().unwrap().records, version);
}

#[test]
fn kill_9_at_random_points_leaves_a_committed_version() {
    const RUNS: u64 = 40;
    // On the real disk: renames there are slow enough to be killed in the middle of.
    let dir = tempfile::tempdir().unwrap();
    let mut plan = Plan::new("crash");
    plan.push(Item::new(id("C"), "counter"));
    plan.push(
        Item::new(id("pad"), "padding so that writes take a little longer")
            .with_files((0..200).map(|i| format!("src/file_{i}.rs"))),
    );
    {
        let store = open(dir.path(), Durability::NoSync);
        assert_eq!(store.compare_and_swap("init", 0, plan).unwrap(), 1);
    }
    let mut repairs = Vec::new();
    let mut last_version = 1;
    for run in 0..RUNS {
        let sync = run % 2 == 0;
        let mut child = spawn_child("forever", dir.path(), "C", 0, sync);
        let stdout = child.stdout.take().expect("piped stdout");
        let started = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.trim() == STARTED);
        assert!(started, "child exited before committing");
        std::thread::sleep(Duration::from_micros(fastrand::u64(0..20_000)));
        child.kill().unwrap();
        let _ = child.wait();

        let store = open(dir.path(), Durability::NoSync);
        let (version, plan) = store.snapshot().unwrap();
        // Every committed version n has the counter at n - 1.
        assert_eq!(u64::from(plan.item("C").unwrap().attempts), version - 1);
        assert!(
            version >= last_version,
            "went back from {last_version} to {version}"
        );
        last_version = version;
        // TODO.md on disk is exactly the committed version's text, and the audit chain ends there.
        let text = std::fs::read_to_string(dir.path().join(orch_mvcc::TODO_FILE)).unwrap();
        assert_eq!(text, render(&plan));
        assert_eq!(store.verify().unwrap().last_version, version);
        repairs.extend(store.take_recovery_events());
    }
    assert!(
        last_version > RUNS,
        "the children committed too little to test anything"
    );
    let count = |f: fn(&RecoveryEvent) -> bool| repairs.iter().filter(|e| f(e)).count();
    eprintln!(
        "{RUNS} kills, {last_version} versions; repairs: torn tail {}, rolled back {}, rolled forward {}",
        count(|e| matches!(e, RecoveryEvent::TornTailRepaired { .. })),
        count(|e| matches!(e, RecoveryEvent::RolledBack { .. })),
        count(|e| matches!(e, RecoveryEvent::RolledForward { .. })),
    );
    assert!(
        !repairs
            .iter()
            .any(|e| matches!(e, RecoveryEvent::ExternalEditImported { .. })),
        "a crash was mistaken for an external edit: {repairs:?}"
    );
}
