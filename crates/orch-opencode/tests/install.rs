//! Config installer: comment preservation, safety and idempotence.

use std::path::Path;

use orch_opencode::{ConfigInstaller, InstallError, InstallSpec};
use proptest::prelude::*;
use serde_json::{Value, json};

const USER_CONFIG: &str = r#"{
  // The user's own settings: every byte outside our insertion must survive.
  "$schema": "https://opencode.ai/config.json",
  "plugin": ["opencode-foo", /* pinned */ "opencode-bar@1.2.3"],
  "provider": {
    "fake": {
      "npm": "@ai-sdk/openai-compatible", // inline comment
      "options": { "baseURL": "http://127.0.0.1:8089/v1" },
    },
  },
  /* block comment
     over two lines */
  "agent": {
    "mine": { "mode": "primary", "prompt": "user agent" }, // keep me
  },
}
"#;

fn spec() -> InstallSpec {
    InstallSpec::new()
        .agent(
            "orch-worker",
            json!({"mode": "primary", "prompt": "You are the worker.", "permission": {"edit": "allow"}}),
        )
        .agent("orch-reviewer", json!({"mode": "subagent", "prompt": "Review."}))
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

fn parse(text: &str) -> Value {
    jsonc_parser::parse_to_serde_value::<Value>(text, &Default::default()).unwrap()
}

#[test]
fn comments_and_untouched_bytes_survive_an_install() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "opencode.jsonc", USER_CONFIG);
    let report = ConfigInstaller::new(dir.path()).install(&spec()).unwrap();
    assert!(report.changed);
    let new = read(dir.path(), "opencode.jsonc");
    // Byte comparison: the new file is the old one with lines inserted, nothing removed or
    // rewritten (the insertion point already had a trailing comma).
    let diff = similar::TextDiff::from_lines(USER_CONFIG, &new);
    for change in diff.iter_all_changes() {
        assert_ne!(
            change.tag(),
            similar::ChangeTag::Delete,
            "line rewritten: {:?}\n{new}",
            change.value()
        );
    }
    let inserted: String = diff
        .iter_all_changes()
        .filter(|c| c.tag() == similar::ChangeTag::Insert)
        .map(|c| c.value())
        .collect();
    assert!(inserted.contains("orch-worker") && inserted.contains("orch-reviewer"));
    let value = parse(&new);
    assert_eq!(value["agent"]["mine"]["prompt"], "user agent");
    assert_eq!(value["agent"]["orch-worker"]["permission"]["edit"], "allow");
    assert_eq!(
        value["plugin"],
        json!(["opencode-foo", "opencode-bar@1.2.3"])
    );
    let plus = report
        .diff
        .lines()
        .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
        .count();
    assert_eq!(plus, inserted.lines().count());
}

#[test]
fn jsonc_is_preferred_over_json() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "opencode.json", "{}\n");
    write(dir.path(), "opencode.jsonc", "{ // c\n}\n");
    let report = ConfigInstaller::new(dir.path()).install(&spec()).unwrap();
    assert_eq!(report.path, dir.path().join("opencode.jsonc"));
    assert_eq!(read(dir.path(), "opencode.json"), "{}\n");
    assert!(read(dir.path(), "opencode.jsonc").contains("// c"));
}

#[test]
fn a_missing_config_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let report = ConfigInstaller::new(dir.path()).install(&spec()).unwrap();
    assert!(report.changed && report.backup.is_none());
    let value = parse(&read(dir.path(), "opencode.json"));
    assert_eq!(value["agent"]["orch-reviewer"]["mode"], "subagent");
}

