//! Parser and renderer: round trip, tolerance, rejection.

mod common;

use orch_mvcc::{ItemState, PlanError, parse, render};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parse_inverts_render(plan in common::plan(12)) {
        let text = render(&plan);
        prop_assert_eq!(parse(&text), Ok(plan), "text:\n{}", text);
    }

    #[test]
    fn model_style_variations_parse_to_the_same_plan(
        plan in common::plan(8),
        star in any::<bool>(),
        upper in any::<bool>(),
        blank in any::<bool>(),
        trailing in any::<bool>(),
        crlf in any::<bool>(),
        fence in any::<bool>(),
    ) {
        let mut out = String::new();
        if fence {
            out.push_str("```markdown\n");
        }
        for line in render(&plan).lines() {
            let mut line = line.to_owned();
            if star && line.starts_with("- [") {
                line.replace_range(0..1, "*");
            }
            if upper && line.starts_with("- [x]") {
                line.replace_range(3..4, "X");
            }
            if trailing {
                line.push_str("  \t");
            }
            out.push_str(&line);
            out.push_str(if crlf { "\r\n" } else { "\n" });
            if blank && line.starts_with("- [") {
                out.push('\n');
            }
        }
        if fence {
            out.push_str("```\n");
        }
        prop_assert_eq!(parse(&out), Ok(plan), "text:\n{}", out);
    }

    #[test]
    fn arbitrary_text_never_panics(text in "(?s).{0,200}") {
        let _ = parse(&text);
    }

    #[test]
    fn lines_of_plan_like_text_never_panic(
        lines in prop::collection::vec("[-*+ \\[\\]xX~?!:,`a-z0-9#]{0,20}", 0..12)
    ) {
        let text = format!("# t\n{}", lines.join("\n"));
        if let Err(PlanError::Syntax { line, column, .. }) = parse(&text) {
            prop_assert!(line >= 1 && line <= lines.len() + 1);
            prop_assert!(column >= 1);
        }
    }
}

#[test]
fn readme_example_parses() {
    let text = "# Add JWT auth

Issue tokens at /login and check them on every /api route.

- [x] T1: Add the JWT middleware
  - files: src/auth.rs, src/main.rs
- [~] T2: Protect the /api routes
  - files: src/routes/
  - deps: T1
  - attempts: 1
- [?] T3: Tests for expired tokens
  - files: tests/auth.rs
  - deps: T1
  - note: reviewer: cover the clock-skew case
    and the missing-header case
- [ ] T4: Document the auth flow
  - files: docs/auth.md
  - deps: T2, T3
- [!] T5: Rotate keys without downtime
  - attempts: 3
  - note: out of scope for this mission
";
    let plan = parse(text).expect("example parses");
    assert_eq!(plan.items.len(), 5);
    assert_eq!(plan.item("T3").map(|i| i.state), Some(ItemState::InReview));
    assert_eq!(render(&plan), text);
}

#[test]
fn rejects_a_nested_item_with_a_hint() {
    let err = parse("# t\n- [ ] A: a\n  - [ ] B: b\n").unwrap_err();
    let PlanError::Syntax {
        line,
        column,
        expected,
        ..
    } = err
    else {
        panic!("expected a syntax error");
    };
    assert_eq!((line, column), (3, 5));
    assert!(expected.contains("nested items"), "{expected}");
}

#[test]
fn error_messages_read_well() {
    let err = parse("# t\n- [ ] T1: x\n  - deps: T2, bad id\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 3, column 15: expected an item id such as `T1`, found \"bad id\""
    );
    let err = parse("# t\n- [ ] T1: x\n  - deps: T9\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "item `T1` at line 2 depends on `T9`, which is not in the plan"
    );
}

#[test]
fn a_missing_summary_or_id_is_an_error() {
    assert!(matches!(
        parse("# t\n- [ ] : x\n"),
        Err(PlanError::Syntax { column: 7, .. })
    ));
    assert!(matches!(
        parse("# t\n- [ ] Add JWT auth\n"),
        Err(PlanError::Syntax { column: 10, .. })
    ));
}

