//! The store: versions, conflicts, external edits, recovery, bad input.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use orch_mvcc::{
    AUDIT_FILE, AuditError, Durability, EXTERNAL_WRITER, Item, ItemId, ItemState, Plan, PlanError,
    RecoveryEvent, StoreError, StoreOptions, TODO_FILE, TodoStore, VERSION_FILE, parse,
};

fn options() -> StoreOptions {
    StoreOptions {
        durability: Durability::NoSync,
        ..StoreOptions::default()
    }
}

fn open(dir: &Path) -> TodoStore {
    TodoStore::open_with(dir, options()).expect("store opens")
}

fn id(s: &str) -> ItemId {
    ItemId::new(s).expect("valid id")
}

fn two_items() -> Plan {
    let mut plan = Plan::new("mission");
    plan.push(Item::new(id("A"), "first").with_files(["a.rs"]));
    plan.push(Item::new(id("B"), "second").with_deps([id("A")]));
    plan
}

fn seeded(dir: &Path) -> TodoStore {
    let store = open(dir);
    assert_eq!(
        store.compare_and_swap("planner", 0, two_items()).unwrap(),
        1
    );
    store
}

#[test]
fn new_store_is_empty_at_version_zero() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert_eq!(store.snapshot().unwrap(), (0, Plan::default()));
    assert_eq!(store.verify().unwrap().records, 0);
}

#[test]
fn commits_write_all_three_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded(dir.path());
    let text = fs::read_to_string(dir.path().join(TODO_FILE)).unwrap();
    assert_eq!(parse(&text).unwrap(), two_items());
    let vf: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join(VERSION_FILE)).unwrap()).unwrap();
    assert_eq!(vf["version"], 1);
    assert_eq!(vf["writer"], "planner");
    assert_eq!(vf["hash"], blake3::hash(text.as_bytes()).to_hex().as_str());
    let records = store.audit_records().unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].changes.as_ref().map(Vec::len), Some(2));
}

#[test]
fn cas_conflict_returns_current_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded(dir.path());
    let mut plan = two_items();
    plan.set_state("A", ItemState::InProgress);
    assert_eq!(store.compare_and_swap("w1", 1, plan.clone()).unwrap(), 2);
    plan.set_state("A", ItemState::Done);
    let err = store.compare_and_swap("w2", 1, plan).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                expected: 1,
                current: 2,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.current_version(), Some(2));
    assert_eq!(
        store.snapshot().unwrap().1.item("A").unwrap().state,
        ItemState::InProgress
    );
}

#[test]
fn update_records_state_transitions() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded(dir.path());
    let c = store
        .update("commander", |p| p.set_state("A", ItemState::Done))
        .unwrap();
    assert_eq!(
        (c.version, c.changed, c.value),
        (2, true, Some(ItemState::Pending))
    );
    let unchanged = store
        .update("commander", |p| p.item("A").is_some())
        .unwrap();
    assert_eq!((unchanged.version, unchanged.changed), (2, false));
    let records = store.audit_records().unwrap();
    let last = records.last().unwrap();
    assert_eq!(last.writer, "commander");
    let change = &last.changes.as_ref().unwrap()[0];
    assert_eq!(
        (change.id.as_str(), change.from, change.to),
        ("A", Some(ItemState::Pending), Some(ItemState::Done))
    );
}

#[test]
fn update_rejects_an_invalid_plan_and_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded(dir.path());
    let err = store
        .update("w", |p| p.item_mut("A").unwrap().deps.push(id("B")))
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::InvalidPlan(PlanError::DependencyCycle { .. })
        ),
        "{err}"
    );
    assert_eq!(store.snapshot().unwrap(), (1, two_items()));
}

