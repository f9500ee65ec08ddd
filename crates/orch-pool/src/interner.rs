//! [`Interner`]: a concurrent, bounded string interner with `Copy` symbols.

use std::fmt;
use std::hash::BuildHasher;
use std::num::NonZeroU32;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crossbeam_utils::CachePadded;
use hashbrown::{DefaultHashBuilder, HashTable};
use parking_lot::RwLock;

/// Seed default: strings interned at most.
pub const DEFAULT_MAX_ENTRIES: usize = 1_000;
/// Seed default: longest string interned, in bytes.
pub const DEFAULT_MAX_LEN: usize = 100;

const SHARDS: usize = 16;
/// Entries in the first storage bucket; bucket `b` holds `FIRST_BUCKET << b`.
const FIRST_BUCKET: usize = 64;

/// One lazily allocated run of string slots.
type Bucket = Box<[OnceLock<Box<str>>]>;

/// A small `Copy` handle to an interned string. Equal strings of one [`Interner`] get equal
/// symbols, so comparing symbols is comparing two `u32`s.
///
/// A symbol means something only to the interner that made it; `Option<Symbol>` is 4 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Symbol(NonZeroU32);

impl Symbol {
    /// The dense index of this symbol: 0 for the first string interned, 1 for the next...
    #[must_use]
    pub fn index(self) -> usize {
        self.0.get() as usize - 1
    }

    fn from_index(index: usize) -> Option<Self> {
        let raw = u32::try_from(index).ok()?.checked_add(1)?;
        NonZeroU32::new(raw).map(Self)
    }
}

/// Why a string was not interned. The string is never truncated to fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InternError {
    /// The string is longer than the interner's `max_len`.
    #[error("string of {len} bytes is longer than the interner's limit of {max_len} bytes")]
    TooLong {
        /// Length of the refused string, in bytes.
        len: usize,
        /// The interner's limit.
        max_len: usize,
    },
    /// The interner already holds `max_entries` strings.
    #[error("interner is full ({max_entries} strings)")]
    Full {
        /// The interner's limit.
        max_entries: usize,
    },
}

/// A concurrent string interner: `get_or_intern` from any thread, `resolve` without locks.
///
/// Lookups hash the string once, take a read lock on one of 16 shards and compare. Strings
/// are stored once in an append-only table of lazily allocated buckets, so
/// [`resolve`](Self::resolve) is two array indexings and returns a `&str` that lives as long as
/// the interner. Both bounds (`max_entries`, `max_len`) are enforced: a string beyond them is
/// refused with an [`InternError`], never truncated.
pub struct Interner {
    shards: Box<[CachePadded<RwLock<HashTable<Symbol>>>]>,
    hasher: DefaultHashBuilder,
    buckets: Box<[OnceLock<Bucket>]>,
    len: AtomicU32,
    max_entries: usize,
    max_len: usize,
    rejected: AtomicU64,
}

/// Builds an [`Interner`]; see [`Interner::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct InternerBuilder {
    max_entries: usize,
    max_len: usize,
    prewarm: Vec<String>,
}

impl InternerBuilder {
    /// Strings interned at most (default 1,000; at most `u32::MAX - 1`).
    pub fn max_entries(mut self, max_entries: usize) -> Self {
        self.max_entries = max_entries.min(u32::MAX as usize - 1);
        self
    }

    /// Longest string interned, in bytes (default 100).
    pub fn max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len;
        self
    }

    /// Strings interned by `build`, in order (so their symbols are `0, 1, ...` in that order,
    /// duplicates aside).
    pub fn prewarm<I, S>(mut self, strings: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.prewarm.extend(strings.into_iter().map(Into::into));
        self
    }

    /// Creates the interner and interns the prewarm strings.
    ///
    /// # Errors
    /// The first prewarm string that breaks a bound, as [`InternError`].
    pub fn build(self) -> Result<Interner, InternError> {
        let bucket_count = bucket_of(self.max_entries.max(1) - 1).0 + 1;
        let interner = Interner {
            shards: (0..SHARDS)
                .map(|_| CachePadded::new(RwLock::new(HashTable::new())))
                .collect(),
            hasher: DefaultHashBuilder::default(),
            buckets: (0..bucket_count).map(|_| OnceLock::new()).collect(),
            len: AtomicU32::new(0),
            max_entries: self.max_entries,
            max_len: self.max_len,
            rejected: AtomicU64::new(0),
        };
        for s in &self.prewarm {
            interner.get_or_intern(s)?;
        }
        Ok(interner)
    }
}

/// The bucket holding `index`, and the offset inside it.
#[inline]
fn bucket_of(index: usize) -> (usize, usize) {
    let scaled = index / FIRST_BUCKET + 1;
    let bucket = (usize::BITS - 1 - scaled.leading_zeros()) as usize;
    let start = FIRST_BUCKET * ((1 << bucket) - 1);
    (bucket, index - start)
}

impl Default for Interner {
    fn default() -> Self {
        Self::builder()
            .build()
            .unwrap_or_else(|_| unreachable!("no prewarm strings"))
    }
}

impl Interner {
    /// A builder with the seed bounds: 1,000 strings of at most 100 bytes.
    pub fn builder() -> InternerBuilder {
        InternerBuilder {
            max_entries: DEFAULT_MAX_ENTRIES,
            max_len: DEFAULT_MAX_LEN,
            prewarm: Vec::new(),
        }
    }

    #[inline]
    fn shard(&self, hash: u64) -> &RwLock<HashTable<Symbol>> {
        // The table uses the low bits; pick the shard from the high ones.
        &self.shards[(hash >> 60) as usize % SHARDS]
    }

