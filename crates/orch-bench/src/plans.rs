//! Plan generators (the `TODO.md` format of `orch-mvcc`) and the physical bound of a run.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use orch_agents::AgentRole;

use crate::recorder::TurnRecord;

/// The shape of a generated DAG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Independent items.
    Wide,
    /// `chains` chains of equal length.
    Chains {
        /// How many chains.
        chains: usize,
    },
    /// Diamonds in sequence: a top, `width` middles depending on it, a bottom depending on
    /// every middle; each top depends on the previous bottom.
    Diamonds {
        /// Middles per diamond.
        width: usize,
    },
}

impl Shape {
    /// A short name.
    pub fn name(&self) -> String {
        match self {
            Shape::Wide => "wide".into(),
            Shape::Chains { chains } => format!("{chains} chains"),
            Shape::Diamonds { width } => format!("diamonds of {}", width + 2),
        }
    }
}

/// An item of a generated plan: its id and its dependencies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanItem {
    /// `T<n>`, 1-based.
    pub id: String,
    /// Ids it depends on (always earlier items).
    pub deps: Vec<String>,
}

/// `n` items of `shape`, in an order where every dependency comes first.
pub fn dag(shape: Shape, n: usize) -> Vec<PlanItem> {
    let id = |i: usize| format!("T{}", i + 1);
    (0..n)
        .map(|i| {
            let deps = match shape {
                Shape::Wide => Vec::new(),
                Shape::Chains { chains } => {
                    if i >= chains {
                        vec![id(i - chains)]
                    } else {
                        Vec::new()
                    }
                }
                Shape::Diamonds { width } => {
                    let size = width + 2;
                    let (d, k) = (i / size, i % size);
                    let base = d * size;
                    match k {
                        0 if d == 0 => Vec::new(),
                        0 => vec![id(base - 1)],
                        k if k <= width => vec![id(base)],
                        _ => (1..=width).map(|m| id(base + m)).collect(),
                    }
                }
            };
            PlanItem { id: id(i), deps }
        })
        .collect()
}

/// The plan text a Planner answers with: one file per item, so no two items conflict.
pub fn plan_text(items: &[PlanItem]) -> String {
    let mut out = String::from("# Benchmark plan\n\nGenerated items.\n\n");
    for (i, item) in items.iter().enumerate() {
        let _ = writeln!(out, "- [ ] {}: step {}", item.id, i + 1);
        let _ = writeln!(out, "  - files: f{}.txt", i + 1);
        if !item.deps.is_empty() {
            let _ = writeln!(out, "  - deps: {}", item.deps.join(", "));
        }
    }
    out
}

/// The physical bound of a run, from the turn times the backend actually took.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bound {
    /// Planner time (before any item can start).
    pub planning: Duration,
    /// Longest dependency path, weighting each item by its Worker + Reviewer turn times.
    pub critical_path: Duration,
    /// Worker turn time ÷ Worker slots.
    pub worker_work: Duration,
    /// Reviewer turn time ÷ Reviewer slots.
    pub reviewer_work: Duration,
}

impl Bound {
    /// `planning + max(critical path, work ÷ slots)`: no scheduler can finish sooner.
    pub fn total(&self) -> Duration {
        self.planning
            + self
                .critical_path
                .max(self.worker_work)
                .max(self.reviewer_work)
    }
}

/// The bound of a run of `items` whose turns are `turns`.
pub fn bound(items: &[PlanItem], turns: &[TurnRecord], workers: usize, reviewers: usize) -> Bound {
    let mut weight: HashMap<&str, Duration> = HashMap::new();
    let (mut planning, mut worker, mut reviewer) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for t in turns {
        let d = t.end.saturating_sub(t.start);
        match t.role {
            AgentRole::Planner => planning += d,
            AgentRole::Worker => worker += d,
            AgentRole::Reviewer => reviewer += d,
            AgentRole::Commander => {}
        }
        if let Some(item) = &t.item {
            *weight.entry(item.as_str()).or_default() += d;
        }
    }
    let mut finish: HashMap<&str, Duration> = HashMap::new();
    let mut critical_path = Duration::ZERO;
    for item in items {
        let ready = item
            .deps
            .iter()
            .filter_map(|d| finish.get(d.as_str()))
            .max()
            .copied()
            .unwrap_or_default();
        let end = ready + weight.get(item.id.as_str()).copied().unwrap_or_default();
        critical_path = critical_path.max(end);
        finish.insert(item.id.as_str(), end);
    }
    Bound {
        planning,
        critical_path,
        worker_work: worker / workers.max(1) as u32,
        reviewer_work: reviewer / reviewers.max(1) as u32,
    }
}

/// The orchestration gaps of a run: for each item, Worker end → Reviewer start, and the last
/// dependency's review end → the item's Worker start. With no slot contention, these are the
/// time the orchestrator spends between turns.
pub fn handoff_gaps(items: &[PlanItem], turns: &[TurnRecord]) -> Vec<Duration> {
    let mut worker: HashMap<&str, &TurnRecord> = HashMap::new();
    let mut review: HashMap<&str, &TurnRecord> = HashMap::new();
    for t in turns.iter().filter(|t| t.ok) {
        let Some(item) = t.item.as_deref() else {
            continue;
        };
        match t.role {
            AgentRole::Worker => {
                worker.insert(item, t);
            }
            AgentRole::Reviewer => {
                review.insert(item, t);
            }
            _ => {}
        }
    }
    let mut gaps = Vec::new();
    for item in items {
        let (Some(w), Some(r)) = (worker.get(item.id.as_str()), review.get(item.id.as_str()))
        else {
            continue;
        };
        gaps.push(r.start.saturating_sub(w.end));
        let deps_done = item
            .deps
            .iter()
            .filter_map(|d| review.get(d.as_str()).map(|t| t.end))
            .max();
        if let Some(done) = deps_done {
            gaps.push(w.start.saturating_sub(done));
        }
    }
    gaps
}

