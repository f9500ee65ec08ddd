//! A mission's figures over every run, summed from its journal.
//!
//! A mission may take several runs: a `resume` after a stop or a crash, a new server after a
//! loss. Every turn is journaled (`turn_finished` with its tokens, cost and model,
//! `turn_failed`, `retrying`, `permission`, `reviewed`), so the journal is where the totals
//! come from: [`MissionTotals::from_records`] reads them off a journal, and the open journal
//! keeps them up to date as records are appended, so the report of the last run counts the
//! first run's Planner too.

use std::collections::BTreeMap;
use std::time::Duration;

use orch_core::AgentRole;
use serde::{Deserialize, Serialize};

use crate::backend::{PermissionDecision, TokenUsage};
use crate::events::{MissionEvent, MissionStatus, RoleUsage};
use crate::journal::{JournalEntry, JournalRecord};
use crate::protocol::Verdict;

/// One run of a mission: from its `started` event to its last journal record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The process that ran it.
    pub pid: u32,
    /// When it started (milliseconds since the Unix epoch).
    pub started_at_ms: u64,
    /// From its start to its last journal record.
    pub elapsed_ms: u64,
    /// Whether it continued an earlier plan.
    pub resumed: bool,
    /// 0 for a run a command started; `n` for the run after the `n`-th server replacement.
    pub restart: u32,
    /// How it ended; `None` when it has no `finished` record (killed, or still running).
    pub status: Option<MissionStatus>,
    /// Commander rounds (0 when the run has no `finished` record).
    pub rounds: u32,
    /// Turns finished.
    pub turns: u64,
    /// Turns failed (after retries).
    pub failed_turns: u64,
    /// Turns given up on by a stop (neither finished nor failed).
    pub abandoned_turns: u64,
    /// Retries of transient errors.
    pub retries: u64,
    /// Failed model calls the server retried by itself.
    pub upstream_retries: u64,
    /// Tokens of its turns.
    pub tokens: TokenUsage,
    /// Cost of its turns.
    pub cost: f64,
}

/// Figures of a whole mission: per role and per run, summed over every run in the journal.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MissionTotals {
    /// Every run, in order.
    pub runs: Vec<RunSummary>,
    /// Figures by role.
    pub usage: BTreeMap<AgentRole, RoleUsage>,
    /// Which model answered how many turns.
    pub models: BTreeMap<String, u64>,
    /// Permission requests answered.
    pub permissions: Vec<PermissionDecision>,
    /// Retries of transient errors.
    pub retries: u64,
    /// Failed model calls the server retried by itself.
    pub upstream_retries: u64,
    /// Every unit verdict, per item.
    pub verdicts: BTreeMap<String, Vec<Verdict>>,
}