    #[inline]
    fn hash(&self, s: &str) -> u64 {
        self.hasher.hash_one(s)
    }

    /// The symbol of `s`, interning it first if needed.
    ///
    /// # Errors
    /// [`InternError::TooLong`] or [`InternError::Full`] when `s` is new and breaks a bound
    /// (a string already interned is always found).
    pub fn get_or_intern(&self, s: &str) -> Result<Symbol, InternError> {
        let hash = self.hash(s);
        let shard = self.shard(hash);
        if let Some(sym) = self.find(&shard.read(), hash, s) {
            return Ok(sym);
        }
        if s.len() > self.max_len {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(InternError::TooLong {
                len: s.len(),
                max_len: self.max_len,
            });
        }
        let mut table = shard.write();
        if let Some(sym) = self.find(&table, hash, s) {
            return Ok(sym);
        }
        let reserved = self
            .len
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                ((n as usize) < self.max_entries).then_some(n + 1)
            });
        let Ok(index) = reserved else {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(InternError::Full {
                max_entries: self.max_entries,
            });
        };
        let index = index as usize;
        let sym = Symbol::from_index(index).ok_or(InternError::Full {
            max_entries: self.max_entries,
        })?;
        let (b, off) = bucket_of(index);
        let bucket = self.buckets[b]
            .get_or_init(|| (0..FIRST_BUCKET << b).map(|_| OnceLock::new()).collect());
        // Each index is reserved once, so this slot is empty.
        let _ = bucket[off].set(Box::from(s));
        table.insert_unique(hash, sym, |&sym| self.hash(self.resolve_unchecked(sym)));
        Ok(sym)
    }

    #[inline]
    fn find(&self, table: &HashTable<Symbol>, hash: u64, s: &str) -> Option<Symbol> {
        table
            .find(hash, |&sym| self.resolve_unchecked(sym) == s)
            .copied()
    }

    /// Used only for symbols found in a table, whose string is stored before insertion.
    #[inline]
    fn resolve_unchecked(&self, sym: Symbol) -> &str {
        self.resolve(sym).unwrap_or_default()
    }

    /// The symbol of `s` if it is interned; never interns.
    #[must_use]
    pub fn get(&self, s: &str) -> Option<Symbol> {
        let hash = self.hash(s);
        self.find(&self.shard(hash).read(), hash, s)
    }

    /// The string of `sym`, or `None` for a symbol this interner did not make.
    #[inline]
    #[must_use]
    pub fn resolve(&self, sym: Symbol) -> Option<&str> {
        let (b, off) = bucket_of(sym.index());
        self.buckets.get(b)?.get()?.get(off)?.get().map(|s| &**s)
    }

    /// Strings interned.
    #[must_use]
    pub fn len(&self) -> usize {
        (self.len.load(Ordering::Acquire) as usize).min(self.max_entries)
    }

    /// Whether nothing is interned.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound on entries.
    #[must_use]
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// The bound on string length, in bytes.
    #[must_use]
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// New strings refused so far because of a bound.
    #[must_use]
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for Interner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Interner")
            .field("len", &self.len())
            .field("max_entries", &self.max_entries)
            .field("max_len", &self.max_len)
            .field("rejected", &self.rejected())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_layout_is_contiguous() {
        assert_eq!(bucket_of(0), (0, 0));
        assert_eq!(bucket_of(63), (0, 63));
        assert_eq!(bucket_of(64), (1, 0));
        assert_eq!(bucket_of(191), (1, 127));
        assert_eq!(bucket_of(192), (2, 0));
        let mut expected = (0, 0);
        for i in 0..5_000 {
            let got = bucket_of(i);
            assert_eq!(got, expected, "index {i}");
            expected = if got.1 + 1 == FIRST_BUCKET << got.0 {
                (got.0 + 1, 0)
            } else {
                (got.0, got.1 + 1)
            };
        }
    }

    #[test]
    fn same_string_same_symbol_and_resolves() {
        let i = Interner::default();
        let a = i.get_or_intern("worker").expect("interns");
        let b = i.get_or_intern("reviewer").expect("interns");
        assert_eq!(i.get_or_intern("worker"), Ok(a));
        assert_ne!(a, b);
        assert_eq!(i.resolve(a), Some("worker"));
        assert_eq!(i.get("reviewer"), Some(b));
        assert_eq!(i.get("planner"), None);
        assert_eq!(i.len(), 2);
    }

    #[test]
    fn bounds_refuse_instead_of_truncating() {
        let i = Interner::builder()
            .max_entries(2)
            .max_len(4)
            .build()
            .expect("builds");
        assert_eq!(
            i.get_or_intern("toolong"),
            Err(InternError::TooLong { len: 7, max_len: 4 })
        );
        i.get_or_intern("a").expect("fits");
        i.get_or_intern("b").expect("fits");
        assert_eq!(
            i.get_or_intern("c"),
            Err(InternError::Full { max_entries: 2 })
        );
        assert_eq!(i.get("c"), None);
        assert_eq!(i.get("tool"), None);
        assert_eq!(i.rejected(), 2);
        assert_eq!(i.get_or_intern("a").map(Symbol::index), Ok(0));
    }

    #[test]
    fn foreign_symbol_resolves_to_none() {
        let big = Interner::builder()
            .prewarm(["x", "y", "z"])
            .build()
            .expect("builds");
        let small = Interner::default();
        let z = big.get("z").expect("prewarmed");
        assert_eq!(z.index(), 2);
        assert_eq!(small.resolve(z), None);
    }
}
