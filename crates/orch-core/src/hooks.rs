//! Hook registry: hooks in phases, ordered by declared dependencies, that can inspect, modify
//! or veto an event.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// When a hook runs relative to the others. Every `Early` hook runs before every `Normal` one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookPhase {
    /// First (validation, guards).
    Early,
    /// The default.
    Normal,
    /// Last (logging, metrics).
    Late,
}

/// What a hook says about an event.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum HookDecision {
    /// Go on to the next hook.
    Continue,
    /// Stop: the event must not proceed, for this reason.
    Veto(String),
}

/// Result of running all hooks on an event.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum HookOutcome {
    /// Every hook let the event through (possibly modified).
    Proceed,
    /// A hook vetoed it; later hooks did not run.
    Vetoed {
        /// The hook that vetoed.
        hook: String,
        /// Its reason.
        reason: String,
    },
}

impl HookOutcome {
    /// Whether the event may go on.
    pub fn is_proceed(&self) -> bool {
        matches!(self, HookOutcome::Proceed)
    }
}

/// A hook over events of type `E`. Closures `Fn(&mut E) -> HookDecision` are hooks.
pub trait Hook<E>: Send + Sync {
    /// Inspects and may modify `event`.
    fn call(&self, event: &mut E) -> HookDecision;
}

impl<E, F> Hook<E> for F
where
    F: Fn(&mut E) -> HookDecision + Send + Sync,
{
    fn call(&self, event: &mut E) -> HookDecision {
        self(event)
    }
}

/// Name, phase and dependencies of a hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookSpec {
    name: String,
    phase: HookPhase,
    after: Vec<String>,
    before: Vec<String>,
}

impl HookSpec {
    /// A hook named `name` in `phase`, with no dependencies.
    pub fn new(name: impl Into<String>, phase: HookPhase) -> Self {
        Self {
            name: name.into(),
            phase,
            after: Vec::new(),
            before: Vec::new(),
        }
    }

    /// Runs after the hook named `other`.
    pub fn after(mut self, other: impl Into<String>) -> Self {
        self.after.push(other.into());
        self
    }

    /// Runs before the hook named `other`.
    pub fn before(mut self, other: impl Into<String>) -> Self {
        self.before.push(other.into());
        self
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Why the hooks could not be ordered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HookError {
    /// Two hooks share a name.
    #[error("duplicate hook name {name}")]
    Duplicate {
        /// The name.
        name: String,
    },
    /// A dependency names no registered hook.
    #[error("hook {hook} depends on unknown hook {dependency}")]
    UnknownDependency {
        /// The hook that declared it.
        hook: String,
        /// The missing name.
        dependency: String,
    },
    /// `first` must run before `then`, but `first` is in a later phase.
    #[error(
        "hook {first} ({first_phase:?}) must run before {then} ({then_phase:?}), but its phase is later"
    )]
    PhaseConflict {
        /// Hook that must run first.
        first: String,
        /// Its phase.
        first_phase: HookPhase,
        /// Hook that must run after it.
        then: String,
        /// Its phase.
        then_phase: HookPhase,
    },
    /// The dependencies form a cycle; `hooks` lists it in run-before order, first name repeated
    /// at the end.
    #[error("hook dependency cycle: {}", hooks.join(" -> "))]
    Cycle {
        /// The hooks in the cycle.
        hooks: Vec<String>,
    },
}

type Entry<E> = (HookSpec, Arc<dyn Hook<E>>);

/// Collects hooks; [`build`](Self::build) orders them.
pub struct HookRegistryBuilder<E> {
    hooks: Vec<Entry<E>>,
}

impl<E> fmt::Debug for HookRegistryBuilder<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.hooks.iter().map(|(s, _)| s))
            .finish()
    }
}

impl<E> Default for HookRegistryBuilder<E> {
    fn default() -> Self {
        Self { hooks: Vec::new() }
    }
}

impl<E> HookRegistryBuilder<E> {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a hook.
    pub fn register(mut self, spec: HookSpec, hook: impl Hook<E> + 'static) -> Self {
        self.hooks.push((spec, Arc::new(hook)));
        self
    }

