//! Thread-pool benchmarks, each group side by side with its baselines:
//!
//! * `fine_grained/<threads>`: 100 000 tiny independent tasks submitted from the bench thread,
//!   then a wait for all of them; orch-queue vs a `Mutex<VecDeque>` + `Condvar` pool, a
//!   crossbeam-channel pool, and raw crossbeam-deque worker loops (spinning, no parking).
//!   Every variant boxes its tasks the same way and uses the same completion latch.
//!   `orch_queue_spawn_batch` submits the same tasks through `spawn_batch`.
//! * `spawn_from_task/2`: one root task spawns 100 000 tasks from inside the pool.
//! * `fork_join_tree_sum`: recursive binary tree sum with `join`, orch-queue vs rayon.
#![cfg(not(loom))]

use std::collections::VecDeque;
use std::hint::black_box;
use std::iter;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use crossbeam_deque::{Injector, Stealer, Worker};
use crossbeam_utils::Backoff;
use orch_queue::{SpawnPriority, WorkStealingPool};

type Job = Box<dyn FnOnce() + Send + 'static>;

const TASKS: usize = 100_000;

/// Counts tasks down and unparks the waiting bench thread at zero.
struct Done {
    left: AtomicUsize,
    waiter: Thread,
}

impl Done {
    fn new(n: usize) -> Arc<Self> {
        Arc::new(Self {
            left: AtomicUsize::new(n),
            waiter: thread::current(),
        })
    }
    fn hit(&self) {
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.waiter.unpark();
        }
    }
    fn wait(&self) {
        while self.left.load(Ordering::Acquire) != 0 {
            thread::park();
        }
    }
}

fn tiny_task(done: &Arc<Done>, i: usize) -> Job {
    let done = Arc::clone(done);
    Box::new(move || {
        black_box(i.wrapping_mul(31));
        done.hit();
    })
}

/// Baseline 1: one `Mutex<VecDeque>` shared by all workers, `Condvar` for idle workers.
type MutexShared = Arc<(Mutex<(VecDeque<Job>, bool)>, Condvar)>;

struct MutexPool {
    shared: MutexShared,
    threads: Vec<JoinHandle<()>>,
}

impl MutexPool {
    fn new(n: usize) -> Self {
        let shared: MutexShared = Arc::new((Mutex::new((VecDeque::new(), false)), Condvar::new()));
        let threads = (0..n)
            .map(|_| {
                let shared = Arc::clone(&shared);
                thread::spawn(move || {
                    let (lock, cv) = &*shared;
                    loop {
                        let job = {
                            let mut g = lock.lock().unwrap();
                            loop {
                                if let Some(j) = g.0.pop_front() {
                                    break j;
                                }
                                if g.1 {
                                    return;
                                }
                                g = cv.wait(g).unwrap();
                            }
                        };
                        job();
                    }
                })
            })
            .collect();
        Self { shared, threads }
    }
    fn spawn(&self, job: Job) {
        mutex_push(&self.shared, job);
    }
}

fn mutex_push(shared: &MutexShared, job: Job) {
    let (lock, cv) = &**shared;
    lock.lock().unwrap().0.push_back(job);
    cv.notify_one();
}

impl Drop for MutexPool {
    fn drop(&mut self) {
        self.shared.0.lock().unwrap().1 = true;
        self.shared.1.notify_all();
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
    }
}

