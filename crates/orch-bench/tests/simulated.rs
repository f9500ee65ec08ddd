//! The benchmark harness on small simulated missions: the bound holds, nothing is lost.

use std::time::Duration;

use orch_agents::Latency;
use orch_bench::plans::{Shape, bound, handoff_gaps};
use orch_bench::sim::{lost_and_twice, run};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("runtime")
}

#[test]
fn no_run_beats_the_physical_bound_and_nothing_is_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    for shape in [
        Shape::Wide,
        Shape::Chains { chains: 4 },
        Shape::Diamonds { width: 3 },
    ] {
        let run = rt()
            .block_on(run(
                dir.path(),
                shape,
                30,
                4,
                Latency::Fixed(Duration::from_millis(3)),
                1,
            ))
            .expect("mission completes");
        let turns = run.backend.turns();
        // One Planner turn, then one Worker and one Reviewer turn per item.
        assert_eq!(turns.len(), 1 + 2 * 30, "{shape:?}");
        assert_eq!(lost_and_twice(&run), (0, 0), "{shape:?}");
        let b = bound(&run.items, &turns, 4, 4);
        assert!(b.total() > Duration::ZERO);
        assert!(
            run.makespan >= b.total(),
            "{shape:?}: {:?} < {b:?}",
            run.makespan
        );
        let gaps = handoff_gaps(&run.items, &turns);
        assert!(gaps.len() >= 30, "{shape:?}: {} gaps", gaps.len());
    }
}

#[test]
fn concurrency_reaches_the_slot_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = rt()
        .block_on(run(
            dir.path(),
            Shape::Wide,
            40,
            40,
            Latency::Fixed(Duration::from_millis(200)),
            2,
        ))
        .expect("mission completes");
    assert_eq!(run.backend.peak_in_flight(), 40);
    assert_eq!(lost_and_twice(&run), (0, 0));
}

#[test]
fn a_multi_server_backend_needs_a_server() {
    let err = orch_bench::MultiBackend::new(Vec::<orch_agents::AnyOpencode>::new())
        .expect_err("no servers");
    assert!(err.to_string().contains("at least one server"), "{err}");
}