#[test]
fn threads_and_stores_lose_no_update() {
    let dir = tempfile::tempdir().unwrap();
    let _ = seeded(dir.path());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            // Two threads share one store, two have their own: both paths must serialise.
            let store = open(dir.path());
            let shared = Arc::new(store);
            std::thread::spawn(move || {
                for _ in 0..50 {
                    loop {
                        match shared.update(&format!("t{t}"), |p| {
                            p.item_mut("A").unwrap().attempts += 1;
                        }) {
                            Ok(_) => break,
                            Err(StoreError::Conflict { .. }) => {}
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let store = open(dir.path());
    let (version, plan) = store.snapshot().unwrap();
    assert_eq!(plan.item("A").unwrap().attempts, 200);
    assert_eq!(version, 201);
    assert_eq!(store.verify().unwrap().last_version, 201);
}

#[test]
fn external_edit_is_taken_in_as_a_new_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded(dir.path());
    let path = dir.path().join(TODO_FILE);
    let text = fs::read_to_string(&path)
        .unwrap()
        .replace("- [ ] A: first", "* [X] A: first   ");
    fs::write(&path, &text).unwrap();
    let (version, plan) = store.snapshot().unwrap();
    assert_eq!(version, 2);
    assert_eq!(plan.item("A").unwrap().state, ItemState::Done);
    assert_eq!(
        store.take_recovery_events(),
        [RecoveryEvent::ExternalEditImported { version: 2 }]
    );
    // The person's formatting is kept, not re-rendered.
    assert_eq!(fs::read_to_string(&path).unwrap(), text);
    let last = store.audit_records().unwrap().pop().unwrap();
    assert_eq!(last.writer, EXTERNAL_WRITER);
    assert_eq!(last.changes.unwrap()[0].to, Some(ItemState::Done));
    // The next commit builds on the edit.
    let c = store
        .update("commander", |p| p.set_state("B", ItemState::InProgress))
        .unwrap();
    assert_eq!(c.version, 3);
    store.verify().unwrap();
}

#[test]
fn external_edit_that_does_not_parse_is_reported_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded(dir.path());
    let path = dir.path().join(TODO_FILE);
    let broken = "# mission\n- [y] A: first\n";
    fs::write(&path, broken).unwrap();
    let err = store
        .update("commander", |p| p.set_state("A", ItemState::Done))
        .unwrap_err();
    let StoreError::ExternalEditInvalid { error, .. } = &err else {
        panic!("expected ExternalEditInvalid, got {err}");
    };
    assert!(matches!(
        error,
        PlanError::Syntax {
            line: 2,
            column: 4,
            ..
        }
    ));
    assert_eq!(fs::read_to_string(&path).unwrap(), broken);
    assert!(store.snapshot().is_err());
    // Fixing the file lets the store go on from there.
    fs::write(
        &path,
        "# mission\n- [x] A: first\n- [ ] B: second\n  - deps: A\n",
    )
    .unwrap();
    assert_eq!(store.version().unwrap(), 2);
}

#[test]
fn hand_written_todo_is_imported_as_version_one() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(TODO_FILE), "# by hand\n- [ ] X: do it\n").unwrap();
    let store = open(dir.path());
    let (version, plan) = store.snapshot().unwrap();
    assert_eq!((version, plan.title.as_str()), (1, "by hand"));
    assert_eq!(store.verify().unwrap().records, 1);
}

#[test]
fn version_file_that_does_not_match_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded(dir.path());
    store
        .update("w", |p| p.set_state("A", ItemState::Done))
        .unwrap();
    let vpath = dir.path().join(VERSION_FILE);
    let good = fs::read(&vpath).unwrap();
    let todo_before = fs::read(dir.path().join(TODO_FILE)).unwrap();

    fs::write(&vpath, br#"{"version": 7, "hash": "00", "writer": "w"}"#).unwrap();
    let err = store.snapshot().unwrap_err();
    assert!(matches!(err, StoreError::VersionMismatch { .. }), "{err}");

    let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
    v["hash"] = "ab".repeat(32).into();
    fs::write(&vpath, serde_json::to_vec(&v).unwrap()).unwrap();
    let err = store.snapshot().unwrap_err();
    assert!(matches!(err, StoreError::VersionMismatch { .. }), "{err}");

    fs::write(&vpath, b"{ not json").unwrap();
    let err = store.snapshot().unwrap_err();
    assert!(
        matches!(err, StoreError::CorruptVersionFile { .. }),
        "{err}"
    );

    // Nothing was lost: restoring the file restores the store.
    assert_eq!(fs::read(dir.path().join(TODO_FILE)).unwrap(), todo_before);
    fs::write(&vpath, good).unwrap();
    assert_eq!(store.version().unwrap(), 2);
    store.verify().unwrap();
}

fn audit_lines(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join(AUDIT_FILE))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_audit(dir: &Path, lines: &[String]) {
    fs::write(dir.join(AUDIT_FILE), lines.join("\n") + "\n").unwrap();
}

fn three_versions(dir: &Path) -> TodoStore {
    let store = seeded(dir);
    for s in [ItemState::InProgress, ItemState::Done] {
        store.update("w", |p| p.set_state("A", s)).unwrap();
    }
    store
}

#[test]
fn verify_names_a_tampered_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = three_versions(dir.path());
    let mut lines = audit_lines(dir.path());
    lines[1] = lines[1].replace("\"writer\":\"w\"", "\"writer\":\"mallory\"");
    write_audit(dir.path(), &lines);
    let err = store.verify().unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Audit(AuditError::HashMismatch {
                line: 2,
                version: 2,
                ..
            })
        ),
        "{err}"
    );
}