#[test]
fn a_broken_file_is_left_untouched_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let broken = "{\n  \"a\": 1,\n  \"b\": 2 \"c\": 3\n}\n";
    write(dir.path(), "opencode.json", broken);
    let installer = ConfigInstaller::new(dir.path());
    match installer.install(&spec()) {
        Err(InstallError::Parse { line, column, .. }) => {
            assert_eq!(line, 3);
            assert!(column > 1, "column {column}");
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
    assert_eq!(read(dir.path(), "opencode.json"), broken);
    assert!(installer.backups().unwrap().is_empty());
}

#[test]
fn a_failed_write_is_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "opencode.jsonc", USER_CONFIG);
    let installer = ConfigInstaller::new(dir.path())
        .after_write(|_| Err(std::io::Error::other("simulated disk failure")));
    match installer.install(&spec()) {
        Err(InstallError::Io {
            restored, source, ..
        }) => {
            assert!(restored);
            assert!(source.to_string().contains("simulated"));
        }
        other => panic!("expected an i/o error, got {other:?}"),
    }
    assert_eq!(read(dir.path(), "opencode.jsonc"), USER_CONFIG);
}

#[test]
fn a_failed_first_write_removes_the_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let installer =
        ConfigInstaller::new(dir.path()).after_write(|_| Err(std::io::Error::other("boom")));
    assert!(installer.install(&spec()).is_err());
    assert!(!dir.path().join("opencode.json").exists());
}

#[test]
fn only_the_last_five_backups_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "opencode.json", "{}\n");
    let installer = ConfigInstaller::new(dir.path());
    let mut before_last = String::new();
    for i in 0..8 {
        before_last = read(dir.path(), "opencode.json");
        let s = InstallSpec::new()
            .agent("orch-worker", json!({"prompt": format!("v{i}")}))
            .force(true);
        let report = installer.install(&s).unwrap();
        assert!(report.backup.is_some());
    }
    let backups = installer.backups().unwrap();
    assert_eq!(backups.len(), 5);
    assert_eq!(
        std::fs::read_to_string(backups.last().unwrap()).unwrap(),
        before_last
    );
}

#[test]
fn install_is_idempotent_and_dry_run_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "opencode.jsonc", USER_CONFIG);
    let installer = ConfigInstaller::new(dir.path());
    let dry = installer.dry_run(&spec()).unwrap();
    assert!(dry.changed && dry.diff.contains("+") && dry.diff.contains("orch-worker"));
    assert_eq!(read(dir.path(), "opencode.jsonc"), USER_CONFIG);
    let first = installer.install(&spec()).unwrap();
    let after_first = read(dir.path(), "opencode.jsonc");
    let second = installer.install(&spec()).unwrap();
    assert!(first.changed);
    assert!(!second.changed && second.diff.is_empty() && second.backup.is_none());
    assert_eq!(read(dir.path(), "opencode.jsonc"), after_first);
    assert_eq!(installer.backups().unwrap().len(), 1);
    assert!(!installer.dry_run(&spec()).unwrap().changed);
}

#[test]
fn a_different_existing_entry_is_a_conflict_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "opencode.json",
        r#"{"agent": {"orch-worker": {"prompt": "user's"}}}"#,
    );
    let installer = ConfigInstaller::new(dir.path());
    assert!(matches!(
        installer.install(&spec()),
        Err(InstallError::Conflict { key, .. }) if key == "agent.orch-worker"
    ));
    let forced = installer.install(&spec().force(true)).unwrap();
    assert!(forced.changed);
    assert_eq!(
        parse(&read(dir.path(), "opencode.json"))["agent"]["orch-worker"]["prompt"],
        "You are the worker."
    );
}

#[test]
fn uninstall_removes_exactly_what_install_added() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "opencode.jsonc", USER_CONFIG);
    let installer = ConfigInstaller::new(dir.path());
    installer.install(&spec()).unwrap();
    let report = installer.uninstall(&spec()).unwrap();
    assert!(report.changed && report.kept.is_empty());
    assert_eq!(read(dir.path(), "opencode.jsonc"), USER_CONFIG);
    // Nothing left to remove: no change, no backup.
    let again = installer.uninstall(&spec()).unwrap();
    assert!(!again.changed);
}

