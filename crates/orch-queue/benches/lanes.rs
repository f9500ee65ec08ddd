//! Affinity lane scheduler benchmarks.
//!
//! * `affinity_makespan`: a simulated agent workload on tokio's paused clock. 50 file groups,
//!   each a chain of 5 tasks; a follow-up is pushed when its predecessor finishes and carries
//!   the group's file as affinity key. A task's own work takes 0.5 to 1.5 s (fixed per task),
//!   plus 3 s when its lane did not run its key last (cold: the session must load the files
//!   again). 4 lanes. The reported
//!   "time" is the **virtual makespan** of one run (via `iter_custom`), so criterion shows the
//!   lane scheduler and a plain FIFO queue side by side; the warm fractions are printed once.
//! * `lane_overhead`: real time to push 10 000 keyed tasks and drain them through 4 lanes
//!   (synchronous `try_next`), vs a `Mutex<VecDeque>` FIFO.
#![cfg(not(loom))]

use std::collections::{HashMap, VecDeque};
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use orch_queue::LaneScheduler;
use tokio::sync::Notify;

const LANES: usize = 4;
const GROUPS: usize = 50;
const CHAIN: usize = 5;
const COLD_PENALTY: Duration = Duration::from_secs(3);

/// The task's own work: 0.5 s to 1.5 s, fixed per (group, step).
fn work(job: Job) -> Duration {
    Duration::from_millis(500 + ((job.group * 7 + job.step * 13) % 11) as u64 * 100)
}

#[derive(Clone, Copy)]
struct Job {
    group: usize,
    step: usize,
}

/// Which lane last ran each key, as the sessions themselves experience it.
#[derive(Default)]
struct Contexts {
    last: HashMap<usize, usize>,
    warm_runs: usize,
    follow_ups: usize,
}

impl Contexts {
    fn cost(&mut self, lane: usize, job: Job) -> Duration {
        let warm = self.last.get(&job.group) == Some(&lane);
        if job.step > 0 {
            self.follow_ups += 1;
            if warm {
                self.warm_runs += 1;
            }
        }
        self.last.insert(job.group, lane);
        if warm {
            work(job)
        } else {
            work(job) + COLD_PENALTY
        }
    }
}

