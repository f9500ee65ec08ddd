//! Parking of idle workers without lost wake-ups.
//!
//! Protocol (a Dekker-style handshake on two SeqCst fences):
//!
//! * A **producer** makes work visible (pushes to a deque or injector), issues a SeqCst fence,
//!   then reads the sleeper count; if it is non-zero it claims one sleeping slot (CAS on the
//!   slot's `asleep` flag) and unparks that worker.
//! * A **sleeper** sets its `asleep` flag, increments the sleeper count, issues a SeqCst fence,
//!   then re-checks every queue. If it finds work it withdraws (CAS its own flag back);
//!   otherwise it parks.
//!
//! With both fences in the single total order, either the producer sees the sleeper's
//! increment (and wakes someone), or the sleeper's re-check sees the producer's work. The
//! `Parker` keeps a token, so an unpark that lands between the re-check and `park` is not lost.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use crossbeam_utils::sync::{Parker, Unparker};

struct Slot {
    asleep: AtomicBool,
    unparker: Unparker,
}

pub(crate) struct Sleep {
    sleeping: CachePadded<AtomicUsize>,
    slots: Box<[CachePadded<Slot>]>,
}

impl Sleep {
    pub(crate) fn new(unparkers: Vec<Unparker>) -> Self {
        let slots = unparkers
            .into_iter()
            .map(|unparker| {
                CachePadded::new(Slot {
                    asleep: AtomicBool::new(false),
                    unparker,
                })
            })
            .collect();
        Self {
            sleeping: CachePadded::new(AtomicUsize::new(0)),
            slots,
        }
    }

    /// Called after new work became visible: wakes one sleeping worker, if any.
    /// `hint` picks where the scan starts, so wake-ups spread over the workers.
    #[inline]
    pub(crate) fn notify_one(&self, hint: usize) {
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) == 0 {
            return;
        }
        self.wake_one_slow(hint);
    }

    #[cold]
    fn wake_one_slow(&self, hint: usize) {
        let n = self.slots.len();
        for i in 0..n {
            let slot = &self.slots[(hint + i) % n];
            if slot.asleep.load(Ordering::SeqCst)
                && slot
                    .asleep
                    .compare_exchange(true, false, Ordering::SeqCst, Ordering::Relaxed)
                    .is_ok()
            {
                self.sleeping.fetch_sub(1, Ordering::SeqCst);
                slot.unparker.unpark();
                return;
            }
        }
    }

    /// Unparks every worker (shutdown). Workers that are not parked keep a token and return
    /// from their next `park` at once.
    pub(crate) fn notify_all(&self) {
        fence(Ordering::SeqCst);
        for slot in self.slots.iter() {
            if slot
                .asleep
                .compare_exchange(true, false, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
            {
                self.sleeping.fetch_sub(1, Ordering::SeqCst);
            }
            slot.unparker.unpark();
        }
    }

    /// Puts worker `index` to sleep unless `recheck` finds a reason to stay awake.
    /// Returns the time spent parked.
    pub(crate) fn sleep(
        &self,
        index: usize,
        parker: &Parker,
        recheck: impl FnOnce() -> bool,
    ) -> Duration {
        let slot = &self.slots[index];
        slot.asleep.store(true, Ordering::SeqCst);
        self.sleeping.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if recheck() {
            self.withdraw(slot);
            return Duration::ZERO;
        }
        let start = Instant::now();
        parker.park();
        // Woken by a latch or by a stale token rather than by a producer's claim: withdraw.
        self.withdraw(slot);
        start.elapsed()
    }

    fn withdraw(&self, slot: &Slot) {
        if slot
            .asleep
            .compare_exchange(true, false, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
        {
            self.sleeping.fetch_sub(1, Ordering::SeqCst);
        }
    }

    #[cfg(all(test, not(loom)))]
    pub(crate) fn sleeping(&self) -> usize {
        self.sleeping.load(Ordering::SeqCst)
    }
}
