//! What the agents are asked, and how their answers are read.
//!
//! The control flow is Rust; agents are asked for plans, code and verdicts in formats parsed
//! here. A malformed answer is an error that the mission sends back to the agent.

use std::fmt::Write as _;

use orch_mvcc::{Item, ItemId, Plan};

mod plan;

pub use plan::extract_plan;

/// A reviewer's verdict.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// The work is accepted.
    Pass,
    /// The work is rejected, with the reasons for the next attempt.
    Fail {
        /// What must change.
        reasons: String,
    },
}

impl Verdict {
    /// Whether this is a pass.
    pub fn is_pass(&self) -> bool {
        matches!(self, Verdict::Pass)
    }
}

/// An answer that does not follow the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// No `VERDICT:` line.
    #[error("the answer has no verdict line (`VERDICT: PASS` or `VERDICT: FAIL: <reasons>`)")]
    NoVerdict,
    /// A `VERDICT:` line that is neither PASS nor FAIL.
    #[error("verdict line {line:?} is neither `VERDICT: PASS` nor `VERDICT: FAIL: <reasons>`")]
    BadVerdict {
        /// The line.
        line: String,
    },
    /// A FAIL without reasons.
    #[error("`VERDICT: FAIL` needs reasons after it: `VERDICT: FAIL: <reasons>`")]
    FailWithoutReasons,
    /// The answer holds no plan.
    #[error(
        "the answer holds no plan: expected a `# Title` line followed by `- [ ] ID: summary` items"
    )]
    NoPlan,
    /// The plan text does not parse or validate.
    #[error("the plan is invalid: {0}")]
    BadPlan(String),
    /// The plan has no items.
    #[error("the plan has no items")]
    EmptyPlan,
}

/// Reads the verdict: the **last** line that starts with `VERDICT:` (case-insensitive, after
/// optional markdown emphasis or a bullet), so reasoning that mentions verdicts earlier does
/// not count.
///
/// # Errors
/// [`ProtocolError`] when there is no verdict line, or it is malformed.
pub fn parse_verdict(answer: &str) -> Result<Verdict, ProtocolError> {
    let line = answer
        .lines()
        .rev()
        .map(|l| l.trim().trim_start_matches(['*', '_', '`', '-', '>', ' ']))
        .find(|l| l.len() >= 8 && l[..8].eq_ignore_ascii_case("verdict:"))
        .ok_or(ProtocolError::NoVerdict)?;
    let rest = line[8..].trim().trim_end_matches(['*', '_', '`']).trim();
    let word_end = rest
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(rest.len());
    let (word, tail) = rest.split_at(word_end);
    if word.eq_ignore_ascii_case("pass") {
        return Ok(Verdict::Pass);
    }
    if word.eq_ignore_ascii_case("fail") {
        let reasons = tail
            .trim_start_matches([':', '-', '—', '–', ' '])
            .trim()
            .to_owned();
        if reasons.is_empty() {
            return Err(ProtocolError::FailWithoutReasons);
        }
        return Ok(Verdict::Fail { reasons });
    }
    Err(ProtocolError::BadVerdict {
        line: line.to_owned(),
    })
}

/// The format the Planner must answer in, with an example.
pub const PLAN_FORMAT: &str = "\
Answer with the plan in this exact Markdown format and nothing else:

# <short title of the mission>

<one paragraph: the approach>

- [ ] T1: <one-line summary of the item>
  - files: <comma-separated paths, relative to the project root, that this item creates or changes>
- [ ] T2: <summary>
  - files: <paths>
  - deps: T1

Rules: ids are short (T1, T2, …); every item owns at least one file; two items that do not \
depend on each other (directly or indirectly) never own the same file; `deps` lists the ids \
that must be done first; no cycles. Keep items small: one coherent change each.";

/// The Planner's first prompt.
pub fn planner_prompt(mission: &str, project_files: &[String]) -> String {
    let mut prompt = format!("Mission: {mission}\n\n");
    if project_files.is_empty() {
        prompt.push_str("The project directory is empty.\n\n");
    } else {
        prompt.push_str("Files in the project:\n");
        for file in project_files.iter().take(200) {
            let _ = writeln!(prompt, "- {file}");
        }
        if project_files.len() > 200 {
            let _ = writeln!(prompt, "- … and {} more", project_files.len() - 200);
        }
        prompt.push('\n');
    }
    prompt.push_str(PLAN_FORMAT);
    prompt
}

/// The prompt that sends a malformed plan back (restating the mission, in case the session
/// lost its context).
pub fn planner_retry_prompt(mission: &str, error: &ProtocolError) -> String {
    format!(
        "Mission: {mission}\n\nYour plan could not be used: {error}.\nAnswer again with the \
         whole corrected plan.\n\n{PLAN_FORMAT}"
    )
}