#[test]
fn uninstall_keeps_entries_the_user_changed_and_drops_emptied_containers() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "opencode.json",
        "{\n  \"model\": \"fake/fake-model\"\n}\n",
    );
    let installer = ConfigInstaller::new(dir.path());
    installer.install(&spec()).unwrap();
    // The user edits one of our agents.
    let edited = read(dir.path(), "opencode.json").replace("Review.", "Review harder.");
    write(dir.path(), "opencode.json", &edited);
    let report = installer.uninstall(&spec()).unwrap();
    assert_eq!(report.kept, ["agent.orch-reviewer"]);
    let value = parse(&read(dir.path(), "opencode.json"));
    assert!(value["agent"].get("orch-worker").is_none());
    assert_eq!(value["agent"]["orch-reviewer"]["prompt"], "Review harder.");
    // With both gone, the emptied `agent` object goes too.
    let dir2 = tempfile::tempdir().unwrap();
    let original = "{\n  \"model\": \"fake/fake-model\"\n}\n";
    write(dir2.path(), "opencode.json", original);
    let installer2 = ConfigInstaller::new(dir2.path());
    installer2.install(&spec()).unwrap();
    installer2.uninstall(&spec()).unwrap();
    assert_eq!(parse(&read(dir2.path(), "opencode.json")), parse(original));
}

/// Arbitrary JSON values without the `agent` key at the top, rendered as JSONC with comments.
fn user_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(|n| json!(n)),
        "[a-zA-Z0-9 /*_.-]{0,12}".prop_map(Value::String),
    ];
    let inner = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    proptest::collection::btree_map("[a-z]{1,8}", inner, 0..6)
        .prop_map(|m| Value::Object(m.into_iter().filter(|(k, _)| k != "agent").collect()))
}

