//! The life of one plan item: every change of its state goes through [`apply`].
//!
//! ```text
//!            Start              WorkDone              Passed
//!  pending ─────────► in progress ───────► in review ───────► done
//!     ▲  ▲  Interrupted   │  │                 │
//!     │  └────────────────┘  │ AttemptFailed   │ AttemptFailed
//!     └──────────────────────┴─────────────────┘  (→ failed at the attempt limit)
//!  failed ── Reset ──► pending (attempts 0)
//! ```
//!
//! Resume moves items by what the journal says ([`ItemChange::RecoveredPassed`],
//! [`ItemChange::RecoveredForReview`], [`ItemChange::Interrupted`]). An attempt is charged
//! exactly when an attempt ends: a failure (`AttemptFailed`) or a pass (`Passed`,
//! `RecoveredPassed`); an interruption charges nothing.

use orch_mvcc::{Item, ItemId, ItemState, Plan};

use crate::journal::JournalContents;

/// A change to one item.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ItemChange {
    /// A Worker lane takes it: pending → in progress.
    Start,
    /// Its Worker turn ended: in progress → in review.
    WorkDone,
    /// Its Worker turn was interrupted (a stop, a lost server, a process that died): in
    /// progress → pending, no attempt charged.
    Interrupted,
    /// An attempt failed (a Worker error, a review FAIL or error): in progress or in review
    /// → pending, or failed once the attempts reach the limit; charges the attempt and notes
    /// why.
    AttemptFailed {
        /// Why, for the next attempt's prompt.
        note: String,
    },
    /// Its review passed: in review → done; charges the attempt.
    Passed,
    /// On resume: the journal shows its last attempt passed review, its plan change lost in
    /// a crash: any open state → done; charges the attempt.
    RecoveredPassed,
    /// On resume: the journal shows its Worker turn finished: pending or in progress → in
    /// review (the work is not redone).
    RecoveredForReview,
    /// `task_cli retry`: a failed item, or one it blocked, goes back to pending with its
    /// attempts reset.
    Reset,
}

/// A change that is not legal from the item's state; the item is left as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("item {item} is {}: {change:?} does not apply", from.as_str())]
pub struct IllegalChange {
    /// The item.
    pub item: String,
    /// Its state.
    pub from: ItemState,
    /// The change refused.
    pub change: ItemChange,
}

/// Applies `change` to `item` (with `max_attempts` attempts before an item fails) and
/// returns its new state.
///
/// # Errors
/// [`IllegalChange`] when the change does not apply to the item's state (nothing changes).
pub fn apply(
    item: &mut Item,
    change: &ItemChange,
    max_attempts: u32,
) -> Result<ItemState, IllegalChange> {
    use ItemState::{Done, Failed, InProgress, InReview, Pending};
    let illegal = |item: &Item| IllegalChange {
        item: item.id.to_string(),
        from: item.state,
        change: change.clone(),
    };
    let next = match (change, item.state) {
        (ItemChange::Start, Pending) => InProgress,
        (ItemChange::WorkDone, InProgress) => InReview,
        (ItemChange::Interrupted, InProgress) => Pending,
        (ItemChange::AttemptFailed { note }, InProgress | InReview) => {
            item.attempts += 1;
            item.add_note(&format!("attempt {}: {note}", item.attempts));
            if item.attempts >= max_attempts {
                Failed
            } else {
                Pending
            }
        }
        (ItemChange::Passed, InReview)
        | (ItemChange::RecoveredPassed, Pending | InProgress | InReview) => {
            item.attempts += 1;
            Done
        }
        (ItemChange::RecoveredForReview, Pending | InProgress) => InReview,
        (ItemChange::Reset, Failed | Pending) => {
            if item.state == Failed {
                item.add_note("retried: attempts reset by `task_cli retry`");
            }
            item.attempts = 0;
            Pending
        }
        (_, Pending | InProgress | InReview | Done | Failed) => return Err(illegal(item)),
    };
    item.state = next;
    Ok(next)
}

