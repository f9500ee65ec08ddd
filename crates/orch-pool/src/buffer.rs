//! [`BufferPool`]: `BytesMut` buffers in size classes.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use bytes::BytesMut;
use crossbeam_queue::ArrayQueue;

use crate::stats::Counters;

/// Seed default size classes: 1, 4, 16 and 64 KiB.
pub const DEFAULT_CLASSES: [usize; 4] = [1 << 10, 4 << 10, 16 << 10, 64 << 10];
/// Seed default: buffers kept per class.
pub const DEFAULT_PER_CLASS: usize = 50;

const HITS: usize = 0;
const MISSES: usize = 1;
const OVERSIZED: usize = 2;
const RETURNS: usize = 3;
const DISCARDS: usize = 4;

/// Counters of a [`BufferPool`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct BufferPoolStats {
    /// Gets served by a pooled buffer.
    pub hits: u64,
    /// Gets that allocated a buffer of their class (the class was empty).
    pub misses: u64,
    /// Gets larger than the largest class: a fresh, unpooled buffer.
    pub oversized: u64,
    /// Buffers put back in their class.
    pub returns: u64,
    /// Pooled-class buffers dropped on return: capacity no longer the class size, or the
    /// class was full.
    pub discards: u64,
}

struct Class {
    size: usize,
    free: ArrayQueue<BytesMut>,
}

/// A pool of `BytesMut` buffers in fixed size classes, each class capped.
///
/// [`get(min_len)`](Self::get) hands out a cleared buffer from the smallest class whose size
/// is at least `min_len` (allocating one of exactly that size when the class is empty), or a
/// fresh buffer of `min_len` bytes, counted as oversized and never pooled, when no class is
/// large enough. On drop a buffer goes back to the class it came from, and only if its
/// capacity is still exactly the class size: a buffer that grew, or was split, is dropped.
pub struct BufferPool {
    classes: Box<[Class]>,
    counters: Counters<5>,
}

/// Builds a [`BufferPool`]; see [`BufferPool::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct BufferPoolBuilder {
    classes: Vec<usize>,
    per_class: usize,
    prewarm: usize,
}

impl BufferPoolBuilder {
    /// Class sizes in bytes (default 1, 4, 16, 64 KiB). Sorted and deduplicated; zero sizes
    /// are ignored.
    pub fn classes(mut self, sizes: impl IntoIterator<Item = usize>) -> Self {
        self.classes = sizes.into_iter().filter(|&s| s > 0).collect();
        self
    }

    /// Buffers kept per class (default 50). Zero is raised to one.
    pub fn per_class(mut self, per_class: usize) -> Self {
        self.per_class = per_class.max(1);
        self
    }

    /// Buffers allocated per class by `build` (default 0, capped at `per_class`).
    pub fn prewarm(mut self, prewarm: usize) -> Self {
        self.prewarm = prewarm;
        self
    }

    /// Creates the pool.
    pub fn build(mut self) -> BufferPool {
        self.classes.sort_unstable();
        self.classes.dedup();
        let classes = self
            .classes
            .iter()
            .map(|&size| {
                let free = ArrayQueue::new(self.per_class);
                for _ in 0..self.prewarm.min(self.per_class) {
                    let _ = free.push(BytesMut::with_capacity(size));
                }
                Class { size, free }
            })
            .collect();
        BufferPool {
            classes,
            counters: Counters::new(),
        }
    }
}

impl Default for BufferPool {
    fn default() -> Self {
        Self::builder().build()
    }
}

impl BufferPool {
    /// A builder with the seed defaults: classes of 1, 4, 16, 64 KiB, 50 buffers each.
    pub fn builder() -> BufferPoolBuilder {
        BufferPoolBuilder {
            classes: DEFAULT_CLASSES.to_vec(),
            per_class: DEFAULT_PER_CLASS,
            prewarm: 0,
        }
    }

    /// The index of the smallest class of at least `min_len` bytes.
    #[inline(always)]
    fn class_for(&self, min_len: usize) -> Option<usize> {
        self.classes.iter().position(|c| c.size >= min_len)
    }

    #[inline(always)]
    fn take(&self, min_len: usize) -> (BytesMut, Option<usize>) {
        let Some(ci) = self.class_for(min_len) else {
            self.counters.bump(OVERSIZED);
            return (BytesMut::with_capacity(min_len), None);
        };
        let class = &self.classes[ci];
        match class.free.pop() {
            Some(buf) => {
                self.counters.bump(HITS);
                (buf, Some(ci))
            }
            None => {
                self.counters.bump(MISSES);
                (BytesMut::with_capacity(class.size), Some(ci))
            }
        }
    }

