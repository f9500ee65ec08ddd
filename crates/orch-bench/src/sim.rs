//! Benchmarks 1 and 2: the pipeline on the simulated backend.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use orch_agents::{
    AgentRole, Latency, Mission, MissionConfig, MissionReport, MissionSpec, MissionStatus,
    PolicyConfig, SimulatedBackend,
};

use crate::plans::{PlanItem, Shape, bound, dag, greedy_replay, handoff_gaps, plan_text, quantile};
use crate::{Recorder, Row, cpu_time, fmt_duration, peak_rss};

/// Items per mission in benchmarks 1 and 2.
pub const ITEMS: usize = 1_000;

/// A finished simulated mission and what was recorded.
#[derive(Debug)]
pub struct SimRun {
    /// The items of the plan.
    pub items: Vec<PlanItem>,
    /// The mission's report.
    pub report: MissionReport,
    /// The backend, with every turn recorded.
    pub backend: Arc<Recorder<SimulatedBackend>>,
    /// Wall time from `run()` to its return.
    pub makespan: Duration,
    /// CPU time of the process during the run.
    pub cpu: Duration,
    /// The recorder's clock when `run()` was called and when it returned.
    pub window: (Duration, Duration),
}

impl SimRun {
    /// Time from the end of the (last) Planner turn to the start of the first Worker turn,
    /// and from the end of the last turn to the mission's return.
    pub fn edges(&self) -> (Duration, Duration) {
        let records = self.backend.turns();
        let planned = records
            .iter()
            .filter(|t| t.role == AgentRole::Planner)
            .map(|t| t.end)
            .max()
            .unwrap_or(self.window.0);
        let first = records
            .iter()
            .filter(|t| t.role == AgentRole::Worker)
            .map(|t| t.start)
            .min()
            .unwrap_or(planned);
        let last = records.iter().map(|t| t.end).max().unwrap_or(self.window.1);
        (
            first.saturating_sub(planned),
            self.window.1.saturating_sub(last),
        )
    }
}

/// The mission configuration of the benchmarks: `slots` Workers and Reviewers, no integration
/// review, no fsync of the journal.
pub fn config(slots: usize) -> MissionConfig {
    MissionConfig {
        workers: slots,
        reviewers: slots,
        integration_review: false,
        journal_fsync: false,
        max_rounds: 1_000_000,
        turn_timeout: Duration::from_secs(120),
        policy: PolicyConfig::default(),
        ..MissionConfig::default()
    }
}

/// Runs one mission of `n` items of `shape` on `slots` slots in a project under `root`.
pub async fn run(
    root: &Path,
    shape: Shape,
    n: usize,
    slots: usize,
    latency: Latency,
    seed: u64,
) -> Result<SimRun, String> {
    let items = dag(shape, n);
    let backend = SimulatedBackend::builder()
        .latency(latency)
        .plan(plan_text(&items))
        .seed(seed)
        .build();
    let backend = Arc::new(Recorder::new(backend));
    let dir = tempfile::tempdir_in(root).map_err(|e| e.to_string())?;
    let mission = Mission::new(
        Arc::clone(&backend),
        MissionSpec::new("benchmark mission", dir.path()).config(config(slots)),
    );
    let cpu0 = cpu_time().unwrap_or_default();
    let started = std::time::Instant::now();
    let from = backend.clock();
    let report = mission.run().await.map_err(|e| e.to_string())?;
    let makespan = started.elapsed();
    let window = (from, backend.clock());
    let cpu = cpu_time().unwrap_or_default().saturating_sub(cpu0);
    if report.status != MissionStatus::Completed {
        return Err(format!("mission ended {:?}", report.status));
    }
    Ok(SimRun {
        items,
        report,
        backend,
        makespan,
        cpu,
        window,
    })
}

/// Items never reviewed, and items whose Worker or Reviewer turn ran more than once.
pub fn lost_and_twice(run: &SimRun) -> (usize, usize) {
    let counts = run.backend.counts();
    let (mut lost, mut twice) = (0, 0);
    for item in &run.items {
        let w = counts
            .get(&(AgentRole::Worker, item.id.clone()))
            .copied()
            .unwrap_or(0);
        let r = counts
            .get(&(AgentRole::Reviewer, item.id.clone()))
            .copied()
            .unwrap_or(0);
        if w == 0 || r == 0 {
            lost += 1;
        }
        if w > 1 || r > 1 {
            twice += 1;
        }
    }
    let done = run
        .report
        .items
        .iter()
        .filter(|i| i.state == "done")
        .count();
    lost += run.items.len().saturating_sub(done).saturating_sub(lost);
    (lost, twice)
}

/// The latency of benchmark 1: log-normal, median 100 ms, σ = 0.5.
pub const BENCH1_LATENCY: Latency = Latency::LogNormal {
    median: Duration::from_millis(100),
    sigma: 0.5,
};

