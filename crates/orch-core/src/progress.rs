//! Progress tracking: stagnation detection on plan-state hashes, and a loop breaker for
//! repeated tool calls and repeated turns.

use std::fmt;

use serde::{Deserialize, Serialize};

/// blake3 hash of a state snapshot.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProgressHash([u8; 32]);

impl ProgressHash {
    /// Hashes `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// The raw hash.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for ProgressHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProgressHash(")?;
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// What one observation of the plan state means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[must_use]
pub enum ProgressSignal {
    /// The state changed (or this is the first observation).
    Progressing,
    /// Unchanged for `unchanged` rounds, below the intervention threshold or between the two.
    Stagnant {
        /// Rounds in a row without change.
        unchanged: u32,
    },
    /// Unchanged for exactly the intervention threshold: send a diagnostic prompt (once).
    Intervene {
        /// Rounds in a row without change.
        unchanged: u32,
    },
    /// Unchanged for the escalation threshold or more: escalate (stop, ask a human).
    Escalate {
        /// Rounds in a row without change.
        unchanged: u32,
    },
}

/// Detects a plan that stopped changing. Feed it one snapshot per mission round.
///
/// "Unchanged" counts observations equal to the one before: observing `A, A, A, A` gives
/// `Progressing, Stagnant{1}, Stagnant{2}, Intervene{3}` with the seed thresholds (3, 5).
#[derive(Debug, Clone)]
pub struct ProgressTracker {
    intervene_after: u32,
    escalate_after: u32,
    last: Option<ProgressHash>,
    unchanged: u32,
}

impl Default for ProgressTracker {
    fn default() -> Self {
        Self::new(3, 5)
    }
}

impl ProgressTracker {
    /// Thresholds in unchanged rounds (seed: 3 and 5). `escalate_after` is raised to at least
    /// `intervene_after`.
    pub fn new(intervene_after: u32, escalate_after: u32) -> Self {
        let intervene_after = intervene_after.max(1);
        Self {
            intervene_after,
            escalate_after: escalate_after.max(intervene_after),
            last: None,
            unchanged: 0,
        }
    }

    /// Observes a snapshot (e.g. the rendered TODO.md).
    pub fn observe(&mut self, snapshot: &[u8]) -> ProgressSignal {
        self.observe_hash(ProgressHash::of(snapshot))
    }

    /// Observes a serialisable state through its JSON form.
    ///
    /// # Errors
    /// When `state` cannot be serialised.
    pub fn observe_state<T: Serialize>(
        &mut self,
        state: &T,
    ) -> Result<ProgressSignal, serde_json::Error> {
        Ok(self.observe(&serde_json::to_vec(state)?))
    }

    /// Observes a precomputed hash.
    pub fn observe_hash(&mut self, hash: ProgressHash) -> ProgressSignal {
        if self.last == Some(hash) {
            self.unchanged = self.unchanged.saturating_add(1);
        } else {
            self.last = Some(hash);
            self.unchanged = 0;
            return ProgressSignal::Progressing;
        }
        let unchanged = self.unchanged;
        if unchanged >= self.escalate_after {
            ProgressSignal::Escalate { unchanged }
        } else if unchanged == self.intervene_after {
            ProgressSignal::Intervene { unchanged }
        } else {
            ProgressSignal::Stagnant { unchanged }
        }
    }

    /// Rounds in a row without change.
    pub fn unchanged(&self) -> u32 {
        self.unchanged
    }

    /// Forgets history (e.g. after a human intervened).
    pub fn reset(&mut self) {
        self.last = None;
        self.unchanged = 0;
    }
}

/// Why the loop breaker fired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoopReason {
    /// The same tool with the same arguments, `times` in a row.
    RepeatedToolCall {
        /// The tool.
        tool: String,
        /// How many times in a row.
        times: u32,
    },
    /// The same turn text without any tool call, `times` in a row.
    RepeatedTurn {
        /// How many times in a row.
        times: u32,
    },
}

/// Verdict of the loop breaker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[must_use]
pub enum LoopVerdict {
    /// Nothing suspicious.
    Continue,
    /// The session is looping: stop or redirect it.
    Break(LoopReason),
}

/// Detects a session stuck in a loop. One per session.
#[derive(Debug, Clone)]
pub struct LoopBreaker {
    threshold: u32,
    last_call: Option<ProgressHash>,
    call_repeats: u32,
    last_turn: Option<ProgressHash>,
    turn_repeats: u32,
}

impl Default for LoopBreaker {
    fn default() -> Self {
        Self::new(3)
    }
}

impl LoopBreaker {
    /// Fires after `threshold` identical calls or turns in a row (seed: 3).
    pub fn new(threshold: u32) -> Self {
        Self {
            threshold: threshold.max(1),
            last_call: None,
            call_repeats: 0,
            last_turn: None,
            turn_repeats: 0,
        }
    }

    /// Records a tool call (`args` is its canonical argument text, e.g. JSON).
    pub fn on_tool_call(&mut self, tool: &str, args: &[u8]) -> LoopVerdict {
        let mut h = blake3::Hasher::new();
        h.update(&(tool.len() as u64).to_le_bytes());
        h.update(tool.as_bytes());
        h.update(args);
        let hash = ProgressHash(*h.finalize().as_bytes());
        let times = bump(&mut self.last_call, &mut self.call_repeats, hash);
        if times >= self.threshold {
            LoopVerdict::Break(LoopReason::RepeatedToolCall {
                tool: tool.to_owned(),
                times,
            })
        } else {
            LoopVerdict::Continue
        }
    }