/// Plans up to this many items are listed whole in every turn's context; larger plans are
/// summarised around the item (see [`mission_context`]).
pub const CONTEXT_FULL_PLAN: usize = 40;

/// Items listed around the focus item in a summarised context.
const CONTEXT_NEIGHBOURS: usize = 24;

/// Context every Worker and Reviewer turn carries, so an agent whose session was compacted
/// or reused never works from a lost context.
///
/// A plan of at most [`CONTEXT_FULL_PLAN`] items is listed whole. A larger one would put a
/// prompt's worth of plan into every turn (and cost the Commander time per turn that grows
/// with the plan), so it is summarised: counts per state, then the items around `focus` (its
/// dependencies and the items that depend on it, in plan order), at most 24 of them.
pub fn mission_context(mission: &str, plan: &Plan, focus: Option<&Item>) -> String {
    let mut out = format!("Mission: {mission}\nPlan: {}\n", plan.title);
    let line = |out: &mut String, item: &Item| {
        let _ = writeln!(
            out,
            "- [{}] {}: {}",
            item.state.marker(),
            item.id,
            item.summary
        );
    };
    if plan.items.len() <= CONTEXT_FULL_PLAN {
        for item in &plan.items {
            line(&mut out, item);
        }
        return out;
    }
    let c = plan.counts();
    let _ = writeln!(
        out,
        "{} items: {} done, {} in progress, {} in review, {} pending, {} failed.",
        plan.items.len(),
        c.done,
        c.in_progress,
        c.in_review,
        c.pending,
        c.failed
    );
    let Some(focus) = focus else {
        return out;
    };
    let mut shown = 0usize;
    let mut related = 0usize;
    for item in &plan.items {
        let is_dep = focus.deps.contains(&item.id);
        let is_dependant = item.deps.contains(&focus.id);
        if !(is_dep || is_dependant) {
            continue;
        }
        related += 1;
        if shown < CONTEXT_NEIGHBOURS {
            if shown == 0 {
                out.push_str("Items around yours (dependencies and dependants):\n");
            }
            line(&mut out, item);
            shown += 1;
        }
    }
    if related > shown {
        let _ = writeln!(out, "- … and {} more related items", related - shown);
    }
    out
}

/// A Worker's prompt for `item`.
pub fn worker_prompt(context: &str, item: &Item) -> String {
    let mut prompt = format!(
        "{context}\nYour item: {}: {}\nFiles you own (edit only these): {}\n",
        item.id,
        item.summary,
        item.files.join(", ")
    );
    if !item.deps.is_empty() {
        let deps: Vec<&str> = item.deps.iter().map(ItemId::as_str).collect();
        let _ = writeln!(prompt, "Done before you: {}", deps.join(", "));
    }
    if !item.notes.is_empty() {
        prompt.push_str("\nNotes from earlier attempts (address every one):\n");
        for note in &item.notes {
            let _ = writeln!(prompt, "- {note}");
        }
    }
    prompt.push_str("\nImplement the item now, then summarise what you changed.");
    prompt
}

/// A Reviewer's prompt for one unit: the item and its diff.
pub fn review_prompt(context: &str, item: &Item, diff: &str) -> String {
    let diff = if diff.trim().is_empty() {
        "(no changes to the item's files)"
    } else {
        diff
    };
    format!(
        "{context}\nReview item {}: {}\nFiles: {}\n\nDiff of this attempt:\n```diff\n{diff}\n```\n\n\
         Check the work against the item, run the tests that cover it, and end with \
         `VERDICT: PASS` or `VERDICT: FAIL: <reasons>`.",
        item.id,
        item.summary,
        item.files.join(", ")
    )
}

/// The final integration review's prompt.
pub fn integration_prompt(context: &str) -> String {
    format!(
        "{context}\nEvery item is done. Run the project's whole test suite and check that the \
         mission is complete. End with `VERDICT: PASS`, or `VERDICT: FAIL: <reasons>` followed \
         by fix-up items, one per line, in the form `- FIX: <summary> (files: <paths>)`."
    )
}

/// A fix-up item proposed by a failed integration review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixUp {
    /// One-line summary.
    pub summary: String,
    /// Files it owns.
    pub files: Vec<String>,
}

/// Reads `- FIX: <summary> (files: a, b)` lines from an integration review.
pub fn parse_fixups(answer: &str) -> Vec<FixUp> {
    answer
        .lines()
        .filter_map(|line| {
            let line = line.trim().trim_start_matches(['-', '*', ' ']);
            let rest = line
                .strip_prefix("FIX:")
                .or_else(|| line.strip_prefix("Fix:"))?
                .trim();
            let (summary, files) = match rest.rfind("(files:") {
                Some(i) => {
                    let files = rest[i + 7..].trim_end_matches(')').trim();
                    (
                        rest[..i].trim(),
                        files
                            .split(',')
                            .map(|f| f.trim().trim_matches('`').to_owned())
                            .filter(|f| !f.is_empty())
                            .collect(),
                    )
                }
                None => (rest, Vec::new()),
            };
            (!summary.is_empty() && !files.is_empty()).then(|| FixUp {
                summary: summary.to_owned(),
                files,
            })
        })
        .collect()
}