#[test]
fn verify_names_reordered_and_removed_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = three_versions(dir.path());
    let lines = audit_lines(dir.path());

    write_audit(
        dir.path(),
        &[lines[0].clone(), lines[2].clone(), lines[1].clone()],
    );
    let err = store.verify().unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Audit(AuditError::VersionGap {
                line: 2,
                expected: 2,
                found: 3
            })
        ),
        "{err}"
    );

    write_audit(dir.path(), &[lines[0].clone(), lines[1].clone()]);
    let err = store.verify().unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::VersionMismatch { .. } | StoreError::Audit(AuditError::Truncated { .. })
        ),
        "{err}"
    );

    write_audit(dir.path(), &lines);
    store.verify().unwrap();
}

#[test]
fn corrupted_audit_record_is_a_typed_error_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = three_versions(dir.path());
    let mut lines = audit_lines(dir.path());
    let original = lines.clone();
    lines[0] = "{\"version\": 1, garbage".to_owned();
    write_audit(dir.path(), &lines);
    let err = store.verify().unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Audit(AuditError::Malformed { line: 1, .. })
        ),
        "{err}"
    );
    // The plan is still readable and writable; the corrupt line stays for inspection.
    assert_eq!(store.snapshot().unwrap().0, 3);
    write_audit(dir.path(), &original);
    store.verify().unwrap();
}

#[test]
fn torn_tail_is_repaired_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let store = three_versions(dir.path());
    let path = dir.path().join(AUDIT_FILE);
    let mut bytes = fs::read(&path).unwrap();
    let good_len = bytes.len();
    bytes.extend_from_slice(b"{\"version\":4,\"wri");
    fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        orch_mvcc::verify_audit_log(&path),
        Err(AuditError::TornTail { line: 4, bytes: 17 })
    ));
    let fresh = open(dir.path());
    assert_eq!(fresh.verify().unwrap().last_version, 3);
    assert_eq!(
        fresh.take_recovery_events(),
        [RecoveryEvent::TornTailRepaired { bytes: 17 }]
    );
    assert_eq!(fs::read(&path).unwrap().len(), good_len);
    drop(store);
}

#[test]
fn crash_after_audit_append_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = three_versions(dir.path());
    let todo = fs::read(dir.path().join(TODO_FILE)).unwrap();
    let vfile = fs::read(dir.path().join(VERSION_FILE)).unwrap();
    store
        .update("w", |p| p.set_state("B", ItemState::InProgress))
        .unwrap();
    // Put back TODO.md and the version file of v3: as if the writer died after the audit append.
    fs::write(dir.path().join(TODO_FILE), &todo).unwrap();
    fs::write(dir.path().join(VERSION_FILE), &vfile).unwrap();
    let fresh = open(dir.path());
    assert_eq!(fresh.version().unwrap(), 3);
    assert_eq!(
        fresh.take_recovery_events(),
        [RecoveryEvent::RolledBack { version: 4 }]
    );
    fresh.verify().unwrap();
}

#[test]
fn crash_before_version_file_rolls_forward() {
    let dir = tempfile::tempdir().unwrap();
    let store = three_versions(dir.path());
    let vfile = fs::read(dir.path().join(VERSION_FILE)).unwrap();
    store
        .update("w", |p| p.set_state("B", ItemState::InProgress))
        .unwrap();
    fs::write(dir.path().join(VERSION_FILE), &vfile).unwrap();
    let fresh = open(dir.path());
    let (version, plan) = fresh.snapshot().unwrap();
    assert_eq!(version, 4);
    assert_eq!(plan.item("B").unwrap().state, ItemState::InProgress);
    assert_eq!(
        fresh.take_recovery_events(),
        [RecoveryEvent::RolledForward { version: 4 }]
    );
    fresh.verify().unwrap();
}

