//! Taking the plan out of the Planner's answer: the model's prose around it is dropped,
//! nothing inside it is.

use orch_mvcc::Plan;

use super::ProtocolError;

/// Finds the plan in a planner's answer, parses and validates it.
///
/// Models wrap a plan in prose, fences and rules; the plan is cut out of the answer by three
/// rules, and the rest is left to [`orch_mvcc::parse`]:
///
/// 1. **Region.** The first fenced block (```` ``` ```` or `~~~`, whatever its info string:
///    `markdown`, `md`, none, ...) whose body holds a `#` heading followed by an item line
///    (`- [ ] T1: ...`, see [`orch_mvcc::is_item_line`]) is searched. Without one, the whole
///    answer is, and headings inside fenced blocks do not count there.
/// 2. **Start.** The plan starts at the region's first Markdown heading (`#` to `######`,
///    then a space or the end of the line): the title. Text before it is dropped.
/// 3. **End.** The plan ends with the block of the region's *last* item line: that line and
///    the indented, blank and bullet lines after it. The block stops before a line at
///    column 1 that is a heading, a thematic break (`---`, `***`, `___`) or a fence, or —
///    after a blank line — any other text, such as "Let me know if you want changes.".
///    That line and everything after it are dropped.
///
/// Everything from the title to the end of the last item's block is parsed, so a
/// malformed line between items, a paragraph of prose between two items, a bullet line or
/// a line of text right under the last item (with no blank line between) is an error, never
/// silently dropped. When the title sits above a fence around the items, the fence's lines
/// are dropped (so the description never holds half a fence).
///
/// Lines outside the plan are blanked, not removed: the line and column in a
/// [`ProtocolError::BadPlan`] message count in the whole answer, as the model wrote it.
///
/// # Errors
/// [`ProtocolError::NoPlan`] without a heading, [`ProtocolError::BadPlan`] (with the parser's
/// line and column in the answer) or [`ProtocolError::EmptyPlan`].
pub fn extract_plan(answer: &str) -> Result<Plan, ProtocolError> {
    let text = plan_text(answer).ok_or(ProtocolError::NoPlan)?;
    let plan = orch_mvcc::parse(&text).map_err(|e| ProtocolError::BadPlan(e.to_string()))?;
    if plan.items.is_empty() {
        return Err(ProtocolError::EmptyPlan);
    }
    Ok(plan)
}

/// The answer with every line outside the plan blanked (see [`extract_plan`] for the
/// rules), so line numbers stay those of the answer; `None` without a title heading.
fn plan_text(answer: &str) -> Option<String> {
    // `\n` only, as `orch_mvcc::parse` splits: the line numbers must agree.
    let lines: Vec<&str> = answer.split('\n').map(|l| l.trim_end()).collect();
    let fences = fenced_blocks(&lines);
    let qualifies = |&(open, close): &(usize, usize)| {
        let body = open + 1..close;
        body.clone()
            .find(|&i| is_heading(lines[i]))
            .is_some_and(|title| {
                body.skip_while(|&i| i <= title)
                    .any(|i| orch_mvcc::is_item_line(lines[i]))
            })
    };
    let (region, fenced) = match fences.iter().find(|f| qualifies(f)) {
        Some(&(open, close)) => (open + 1..close, true),
        None => (0..lines.len(), false),
    };
    let in_fence = |i: usize| {
        fences
            .iter()
            .any(|&(open, close)| (open..=close).contains(&i))
    };
    let title = region
        .clone()
        .find(|&i| is_heading(lines[i]) && (fenced || !in_fence(i)))?;
    let items = title + 1..region.end;
    let first_item = items.clone().find(|&i| orch_mvcc::is_item_line(lines[i]));
    let end = match items
        .clone()
        .rev()
        .find(|&i| orch_mvcc::is_item_line(lines[i]))
    {
        Some(last) => item_block_end(&lines, last, region.end),
        // No item at all: the parser reads the rest as the description, the plan is empty.
        None => region.end,
    };
    // `# Title` then a fence around the items: the fence's opening line goes (its closing
    // line ends the last item's block), or the description would hold half a fence.
    let opening = first_item.and_then(|first| {
        fences
            .iter()
            .find(|&&(open, close)| title < open && open < first && first < close)
            .map(|&(open, _)| open)
    });
    let mut text = String::with_capacity(answer.len());
    for (i, line) in lines.iter().enumerate() {
        if (title..end).contains(&i) && opening != Some(i) {
            text.push_str(line);
        }
        text.push('\n');
    }
    Some(text)
}