    /// Orders the hooks: by phase, then a topological sort of the dependencies within the
    /// phase; ties keep registration order.
    ///
    /// # Errors
    /// [`HookError`]: a duplicate name, an unknown dependency, a dependency pointing to a later
    /// phase, or a cycle (named).
    pub fn build(self) -> Result<HookRegistry<E>, HookError> {
        let n = self.hooks.len();
        let mut index = HashMap::with_capacity(n);
        for (i, (spec, _)) in self.hooks.iter().enumerate() {
            if index.insert(spec.name.as_str(), i).is_some() {
                return Err(HookError::Duplicate {
                    name: spec.name.clone(),
                });
            }
        }
        // succ[a] holds b for every "a runs before b" inside one phase.
        let mut succ: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
        for (i, (spec, _)) in self.hooks.iter().enumerate() {
            let lookup = |dep: &String| {
                index
                    .get(dep.as_str())
                    .copied()
                    .ok_or_else(|| HookError::UnknownDependency {
                        hook: spec.name.clone(),
                        dependency: dep.clone(),
                    })
            };
            let edges = spec
                .after
                .iter()
                .map(|d| lookup(d).map(|j| (j, i)))
                .chain(spec.before.iter().map(|d| lookup(d).map(|j| (i, j))));
            for edge in edges {
                let (first, then) = edge?;
                let (fp, tp) = (self.hooks[first].0.phase, self.hooks[then].0.phase);
                if fp > tp {
                    return Err(HookError::PhaseConflict {
                        first: self.hooks[first].0.name.clone(),
                        first_phase: fp,
                        then: self.hooks[then].0.name.clone(),
                        then_phase: tp,
                    });
                }
                if fp == tp {
                    succ[first].insert(then);
                }
            }
        }
        let mut indeg = vec![0usize; n];
        for s in &succ {
            for &j in s {
                indeg[j] += 1;
            }
        }
        // Kahn's algorithm; the ready set is ordered by (phase, registration index).
        let key = |i: usize| (self.hooks[i].0.phase, i);
        let mut ready: BTreeSet<(HookPhase, usize)> =
            (0..n).filter(|&i| indeg[i] == 0).map(key).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(k) = ready.pop_first() {
            let i = k.1;
            order.push(i);
            for &j in &succ[i] {
                indeg[j] -= 1;
                if indeg[j] == 0 {
                    ready.insert(key(j));
                }
            }
        }
        if order.len() < n {
            return Err(HookError::Cycle {
                hooks: self.find_cycle(&succ, &indeg),
            });
        }
        let mut slots: Vec<Option<Entry<E>>> = self.hooks.into_iter().map(Some).collect();
        let hooks = order
            .into_iter()
            .filter_map(|i| slots[i].take())
            .map(|(spec, hook)| (spec.name, spec.phase, hook))
            .collect();
        Ok(HookRegistry { hooks })
    }

    /// Walks predecessors among the nodes Kahn could not place until one repeats.
    fn find_cycle(&self, succ: &[BTreeSet<usize>], indeg: &[usize]) -> Vec<String> {
        let stuck = |i: usize| indeg[i] > 0;
        let pred = |i: usize| (0..succ.len()).find(|&p| stuck(p) && succ[p].contains(&i));
        let Some(start) = (0..indeg.len()).find(|&i| stuck(i)) else {
            return Vec::new();
        };
        let mut path = vec![start];
        let mut cur = start;
        while let Some(p) = pred(cur) {
            if let Some(pos) = path.iter().position(|&x| x == p) {
                // path holds successors-first; the cycle is path[pos..] reversed, closed.
                let mut cycle: Vec<usize> = path[pos..].iter().rev().copied().collect();
                cycle.push(cycle[0]);
                return cycle
                    .into_iter()
                    .map(|i| self.hooks[i].0.name.clone())
                    .collect();
            }
            path.push(p);
            cur = p;
        }
        Vec::new()
    }
}

/// Hooks in run order. Cheap to share behind an `Arc`.
pub struct HookRegistry<E> {
    hooks: Vec<(String, HookPhase, Arc<dyn Hook<E>>)>,
}

impl<E> fmt::Debug for HookRegistry<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.hooks.iter().map(|(n, p, _)| (n, p)))
            .finish()
    }
}

impl<E> HookRegistry<E> {
    /// Starts a builder.
    pub fn builder() -> HookRegistryBuilder<E> {
        HookRegistryBuilder::new()
    }

    /// Hook names in run order.
    pub fn order(&self) -> Vec<&str> {
        self.hooks.iter().map(|(n, _, _)| n.as_str()).collect()
    }