struct Outcome {
    makespan: Duration,
    warm_fraction: f64,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

fn simulate_lanes(steal_threshold: usize) -> Outcome {
    runtime().block_on(async move {
        let (sched, lanes) = orch_queue::LaneSchedulerBuilder::new(LANES)
            .steal_threshold(steal_threshold)
            .build::<usize, Job>()
            .unwrap();
        let ctx = Arc::new(Mutex::new(Contexts::default()));
        let done = Arc::new(Mutex::new(0usize));
        let start = tokio::time::Instant::now();
        for group in 0..GROUPS {
            sched
                .push_with_affinity([group], Job { group, step: 0 })
                .unwrap();
        }
        let workers: Vec<_> = lanes
            .into_iter()
            .map(|mut lane| {
                let (sched, ctx, done) = (sched.clone(), Arc::clone(&ctx), Arc::clone(&done));
                tokio::spawn(async move {
                    while let Some(a) = lane.next().await {
                        let job = a.task;
                        let cost = ctx.lock().unwrap().cost(lane.id().index(), job);
                        tokio::time::sleep(cost).await;
                        if job.step + 1 < CHAIN {
                            let next = Job {
                                group: job.group,
                                step: job.step + 1,
                            };
                            sched.push_with_affinity([job.group], next).unwrap();
                        }
                        let mut d = done.lock().unwrap();
                        *d += 1;
                        if *d == GROUPS * CHAIN {
                            sched.close();
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.await.unwrap();
        }
        let ctx = ctx.lock().unwrap();
        Outcome {
            makespan: start.elapsed(),
            warm_fraction: ctx.warm_runs as f64 / ctx.follow_ups as f64,
        }
    })
}

fn simulate_fifo() -> Outcome {
    runtime().block_on(async move {
        let queue = Arc::new((Mutex::new((VecDeque::new(), false)), Notify::new()));
        let ctx = Arc::new(Mutex::new(Contexts::default()));
        let done = Arc::new(Mutex::new(0usize));
        let start = tokio::time::Instant::now();
        {
            let mut q = queue.0.lock().unwrap();
            for group in 0..GROUPS {
                q.0.push_back(Job { group, step: 0 });
            }
        }
        let workers: Vec<_> = (0..LANES)
            .map(|lane| {
                let (queue, ctx, done) = (Arc::clone(&queue), Arc::clone(&ctx), Arc::clone(&done));
                tokio::spawn(async move {
                    loop {
                        let job = loop {
                            let notified = queue.1.notified();
                            {
                                let mut q = queue.0.lock().unwrap();
                                if let Some(j) = q.0.pop_front() {
                                    break Some(j);
                                }
                                if q.1 {
                                    break None;
                                }
                            }
                            notified.await;
                        };
                        let Some(job) = job else { return };
                        let cost = ctx.lock().unwrap().cost(lane, job);
                        tokio::time::sleep(cost).await;
                        {
                            let mut q = queue.0.lock().unwrap();
                            if job.step + 1 < CHAIN {
                                q.0.push_back(Job {
                                    group: job.group,
                                    step: job.step + 1,
                                });
                            }
                            let mut d = done.lock().unwrap();
                            *d += 1;
                            if *d == GROUPS * CHAIN {
                                q.1 = true;
                            }
                        }
                        queue.1.notify_waiters();
                    }
                })
            })
            .collect();
        for w in workers {
            w.await.unwrap();
        }
        let ctx = ctx.lock().unwrap();
        Outcome {
            makespan: start.elapsed(),
            warm_fraction: ctx.warm_runs as f64 / ctx.follow_ups as f64,
        }
    })
}

fn affinity_makespan(c: &mut Criterion) {
    let total_work: Duration = (0..GROUPS)
        .flat_map(|group| (0..CHAIN).map(move |step| work(Job { group, step })))
        .sum();
    // Every first task is cold; the rest could be warm.
    let ideal = (total_work + COLD_PENALTY * GROUPS as u32) / LANES as u32;
    for (name, outcome) in [
        ("lanes_threshold_1", simulate_lanes(1)),
        ("lanes_threshold_2", simulate_lanes(2)),
        ("fifo", simulate_fifo()),
    ] {
        eprintln!(
            "affinity_makespan/{name}: makespan {:?} (lower bound {:?}), follow-ups on warm lane {:.1}%",
            outcome.makespan,
            ideal,
            outcome.warm_fraction * 100.0
        );
    }
    let mut g = c.benchmark_group("affinity_makespan");
    g.sample_size(10);
    g.bench_function(BenchmarkId::new("lane_scheduler", "threshold_1"), |b| {
        b.iter_custom(|iters| (0..iters).map(|_| simulate_lanes(1).makespan).sum())
    });
    g.bench_function(BenchmarkId::new("lane_scheduler", "threshold_2"), |b| {
        b.iter_custom(|iters| (0..iters).map(|_| simulate_lanes(2).makespan).sum())
    });
    g.bench_function(BenchmarkId::new("fifo_queue", "shared"), |b| {
        b.iter_custom(|iters| (0..iters).map(|_| simulate_fifo().makespan).sum())
    });
    g.finish();
}

fn lane_overhead(c: &mut Criterion) {
    const N: usize = 10_000;
    let mut g = c.benchmark_group("lane_overhead");
    g.throughput(criterion::Throughput::Elements(N as u64));
    g.bench_function(BenchmarkId::new("lane_scheduler", N), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (sched, mut lanes) = LaneScheduler::<u32, u32>::new(LANES).unwrap();
                let start = Instant::now();
                for t in 0..N as u32 {
                    sched.push_with_affinity([t % 64], t).unwrap();
                }
                let mut left = N;
                while left > 0 {
                    for lane in &mut lanes {
                        if let Some(a) = lane.try_next() {
                            black_box(a.task);
                            left -= 1;
                        }
                    }
                }
                total += start.elapsed();
            }
            total
        })
    });
    g.bench_function(BenchmarkId::new("mutex_vecdeque_fifo", N), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let q = Mutex::new(VecDeque::new());
                let start = Instant::now();
                for t in 0..N as u32 {
                    q.lock().unwrap().push_back((t % 64, t));
                }
                let mut left = N;
                while left > 0 {
                    for _lane in 0..LANES {
                        if let Some(t) = q.lock().unwrap().pop_front() {
                            black_box(t);
                            left -= 1;
                        }
                    }
                }
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, affinity_makespan, lane_overhead);
criterion_main!(benches);