/// One past the last line of the block of the item line at `last`: its fields, blank lines
/// and bullet lines, up to a heading, a thematic break, a fence or a paragraph of text.
fn item_block_end(lines: &[&str], last: usize, region_end: usize) -> usize {
    let mut after_blank = false;
    for (i, line) in lines.iter().enumerate().take(region_end).skip(last + 1) {
        if line.is_empty() {
            after_blank = true;
            continue;
        }
        if !line.starts_with([' ', '\t']) {
            if is_heading(line) || is_thematic_break(line) || fence_marker(line).is_some() {
                return i;
            }
            if after_blank && !is_bullet_line(line) {
                return i;
            }
        }
        after_blank = false;
    }
    region_end
}

/// Fenced blocks as `(opening line, closing line)`; an unclosed block closes at the end.
fn fenced_blocks(lines: &[&str]) -> Vec<(usize, usize)> {
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some((ch, len)) = fence_marker(lines[i]) else {
            i += 1;
            continue;
        };
        let close = (i + 1..lines.len())
            .find(|&j| {
                let t = lines[j].trim();
                t.len() >= len && t.chars().all(|c| c == ch)
            })
            .unwrap_or(lines.len());
        blocks.push((i, close));
        i = close + 1;
    }
    blocks
}

/// The character and length of a fence (```` ``` ````, `~~~` or longer) opening `line`.
fn fence_marker(line: &str) -> Option<(char, usize)> {
    let t = line.trim_start();
    ['`', '~'].into_iter().find_map(|ch| {
        let len = t.len() - t.trim_start_matches(ch).len();
        (len >= 3).then_some((ch, len))
    })
}

/// A Markdown ATX heading at column 1: one to six `#`, then a space or the end.
fn is_heading(line: &str) -> bool {
    let hashes = line.len() - line.trim_start_matches('#').len();
    (1..=6).contains(&hashes)
        && line[hashes..]
            .chars()
            .next()
            .is_none_or(char::is_whitespace)
}

/// `---`, `***`, `___` (three or more, spaces allowed between).
fn is_thematic_break(line: &str) -> bool {
    let t = line.trim();
    ['-', '*', '_'].into_iter().any(|ch| {
        t.chars().filter(|&c| c == ch).count() >= 3 && t.chars().all(|c| c == ch || c == ' ')
    })
}