    /// Runs every hook on `event` in order, stopping at the first veto.
    pub fn run(&self, event: &mut E) -> HookOutcome {
        for (name, _, hook) in &self.hooks {
            if let HookDecision::Veto(reason) = hook.call(event) {
                return HookOutcome::Vetoed {
                    hook: name.clone(),
                    reason,
                };
            }
        }
        HookOutcome::Proceed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noop(_: &mut Vec<String>) -> HookDecision {
        HookDecision::Continue
    }

    #[test]
    fn phases_then_dependencies_then_registration_order() {
        let reg = HookRegistry::<Vec<String>>::builder()
            .register(HookSpec::new("log", HookPhase::Late), noop)
            .register(HookSpec::new("c", HookPhase::Normal).after("b"), noop)
            .register(HookSpec::new("a", HookPhase::Normal), noop)
            .register(HookSpec::new("b", HookPhase::Normal), noop)
            .register(HookSpec::new("guard", HookPhase::Early).before("log"), noop)
            .register(HookSpec::new("d", HookPhase::Normal).before("a"), noop)
            .build()
            .unwrap();
        // Lowest registration index first among the ready hooks: b frees c before d is taken.
        assert_eq!(reg.order(), vec!["guard", "b", "c", "d", "a", "log"]);
    }

    #[test]
    fn cycle_is_named() {
        let err = HookRegistry::<Vec<String>>::builder()
            .register(HookSpec::new("free", HookPhase::Normal), noop)
            .register(HookSpec::new("x", HookPhase::Normal).after("z"), noop)
            .register(HookSpec::new("y", HookPhase::Normal).after("x"), noop)
            .register(HookSpec::new("z", HookPhase::Normal).after("y"), noop)
            .build()
            .unwrap_err();
        let HookError::Cycle { hooks } = &err else {
            panic!("{err}")
        };
        assert_eq!(hooks.len(), 4);
        assert_eq!(hooks.first(), hooks.last());
        let mut names: Vec<&str> = hooks[..3].iter().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, vec!["x", "y", "z"]);
        // Each arrow is a declared "runs before".
        let s = err.to_string();
        assert!(
            ["x -> y -> z -> x", "y -> z -> x -> y", "z -> x -> y -> z"]
                .iter()
                .any(|c| s.ends_with(c)),
            "{s}"
        );
    }

    #[test]
    fn self_dependency_is_a_cycle() {
        let err = HookRegistry::<Vec<String>>::builder()
            .register(HookSpec::new("me", HookPhase::Early).after("me"), noop)
            .build()
            .unwrap_err();
        assert_eq!(err.to_string(), "hook dependency cycle: me -> me");
    }

    #[test]
    fn bad_dependencies_are_errors() {
        let unknown = HookRegistry::<Vec<String>>::builder()
            .register(HookSpec::new("a", HookPhase::Normal).after("ghost"), noop)
            .build()
            .unwrap_err();
        assert_eq!(unknown.to_string(), "hook a depends on unknown hook ghost");
        let phase = HookRegistry::<Vec<String>>::builder()
            .register(HookSpec::new("late", HookPhase::Late), noop)
            .register(HookSpec::new("early", HookPhase::Early).after("late"), noop)
            .build()
            .unwrap_err();
        assert!(matches!(phase, HookError::PhaseConflict { .. }), "{phase}");
        let dup = HookRegistry::<Vec<String>>::builder()
            .register(HookSpec::new("a", HookPhase::Normal), noop)
            .register(HookSpec::new("a", HookPhase::Late), noop)
            .build()
            .unwrap_err();
        assert_eq!(dup, HookError::Duplicate { name: "a".into() });
    }

    #[test]
    fn hooks_modify_and_veto() {
        let reg = HookRegistry::<Vec<String>>::builder()
            .register(
                HookSpec::new("tag", HookPhase::Early),
                |e: &mut Vec<String>| {
                    e.push("tagged".into());
                    HookDecision::Continue
                },
            )
            .register(
                HookSpec::new("deny-rm", HookPhase::Normal),
                |e: &mut Vec<String>| {
                    if e.iter().any(|s| s == "rm -rf") {
                        HookDecision::Veto("destructive command".into())
                    } else {
                        HookDecision::Continue
                    }
                },
            )
            .register(
                HookSpec::new("never-after-veto", HookPhase::Late),
                |e: &mut Vec<String>| {
                    e.push("late".into());
                    HookDecision::Continue
                },
            )
            .build()
            .unwrap();
        let mut ok = vec!["ls".to_owned()];
        assert!(reg.run(&mut ok).is_proceed());
        assert_eq!(ok, vec!["ls", "tagged", "late"]);
        let mut bad = vec!["rm -rf".to_owned()];
        assert_eq!(
            reg.run(&mut bad),
            HookOutcome::Vetoed {
                hook: "deny-rm".into(),
                reason: "destructive command".into()
            }
        );
        assert_eq!(bad, vec!["rm -rf", "tagged"]);
    }
}