fn with_comments(value: &Value, seed: &[u8]) -> String {
    let pretty = serde_json::to_string_pretty(value).unwrap();
    let mut out = String::new();
    for (i, line) in pretty.lines().enumerate() {
        match seed.get(i % seed.len().max(1)).copied().unwrap_or(0) % 4 {
            0 => out.push_str(&format!("{line} // note {i}\n")),
            1 => out.push_str(&format!("  /* block {i} */\n{line}\n")),
            _ => out.push_str(&format!("{line}\n")),
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn install_preserves_the_users_keys_and_uninstall_restores_the_bytes(
        value in user_value(),
        seed in proptest::collection::vec(any::<u8>(), 1..16),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let text = with_comments(&value, &seed);
        write(dir.path(), "opencode.jsonc", &text);
        let installer = ConfigInstaller::new(dir.path());
        installer.install(&spec()).unwrap();
        let installed = read(dir.path(), "opencode.jsonc");
        let mut parsed = parse(&installed);
        let agents = parsed.as_object_mut().unwrap().remove("agent").unwrap();
        prop_assert_eq!(&parsed, &value);
        prop_assert_eq!(agents.as_object().unwrap().len(), 2);
        // Every comment survives verbatim (the line before an insertion may gain a comma).
        for line in text.lines() {
            if let Some(at) = line.find("//").or_else(|| line.find("/*")) {
                prop_assert!(installed.contains(&line[at..]), "lost {}", &line[at..]);
            }
        }
        installer.uninstall(&spec()).unwrap();
        // Uninstall removes exactly what install added: the original bytes come back.
        prop_assert_eq!(read(dir.path(), "opencode.jsonc"), text);
    }
}

// Regression tests of issue 16 (config installer edges).

#[test]
fn uninstall_keeps_a_comment_that_install_put_next_to_the_new_entry() {
    let dir = tempfile::tempdir().unwrap();
    let original = r#"{"agent": {"build": {"model": "x"} /* keep me */ }}"#;
    write(dir.path(), "opencode.json", original);
    let installer = ConfigInstaller::new(dir.path());
    let worker = InstallSpec::new().agent("orch-worker", json!({"mode": "primary"}));
    installer.install(&worker).unwrap();
    let installed = read(dir.path(), "opencode.json");
    assert!(installed.contains("/* keep me */"), "{installed}");
    assert_eq!(parse(&installed)["agent"]["orch-worker"]["mode"], "primary");
    let report = installer.uninstall(&worker).unwrap();
    assert!(report.changed);
    assert_eq!(read(dir.path(), "opencode.json"), original);
}

/// A path `k0.k1.….k{depth-1}` holding `{"v": 1}`.
fn deep_spec(depth: usize) -> (InstallSpec, Value) {
    let path: Vec<String> = (0..depth).map(|i| format!("k{i}")).collect();
    let value = json!({"v": 1});
    let nested = path
        .iter()
        .rev()
        .fold(value.clone(), |inner, key| json!({ key.clone(): inner }));
    (InstallSpec::new().entry(path, value), nested)
}

#[test]
fn a_deep_entry_under_an_indented_root_grows_linearly() {
    for root in [" {}\n", "  \n  {\n    \"a\": 1\n  }\n", "\t{\"a\": 1}"] {
        let mut sizes = Vec::new();
        for depth in [10, 20, 40] {
            let dir = tempfile::tempdir().unwrap();
            write(dir.path(), "opencode.json", root);
            let (spec, nested) = deep_spec(depth);
            let installer = ConfigInstaller::new(dir.path());
            installer.install(&spec).unwrap();
            let installed = read(dir.path(), "opencode.json");
            // No larger than the entry pretty-printed at its depth, plus the original.
            let pretty = serde_json::to_string_pretty(&nested).unwrap();
            assert!(
                installed.len() <= root.len() + 2 * pretty.len() + 64,
                "depth {depth}: {} bytes for a {}-byte entry",
                installed.len(),
                pretty.len()
            );
            let mut expected = parse(root);
            for (k, v) in nested.as_object().unwrap() {
                expected[k] = v.clone();
            }
            assert_eq!(parse(&installed), expected);
            installer.uninstall(&spec).unwrap();
            assert_eq!(read(dir.path(), "opencode.json"), root, "depth {depth}");
            sizes.push(installed.len() - root.len());
        }
        // Twice the depth, at most four times the bytes (indentation is quadratic in the
        // depth; the bug grew by 3× every two levels).
        assert!(sizes[2] <= 4 * sizes[1] + 64, "{sizes:?}");
    }
}

#[test]
fn a_utf8_bom_is_accepted_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let original = "\u{feff}{\n  // settings\n  \"model\": \"fake/fake-model\"\n}\n";
    write(dir.path(), "opencode.jsonc", original);
    let installer = ConfigInstaller::new(dir.path());
    let report = installer.install(&spec()).unwrap();
    assert!(report.changed);
    let installed = read(dir.path(), "opencode.jsonc");
    assert!(installed.starts_with('\u{feff}'), "the BOM was dropped");
    let value = parse(installed.trim_start_matches('\u{feff}'));
    assert_eq!(value["model"], "fake/fake-model");
    assert_eq!(value["agent"]["orch-reviewer"]["mode"], "subagent");
    // Idempotent, and uninstall gives the original bytes back, BOM included.
    assert!(!installer.install(&spec()).unwrap().changed);
    installer.uninstall(&spec()).unwrap();
    assert_eq!(read(dir.path(), "opencode.jsonc"), original);
}

#[test]
fn a_repeated_key_is_edited_at_its_last_occurrence_like_json_parse() {
    let dir = tempfile::tempdir().unwrap();
    let original = "{\n  \"mcp\": {\"old\": {\"enabled\": false}},\n  \"mcp\": {\n    \"live\": {\"enabled\": true}\n  }\n}\n";
    write(dir.path(), "opencode.json", original);
    let installer = ConfigInstaller::new(dir.path());
    let spec = InstallSpec::new().entry(["mcp", "orch"], json!({"enabled": true}));
    let dry = installer.dry_run(&spec).unwrap();
    let installed = installer.install(&spec).unwrap();
    assert_eq!(dry.diff, installed.diff, "dry run and install disagree");
    let text = read(dir.path(), "opencode.json");
    // What a JavaScript reader sees (the last `mcp`, as serde_json's map also keeps) holds
    // the entry; the first `mcp` is untouched.
    let seen: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        seen["mcp"],
        json!({"live": {"enabled": true}, "orch": {"enabled": true}})
    );
    assert!(text.starts_with("{\n  \"mcp\": {\"old\": {\"enabled\": false}},\n"));
    // Installed once: a second install sees it (in the last occurrence) and changes nothing.
    assert!(!installer.install(&spec).unwrap().changed);
    let report = installer.uninstall(&spec).unwrap();
    assert!(report.changed && report.kept.is_empty());
    assert_eq!(read(dir.path(), "opencode.json"), original);
}