/// A list item at column 1: `-`, `*`, `+`, `1.` or `1)`, then whitespace.
fn is_bullet_line(line: &str) -> bool {
    let digits = line.len() - line.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let rest = if digits > 0 {
        line[digits..].strip_prefix(['.', ')'])
    } else {
        line.strip_prefix(['-', '*', '+'])
    };
    rest.is_some_and(|r| r.starts_with([' ', '\t']))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::planner_retry_prompt;

    #[test]
    fn plans_are_found_in_fences_or_after_chatter() {
        let plan = "# Hello\n\n- [ ] T1: write hello\n  - files: hello.txt\n";
        let fenced = format!("Here is the plan:\n```markdown\n{plan}```\nDone.");
        assert_eq!(extract_plan(&fenced).unwrap().items.len(), 1);
        let chatty = format!("Sure! Let me plan.\n{plan}");
        let parsed = extract_plan(&chatty).unwrap();
        assert_eq!(parsed.title, "Hello");
        assert_eq!(parsed.items[0].files, vec!["hello.txt".to_owned()]);
    }

    #[test]
    fn bad_plans_are_errors_that_can_be_sent_back() {
        assert_eq!(extract_plan("no plan here"), Err(ProtocolError::NoPlan));
        assert_eq!(extract_plan("# Empty\n"), Err(ProtocolError::EmptyPlan));
        let cyclic = "# C\n- [ ] A: a\n  - deps: B\n- [ ] B: b\n  - deps: A\n";
        let err = extract_plan(cyclic).unwrap_err();
        assert!(matches!(err, ProtocolError::BadPlan(_)), "{err:?}");
        let retry = planner_retry_prompt("m", &err);
        assert!(retry.starts_with("Mission: m"));
        assert!(retry.contains("could not be used") && retry.contains("- [ ] T1"));
    }

    const PLAN: &str = "# Add JWT auth\n\nIssue tokens at /login.\n\n- [ ] T1: Add the middleware\n  - files: src/auth.rs\n- [ ] T2: Protect the routes\n  - files: src/routes.rs\n  - deps: T1\n";

    fn two_items(answer: &str) {
        let plan = extract_plan(answer).unwrap_or_else(|e| panic!("{e}\nanswer:\n{answer}"));
        assert_eq!(plan, orch_mvcc::parse(PLAN).unwrap(), "answer:\n{answer}");
    }

    fn bad_plan_at(answer: &str) -> String {
        match extract_plan(answer) {
            Err(ProtocolError::BadPlan(message)) => message,
            other => panic!("expected a bad plan, got {other:?}\nanswer:\n{answer}"),
        }
    }

    #[test]
    fn a_closing_sentence_after_the_plan_is_dropped() {
        two_items(&format!("{PLAN}\nLet me know if you want changes."));
        two_items(&format!("{PLAN}\n\n\nLet me know if you want changes.\n\n"));
        two_items(&format!(
            "{PLAN}\n**Notes:**\n- T1 comes first.\n- Ask me for more detail.\n"
        ));
        two_items(&format!("{PLAN}\n## Risks\n\nNone that I can see.\n"));
    }

    #[test]
    fn prose_before_the_title_is_dropped() {
        two_items(&format!("Sure! Here is the plan you asked for.\n\n{PLAN}"));
        two_items(&format!(
            "I looked at the repository first.\nIt has no auth yet.\n\n{PLAN}\nHope this helps!"
        ));
    }

    #[test]
    fn fenced_plans_are_taken_out_of_the_fence() {
        for fence in ["```", "```markdown", "```md", "~~~", "````markdown"] {
            let close = &fence[..fence
                .find(|c: char| c.is_alphabetic())
                .unwrap_or(fence.len())];
            two_items(&format!(
                "Here is the plan:\n\n{fence}\n{PLAN}{close}\n\nLet me know."
            ));
            two_items(&format!("{fence}\n{PLAN}\n{close}"));
        }
        // An unclosed fence (the answer was cut, or the model forgot it).
        two_items(&format!("```markdown\n{PLAN}"));
        // Headings in the prose do not matter when the plan is fenced.
        two_items(&format!(
            "## Summary\n\nTwo items.\n\n```markdown\n{PLAN}```\n\n## Next steps\n\n- review"
        ));
    }

    #[test]
    fn a_rule_or_a_fence_right_under_the_last_item_ends_the_plan() {
        two_items(&format!("{PLAN}---\nLet me know if you want changes."));
        two_items(&format!("{PLAN}***\n"));
        two_items(&format!("{PLAN}```\nnot a plan\n```\n"));
    }

    #[test]
    fn fenced_code_that_is_not_a_plan_is_skipped() {
        let answer = format!(
            "First install the tools:\n\n```bash\n# install\nnpm install jsonwebtoken\n```\n\n{PLAN}"
        );
        two_items(&answer);
    }

    #[test]
    fn a_heading_outside_a_fence_of_items_keeps_no_fence_in_the_description() {
        let answer = "# Add JWT auth\n\nIssue tokens at /login.\n\n```\n- [ ] T1: Add the middleware\n  - files: src/auth.rs\n- [ ] T2: Protect the routes\n  - files: src/routes.rs\n  - deps: T1\n```\n";
        two_items(answer);
    }

    #[test]
    fn a_code_block_in_the_description_is_kept_whole() {
        let answer = "# P\n\nUse this config:\n```toml\na = 1\n```\n\n- [ ] T1: a\n";
        let plan = extract_plan(answer).unwrap();
        assert_eq!(plan.description, "Use this config:\n```toml\na = 1\n```");
    }

    #[test]
    fn subheadings_inside_the_plan_stay_in_the_description() {
        let answer = "# Add JWT auth\n\nIssue tokens.\n\n## Items\n\n- [ ] T1: a\n  - files: a.rs\n\nThat's all.";
        let plan = extract_plan(answer).unwrap();
        assert_eq!(plan.title, "Add JWT auth");
        assert_eq!(plan.description, "Issue tokens.\n\n## Items");
        assert_eq!(plan.items.len(), 1);
    }

    #[test]
    fn errors_count_lines_and_columns_in_the_answer() {
        let answer = "Sure!\n\n```markdown\n# P\n- [ ] T1: a\n  - colour: red\n```\nThanks.";
        let message = bad_plan_at(answer);
        assert!(message.starts_with("line 6, column 5: "), "{message}");
        let answer = "Here you go.\n\n# P\n- [ ] T1: a\n- [ ] T2: b\n  - deps: T9\n";
        assert!(bad_plan_at(answer).contains("at line 5"));
    }

    #[test]
    fn prose_between_items_is_an_error_not_a_cut() {
        // Cutting at the paragraph would silently drop T2.
        let answer = "# P\n\n- [ ] T1: a\n\nT2 needs the database.\n\n- [ ] T2: b\n";
        let message = bad_plan_at(answer);
        assert!(
            message.starts_with("line 5, column 1: expected an item line"),
            "{message}"
        );
    }

    #[test]
    fn malformed_lines_under_the_last_item_are_errors() {
        // Text right under an item (no blank line) is read as part of it.
        let message = bad_plan_at("# P\n- [ ] T1: a\nT2: b without a checkbox\n");
        assert!(message.starts_with("line 3, column 1"), "{message}");
        // A bullet after a blank line may be an item without its checkbox: refused too.
        let message = bad_plan_at("# P\n- [ ] T1: a\n\n- T2: b\n");
        assert!(message.starts_with("line 4, column 1"), "{message}");
        // A broken checkbox is an item line, and the last one.
        let message = bad_plan_at("# P\n- [ ] T1: a\n\nLet me know.\n- [y] T2: b\n");
        assert!(message.starts_with("line 4, column 1"), "{message}");
    }

    #[test]
    fn answers_without_items_or_title() {
        assert_eq!(
            extract_plan("- [ ] T1: a\n  - files: a.rs\n"),
            Err(ProtocolError::NoPlan)
        );
        assert_eq!(
            extract_plan("# Plan\n\nI could not make one.\n\nSorry."),
            Err(ProtocolError::EmptyPlan)
        );
        assert_eq!(
            extract_plan("#hashtag\n- [ ] T1: a"),
            Err(ProtocolError::NoPlan)
        );
    }

    #[test]
    fn files_none_is_an_empty_list_and_validates() {
        let answer = "# P\n- [ ] T1: a\n  - files: none\n- [ ] T2: b\n  - files: n/a\n- [ ] T3: c\n  - files: -\n- [ ] T4: d\n  - files:\n";
        let plan = extract_plan(answer).unwrap();
        assert!(plan.items.iter().all(|i| i.files.is_empty()));
        assert_eq!(plan.validate(), Ok(()));
        let message = bad_plan_at("# P\n- [ ] T1: a\n  - files: a.rs, none\n");
        assert!(message.starts_with("line 3, column 18"), "{message}");
    }

    mod extraction_props {
        use orch_mvcc::{Item, ItemId, ItemState, Plan};
        use proptest::prelude::*;

        use super::super::extract_plan;

        fn words(max: usize) -> impl Strategy<Value = String> {
            prop::collection::vec("[a-z]{1,8}", 1..=max).prop_map(|w| w.join(" "))
        }

        /// Valid plans of one to six items; dependencies point to earlier items.
        fn plan() -> impl Strategy<Value = Plan> {
            let item = (
                prop::sample::select(ItemState::ALL.to_vec()),
                words(6),
                prop::collection::vec("[a-z]{1,6}(/[a-z]{1,6})?\\.rs", 0..3),
                prop::collection::vec(any::<prop::sample::Index>(), 0..3),
                prop::collection::vec(words(5), 0..2),
            );
            (
                words(5),
                prop::collection::vec(words(8), 0..3),
                prop::collection::vec(item, 1..6),
            )
                .prop_map(|(title, description, items)| {
                    let mut plan = Plan::new(title);
                    plan.description = description.join("\n");
                    for (i, (state, summary, files, deps, notes)) in items.into_iter().enumerate() {
                        let id = ItemId::new(format!("T{i}")).expect("valid id");
                        let mut item = Item::new(id, summary).with_state(state).with_files(files);
                        if i > 0 {
                            let mut deps: Vec<ItemId> = deps
                                .iter()
                                .map(|ix| plan.items[ix.index(i)].id.clone())
                                .collect();
                            deps.dedup();
                            item.deps = deps;
                        }
                        item.notes = notes;
                        plan.push(item);
                    }
                    plan
                })
                .prop_filter("representable", |p| p.validate().is_ok())
        }

        /// A line of prose: starts with a capital letter, so it is no heading, bullet or
        /// item; or one of the things models say around a plan.
        fn prose_line() -> impl Strategy<Value = String> {
            prop_oneof![
                "[A-Z][a-z]{0,8}( [a-z,.!?:'()#*`\\[\\]-]{1,9}){0,8}",
                prop::sample::select(vec![
                    "Here is the plan:".to_owned(),
                    "Let me know if you want changes.".to_owned(),
                    "**Notes:**".to_owned(),
                    "Hope this helps!".to_owned(),
                    "I kept each item small.".to_owned(),
                ]),
            ]
        }

        fn paragraphs() -> impl Strategy<Value = Vec<String>> {
            prop::collection::vec(
                prop::collection::vec(prose_line(), 1..4).prop_map(|l| l.join("\n")),
                0..3,
            )
        }

        /// After the first paragraph of trailing prose, anything but an item may follow.
        fn trailer() -> impl Strategy<Value = String> {
            (
                paragraphs(),
                prop::collection::vec(
                    prop_oneof![
                        "- [a-z ]{1,20}",
                        "## [A-Z][a-z]{1,8}",
                        "  [a-z]{1,9}",
                        Just("---".to_owned()),
                        Just("```".to_owned()),
                    ],
                    0..3,
                ),
            )
                .prop_map(|(paras, extra)| {
                    let mut out = paras.join("\n\n");
                    if !out.is_empty() {
                        for line in extra {
                            out.push('\n');
                            out.push_str(&line);
                        }
                    }
                    out
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn a_plan_in_prose_extracts_to_the_same_plan(
                plan in plan(),
                before in paragraphs(),
                after in trailer(),
                fence in prop::sample::select(vec!["", "```", "```markdown", "```md", "~~~"]),
                rule in any::<bool>(),
                crlf in any::<bool>(),
                blanks in 1usize..3,
            ) {
                let mut answer = before.join("\n\n");
                if !answer.is_empty() {
                    answer.push_str(&"\n".repeat(blanks + 1));
                }
                if !fence.is_empty() {
                    answer.push_str(fence);
                    answer.push('\n');
                }
                answer.push_str(&orch_mvcc::render(&plan));
                if !fence.is_empty() {
                    answer.push_str(&fence[..3]);
                    answer.push('\n');
                }
                if rule {
                    answer.push_str("---\n");
                }
                if !after.is_empty() {
                    answer.push_str(&"\n".repeat(blanks));
                    answer.push_str(&after);
                }
                if crlf {
                    answer = answer.replace('\n', "\r\n");
                }
                prop_assert_eq!(extract_plan(&answer), Ok(plan), "answer:\n{}", answer);
            }
        }
    }
}
