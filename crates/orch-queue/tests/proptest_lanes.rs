//! Property: the lane scheduler state machine delivers every accepted task exactly once, and
//! steals only the oldest task of a busiest lane when the thief's own queue is empty.
#![cfg(not(loom))]

use std::collections::HashSet;

use orch_queue::{Lane, LaneOrder, LaneSchedulerBuilder, Origin, Placement};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Push(Vec<u8>),
    TryNext(usize),
    CloseLane(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => prop::collection::vec(0u8..6, 0..3).prop_map(Op::Push),
        3 => (0usize..4).prop_map(Op::TryNext),
        1 => (0usize..4).prop_map(Op::CloseLane),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_accepted_task_is_delivered_exactly_once(
        lanes_n in 1usize..5,
        lifo in any::<bool>(),
        threshold in 1usize..3,
        ops in prop::collection::vec(op(), 0..120),
    ) {
        let order = if lifo { LaneOrder::Lifo } else { LaneOrder::Fifo };
        let (sched, lanes) = LaneSchedulerBuilder::new(lanes_n)
            .order(order)
            .steal_threshold(threshold)
            .build::<u8, u32>()
            .unwrap();
        let mut lanes: Vec<Option<Lane<u8, u32>>> = lanes.into_iter().map(Some).collect();
        let mut accepted = HashSet::new();
        let mut delivered = Vec::new();
        let mut next = 0u32;
        for op in ops {
            match op {
                Op::Push(keys) => {
                    let warm_before: Vec<_> = keys.iter().filter_map(|k| sched.warm_lane(k)).collect();
                    let before = sched.stats();
                    match sched.push_with_affinity(keys.clone(), next) {
                        Ok(_) => {
                            accepted.insert(next);
                            let after = sched.stats();
                            let target = (0..lanes_n)
                                .find(|&i| after.lanes[i].queued == before.lanes[i].queued + 1)
                                .unwrap();
                            if warm_before.is_empty() {
                                // Cold: a least-loaded open lane.
                                let load = |i: usize| before.lanes[i].queued + usize::from(before.lanes[i].busy);
                                let min = (0..lanes_n).filter(|&i| before.lanes[i].open).map(load).min().unwrap();
                                prop_assert_eq!(load(target), min);
                            } else {
                                prop_assert!(warm_before.iter().any(|l| l.index() == target));
                            }
                        }
                        Err(e) => prop_assert_eq!(e.into_inner(), next),
                    }
                    next += 1;
                }
                Op::TryNext(i) => {
                    let i = i % lanes_n;
                    let before = sched.stats();
                    if let Some(lane) = lanes[i].as_mut() {
                        if let Some(a) = lane.try_next() {
                            match a.origin {
                                Origin::Own => prop_assert!(before.lanes[i].queued > 0),
                                Origin::Stolen { from } => {
                                    prop_assert_eq!(before.lanes[i].queued, 0);
                                    let max = before.lanes.iter().map(|l| l.queued).max().unwrap();
                                    prop_assert_eq!(before.lanes[from.index()].queued, max);
                                    prop_assert!(max >= threshold);
                                    prop_assert_ne!(a.placement == Placement::Warm && a.ran_warm(), true);
                                }
                            }
                            prop_assert_eq!(a.lane, lane.id());
                            delivered.push(a.task);
                        } else {
                            prop_assert!(before.lanes[i].queued == 0);
                        }
                    }
                }
                Op::CloseLane(i) => {
                    lanes[i % lanes_n] = None;
                }
            }
        }
        // Drain: close, then let every remaining lane take until empty.
        sched.close();
        for lane in lanes.iter_mut().flatten() {
            while let Some(a) = lane.try_next() {
                delivered.push(a.task);
            }
        }
        delivered.extend(sched.take_unassigned());
        let unique: HashSet<_> = delivered.iter().copied().collect();
        prop_assert_eq!(unique.len(), delivered.len(), "a task was delivered twice");
        prop_assert_eq!(unique, accepted);
    }
}