/// Baseline 2: workers blocking on one crossbeam-channel receiver.
struct ChannelPool {
    tx: Option<crossbeam_channel::Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl ChannelPool {
    fn new(n: usize) -> Self {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let threads = (0..n)
            .map(|_| {
                let rx = rx.clone();
                thread::spawn(move || {
                    for job in rx {
                        job();
                    }
                })
            })
            .collect();
        Self {
            tx: Some(tx),
            threads,
        }
    }
    fn spawn(&self, job: Job) {
        if let Some(tx) = &self.tx {
            tx.send(job).unwrap();
        }
    }
}

impl Drop for ChannelPool {
    fn drop(&mut self) {
        self.tx = None;
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
    }
}

/// Baseline 3: the crossbeam-deque documentation loop (injector + local deques + stealers),
/// one priority, workers spin with `Backoff` instead of parking.
struct RawDeque {
    injector: Arc<Injector<Job>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

fn find_task(
    local: &Worker<Job>,
    global: &Injector<Job>,
    stealers: &[Stealer<Job>],
) -> Option<Job> {
    local.pop().or_else(|| {
        iter::repeat_with(|| {
            global
                .steal_batch_and_pop(local)
                .or_else(|| stealers.iter().map(|s| s.steal()).collect())
        })
        .find(|s| !s.is_retry())
        .and_then(|s| s.success())
    })
}

impl RawDeque {
    fn new(n: usize) -> Self {
        let injector = Arc::new(Injector::new());
        let stop = Arc::new(AtomicBool::new(false));
        let locals: Vec<Worker<Job>> = (0..n).map(|_| Worker::new_lifo()).collect();
        let stealers: Arc<Vec<Stealer<Job>>> =
            Arc::new(locals.iter().map(Worker::stealer).collect());
        let threads = locals
            .into_iter()
            .map(|local| {
                let (injector, stop, stealers) = (
                    Arc::clone(&injector),
                    Arc::clone(&stop),
                    Arc::clone(&stealers),
                );
                thread::spawn(move || {
                    let backoff = Backoff::new();
                    while !stop.load(Ordering::Relaxed) {
                        match find_task(&local, &injector, &stealers) {
                            Some(job) => {
                                job();
                                backoff.reset();
                            }
                            None => backoff.snooze(),
                        }
                    }
                })
            })
            .collect();
        Self {
            injector,
            stop,
            threads,
        }
    }
    fn spawn(&self, job: Job) {
        self.injector.push(job);
    }
}

impl Drop for RawDeque {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
    }
}

fn timed(iters: u64, mut round: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        round();
    }
    start.elapsed()
}

fn fine_grained(c: &mut Criterion) {
    for threads in [1usize, 2] {
        let mut g = c.benchmark_group(format!("fine_grained/{threads}"));
        g.throughput(Throughput::Elements(TASKS as u64));
        g.sample_size(20);

        g.bench_function(BenchmarkId::new("orch_queue", TASKS), |b| {
            let pool = WorkStealingPool::new(threads).unwrap();
            b.iter_custom(|iters| {
                timed(iters, || {
                    let done = Done::new(TASKS);
                    for i in 0..TASKS {
                        let done = Arc::clone(&done);
                        pool.spawn(move || {
                            black_box(i.wrapping_mul(31));
                            done.hit();
                        })
                        .unwrap();
                    }
                    done.wait();
                })
            });
        });
        g.bench_function(BenchmarkId::new("orch_queue_spawn_batch", TASKS), |b| {
            let pool = WorkStealingPool::new(threads).unwrap();
            b.iter_custom(|iters| {
                timed(iters, || {
                    let done = Done::new(TASKS);
                    let tasks = (0..TASKS).map(|i| {
                        let done = Arc::clone(&done);
                        move || {
                            black_box(i.wrapping_mul(31));
                            done.hit();
                        }
                    });
                    pool.spawn_batch(SpawnPriority::Normal, tasks).unwrap();
                    done.wait();
                })
            });
        });
        g.bench_function(BenchmarkId::new("mutex_condvar", TASKS), |b| {
            let pool = MutexPool::new(threads);
            b.iter_custom(|iters| {
                timed(iters, || {
                    let done = Done::new(TASKS);
                    for i in 0..TASKS {
                        pool.spawn(tiny_task(&done, i));
                    }
                    done.wait();
                })
            });
        });
        g.bench_function(BenchmarkId::new("crossbeam_channel", TASKS), |b| {
            let pool = ChannelPool::new(threads);
            b.iter_custom(|iters| {
                timed(iters, || {
                    let done = Done::new(TASKS);
                    for i in 0..TASKS {
                        pool.spawn(tiny_task(&done, i));
                    }
                    done.wait();
                })
            });
        });
        g.bench_function(BenchmarkId::new("raw_crossbeam_deque", TASKS), |b| {
            let pool = RawDeque::new(threads);
            b.iter_custom(|iters| {
                timed(iters, || {
                    let done = Done::new(TASKS);
                    for i in 0..TASKS {
                        pool.spawn(tiny_task(&done, i));
                    }
                    done.wait();
                })
            });
        });
        g.finish();
    }
}