#[test]
fn an_empty_document_is_an_error() {
    assert!(matches!(parse(""), Err(PlanError::Syntax { line: 1, .. })));
    assert!(matches!(parse("\n\n"), Err(PlanError::Syntax { .. })));
}

/// Pieces of lines that people and models write in plans, and that break parsers: bullets,
/// checkboxes, ids, separators, field names, none words, fences, lone carriage returns,
/// Unicode spaces.
const FRAGMENTS: &[&str] = &[
    "",
    " ",
    "  ",
    "    ",
    "\t",
    "-",
    "*",
    "+",
    "1.",
    "2)",
    "[",
    "]",
    "[ ]",
    "[]",
    "[x]",
    "[~]",
    "[?]",
    "[!]",
    "[y]",
    "T1",
    "T2",
    "a.b",
    "**",
    "`",
    "``",
    ":",
    ": ",
    " - ",
    " — ",
    "–",
    ",",
    ", ",
    "files:",
    "deps:",
    "note:",
    "notes:",
    "attempts:",
    "Files:",
    "owns:",
    "depends on:",
    "none",
    "n/a",
    "(none)",
    "nothing",
    "(docs only)",
    ".",
    "x.rs",
    "src/",
    "#",
    "# ",
    "```",
    "~~~",
    "```md",
    "---",
    "\r",
    "\u{3000}",
    "\u{a0}",
    "é",
    "0",
    "7",
    "4294967296",
    "summary",
    "Let me know",
];

fn plan_like_text() -> impl Strategy<Value = String> {
    let line = prop::collection::vec(prop::sample::select(FRAGMENTS), 0..7)
        .prop_map(|parts| parts.concat());
    let item = (
        prop::sample::select(&["- [ ] ", "- [x] ", "* [~] ", "1. [?] ", "- [!] "][..]),
        prop::sample::select(&["T1", "T2", "T3", "a.b"][..]),
        line.clone(),
    )
        .prop_map(|(head, id, rest)| format!("{head}{id}{rest}"));
    let field = (
        prop::sample::select(&["  - ", "    * ", "\t- ", "  -", "   1. "][..]),
        line.clone(),
    )
        .prop_map(|(head, rest)| format!("{head}{rest}"));
    let any_line = prop_oneof![3 => item, 4 => field, 2 => line];
    (
        prop_oneof![
            Just("# t".to_owned()),
            "# [a-z ]{0,4}".prop_map(|s| s),
            any_line.clone()
        ],
        prop::collection::vec(any_line, 0..10),
        any::<bool>(),
    )
        .prop_map(|(title, lines, crlf)| {
            let sep = if crlf { "\r\n" } else { "\n" };
            format!("{title}{sep}{}", lines.join(sep))
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// The parser and the validator agree: what `parse` accepts validates and renders back to
    /// the same plan; what it rejects it rejects with a position.
    #[test]
    fn parse_and_validate_agree(text in plan_like_text()) {
        let lines = text.split('\n').count();
        match parse(&text) {
            Ok(plan) => {
                prop_assert_eq!(plan.validate(), Ok(()), "text:\n{:?}\nplan: {:?}", text, plan);
                prop_assert_eq!(parse(&render(&plan)), Ok(plan), "text:\n{:?}", text);
            }
            Err(err) => {
                let line = err.line();
                prop_assert!(line.is_some_and(|l| (1..=lines).contains(&l)), "{err} in {text:?}");
                if let PlanError::Syntax { column, expected, .. } = &err {
                    prop_assert!(*column >= 1);
                    // The grammar itself refused it: `parse`'s final field check (its guard
                    // against drifting from `Plan::validate`) never had to.
                    prop_assert!(!expected.contains("write back unchanged"), "{err} in {text:?}");
                }
            }
        }
    }
}