    /// Records the end of a turn. A turn with tool calls resets the repeated-turn count.
    pub fn on_turn(&mut self, text: &str, had_tool_calls: bool) -> LoopVerdict {
        if had_tool_calls {
            self.last_turn = None;
            self.turn_repeats = 0;
            return LoopVerdict::Continue;
        }
        let times = bump(
            &mut self.last_turn,
            &mut self.turn_repeats,
            ProgressHash::of(text.as_bytes()),
        );
        if times >= self.threshold {
            LoopVerdict::Break(LoopReason::RepeatedTurn { times })
        } else {
            LoopVerdict::Continue
        }
    }
}

fn bump(last: &mut Option<ProgressHash>, count: &mut u32, hash: ProgressHash) -> u32 {
    if *last == Some(hash) {
        *count = count.saturating_add(1);
    } else {
        *last = Some(hash);
        *count = 1;
    }
    *count
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn stagnation_intervenes_at_three_and_escalates_at_five() {
        let mut t = ProgressTracker::default();
        let signals: Vec<_> = (0..7).map(|_| t.observe(b"plan v1")).collect();
        assert_eq!(
            signals,
            vec![
                ProgressSignal::Progressing,
                ProgressSignal::Stagnant { unchanged: 1 },
                ProgressSignal::Stagnant { unchanged: 2 },
                ProgressSignal::Intervene { unchanged: 3 },
                ProgressSignal::Stagnant { unchanged: 4 },
                ProgressSignal::Escalate { unchanged: 5 },
                ProgressSignal::Escalate { unchanged: 6 },
            ]
        );
        assert_eq!(t.observe(b"plan v2"), ProgressSignal::Progressing);
        assert_eq!(t.unchanged(), 0);
    }

    #[test]
    fn observe_state_hashes_json() {
        let mut t = ProgressTracker::new(1, 2);
        assert_eq!(
            t.observe_state(&[1, 2]).unwrap(),
            ProgressSignal::Progressing
        );
        assert_eq!(
            t.observe_state(&[1, 2]).unwrap(),
            ProgressSignal::Intervene { unchanged: 1 }
        );
        assert_eq!(
            t.observe_state(&[1, 3]).unwrap(),
            ProgressSignal::Progressing
        );
    }

    #[test]
    fn same_tool_call_three_times_breaks() {
        let mut b = LoopBreaker::default();
        assert_eq!(
            b.on_tool_call("read", b"{\"path\":\"a\"}"),
            LoopVerdict::Continue
        );
        assert_eq!(
            b.on_tool_call("read", b"{\"path\":\"a\"}"),
            LoopVerdict::Continue
        );
        assert_eq!(
            b.on_tool_call("read", b"{\"path\":\"a\"}"),
            LoopVerdict::Break(LoopReason::RepeatedToolCall {
                tool: "read".into(),
                times: 3
            })
        );
        assert_eq!(
            b.on_tool_call("read", b"{\"path\":\"b\"}"),
            LoopVerdict::Continue
        );
        // Tool name and arguments are separated: "ab"+"c" differs from "a"+"bc".
        assert_eq!(b.on_tool_call("ab", b"c"), LoopVerdict::Continue);
        assert_eq!(b.on_tool_call("a", b"bc"), LoopVerdict::Continue);
    }

    #[test]
    fn identical_turns_without_tools_break_and_tool_turns_reset() {
        let mut b = LoopBreaker::default();
        assert_eq!(
            b.on_turn("I will now fix it.", false),
            LoopVerdict::Continue
        );
        assert_eq!(
            b.on_turn("I will now fix it.", false),
            LoopVerdict::Continue
        );
        assert_eq!(b.on_turn("I will now fix it.", true), LoopVerdict::Continue);
        assert_eq!(
            b.on_turn("I will now fix it.", false),
            LoopVerdict::Continue
        );
        assert_eq!(
            b.on_turn("I will now fix it.", false),
            LoopVerdict::Continue
        );
        assert_eq!(
            b.on_turn("I will now fix it.", false),
            LoopVerdict::Break(LoopReason::RepeatedTurn { times: 3 })
        );
    }

    proptest! {
        /// Model check: the signal depends only on the run length of equal observations.
        #[test]
        fn tracker_matches_run_length_model(seq in proptest::collection::vec(0u8..3, 1..60)) {
            let mut t = ProgressTracker::default();
            let mut run = 0u32;
            let mut prev = None;
            for x in seq {
                let s = t.observe(&[x]);
                if prev == Some(x) { run += 1 } else { run = 0 }
                prev = Some(x);
                let expected = match run {
                    0 => ProgressSignal::Progressing,
                    3 => ProgressSignal::Intervene { unchanged: 3 },
                    r if r >= 5 => ProgressSignal::Escalate { unchanged: r },
                    r => ProgressSignal::Stagnant { unchanged: r },
                };
                prop_assert_eq!(s, expected);
            }
        }
    }
}