#[test]
fn deleted_todo_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded(dir.path());
    fs::remove_file(dir.path().join(TODO_FILE)).unwrap();
    assert!(matches!(
        store.snapshot(),
        Err(StoreError::TodoMissing { version: 1, .. })
    ));
}

#[test]
fn wait_for_version_wakes_on_a_commit_and_times_out_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded(dir.path());
    let err = store
        .wait_for_version(1, Duration::from_millis(30))
        .unwrap_err();
    assert!(matches!(err, StoreError::Timeout { after: 1, .. }));
    let writer = store.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        writer
            .update("w", |p| p.set_state("A", ItemState::Done))
            .unwrap()
            .version
    });
    let seen = store.wait_for_version(1, Duration::from_secs(10)).unwrap();
    assert_eq!(seen, t.join().unwrap());
}

#[test]
fn wait_for_version_sees_other_stores_by_polling() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded(dir.path());
    let other = open(dir.path());
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        other
            .update("w", |p| p.set_state("A", ItemState::Done))
            .unwrap()
            .version
    });
    let seen = store.wait_for_version(1, Duration::from_secs(10)).unwrap();
    assert_eq!(seen, t.join().unwrap());
}

#[test]
fn invalid_writer_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert!(matches!(
        store.compare_and_swap("", 0, two_items()),
        Err(StoreError::InvalidWriter(_))
    ));
    assert!(matches!(
        store.update("a\nb", |_| ()),
        Err(StoreError::InvalidWriter(_))
    ));
}

#[test]
fn fsync_durability_commits_too() {
    let dir = tempfile::tempdir().unwrap();
    let store = TodoStore::open(dir.path()).unwrap();
    assert_eq!(store.options().durability, Durability::Fsync);
    assert_eq!(store.compare_and_swap("p", 0, two_items()).unwrap(), 1);
    assert_eq!(
        TodoStore::open(dir.path()).unwrap().snapshot().unwrap(),
        (1, two_items())
    );
}

#[test]
fn external_edits_racing_commits_keep_the_store_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded(dir.path());
    let writer = store.clone();
    let commits = std::thread::spawn(move || {
        for _ in 0..100 {
            loop {
                match writer.update("commander", |p| p.item_mut("A").unwrap().attempts += 1) {
                    Ok(_) => break,
                    Err(StoreError::Conflict { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
            }
        }
    });
    // A person saving with an editor that writes a temp file and renames it.
    let path = dir.path().join(TODO_FILE);
    let tmp = dir.path().join("editor.swp");
    for k in 0..40 {
        let mut plan = parse(&fs::read_to_string(&path).unwrap()).unwrap();
        plan.item_mut("B").unwrap().summary = format!("edited by hand {k}");
        fs::write(&tmp, orch_mvcc::render(&plan)).unwrap();
        fs::rename(&tmp, &path).unwrap();
        std::thread::sleep(Duration::from_micros(300));
    }
    commits.join().unwrap();
    let (version, plan) = store.snapshot().unwrap();
    assert!(plan.item("A").unwrap().attempts >= 1);
    let records = store.audit_records().unwrap();
    assert_eq!(records.len() as u64, version);
    assert!(records.iter().any(|r| r.writer == EXTERNAL_WRITER));
    assert!(
        records.iter().filter(|r| r.writer == "commander").count() == 100,
        "every commit of the commander is in the log"
    );
    store.verify().unwrap();
}

#[test]
fn update_gives_up_after_max_attempts_with_the_current_version() {
    let dir = tempfile::tempdir().unwrap();
    let _ = seeded(dir.path());
    let store = TodoStore::open_with(
        dir.path(),
        StoreOptions {
            durability: Durability::NoSync,
            retry: orch_mvcc::ConflictRetry {
                max_attempts: 3,
                base_delay: Duration::from_micros(10),
                max_delay: Duration::from_micros(100),
            },
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let rival = open(dir.path());
    let mut runs = 0;
    let err = store
        .update("loser", |p| {
            runs += 1;
            // Someone else commits while this closure runs: every attempt conflicts.
            rival
                .update("rival", |q| q.item_mut("B").unwrap().attempts += 1)
                .unwrap();
            p.set_state("A", ItemState::Done);
        })
        .unwrap_err();
    assert_eq!(runs, 3);
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                expected: 3,
                current: 4,
                attempts: 3
            }
        ),
        "{err}"
    );
    assert_eq!(
        store.snapshot().unwrap().1.item("A").unwrap().state,
        ItemState::Pending
    );
}
