//! Behaviour of the affinity lane scheduler: placement, stealing, closing, async consumers.
#![cfg(not(loom))]

use std::collections::HashSet;
use std::time::Duration;

use orch_queue::{LaneOrder, LaneScheduler, LaneSchedulerBuilder, Origin, Placement};

#[test]
fn follow_up_with_a_shared_key_goes_to_the_lane_that_ran_the_key() {
    let (sched, mut lanes) = LaneScheduler::<&str, u32>::new(3).unwrap();
    sched.push(0).unwrap(); // lane 0 (least loaded, cursor 0)
    sched.push_with_affinity(["src/a.rs"], 1).unwrap(); // lane 1
    let first = lanes[1].try_next().unwrap();
    assert_eq!(first.task, 1);
    assert_eq!(first.placement, Placement::Cold);
    assert_eq!(sched.warm_lane(&"src/a.rs"), Some(lanes[1].id()));
    // Follow-up: shares one of two keys; the other key is unknown.
    sched
        .push_with_affinity(["src/b.rs", "src/a.rs"], 2)
        .unwrap();
    let follow = lanes[1].try_next().unwrap();
    assert_eq!(follow.task, 2);
    assert_eq!(follow.placement, Placement::Warm);
    assert!(follow.ran_warm());
    assert_eq!(sched.warm_lane(&"src/b.rs"), Some(follow.lane));
    assert_eq!(sched.stats().warm_hit_ratio(), 1.0);
}

#[test]
fn idle_lane_steals_the_oldest_task_of_the_busiest_lane() {
    let (sched, mut lanes) = LaneScheduler::<&str, u32>::new(3).unwrap();
    for t in 0..3 {
        sched.push_with_affinity(["x"], t).unwrap(); // all on lane 0
    }
    sched.push_with_affinity(["y"], 10).unwrap(); // lane 1
    assert_eq!(sched.stats().lanes[0].queued, 3);
    let stolen = lanes[2].try_next().unwrap();
    assert_eq!(stolen.task, 0, "the oldest task of lane 0");
    assert_eq!(
        stolen.origin,
        Origin::Stolen {
            from: lanes[0].id()
        }
    );
    assert!(!stolen.ran_warm());
    // The key now counts as warm on the thief.
    assert_eq!(sched.warm_lane(&"x"), Some(lanes[2].id()));
    let stats = sched.stats();
    assert_eq!(stats.lanes[2].stolen_in, 1);
    assert_eq!(stats.lanes[0].stolen_out, 1);
    assert_eq!(stats.steals(), 1);
}

#[test]
fn steal_threshold_keeps_short_queues_with_their_warm_lane() {
    let (sched, mut lanes) = LaneSchedulerBuilder::new(2)
        .steal_threshold(3)
        .build::<u8, u32>()
        .unwrap();
    sched.push_with_affinity([1], 0).unwrap();
    sched.push_with_affinity([1], 1).unwrap();
    assert!(
        lanes[1].try_next().is_none(),
        "two queued is under the threshold"
    );
    sched.push_with_affinity([1], 2).unwrap();
    assert_eq!(lanes[1].try_next().unwrap().task, 0);
}

#[test]
fn lifo_order_takes_the_newest_own_task_first() {
    let (sched, mut lanes) = LaneSchedulerBuilder::new(1)
        .order(LaneOrder::Lifo)
        .build::<u8, u32>()
        .unwrap();
    for t in 0..3 {
        sched.push(t).unwrap();
    }
    let got: Vec<_> = (0..3).map(|_| lanes[0].try_next().unwrap().task).collect();
    assert_eq!(got, vec![2, 1, 0]);
}

#[test]
fn closing_a_lane_moves_its_tasks_and_forgets_its_keys() {
    let (sched, mut lanes) = LaneScheduler::<&str, u32>::new(2).unwrap();
    sched.push_with_affinity(["k"], 0).unwrap();
    sched.push_with_affinity(["k"], 1).unwrap();
    let lane0 = lanes.remove(0);
    assert_eq!(sched.warm_lane(&"k"), Some(lane0.id()));
    lane0.close();
    // Both tasks were re-placed on lane 1; the first became cold there, the second warm.
    assert_eq!(sched.stats().requeued, 2);
    assert_eq!(sched.warm_lane(&"k"), Some(lanes[0].id()));
    assert_eq!(lanes[0].try_next().unwrap().task, 0);
    assert_eq!(lanes[0].try_next().unwrap().task, 1);
    drop(lanes);
    let err = sched.push(5).unwrap_err();
    assert_eq!(err.reason(), "every lane is closed");
    assert_eq!(err.into_inner(), 5);
}

#[test]
fn tasks_of_the_last_closed_lane_become_unassigned() {
    let (sched, lanes) = LaneScheduler::<u8, u32>::new(1).unwrap();
    sched.push(7).unwrap();
    drop(lanes);
    assert_eq!(sched.take_unassigned(), vec![7]);
    assert!(sched.take_unassigned().is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn next_waits_for_a_push_and_ends_after_close() {
    let (sched, mut lanes) = LaneScheduler::<u8, &str>::new(1).unwrap();
    let mut lane = lanes.pop().unwrap();
    let producer = {
        let sched = sched.clone();
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            sched.push("hello").unwrap();
            sched.close();
        })
    };
    assert_eq!(lane.next().await.map(|a| a.task), Some("hello"));
    assert!(lane.next().await.is_none());
    producer.await.unwrap();
    assert_eq!(
        sched.push("late").unwrap_err().reason(),
        "lane scheduler is closed"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn dropping_a_pending_next_loses_no_task() {
    let (sched, mut lanes) = LaneScheduler::<u8, u32>::new(2).unwrap();
    let mut lane = lanes.remove(0);
    assert!(
        tokio::time::timeout(Duration::from_millis(10), lane.next())
            .await
            .is_err()
    );
    sched.push(1).unwrap();
    let got = lane.next().await.unwrap();
    assert_eq!(got.task, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_async_consumers_take_every_task_exactly_once() {
    let (sched, lanes) = LaneScheduler::<u16, u32>::new(4).unwrap();
    let consumers: Vec<_> = lanes
        .into_iter()
        .map(|mut lane| {
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(a) = lane.next().await {
                    if a.task % 7 == 0 {
                        tokio::task::yield_now().await;
                    }
                    got.push(a.task);
                }
                got
            })
        })
        .collect();
    let n = 20_000u32;
    for t in 0..n {
        let key = (t % 97) as u16;
        sched.push_with_affinity([key], t).unwrap();
        if t % 1000 == 0 {
            tokio::task::yield_now().await;
        }
    }
    sched.close();
    let mut all = Vec::new();
    for c in consumers {
        let got = tokio::time::timeout(Duration::from_secs(30), c)
            .await
            .unwrap()
            .unwrap();
        all.extend(got);
    }
    assert_eq!(all.len(), n as usize);
    let unique: HashSet<_> = all.iter().copied().collect();
    assert_eq!(unique.len(), n as usize);
    let stats = sched.stats();
    assert_eq!(stats.pushed, u64::from(n));
    assert_eq!(
        stats.lanes.iter().map(|l| l.taken).sum::<u64>(),
        u64::from(n)
    );
}