impl MissionTotals {
    /// The totals of these journal records.
    pub fn from_records<'a>(records: impl IntoIterator<Item = &'a JournalRecord>) -> Self {
        let mut totals = MissionTotals::default();
        for record in records {
            totals.observe(record);
        }
        totals
    }

    /// Counts one more journal record.
    pub fn observe(&mut self, record: &JournalRecord) {
        if let Some(run) = self.runs.last_mut()
            && record.pid == run.pid
        {
            run.elapsed_ms = record.at_ms.saturating_sub(run.started_at_ms);
        }
        let JournalEntry::Event { event } = &record.entry else {
            return;
        };
        if let MissionEvent::Started {
            resumed, restart, ..
        } = event
        {
            self.runs.push(RunSummary {
                pid: record.pid,
                started_at_ms: record.at_ms,
                resumed: *resumed,
                restart: *restart,
                ..RunSummary::default()
            });
            return;
        }
        // Records before any `started` (a journal of an older version) count in a run of
        // their own.
        if self.runs.is_empty() {
            self.runs.push(RunSummary {
                pid: record.pid,
                started_at_ms: record.at_ms,
                ..RunSummary::default()
            });
        }
        let Some(run) = self.runs.last_mut() else {
            return;
        };
        match event {
            MissionEvent::TurnFinished {
                role,
                tokens,
                elapsed_ms,
                cost,
                model,
                ..
            } => {
                run.turns += 1;
                run.tokens.add(tokens);
                run.cost += cost;
                let usage = self.usage.entry(*role).or_default();
                usage.turns += 1;
                usage.tokens.add(tokens);
                usage.cost += cost;
                usage.busy_ms += elapsed_ms;
                if let Some(model) = model {
                    *self.models.entry(model.clone()).or_default() += 1;
                }
            }
            MissionEvent::TurnFailed {
                role, abandoned, ..
            } => {
                let usage = self.usage.entry(*role).or_default();
                if *abandoned {
                    run.abandoned_turns += 1;
                    usage.abandoned_turns += 1;
                } else {
                    run.failed_turns += 1;
                    usage.failed_turns += 1;
                }
            }
            MissionEvent::Retrying { .. } => {
                run.retries += 1;
                self.retries += 1;
            }
            MissionEvent::UpstreamRetry { .. } => {
                run.upstream_retries += 1;
                self.upstream_retries += 1;
            }
            MissionEvent::Permission { decision, .. } => {
                self.permissions.push(decision.clone());
            }
            MissionEvent::Reviewed { item, verdict } => {
                self.verdicts
                    .entry(item.clone())
                    .or_default()
                    .push(verdict.clone());
            }
            MissionEvent::Finished { status, rounds } => {
                run.status = Some(status.clone());
                run.rounds = *rounds;
            }
            _ => {}
        }
    }

    /// Wall time over every run (time between runs not counted).
    pub fn elapsed(&self) -> Duration {
        Duration::from_millis(self.runs.iter().map(|r| r.elapsed_ms).sum())
    }

    /// Commander rounds over every run that recorded its end.
    pub fn rounds(&self) -> u32 {
        self.runs.iter().map(|r| r.rounds).sum()
    }

    /// Tokens of every turn.
    pub fn tokens(&self) -> TokenUsage {
        let mut total = TokenUsage::default();
        for usage in self.usage.values() {
            total.add(&usage.tokens);
        }
        total
    }

    /// Cost of every turn.
    pub fn cost(&self) -> f64 {
        self.usage.values().map(|u| u.cost).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, at_ms: u64, pid: u32, event: MissionEvent) -> JournalRecord {
        JournalRecord {
            seq,
            at_ms,
            pid,
            entry: JournalEntry::Event { event },
        }
    }

    fn started(resumed: bool, restart: u32) -> MissionEvent {
        MissionEvent::Started {
            mission: "m".into(),
            resumed,
            restart,
        }
    }

    fn turn(role: AgentRole, input: u64, cost: f64) -> MissionEvent {
        MissionEvent::TurnFinished {
            role,
            item: None,
            tokens: TokenUsage {
                input,
                ..TokenUsage::default()
            },
            elapsed_ms: 10,
            tool_calls: 0,
            cost,
            model: Some("p/m".into()),
        }
    }

    #[test]
    fn runs_are_summed_and_kept_apart() {
        let records = [
            record(0, 1_000, 7, started(false, 0)),
            record(1, 1_500, 7, turn(AgentRole::Planner, 100, 0.5)),
            record(2, 2_000, 7, turn(AgentRole::Worker, 10, 0.25)),
            // Killed: no `finished`. A resume by another process, later.
            record(3, 9_000, 8, started(true, 0)),
            record(
                4,
                9_100,
                8,
                MissionEvent::TurnFailed {
                    role: AgentRole::Worker,
                    item: None,
                    error: "stopped".into(),
                    abandoned: true,
                },
            ),
            record(5, 9_400, 8, turn(AgentRole::Reviewer, 5, 0.0)),
            record(
                6,
                9_500,
                8,
                MissionEvent::Finished {
                    status: MissionStatus::Completed,
                    rounds: 4,
                },
            ),
        ];
        let totals = MissionTotals::from_records(&records);
        assert_eq!(totals.runs.len(), 2);
        assert_eq!(
            (
                totals.runs[0].elapsed_ms,
                totals.runs[0].turns,
                totals.runs[0].status.clone()
            ),
            (1_000, 2, None)
        );
        assert_eq!(
            (
                totals.runs[1].elapsed_ms,
                totals.runs[1].abandoned_turns,
                totals.runs[1].rounds
            ),
            (500, 1, 4)
        );
        assert_eq!(totals.elapsed(), Duration::from_millis(1_500));
        assert_eq!(totals.tokens().input, 115);
        assert!((totals.cost() - 0.75).abs() < 1e-12);
        assert_eq!(totals.usage[&AgentRole::Planner].turns, 1);
        assert_eq!(totals.usage[&AgentRole::Worker].abandoned_turns, 1);
        assert_eq!(totals.usage[&AgentRole::Worker].failed_turns, 0);
        assert_eq!(totals.models["p/m"], 3);
        assert_eq!(totals.rounds(), 4);
    }
}
