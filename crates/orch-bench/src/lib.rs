//! End-to-end benchmarks of the orchestrator (issue #10).
//!
//! The `e2e` binary runs seven benchmarks and prints one table (figure, ours, baseline, ratio,
//! target, met?). Each benchmark runs in its own child process, so peak RSS and CPU time are
//! its own. This library holds the parts the binary and the tests share: DAG plan generators
//! and the physical bound of a run ([`plans`]), a backend wrapper recording every turn
//! ([`Recorder`]), the table ([`Row`], [`render`]), and the benchmarks themselves: [`sim`]
//! (1–2), [`events`] (3), [`real`] (4–6), [`v2`] (7: OpenCode 2 beside OpenCode 1).
//!
//! ```
//! use orch_bench::plans::{Shape, dag, plan_text};
//!
//! let items = dag(Shape::Chains { chains: 2 }, 6);
//! assert_eq!(items[2].deps, vec!["T1".to_string()]);
//! assert!(orch_mvcc::parse(&plan_text(&items)).is_ok());
//! ```
#![forbid(unsafe_code)]

pub use orch_agents::backend::multi::{MultiBackend, MultiSession};

pub mod events;
pub mod plans;
pub mod real;
mod recorder;
pub mod sim;
mod table;
pub mod v2;

pub use recorder::{Recorder, TurnRecord, item_of};
pub use table::{Row, cpu_time, current_rss, fmt_duration, peak_rss, render};
