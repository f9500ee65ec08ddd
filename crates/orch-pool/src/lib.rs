//! Object, string and buffer pools, and an async keyed resource pool.
//!
//! Four independent pools, each measured against a well-known crate (see the README):
//!
//! - [`ObjectPool`]: a bounded free list of reusable objects on a lock-free
//!   [`ArrayQueue`](crossbeam_queue::ArrayQueue), with prewarming, a reset hook run on return,
//!   a validity check, and RAII guards ([`Pooled`], [`PooledOwned`]) that give the object back
//!   on drop unless [`detach`](Pooled::detach)ed. Its statistics are striped per thread, so
//!   counting costs no atomic read-modify-write on the hot path.
//! - [`Interner`]: a concurrent string interner handing out 4-byte `Copy` [`Symbol`]s.
//!   Lookups take a read lock on one of 16 shards; [`resolve`](Interner::resolve) takes no
//!   lock at all. Its bounds (entries, string length) refuse a string with an
//!   [`InternError`] and never truncate it.
//! - [`BufferPool`]: `BytesMut` buffers in size classes (1, 4, 16, 64 KiB by default), each
//!   class capped; a buffer goes back only to its own class, and only if its capacity is
//!   still exactly the class size.
//! - [`KeyedPool`]: an async pool of resources grouped by key, driven by a [`Manager`]
//!   (create, recycle before reuse, health check, and a teardown that runs off the caller's
//!   path and only when the manager deems it safe). Per-key and total limits, FIFO waiters,
//!   cancellation-safe [`get`](KeyedPool::get), reuse limits, idle eviction, and a
//!   [`close`](KeyedPool::close) that drains. Recycling can run in the background
//!   ([`RecycleMode::Background`]) and keys can be kept warm
//!   ([`min_idle`](KeyedPoolBuilder::min_idle), [`prewarm`](KeyedPool::prewarm)), so `get`
//!   pays neither for a reset nor for a create. It is the engine of the OpenCode session pool.
//!
//! The defaults are the seed parameters of the TypeScript plugin this workspace rebuilds:
//! 200 objects with 50 prewarmed, 1,000 strings of at most 100 bytes, 50 buffers per class,
//! and 5 resources per key, 10 reuses, 5 min idle timeout, 60 s health checks.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use orch_pool::{KeyedPool, Manager, ObjectPool, Interner, BufferPool};
//!
//! // Objects: reset on return, reused on the next get.
//! let objects = ObjectPool::builder(Vec::<u8>::new).reset(Vec::clear).build();
//! objects.get().push(1);
//! assert!(objects.get().is_empty());
//!
//! // Strings: equal strings, equal symbols.
//! let names = Interner::builder().prewarm(["planner", "worker"]).build()?;
//! assert_eq!(names.get_or_intern("worker")?, names.get("worker").unwrap());
//!
//! // Buffers: the smallest class that fits.
//! let buffers = BufferPool::default();
//! assert_eq!(buffers.get(3000).capacity(), 4096);
//!
//! // Keyed resources.
//! struct Sessions;
//! impl Manager for Sessions {
//!     type Key = &'static str;
//!     type Resource = String;
//!     type Error = Infallible;
//!     async fn create(&self, role: &&'static str) -> Result<String, Infallible> {
//!         Ok(format!("session for {role}"))
//!     }
//! }
//! # let rt = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
//! rt.block_on(async {
//!     let pool = KeyedPool::builder(Sessions).max_per_key(2).build()?;
//!     let session = pool.get("worker").await?;
//!     assert_eq!(*session, "session for worker");
//!     drop(session); // back to the pool
//!     assert_eq!(pool.stats().idle, 1);
//!     pool.close().await;
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })?;
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(doctest, doc = include_str!("../README.md"))]

mod buffer;
mod interner;
mod keyed;
mod object;
mod stats;

pub use buffer::{
    BufferPool, BufferPoolBuilder, BufferPoolStats, DEFAULT_CLASSES, DEFAULT_PER_CLASS, PooledBuf,
    PooledBufOwned,
};
pub use interner::{
    DEFAULT_MAX_ENTRIES, DEFAULT_MAX_LEN, InternError, Interner, InternerBuilder, Symbol,
};
pub use keyed::{
    BuildError, KeyedPool, KeyedPoolBuilder, KeyedPoolConfig, KeyedPoolStats, Manager, Metrics,
    PoolError, PooledResource, RecycleMode, Replenish, ReuseOrder, TeardownReason,
};
pub use object::{
    DEFAULT_MAX_SIZE, DEFAULT_PREWARM, ObjectPool, ObjectPoolBuilder, ObjectPoolStats, Pooled,
    PooledOwned,
};