/// Benchmark 1: makespan ÷ physical bound for three shapes on 50 slots, and the
/// orchestration overhead per turn.
pub async fn bench1(root: &Path, n: usize) -> Result<Vec<Row>, String> {
    let slots = 50;
    let mut rows = Vec::new();
    let shapes = [
        Shape::Wide,
        Shape::Chains { chains: 50 },
        Shape::Diamonds { width: 48 },
    ];
    let mut gaps = Vec::new();
    let (mut cpu, mut turns) = (Duration::ZERO, 0u64);
    for (i, shape) in shapes.into_iter().enumerate() {
        let run = run(root, shape, n, slots, BENCH1_LATENCY, 7 + i as u64).await?;
        let records = run.backend.turns();
        let b = bound(&run.items, &records, slots, slots);
        let ratio = run.makespan.as_secs_f64() / b.total().as_secs_f64();
        rows.push(
            Row::info(
                1,
                format!("makespan, {n} items, {}, 50 slots", shape.name()),
                fmt_duration(run.makespan),
            )
            .baseline(
                format!(
                    "bound {} (cp {}, work/slots {})",
                    fmt_duration(b.total()),
                    fmt_duration(b.critical_path),
                    fmt_duration(b.worker_work.max(b.reviewer_work))
                ),
                ratio,
            )
            .target("ratio ≤ 1.03", ratio <= 1.03),
        );
        let replay = greedy_replay(&run.items, &records, slots, slots);
        let vs_replay = run.makespan.as_secs_f64() / replay.as_secs_f64();
        rows.push(
            Row::info(
                1,
                format!(
                    "same, vs a zero-overhead online scheduler replaying the drawn latencies ({})",
                    shape.name()
                ),
                fmt_duration(run.makespan),
            )
            .baseline(format!("replay {}", fmt_duration(replay)), vs_replay)
            .target("ratio ≤ 1.03", vs_replay <= 1.03),
        );
        let (startup, winddown) = run.edges();
        rows.push(Row::info(
            1,
            format!(
                "{}: Planner turn end → first Worker turn / last turn end → mission returned",
                shape.name()
            ),
            format!("{} / {}", fmt_duration(startup), fmt_duration(winddown)),
        ));
        if matches!(shape, Shape::Chains { .. }) {
            gaps = handoff_gaps(&run.items, &records);
        }
        cpu += run.cpu;
        turns += records.len() as u64;
    }
    rows.push(overhead_row(&mut gaps, "project on disk"));
    // The same chains with the project on tmpfs: what is left without the store's fsyncs.
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && root != shm {
        let shape = Shape::Chains { chains: 50 };
        let run = run(shm, shape, n, slots, BENCH1_LATENCY, 8).await?;
        let records = run.backend.turns();
        let b = bound(&run.items, &records, slots, slots);
        let ratio = run.makespan.as_secs_f64() / b.total().as_secs_f64();
        rows.push(
            Row::info(
                1,
                format!("makespan, {n} items, {}, project on tmpfs", shape.name()),
                fmt_duration(run.makespan),
            )
            .baseline(format!("bound {}", fmt_duration(b.total())), ratio)
            .target("ratio ≤ 1.03", ratio <= 1.03),
        );
        let mut gaps = handoff_gaps(&run.items, &records);
        rows.push(overhead_row(&mut gaps, "project on tmpfs"));
    }
    rows.push(Row::info(
        1,
        "CPU time per turn (all three missions)",
        fmt_duration(cpu / turns.max(1) as u32),
    ));
    Ok(rows)
}

fn overhead_row(gaps: &mut [Duration], place: &str) -> Row {
    let median = quantile(gaps, 0.5);
    let p99 = quantile(gaps, 0.99);
    let mut row = Row::info(
        1,
        format!("orchestration overhead per turn (handoff gap, 50 chains, {place}): median"),
        fmt_duration(median),
    )
    .target("< 200 µs median", median < Duration::from_micros(200));
    row.baseline = format!("p99 {}", fmt_duration(p99));
    row
}

/// Benchmark 2: `n` concurrent sessions (`n` Worker and `n` Reviewer slots, `n` independent
/// items, turns of about 1 s so that every item is in flight at once).
pub async fn bench2(root: &Path, n: usize) -> Result<Vec<Row>, String> {
    let latency = Latency::LogNormal {
        median: Duration::from_secs(1),
        sigma: 0.2,
    };
    let rss0 = crate::current_rss().unwrap_or_default();
    let run = run(root, Shape::Wide, n, n, latency, 11).await?;
    let peak = peak_rss().unwrap_or_default();
    let turns = run.backend.turns().len() as u64;
    let (lost, twice) = lost_and_twice(&run);
    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    Ok(vec![
        Row::info(
            2,
            format!("peak RSS, {n} concurrent simulated sessions"),
            format!("{:.1} MB", mb(peak)),
        )
        .baseline(format!("{:.1} MB before the mission", mb(rss0)), 0.0)
        .target("< 100 MB", mb(peak) < 100.0),
        Row::info(
            2,
            "peak concurrent turns / open sessions",
            format!(
                "{} / {}",
                run.backend.peak_in_flight(),
                run.backend.peak_open_sessions()
            ),
        )
        .target(
            format!("{n} turns at once"),
            run.backend.peak_in_flight() >= n as u64,
        ),
        Row::info(
            2,
            "CPU time per turn (1,000 sessions)",
            fmt_duration(run.cpu / turns.max(1) as u32),
        )
        .baseline(
            format!(
                "{} CPU over {turns} turns, {} wall",
                fmt_duration(run.cpu),
                fmt_duration(run.makespan)
            ),
            0.0,
        ),
        Row::info(
            2,
            "items lost / run twice",
            format!("{lost} / {twice} of {n}"),
        )
        .target("0 / 0", lost == 0 && twice == 0),
    ]
    .into_iter()
    .map(|mut r| {
        if r.ratio == Some(0.0) {
            r.ratio = None;
        }
        r
    })
    .collect())
}