/// The makespan a zero-overhead online scheduler reaches with the latencies the run drew:
/// the Planner's turns, then every ready item (plan order) starts the instant a Worker slot is
/// free, its review the instant its Worker turn ends and a Reviewer slot is free, and its
/// dependants become ready the instant the review ends. Like the mission, it cannot know a
/// turn's length before running it; what separates a run from this replay is orchestration
/// time, what separates this replay from [`bound`] is the price of not knowing (the tail of
/// the last Worker turns and the review that must follow the last one).
pub fn greedy_replay(
    items: &[PlanItem],
    turns: &[TurnRecord],
    workers: usize,
    reviewers: usize,
) -> Duration {
    use std::cmp::Reverse;
    use std::collections::{BTreeSet, BinaryHeap};

    let mut planning = Duration::ZERO;
    let mut work: HashMap<&str, Duration> = HashMap::new();
    let mut review: HashMap<&str, Duration> = HashMap::new();
    for t in turns.iter().filter(|t| t.ok) {
        let d = t.end.saturating_sub(t.start);
        match (t.role, t.item.as_deref()) {
            (AgentRole::Planner, _) => planning += d,
            (AgentRole::Worker, Some(i)) => *work.entry(i).or_default() += d,
            (AgentRole::Reviewer, Some(i)) => *review.entry(i).or_default() += d,
            _ => {}
        }
    }
    let index: HashMap<&str, usize> = items
        .iter()
        .enumerate()
        .map(|(i, it)| (it.id.as_str(), i))
        .collect();
    let mut waiting: Vec<usize> = items.iter().map(|it| it.deps.len()).collect();
    let mut dependants: Vec<Vec<usize>> = vec![Vec::new(); items.len()];
    for (i, it) in items.iter().enumerate() {
        for d in &it.deps {
            if let Some(&j) = index.get(d.as_str()) {
                dependants[j].push(i);
            }
        }
    }
    let mut ready: BTreeSet<usize> = (0..items.len()).filter(|&i| waiting[i] == 0).collect();
    let mut to_review: std::collections::VecDeque<usize> = std::collections::VecDeque::new();
    // (time, kind: 0 = Worker end, 1 = review end, item)
    let mut events: BinaryHeap<Reverse<(Duration, u8, usize)>> = BinaryHeap::new();
    let (mut free_w, mut free_r) = (workers.max(1), reviewers.max(1));
    let mut now = planning;
    let mut end = planning;
    loop {
        while free_w > 0 {
            let Some(i) = ready.pop_first() else { break };
            free_w -= 1;
            let d = work.get(items[i].id.as_str()).copied().unwrap_or_default();
            events.push(Reverse((now + d, 0, i)));
        }
        while free_r > 0 {
            let Some(i) = to_review.pop_front() else {
                break;
            };
            free_r -= 1;
            let d = review
                .get(items[i].id.as_str())
                .copied()
                .unwrap_or_default();
            events.push(Reverse((now + d, 1, i)));
        }
        let Some(Reverse((t, kind, i))) = events.pop() else {
            break;
        };
        now = t;
        end = end.max(t);
        if kind == 0 {
            free_w += 1;
            to_review.push_back(i);
        } else {
            free_r += 1;
            for &j in &dependants[i] {
                waiting[j] -= 1;
                if waiting[j] == 0 {
                    ready.insert(j);
                }
            }
        }
    }
    end
}

/// The `q` quantile (0..=1) of `values` (sorted in place).
pub fn quantile(values: &mut [Duration], q: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort_unstable();
    let idx = ((values.len() - 1) as f64 * q).round() as usize;
    values[idx.min(values.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_have_the_right_dependencies() {
        let wide = dag(Shape::Wide, 10);
        assert!(wide.iter().all(|i| i.deps.is_empty()));
        let chains = dag(Shape::Chains { chains: 3 }, 9);
        assert_eq!(chains[3].deps, vec!["T1"]);
        assert_eq!(chains[8].deps, vec!["T6"]);
        let d = dag(Shape::Diamonds { width: 2 }, 8);
        assert!(d[0].deps.is_empty());
        assert_eq!(d[1].deps, vec!["T1"]);
        assert_eq!(d[3].deps, vec!["T2", "T3"]);
        assert_eq!(d[4].deps, vec!["T4"]);
    }

    #[test]
    fn generated_plans_parse() {
        let items = dag(Shape::Diamonds { width: 3 }, 20);
        let plan = orch_mvcc::parse(&plan_text(&items)).expect("parses");
        assert_eq!(plan.items.len(), 20);
    }

    #[test]
    fn the_bound_is_the_critical_path_or_the_work() {
        let items = dag(Shape::Chains { chains: 1 }, 2);
        let rec = |role, item: &str, s: u64, e: u64| TurnRecord {
            role,
            item: Some(item.into()),
            start: Duration::from_millis(s),
            end: Duration::from_millis(e),
            ok: true,
            session: String::new(),
        };
        let turns = vec![
            rec(AgentRole::Worker, "T1", 0, 10),
            rec(AgentRole::Reviewer, "T1", 11, 21),
            rec(AgentRole::Worker, "T2", 22, 32),
            rec(AgentRole::Reviewer, "T2", 33, 43),
        ];
        let b = bound(&items, &turns, 1, 1);
        assert_eq!(b.critical_path, Duration::from_millis(40));
        assert_eq!(b.worker_work, Duration::from_millis(20));
        let mut gaps = handoff_gaps(&items, &turns);
        assert_eq!(quantile(&mut gaps, 0.5), Duration::from_millis(1));
    }
}