/// The Commander's diagnostic prompt when the plan stops making progress.
pub fn diagnostic_prompt(context: &str, unchanged_rounds: u32) -> String {
    format!(
        "{context}\nThe plan has not changed for {unchanged_rounds} rounds. Say in a few lines \
         why the items are stuck and what one change would unblock them."
    )
}

#[cfg(test)]
mod tests {
    use orch_mvcc::ItemState;

    use super::*;

    #[test]
    fn verdicts_are_read_from_the_last_verdict_line() {
        assert_eq!(parse_verdict("all good\nVERDICT: PASS"), Ok(Verdict::Pass));
        assert_eq!(parse_verdict("**Verdict: pass**"), Ok(Verdict::Pass));
        assert_eq!(
            parse_verdict("VERDICT: PASS would be wrong\nVERDICT: FAIL: tests fail in a.rs"),
            Ok(Verdict::Fail {
                reasons: "tests fail in a.rs".into()
            })
        );
        assert_eq!(
            parse_verdict("- verdict: FAIL — missing docs"),
            Ok(Verdict::Fail {
                reasons: "missing docs".into()
            })
        );
        assert_eq!(parse_verdict("looks fine"), Err(ProtocolError::NoVerdict));
        assert_eq!(
            parse_verdict("VERDICT: FAIL"),
            Err(ProtocolError::FailWithoutReasons)
        );
        assert!(matches!(
            parse_verdict("VERDICT: maybe"),
            Err(ProtocolError::BadVerdict { .. })
        ));
    }

    #[test]
    fn fixups_need_a_summary_and_files() {
        let answer = "VERDICT: FAIL: tests fail\n- FIX: handle empty input (files: src/a.rs, `src/b.rs`)\n\
                      - FIX: no files here\n* Fix: second (files: c.py)";
        let fixups = parse_fixups(answer);
        assert_eq!(
            fixups,
            vec![
                FixUp {
                    summary: "handle empty input".into(),
                    files: vec!["src/a.rs".into(), "src/b.rs".into()]
                },
                FixUp {
                    summary: "second".into(),
                    files: vec!["c.py".into()]
                },
            ]
        );
    }

    #[test]
    fn worker_prompt_carries_context_files_and_notes() {
        let mut item = Item::new(ItemId::new("T2").unwrap(), "add tests")
            .with_files(["tests/a.rs"])
            .with_deps([ItemId::new("T1").unwrap()]);
        item.add_note("reviewer: the edge case is missing");
        let prompt = worker_prompt("Mission: m\n", &item);
        assert!(prompt.contains("Mission: m"));
        assert!(prompt.contains("tests/a.rs"));
        assert!(prompt.contains("Done before you: T1"));
        assert!(prompt.contains("the edge case is missing"));
    }

    fn chain(n: usize) -> Plan {
        let mut plan = Plan::new("chain");
        for i in 0..n {
            let mut item = Item::new(ItemId::new(format!("T{i}")).unwrap(), format!("step {i}"))
                .with_files([format!("f{i}.rs")]);
            if i > 0 {
                item = item.with_deps([ItemId::new(format!("T{}", i - 1)).unwrap()]);
            }
            plan.push(item);
        }
        plan
    }

    #[test]
    fn small_plans_are_listed_whole_in_the_context() {
        let plan = chain(CONTEXT_FULL_PLAN);
        let text = mission_context("m", &plan, plan.item("T3"));
        assert_eq!(
            text.lines().filter(|l| l.starts_with("- [")).count(),
            CONTEXT_FULL_PLAN
        );
    }

    #[test]
    fn large_plans_are_summarised_around_the_item() {
        let mut plan = chain(500);
        plan.set_state("T0", ItemState::Done);
        plan.set_state("T1", ItemState::InProgress);
        // T1 gets many dependants: the list is capped and says how many it left out.
        for i in 300..340 {
            plan.items[i].deps.push(ItemId::new("T1").unwrap());
        }
        let text = mission_context("m", &plan, plan.item("T1"));
        assert!(text.contains("500 items: 1 done, 1 in progress, 0 in review, 498 pending"));
        assert!(text.contains("- [x] T0: step 0"), "its dependency: {text}");
        assert!(text.contains("- [ ] T2: step 2"), "its dependant: {text}");
        assert!(!text.contains("T1: step 1"), "not itself");
        let listed = text.lines().filter(|l| l.starts_with("- [")).count();
        assert_eq!(listed, 24);
        assert!(text.contains("… and 18 more related items"), "{text}");
        // Without a focus (integration review, diagnosis): the counts only.
        let text = mission_context("m", &plan, None);
        assert!(!text.contains("- ["));
    }
}
