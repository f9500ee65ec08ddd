//! The mission's settings for its turn policy and its own guards, and the guards a Commander
//! keeps: stagnation detection on the plan's progress and a loop breaker per item.

use std::collections::HashMap;

use orch_core::{
    BreakerConfig, LoopBreaker, LoopReason, LoopVerdict, ProgressTracker, RetryPolicy,
};
use orch_mvcc::{ItemId, Plan};

use crate::backend::TurnReport;

/// Retry, breaker, auto-scaling and stagnation settings of a mission.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyConfig {
    /// Retries of transient errors (seed: 1 s, 2 s, 4 s…, 5 attempts).
    pub retry: RetryPolicy,
    /// The breaker per model (seed: open after 5 failures, 30 s, 2 successes to close).
    pub breaker: BreakerConfig,
    /// Let the controller move the Worker and Reviewer limits (never above the configured
    /// counts, never below 1).
    pub autoscale: bool,
    /// Unchanged progress rounds before the Commander is asked for a diagnosis (seed: 3).
    pub diagnose_after: u32,
    /// Unchanged progress rounds before the mission stops (seed: 5).
    pub escalate_after: u32,
    /// Identical tool calls (or identical turns without tools) in a row that count as a loop
    /// (seed: 3).
    pub loop_threshold: u32,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            retry: RetryPolicy::default(),
            breaker: BreakerConfig::default(),
            autoscale: true,
            diagnose_after: 3,
            escalate_after: 5,
            loop_threshold: 3,
        }
    }
}

/// What the progress tracker says after a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProgressSignal {
    Ok,
    Diagnose(u32),
    Escalate(u32),
}

/// A hash of the ids and states (not notes or attempts): what "progress" means.
pub(crate) fn progress_hash(plan: &Plan) -> [u8; 32] {
    // One buffer, hashed at once: blake3 is fast on long input and slow per small update.
    let mut bytes = Vec::with_capacity(plan.items.len() * 16);
    for item in &plan.items {
        bytes.extend_from_slice(item.id.as_str().as_bytes());
        bytes.push(b' ');
        bytes.push(item.state.marker() as u8);
        bytes.push(b'\n');
    }
    *blake3::hash(&bytes).as_bytes()
}

/// The Commander's own guards: the plan's progress round after round, and each item's
/// Worker turns.
pub(crate) struct ProgressWatch {
    progress: ProgressTracker,
    loops: HashMap<ItemId, LoopBreaker>,
    loop_threshold: u32,
}

impl ProgressWatch {
    pub(crate) fn new(config: &PolicyConfig) -> Self {
        ProgressWatch {
            progress: ProgressTracker::new(config.diagnose_after, config.escalate_after),
            loops: HashMap::new(),
            loop_threshold: config.loop_threshold,
        }
    }

    /// Feeds the progress tracker one round's plan.
    pub(crate) fn observe_progress(&mut self, plan: &Plan) -> ProgressSignal {
        match self.progress.observe(&progress_hash(plan)) {
            orch_core::ProgressSignal::Intervene { unchanged } => {
                ProgressSignal::Diagnose(unchanged)
            }
            orch_core::ProgressSignal::Escalate { unchanged } => {
                ProgressSignal::Escalate(unchanged)
            }
            _ => ProgressSignal::Ok,
        }
    }

    /// Feeds an item's loop breaker a Worker turn; `Some(detail)` when it loops.
    pub(crate) fn observe_turn(&mut self, item: &ItemId, report: &TurnReport) -> Option<String> {
        let breaker = self
            .loops
            .entry(item.clone())
            .or_insert_with(|| LoopBreaker::new(self.loop_threshold));
        let mut verdict = LoopVerdict::Continue;
        for call in &report.tool_calls {
            if let LoopVerdict::Break(reason) =
                breaker.on_tool_call(&call.tool, call.input.as_bytes())
            {
                verdict = LoopVerdict::Break(reason);
            }
        }
        if let LoopVerdict::Break(reason) =
            breaker.on_turn(&report.text, !report.tool_calls.is_empty())
        {
            verdict = LoopVerdict::Break(reason);
        }
        match verdict {
            LoopVerdict::Continue => None,
            LoopVerdict::Break(LoopReason::RepeatedToolCall { tool, times }) => {
                Some(format!("the same `{tool}` call {times} times in a row"))
            }
            LoopVerdict::Break(LoopReason::RepeatedTurn { times }) => {
                Some(format!("{times} identical turns without a tool call"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_mvcc::ItemState;

    #[test]
    fn loops_are_detected_per_item() {
        let mut w = ProgressWatch::new(&PolicyConfig::default());
        let item = ItemId::new("T1").unwrap();
        let report = TurnReport {
            text: "same".into(),
            ..TurnReport::default()
        };
        assert_eq!(w.observe_turn(&item, &report), None);
        assert_eq!(w.observe_turn(&item, &report), None);
        let detail = w.observe_turn(&item, &report).unwrap();
        assert!(detail.contains("3 identical turns"), "{detail}");
        // Another item has its own history.
        assert_eq!(w.observe_turn(&ItemId::new("T2").unwrap(), &report), None);
    }

    #[test]
    fn progress_signals_diagnose_then_escalate() {
        let mut w = ProgressWatch::new(&PolicyConfig::default());
        let plan = orch_mvcc::parse("# P\n- [ ] A: a\n  - files: a\n").unwrap();
        let signals: Vec<ProgressSignal> = (0..6).map(|_| w.observe_progress(&plan)).collect();
        assert_eq!(signals[0], ProgressSignal::Ok);
        assert_eq!(signals[3], ProgressSignal::Diagnose(3));
        assert_eq!(signals[5], ProgressSignal::Escalate(5));
    }

    #[test]
    fn progress_hash_ignores_notes_but_not_states() {
        let mut plan = orch_mvcc::parse("# P\n- [ ] A: a\n  - files: a\n").unwrap();
        let h1 = progress_hash(&plan);
        plan.item_mut("A").unwrap().add_note("x");
        assert_eq!(progress_hash(&plan), h1);
        plan.item_mut("A").unwrap().state = ItemState::Done;
        assert_ne!(progress_hash(&plan), h1);
    }
}