fn spawn_from_task(c: &mut Criterion) {
    let threads = 2;
    let mut g = c.benchmark_group(format!("spawn_from_task/{threads}"));
    g.throughput(Throughput::Elements(TASKS as u64));
    g.sample_size(20);
    g.bench_function(BenchmarkId::new("orch_queue", TASKS), |b| {
        let pool = WorkStealingPool::new(threads).unwrap();
        let spawner = pool.spawner();
        b.iter_custom(|iters| {
            timed(iters, || {
                let done = Done::new(TASKS);
                let (s, d) = (spawner.clone(), Arc::clone(&done));
                pool.spawn(move || {
                    for i in 0..TASKS {
                        let d = Arc::clone(&d);
                        s.spawn(move || {
                            black_box(i.wrapping_mul(31));
                            d.hit();
                        })
                        .unwrap();
                    }
                })
                .unwrap();
                done.wait();
            })
        });
    });
    g.bench_function(BenchmarkId::new("mutex_condvar", TASKS), |b| {
        let pool = MutexPool::new(threads);
        b.iter_custom(|iters| {
            timed(iters, || {
                let done = Done::new(TASKS);
                let (p, d) = (Arc::clone(&pool.shared), Arc::clone(&done));
                pool.spawn(Box::new(move || {
                    for i in 0..TASKS {
                        mutex_push(&p, tiny_task(&d, i));
                    }
                }));
                done.wait();
            })
        });
    });
    g.bench_function(BenchmarkId::new("crossbeam_channel", TASKS), |b| {
        let pool = ChannelPool::new(threads);
        let tx = pool.tx.clone().unwrap();
        b.iter_custom(|iters| {
            timed(iters, || {
                let done = Done::new(TASKS);
                let (tx2, d) = (tx.clone(), Arc::clone(&done));
                pool.spawn(Box::new(move || {
                    for i in 0..TASKS {
                        tx2.send(tiny_task(&d, i)).unwrap();
                    }
                }));
                done.wait();
            })
        });
        drop(tx);
    });
    g.finish();
}

fn tree_sum_orch(pool: &orch_queue::Spawner, depth: u32) -> u64 {
    if depth == 0 {
        return black_box(1);
    }
    let (a, b) = pool.join(
        || tree_sum_orch(pool, depth - 1),
        || tree_sum_orch(pool, depth - 1),
    );
    a + b
}

fn tree_sum_rayon(depth: u32) -> u64 {
    if depth == 0 {
        return black_box(1);
    }
    let (a, b) = rayon::join(|| tree_sum_rayon(depth - 1), || tree_sum_rayon(depth - 1));
    a + b
}

fn tree_sum_seq(depth: u32) -> u64 {
    if depth == 0 {
        return black_box(1);
    }
    tree_sum_seq(depth - 1) + tree_sum_seq(depth - 1)
}

fn fork_join(c: &mut Criterion) {
    const DEPTH: u32 = 16;
    let threads = 2;
    let mut g = c.benchmark_group("fork_join_tree_sum");
    g.throughput(Throughput::Elements(1 << DEPTH));
    g.sample_size(20);
    g.bench_function(BenchmarkId::new("orch_queue", threads), |b| {
        let pool = WorkStealingPool::new(threads).unwrap();
        let spawner = pool.spawner();
        // Run inside the pool, as rayon's `install` does.
        b.iter_custom(|iters| {
            let (tx, rx) = std::sync::mpsc::channel();
            let s = spawner.clone();
            pool.spawn(move || {
                let start = Instant::now();
                for _ in 0..iters {
                    assert_eq!(tree_sum_orch(&s, DEPTH), 1 << DEPTH);
                }
                tx.send(start.elapsed()).unwrap();
            })
            .unwrap();
            rx.recv().unwrap()
        });
    });
    g.bench_function(BenchmarkId::new("rayon", threads), |b| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        b.iter(|| pool.install(|| assert_eq!(tree_sum_rayon(DEPTH), 1 << DEPTH)));
    });
    g.bench_function(BenchmarkId::new("sequential", 1), |b| {
        b.iter(|| assert_eq!(tree_sum_seq(DEPTH), 1 << DEPTH));
    });
    g.finish();
}

criterion_group!(benches, fine_grained, spawn_from_task, fork_join);
criterion_main!(benches);
