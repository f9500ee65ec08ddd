//! The events the mission runs through an `orch-core` [`HookRegistry`]: before a turn is sent,
//! after it ends, and on a verdict. Hooks may inspect, modify or veto them.
//!
//! - `BeforeTurn`: modify the prompt; a veto fails the turn without sending it.
//! - `AfterTurn`: inspect (or modify) the report; a veto fails the turn (an attempt).
//! - `Verdict`: modify the verdict; a veto turns it into a FAIL carrying the hook's reason.

use orch_core::AgentRole;
use orch_core::HookRegistry;

use crate::backend::TurnReport;
use crate::protocol::Verdict;

/// An event hooks see.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum HookEvent {
    /// A turn is about to be sent.
    BeforeTurn {
        /// Whose turn.
        role: AgentRole,
        /// The item, if the turn is for one.
        item: Option<String>,
        /// The prompt (hooks may change it).
        prompt: String,
    },
    /// A turn ended.
    AfterTurn {
        /// Whose turn.
        role: AgentRole,
        /// The item, if any.
        item: Option<String>,
        /// What it produced.
        report: TurnReport,
    },
    /// A unit review gave a verdict (`item` is `None` for the integration review).
    Verdict {
        /// The item.
        item: Option<String>,
        /// The verdict (hooks may change it).
        verdict: Verdict,
    },
}

/// The registry type a mission takes.
pub type MissionHooks = HookRegistry<HookEvent>;