    /// An empty buffer with capacity of at least `min_len` bytes.
    #[inline(always)]
    pub fn get(&self, min_len: usize) -> PooledBuf<'_> {
        let (buf, class) = self.take(min_len);
        PooledBuf {
            buf: Some(buf),
            class,
            pool: self,
        }
    }

    /// Like [`get`](Self::get), with a guard that holds an `Arc` of the pool.
    #[inline]
    pub fn get_owned(self: &Arc<Self>, min_len: usize) -> PooledBufOwned {
        let (buf, class) = self.take(min_len);
        PooledBufOwned {
            buf: Some(buf),
            class,
            pool: Arc::clone(self),
        }
    }

    /// Whether `buf`, handed out for `class`, may go back; clears it if so. Counts a discard
    /// when it may not. Works in place, so an accepted buffer is moved only once.
    #[inline(always)]
    fn prepare(&self, buf: &mut BytesMut, class: Option<usize>) -> Option<usize> {
        let ci = class?;
        // A buffer that grew past its class, or shrank by a split, is not this class's.
        if buf.capacity() != self.classes[ci].size {
            self.counters.bump(DISCARDS);
            return None;
        }
        buf.clear();
        Some(ci)
    }

    #[inline(always)]
    fn push(&self, buf: BytesMut, ci: usize) {
        match self.classes[ci].free.push(buf) {
            Ok(()) => self.counters.bump(RETURNS),
            Err(_full) => self.counters.bump(DISCARDS),
        }
    }

    /// The class sizes, ascending.
    #[must_use]
    pub fn classes(&self) -> Vec<usize> {
        self.classes.iter().map(|c| c.size).collect()
    }

    /// Buffers currently pooled in the class of exactly `size` bytes (0 for no such class).
    #[must_use]
    pub fn available(&self, size: usize) -> usize {
        self.classes
            .iter()
            .find(|c| c.size == size)
            .map_or(0, |c| c.free.len())
    }

    /// A snapshot of the counters.
    #[must_use]
    pub fn stats(&self) -> BufferPoolStats {
        let [hits, misses, oversized, returns, discards] = self.counters.snapshot();
        BufferPoolStats {
            hits,
            misses,
            oversized,
            returns,
            discards,
        }
    }
}

impl fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferPool")
            .field("classes", &self.classes())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

macro_rules! buf_guard_impls {
    ($guard:ident $(<$lt:lifetime>)?) => {
        impl$(<$lt>)? $guard$(<$lt>)? {
            /// The size class this buffer returns to, or `None` for an oversized buffer.
            #[must_use]
            pub fn class_size(&self) -> Option<usize> {
                self.class.map(|ci| self.pool.classes[ci].size)
            }

            /// Takes the buffer out of the pool's care (it will not be returned).
            #[must_use]
            pub fn detach(mut self) -> BytesMut {
                self.class = None;
                self.buf.take().unwrap_or_default()
            }
        }

        impl$(<$lt>)? Deref for $guard$(<$lt>)? {
            type Target = BytesMut;
            #[inline]
            fn deref(&self) -> &BytesMut {
                self.buf.as_ref().expect("pooled buffer present until drop")
            }
        }

        impl$(<$lt>)? DerefMut for $guard$(<$lt>)? {
            #[inline]
            fn deref_mut(&mut self) -> &mut BytesMut {
                self.buf.as_mut().expect("pooled buffer present until drop")
            }
        }

        impl$(<$lt>)? Drop for $guard$(<$lt>)? {
            #[inline(always)]
            fn drop(&mut self) {
                let class = match self.buf.as_mut() {
                    Some(buf) => self.pool.prepare(buf, self.class),
                    None => return,
                };
                if let (Some(ci), Some(buf)) = (class, self.buf.take()) {
                    self.pool.push(buf, ci);
                }
            }
        }

        impl$(<$lt>)? fmt::Debug for $guard$(<$lt>)? {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($guard))
                    .field("len", &self.buf.as_ref().map(BytesMut::len))
                    .field("class_size", &self.class_size())
                    .finish()
            }
        }
    };
}

/// A buffer borrowed from a [`BufferPool`]; derefs to `BytesMut`, returns on drop.
#[must_use = "dropping the guard returns the buffer at once"]
pub struct PooledBuf<'a> {
    buf: Option<BytesMut>,
    class: Option<usize>,
    pool: &'a BufferPool,
}

/// A buffer borrowed from an `Arc<BufferPool>`; derefs to `BytesMut`, returns on drop.
#[must_use = "dropping the guard returns the buffer at once"]
pub struct PooledBufOwned {
    buf: Option<BytesMut>,
    class: Option<usize>,
    pool: Arc<BufferPool>,
}

buf_guard_impls!(PooledBuf<'a>);
buf_guard_impls!(PooledBufOwned);

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    #[test]
    fn smallest_fitting_class_and_cleared_on_reuse() {
        let pool = BufferPool::default();
        let mut b = pool.get(1000);
        assert_eq!(b.class_size(), Some(1024));
        assert_eq!(b.capacity(), 1024);
        b.put_slice(b"data");
        drop(b);
        let b = pool.get(1024);
        assert!(b.is_empty());
        assert_eq!(b.capacity(), 1024);
        assert_eq!(pool.get(1025).class_size(), Some(4096));
        drop(b);
        let s = pool.stats();
        assert_eq!((s.hits, s.misses, s.returns), (1, 2, 3));
    }

    #[test]
    fn oversized_requests_are_fresh_and_not_pooled() {
        let pool = BufferPool::default();
        let b = pool.get(100_000);
        assert_eq!(b.class_size(), None);
        assert!(b.capacity() >= 100_000);
        drop(b);
        let s = pool.stats();
        assert_eq!((s.oversized, s.returns, s.discards), (1, 0, 0));
    }

    #[test]
    fn grown_buffer_is_discarded_not_misfiled() {
        let pool = BufferPool::default();
        let mut b = pool.get(1);
        b.put_slice(&[0u8; 3000]);
        assert!(b.capacity() > 1024);
        drop(b);
        assert_eq!(pool.available(1024), 0);
        assert_eq!(pool.available(4096), 0);
        assert_eq!(pool.stats().discards, 1);
    }

    #[test]
    fn split_buffer_is_discarded() {
        let pool = BufferPool::default();
        let mut b = pool.get(4096);
        b.put_slice(&[1u8; 100]);
        let tail = b.split_off(10);
        drop(b);
        assert_eq!(pool.available(4096), 0);
        assert_eq!(tail.len(), 90);
    }
}