/// What a resumed run does to the open items of `plan`, by what the journal of the earlier
/// runs says (`TODO.md` is written behind the journal, so it may lag): an item whose last
/// attempt passed review, or that has a commit on the mission's branch (`committed`), is
/// done; an item whose last Worker turn finished (and was not reviewed since) goes to
/// review, its work not redone; any other item in progress (its session died with the
/// process) goes back to pending.
pub(crate) fn recovery(
    plan: &Plan,
    history: &JournalContents,
    committed: &std::collections::BTreeSet<String>,
) -> Vec<(ItemId, ItemChange)> {
    let mut passed = history.passed();
    passed.extend(committed.iter().cloned());
    plan.items
        .iter()
        .filter(|i| !i.state.is_terminal())
        .filter_map(|i| {
            let id = i.id.as_str();
            let change = if passed.contains(id) {
                ItemChange::RecoveredPassed
            } else if matches!(i.state, ItemState::Pending | ItemState::InProgress)
                && history.worker_finished(id)
            {
                ItemChange::RecoveredForReview
            } else if i.state == ItemState::InProgress {
                ItemChange::Interrupted
            } else {
                return None;
            };
            Some((i.id.clone(), change))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_mvcc::ItemId;
    use proptest::prelude::*;

    fn item() -> Item {
        Item::new(ItemId::new("T1").expect("an id"), "one").with_files(["a.rs"])
    }

    fn change() -> impl Strategy<Value = ItemChange> {
        prop_oneof![
            Just(ItemChange::Start),
            Just(ItemChange::WorkDone),
            Just(ItemChange::Interrupted),
            "[a-z ]{0,12}".prop_map(|note| ItemChange::AttemptFailed { note }),
            Just(ItemChange::Passed),
            Just(ItemChange::RecoveredPassed),
            Just(ItemChange::RecoveredForReview),
            Just(ItemChange::Reset),
        ]
    }

    #[test]
    fn a_first_attempt_passes_through_every_state() {
        let mut it = item();
        for (change, state) in [
            (ItemChange::Start, ItemState::InProgress),
            (ItemChange::WorkDone, ItemState::InReview),
            (ItemChange::Passed, ItemState::Done),
        ] {
            assert_eq!(apply(&mut it, &change, 3), Ok(state));
        }
        assert_eq!(it.attempts, 1);
        let err = apply(&mut it, &ItemChange::Start, 3).unwrap_err();
        assert_eq!(err.from, ItemState::Done);
    }

    #[test]
    fn the_last_failed_attempt_fails_the_item_and_reset_reopens_it() {
        let mut it = item();
        for _ in 0..2 {
            apply(&mut it, &ItemChange::Start, 2).unwrap();
            apply(
                &mut it,
                &ItemChange::AttemptFailed {
                    note: "tests fail".into(),
                },
                2,
            )
            .unwrap();
        }
        assert_eq!((it.state, it.attempts), (ItemState::Failed, 2));
        assert!(it.notes.iter().any(|n| n.contains("attempt 2: tests fail")));
        assert_eq!(
            apply(&mut it, &ItemChange::Reset, 2),
            Ok(ItemState::Pending)
        );
        assert_eq!(it.attempts, 0);
    }

    #[test]
    fn a_resume_follows_the_journal_over_a_lagging_plan() {
        use crate::events::MissionEvent;
        use crate::journal::{JournalEntry, JournalRecord};
        let plan = orch_mvcc::parse(
            "# P\n- [~] A: a\n  - files: a\n- [ ] B: b\n  - files: b\n- [~] C: c\n  - files: c\n- [!] D: d\n  - files: d\n",
        )
        .unwrap();
        let event = |event| JournalRecord {
            seq: 0,
            at_ms: 0,
            pid: 1,
            entry: JournalEntry::Event { event },
        };
        let started = |item: &str| {
            event(MissionEvent::ItemStarted {
                item: item.into(),
                attempt: 1,
                lane: 0,
                warm: false,
            })
        };
        let history = JournalContents {
            records: vec![
                started("A"),
                started("B"),
                event(MissionEvent::TurnFinished {
                    role: orch_core::AgentRole::Worker,
                    item: Some("B".into()),
                    tokens: Default::default(),
                    elapsed_ms: 1,
                    tool_calls: 1,
                    cost: 0.0,
                    model: None,
                }),
                started("C"),
                event(MissionEvent::ItemDone {
                    item: "C".into(),
                    attempts: 1,
                }),
            ],
            repaired_bytes: 0,
        };
        let changes: Vec<(String, ItemChange)> = recovery(&plan, &history, &Default::default())
            .into_iter()
            .map(|(id, c)| (id.to_string(), c))
            .collect();
        assert_eq!(
            changes,
            [
                ("A".to_owned(), ItemChange::Interrupted),
                ("B".to_owned(), ItemChange::RecoveredForReview),
                ("C".to_owned(), ItemChange::RecoveredPassed),
            ]
        );
        // A commit of the item on the mission's branch is a pass the journal lost.
        let committed = std::iter::once("A".to_owned()).collect();
        assert_eq!(
            recovery(&plan, &history, &committed)[0],
            (ItemId::new("A").unwrap(), ItemChange::RecoveredPassed)
        );
    }

    proptest! {
        /// Whatever the order of changes: a refused change leaves the item as it was;
        /// attempts only move up by one when an attempt ends (and to 0 on Reset); an item is
        /// done only after a pass, failed only at the attempt limit; done is final.
        #[test]
        fn only_legal_moves_change_an_item(
            changes in proptest::collection::vec(change(), 0..40),
            max in 1u32..5,
        ) {
            let mut it = item();
            for change in &changes {
                let before = it.clone();
                match apply(&mut it, change, max) {
                    Err(e) => {
                        prop_assert_eq!(&it, &before);
                        prop_assert_eq!(e.from, before.state);
                    }
                    Ok(state) => {
                        prop_assert_eq!(state, it.state);
                        prop_assert_ne!(before.state, ItemState::Done);
                        let charged = matches!(
                            change,
                            ItemChange::AttemptFailed { .. }
                                | ItemChange::Passed
                                | ItemChange::RecoveredPassed
                        );
                        match change {
                            ItemChange::Reset => prop_assert_eq!(it.attempts, 0),
                            _ if charged => prop_assert_eq!(it.attempts, before.attempts + 1),
                            _ => prop_assert_eq!(it.attempts, before.attempts),
                        }
                        if it.state == ItemState::Done {
                            prop_assert!(matches!(
                                change,
                                ItemChange::Passed | ItemChange::RecoveredPassed
                            ));
                        }
                        if it.state == ItemState::Failed {
                            prop_assert!(it.attempts >= max);
                        }
                    }
                }
            }
        }
    }
}
