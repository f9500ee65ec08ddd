//! Synchronisation primitives behind a `cfg(loom)` shim, so the scope latch (the code the
//! crate's only `unsafe` relies on) can be model-checked by loom.
//!
//! The shim is `all(test, loom)`, as in tokio: `loom` is a dev-dependency, so only the crate's
//! own unit-test build swaps in loom's types; the library built for integration tests, benches
//! or dependents under `--cfg loom` keeps `std` and still compiles.

#[cfg(all(test, loom))]
pub(crate) use loom::sync::Mutex;
#[cfg(all(test, loom))]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
#[cfg(all(test, loom))]
pub(crate) use loom::thread;

#[cfg(not(all(test, loom)))]
pub(crate) use std::sync::Mutex;
#[cfg(not(all(test, loom)))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
#[cfg(not(all(test, loom)))]
pub(crate) use std::thread;
