//! Task priorities and the starvation guard that keeps LOW work moving.

/// The priority a task is spawned with on a [`WorkStealingPool`](crate::WorkStealingPool)
/// ([`spawn_with_priority`](crate::WorkStealingPool::spawn_with_priority),
/// [`spawn_batch`](crate::WorkStealingPool::spawn_batch)).
///
/// It picks the global injector queue the task waits in; it is a dequeue preference, not
/// preemption. (Not to be confused with `orch_core::Priority`, the priority of a wait for a
/// concurrency slot.)
///
/// Each priority has its own global injector queue. A worker whose local deque is empty polls
/// the injectors in the order HIGH, NORMAL, LOW, except on guard polls (see
/// [`PoolBuilder::fairness_interval`](crate::PoolBuilder::fairness_interval)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum SpawnPriority {
    /// Latency-sensitive work, served first.
    High,
    /// The default.
    #[default]
    Normal,
    /// Background work; guaranteed a share of injector polls by the starvation guard.
    Low,
}

impl SpawnPriority {
    /// All priorities, highest first.
    pub const ALL: [SpawnPriority; 3] = [Self::High, Self::Normal, Self::Low];

    /// Position in [`SpawnPriority::ALL`] (HIGH = 0, NORMAL = 1, LOW = 2).
    pub fn index(self) -> usize {
        match self {
            SpawnPriority::High => 0,
            SpawnPriority::Normal => 1,
            SpawnPriority::Low => 2,
        }
    }
}

/// The injector poll order for a worker's `tick`-th injector poll.
///
/// Policy: normally HIGH, NORMAL, LOW. Every `interval`-th poll is a guard poll; guard polls
/// alternate between LOW-first (LOW, NORMAL, HIGH) and NORMAL-first (NORMAL, LOW, HIGH). So
/// while LOW (or NORMAL) work is queued, each worker takes it at least once in every
/// `2 * interval` injector polls, however fast HIGH work arrives.
pub(crate) fn poll_order(tick: u32, interval: u32) -> [usize; 3] {
    if interval != 0 && tick.is_multiple_of(interval) {
        if (tick / interval) % 2 == 1 {
            [2, 1, 0]
        } else {
            [1, 2, 0]
        }
    } else {
        [0, 1, 2]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_polls_put_low_first_once_every_two_intervals() {
        let interval = 4;
        let low_first = (1..=80)
            .filter(|&t| poll_order(t, interval)[0] == 2)
            .count();
        let normal_first = (1..=80)
            .filter(|&t| poll_order(t, interval)[0] == 1)
            .count();
        assert_eq!(low_first, 10);
        assert_eq!(normal_first, 10);
        assert_eq!(poll_order(1, interval), [0, 1, 2]);
    }

    #[test]
    fn index_matches_all_order() {
        for (i, p) in SpawnPriority::ALL.iter().enumerate() {
            assert_eq!(p.index(), i);
        }
    }
}
