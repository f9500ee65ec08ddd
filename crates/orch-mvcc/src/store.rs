//! [`TodoStore`]: versioned, cross-process, crash-safe access to `TODO.md`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::audit::{
    AuditRecord, AuditSummary, GENESIS_HASH, Tail, diff_plans, read_audit_log, read_tail,
    verify_audit_log,
};
use crate::error::{AuditError, PlanError, StoreError};
use crate::fsio::{Durability, rename_into, sync_dir, write_atomic, write_temp};
use crate::grammar::{parse, render};
use crate::plan::Plan;

/// File names inside the store directory.
pub const TODO_FILE: &str = "TODO.md";
/// The version file: version, blake3 of `TODO.md`, writer.
pub const VERSION_FILE: &str = "todo.version.json";
/// The hash-chained audit log.
pub const AUDIT_FILE: &str = "audit.jsonl";
/// The file the OS lock is taken on (it never holds data).
pub const LOCK_FILE: &str = "todo.lock";
/// The writer name recorded for edits taken in from the file.
pub const EXTERNAL_WRITER: &str = "external";

/// How [`TodoStore::update`] retries when its compare-and-swap meets a newer version
/// ([`StoreError::Conflict`]): attempts and exponential backoff with full jitter.
///
/// (Not to be confused with `orch_core::RetryPolicy`, which retries an agent turn after a
/// transient error.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConflictRetry {
    /// Attempts in all, at least 1.
    pub max_attempts: u32,
    /// Delay before the second attempt; doubles after each conflict.
    pub base_delay: Duration,
    /// Upper bound of one delay (before jitter).
    pub max_delay: Duration,
}

impl Default for ConflictRetry {
    fn default() -> Self {
        Self {
            max_attempts: 32,
            base_delay: Duration::from_micros(200),
            max_delay: Duration::from_millis(20),
        }
    }
}

impl ConflictRetry {
    fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_delay);
        // Full jitter: spreads writers that collided.
        exp.mul_f64(fastrand::f64())
    }
}

/// Settings for [`TodoStore::open_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// Whether commits fsync (default [`Durability::Fsync`]).
    pub durability: Durability,
    /// Conflict retries of [`TodoStore::update`].
    pub retry: ConflictRetry,
    /// How often waits re-read the files to see other processes' commits and external edits.
    pub poll_interval: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Fsync,
            retry: ConflictRetry::default(),
            poll_interval: Duration::from_millis(100),
        }
    }
}

/// Something the store repaired or took in on its own while syncing with the files.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecoveryEvent {
    /// An incomplete last audit line (a crash during append) was truncated away.
    TornTailRepaired {
        /// Bytes removed.
        bytes: u64,
    },
    /// A commit whose audit record and `TODO.md` were written but whose version file was not
    /// (a crash) was completed.
    RolledForward {
        /// The completed version.
        version: u64,
    },
    /// An audit record whose `TODO.md` was never written (a crash) was removed.
    RolledBack {
        /// The version that did not happen.
        version: u64,
    },
    /// `TODO.md` was changed outside the store and committed as a new version by
    /// [`EXTERNAL_WRITER`].
    ExternalEditImported {
        /// The new version.
        version: u64,
    },
}

/// What [`TodoStore::update`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed<T> {
    /// The version the store is at after the call.
    pub version: u64,
    /// Whether the closure changed the plan (and so a new version was written).
    pub changed: bool,
    /// How many attempts it took.
    pub attempts: u32,
    /// What the closure returned on the attempt that counted.
    pub value: T,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct VersionFile {
    version: u64,
    hash: String,
    writer: String,
}

#[derive(Debug)]
struct Cache {
    version: u64,
    /// blake3 of the `TODO.md` bytes of `version` (`None`: no file, version 0).
    content: Option<String>,
    plan: Arc<Plan>,
    audit_len: u64,
    tail: Option<AuditRecord>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    options: StoreOptions,
    lock_file: File,
    cache: Mutex<Cache>,
    events: Mutex<Vec<RecoveryEvent>>,
    latest: Mutex<u64>,
    changed: Condvar,
    #[cfg(feature = "tokio")]
    notify: tokio::sync::Notify,
}

/// A versioned `TODO.md` in a directory (`.orchestrator/` of a project).
///
/// Cloning is cheap and clones share one cache. Every operation syncs with the files under
/// an exclusive OS lock first, so commits by other processes, crash leftovers and external
/// edits are seen (see [`RecoveryEvent`]).
#[derive(Debug, Clone)]
pub struct TodoStore {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The cache is rebuilt from disk when it disagrees, so a panic elsewhere cannot leave
    // it in a state worse than stale.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct FileLock<'a>(&'a File);

impl<'a> FileLock<'a> {
    fn acquire(file: &'a File, path: &Path) -> Result<Self, StoreError> {
        file.lock()
            .map_err(|e| StoreError::io("locking", path, e))?;
        Ok(Self(file))
    }
}

impl Drop for FileLock<'_> {
    fn drop(&mut self) {
        // Closing the descriptor also releases the lock; an unlock error leaves nothing to do.
        let _ = self.0.unlock();
    }
}

fn hash_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io("reading", path, e)),
    }
}

fn check_writer(writer: &str) -> Result<(), StoreError> {
    if writer.trim().is_empty() || writer.contains(['\n', '\r']) {
        return Err(StoreError::InvalidWriter(writer.to_owned()));
    }
    Ok(())
}

fn parse_bytes(bytes: &[u8]) -> Result<Plan, PlanError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let before = &bytes[..e.valid_up_to()];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        PlanError::Syntax {
            line,
            column: 1,
            expected: "UTF-8 text".to_owned(),
            found: "invalid UTF-8".to_owned(),
        }
    })?;
    parse(text)
}

impl TodoStore {
    /// Opens (creating if needed) the store in `dir` with default options: fsync on.
    ///
    /// # Errors
    /// I/O errors, and every error of syncing with the files (see [`TodoStore::snapshot`]).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(dir, StoreOptions::default())
    }

    /// Opens (creating if needed) the store in `dir`.
    ///
    /// A directory holding only a hand-written `TODO.md` is taken in as version 1.
    ///
    /// # Errors
    /// As [`TodoStore::open`].
    pub fn open_with(dir: impl AsRef<Path>, options: StoreOptions) -> Result<Self, StoreError> {
        let dir = dir.as_ref().to_owned();
        fs::create_dir_all(&dir).map_err(|e| StoreError::io("creating", &dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| StoreError::io("opening", &lock_path, e))?;
        let store = Self {
            inner: Arc::new(Inner {
                dir,
                options,
                lock_file,
                cache: Mutex::new(Cache {
                    version: 0,
                    content: None,
                    plan: Arc::new(Plan::default()),
                    audit_len: u64::MAX,
                    tail: None,
                }),
                events: Mutex::new(Vec::new()),
                latest: Mutex::new(0),
                changed: Condvar::new(),
                #[cfg(feature = "tokio")]
                notify: tokio::sync::Notify::new(),
            }),
        };
        store.locked(|_, _| Ok(()))?;
        Ok(store)
    }

    /// The store directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The options the store was opened with.
    #[must_use]
    pub fn options(&self) -> &StoreOptions {
        &self.inner.options
    }

    /// The current version and plan (version 0 and an empty plan for a new store).
    ///
    /// # Errors
    /// [`StoreError::ExternalEditInvalid`] when `TODO.md` was edited into text that does not
    /// parse (the file is left as is); [`StoreError::VersionMismatch`],
    /// [`StoreError::CorruptVersionFile`], [`StoreError::TodoMissing`] or
    /// [`StoreError::Audit`] when the files disagree in a way no crash explains; I/O errors.
    pub fn snapshot(&self) -> Result<(u64, Plan), StoreError> {
        self.locked(|cache, _| Ok((cache.version, (*cache.plan).clone())))
    }

    /// The current version and a shared reference to the plan (no deep copy).
    ///
    /// # Errors
    /// As [`TodoStore::snapshot`].
    pub fn snapshot_arc(&self) -> Result<(u64, Arc<Plan>), StoreError> {
        self.locked(|cache, _| Ok((cache.version, Arc::clone(&cache.plan))))
    }

    /// The current version.
    ///
    /// # Errors
    /// As [`TodoStore::snapshot`].
    pub fn version(&self) -> Result<u64, StoreError> {
        self.locked(|cache, _| Ok(cache.version))
    }

    /// Replaces the plan with `plan` if the store is still at `expected`; returns the new
    /// version. A `plan` equal to the current one writes nothing and returns `expected`.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] (carrying the current version) when the store moved on;
    /// [`StoreError::InvalidPlan`] when `plan` fails [`Plan::validate`];
    /// [`StoreError::InvalidWriter`]; the errors of [`TodoStore::snapshot`].
    pub fn compare_and_swap(
        &self,
        writer: &str,
        expected: u64,
        plan: Plan,
    ) -> Result<u64, StoreError> {
        check_writer(writer)?;
        plan.validate()?;
        self.locked(|cache, inner| {
            if cache.version != expected {
                return Err(StoreError::Conflict {
                    expected,
                    current: cache.version,
                    attempts: 1,
                });
            }
            if *cache.plan == plan {
                return Ok(expected);
            }
            let changes = Some(diff_plans(&cache.plan, &plan));
            inner.commit(cache, writer, plan, changes, None)
        })
    }

    /// Applies `change` to the current plan and commits it, retrying on conflict.
    ///
    /// Each attempt takes a snapshot, runs `change` on a copy **outside** the lock, and
    /// compare-and-swaps; on a conflict it sleeps (exponential backoff with jitter, see
    /// [`ConflictRetry`]) and runs `change` again on the newer plan. If `change` leaves the plan
    /// as it was, nothing is written.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] with the current version after
    /// [`ConflictRetry::max_attempts`]; [`StoreError::InvalidPlan`] when the changed plan fails
    /// [`Plan::validate`]; the errors of [`TodoStore::snapshot`].
    pub fn update<T>(
        &self,
        writer: &str,
        mut change: impl FnMut(&mut Plan) -> T,
    ) -> Result<Committed<T>, StoreError> {
        check_writer(writer)?;
        let policy = self.inner.options.retry;
        let max = policy.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            let (version, base) = self.snapshot_arc()?;
            let mut plan = (*base).clone();
            let value = change(&mut plan);
            if plan == *base {
                return Ok(Committed {
                    version,
                    changed: false,
                    attempts: attempt,
                    value,
                });
            }
            match self.compare_and_swap(writer, version, plan) {
                Ok(version) => {
                    return Ok(Committed {
                        version,
                        changed: true,
                        attempts: attempt,
                        value,
                    });
                }
                Err(StoreError::Conflict { current, .. }) if attempt >= max => {
                    return Err(StoreError::Conflict {
                        expected: version,
                        current,
                        attempts: attempt,
                    });
                }
                Err(StoreError::Conflict { .. }) => {
                    std::thread::sleep(policy.delay(attempt - 1));
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Walks the audit chain (after repairing a torn tail) and checks that it ends at the
    /// store's version and `TODO.md` hash.
    ///
    /// # Errors
    /// [`StoreError::Audit`] naming the first broken record, or
    /// [`AuditError::Truncated`] when records are missing at the end; the errors of
    /// [`TodoStore::snapshot`].
    pub fn verify(&self) -> Result<AuditSummary, StoreError> {
        self.locked(|cache, inner| {
            let summary = verify_audit_log(&inner.path(AUDIT_FILE))?;
            if summary.last_version != cache.version {
                return Err(AuditError::Truncated {
                    audit: summary.last_version,
                    store: cache.version,
                }
                .into());
            }
            Ok(summary)
        })
    }

    /// Every audit record, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Audit`] when the chain is broken.
    pub fn audit_records(&self) -> Result<Vec<AuditRecord>, StoreError> {
        self.locked(|_, inner| Ok(read_audit_log(&inner.path(AUDIT_FILE))?))
    }

    /// Drains what the store repaired or took in since the last call.
    #[must_use]
    pub fn take_recovery_events(&self) -> Vec<RecoveryEvent> {
        std::mem::take(&mut *lock(&self.inner.events))
    }

    /// Blocks until the store is past version `after`, returning the new version. Commits
    /// through this process wake the wait at once; other processes' commits and external
    /// edits are seen by re-reading the files every [`StoreOptions::poll_interval`].
    ///
    /// # Errors
    /// [`StoreError::Timeout`] when `timeout` passes first; the errors of
    /// [`TodoStore::snapshot`].
    pub fn wait_for_version(&self, after: u64, timeout: Duration) -> Result<u64, StoreError> {
        let start = Instant::now();
        loop {
            let version = self.version()?;
            if version > after {
                return Ok(version);
            }
            let elapsed = start.elapsed();
            if elapsed >= timeout {
                return Err(StoreError::Timeout {
                    after,
                    waited_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                });
            }
            let slice = (timeout - elapsed).min(self.inner.options.poll_interval);
            let latest = lock(&self.inner.latest);
            if *latest <= after {
                drop(
                    self.inner
                        .changed
                        .wait_timeout_while(latest, slice, |v| *v <= after)
                        .unwrap_or_else(std::sync::PoisonError::into_inner),
                );
            }
        }
    }

    /// Async form of [`TodoStore::wait_for_version`] for a tokio caller: file reads run on
    /// the blocking pool, and commits through this process wake the wait at once.
    ///
    /// # Errors
    /// As [`TodoStore::wait_for_version`].
    #[cfg(feature = "tokio")]
    pub async fn changed(&self, after: u64, timeout: Duration) -> Result<u64, StoreError> {
        let start = Instant::now();
        loop {
            let notified = self.inner.notify.notified();
            let store = self.clone();
            let version = tokio::task::spawn_blocking(move || store.version())
                .await
                .map_err(|e| StoreError::io("waiting", self.dir(), io::Error::other(e)))??;
            if version > after {
                return Ok(version);
            }
            let elapsed = start.elapsed();
            if elapsed >= timeout {
                return Err(StoreError::Timeout {
                    after,
                    waited_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                });
            }
            let slice = (timeout - elapsed).min(self.inner.options.poll_interval);
            let _ = tokio::time::timeout(slice, notified).await;
        }
    }

    /// Runs `f` inside the critical section: in-process mutex, then the OS lock, then a sync
    /// of the cache with the files.
    fn locked<R>(
        &self,
        f: impl FnOnce(&mut Cache, &Inner) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let inner = &*self.inner;
        let mut cache = lock(&inner.cache);
        let _os = FileLock::acquire(&inner.lock_file, &inner.path(LOCK_FILE))?;
        inner.sync(&mut cache)?;
        f(&mut cache, inner)
    }
}

impl Inner {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn event(&self, e: RecoveryEvent) {
        lock(&self.events).push(e);
    }

    fn open_audit(&self) -> Result<File, StoreError> {
        let path = self.path(AUDIT_FILE);
        OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| StoreError::io("opening", &path, e))
    }

    /// Reads the audit tail (from cache when the file length is unchanged), repairing a torn
    /// last line.
    fn audit_tail(&self, cache: &mut Cache, force: bool) -> Result<(), StoreError> {
        let path = self.path(AUDIT_FILE);
        // One stat call on the fast path; the file is opened only when it changed.
        let len = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(StoreError::io("reading", &path, e)),
        };
        if !force && len == cache.audit_len {
            return Ok(());
        }
        let mut file = self.open_audit()?;
        let len = file
            .metadata()
            .map_err(|e| StoreError::io("reading", &path, e))?
            .len();
        let tail =
            match read_tail(&mut file, len).map_err(|e| StoreError::io("reading", &path, e))? {
                Ok(t) => t,
                // Let the full walk name the line.
                Err(_) => {
                    verify_audit_log(&path)?;
                    return Err(AuditError::Malformed {
                        line: 0,
                        reason: "last record unreadable".into(),
                    }
                    .into());
                }
            };
        let Tail {
            last,
            complete_len,
            torn_bytes,
        } = tail;
        if torn_bytes > 0 {
            file.set_len(complete_len)
                .map_err(|e| StoreError::io("truncating", &path, e))?;
            if self.options.durability.is_synced() {
                file.sync_all()
                    .map_err(|e| StoreError::io("syncing", &path, e))?;
            }
            self.event(RecoveryEvent::TornTailRepaired { bytes: torn_bytes });
        }
        cache.audit_len = complete_len;
        cache.tail = last.map(|(r, _)| r);
        Ok(())
    }

    fn truncate_audit_to_before_last(&self, cache: &mut Cache) -> Result<(), StoreError> {
        let path = self.path(AUDIT_FILE);
        let mut file = self.open_audit()?;
        let len = cache.audit_len;
        let start =
            match read_tail(&mut file, len).map_err(|e| StoreError::io("reading", &path, e))? {
                Ok(Tail {
                    last: Some((_, start)),
                    ..
                }) => start,
                _ => return Ok(()),
            };
        file.set_len(start)
            .map_err(|e| StoreError::io("truncating", &path, e))?;
        if self.options.durability.is_synced() {
            file.sync_all()
                .map_err(|e| StoreError::io("syncing", &path, e))?;
        }
        self.audit_tail(cache, true)
    }

    fn read_version_file(&self) -> Result<Option<VersionFile>, StoreError> {
        let path = self.path(VERSION_FILE);
        match read_optional(&path)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                StoreError::CorruptVersionFile {
                    path,
                    reason: e.to_string(),
                }
            }),
        }
    }

    fn write_version_file(&self, vf: &VersionFile) -> Result<(), StoreError> {
        let mut bytes = serde_json::to_vec_pretty(vf).unwrap_or_default();
        bytes.push(b'\n');
        write_atomic(&self.dir, VERSION_FILE, &bytes, self.options.durability)
    }

    /// Brings `cache` in line with the files: repairs crash leftovers, takes in external
    /// edits, rejects disagreements no crash explains.
    fn sync(&self, cache: &mut Cache) -> Result<(), StoreError> {
        self.audit_tail(cache, false)?;
        let mut vf = self.read_version_file()?;
        let file_version = vf.as_ref().map_or(0, |v| v.version);
        let mut audit_version = cache.tail.as_ref().map_or(0, |r| r.version);
        if audit_version != file_version {
            // The cached tail may be stale in a way the length did not show; re-read once.
            self.audit_tail(cache, true)?;
            audit_version = cache.tail.as_ref().map_or(0, |r| r.version);
        }
        let todo_path = self.path(TODO_FILE);
        let bytes = read_optional(&todo_path)?;
        let content = bytes.as_deref().map(hash_hex);

        if audit_version == file_version + 1 {
            let Some(record) = cache.tail.clone() else {
                unreachable!("audit_version > 0 implies a tail record")
            };
            if content.as_deref() == Some(record.content.as_str()) {
                let rolled = VersionFile {
                    version: record.version,
                    hash: record.content.clone(),
                    writer: record.writer.clone(),
                };
                self.write_version_file(&rolled)?;
                vf = Some(rolled);
                self.event(RecoveryEvent::RolledForward {
                    version: record.version,
                });
            } else {
                self.truncate_audit_to_before_last(cache)?;
                self.event(RecoveryEvent::RolledBack {
                    version: record.version,
                });
            }
            audit_version = cache.tail.as_ref().map_or(0, |r| r.version);
        }
        let version_path = self.path(VERSION_FILE);
        let file_version = vf.as_ref().map_or(0, |v| v.version);
        if audit_version != file_version {
            return Err(StoreError::VersionMismatch {
                path: version_path,
                reason: format!(
                    "version file is at version {file_version}, audit log at version {audit_version}"
                ),
            });
        }
        if let (Some(vf), Some(tail)) = (&vf, &cache.tail)
            && vf.hash != tail.content
        {
            return Err(StoreError::VersionMismatch {
                path: version_path,
                reason: format!(
                    "version {} has hash {} in the version file but {} in the audit log",
                    vf.version, vf.hash, tail.content
                ),
            });
        }
        let committed = vf.as_ref().map(|v| v.hash.clone());
        if content == committed {
            if cache.version != file_version || cache.content != content {
                let plan = match &bytes {
                    Some(b) => parse_bytes(b).map_err(|error| StoreError::ExternalEditInvalid {
                        path: todo_path.clone(),
                        error,
                    })?,
                    None => Plan::default(),
                };
                cache.version = file_version;
                cache.content = content;
                cache.plan = Arc::new(plan);
                self.publish(file_version);
            }
            return Ok(());
        }
        let Some(bytes) = bytes else {
            return Err(StoreError::TodoMissing {
                path: todo_path,
                version: file_version,
            });
        };
        // An edit made outside the store: take it in as a new version, or report it.
        let plan = parse_bytes(&bytes)
            .and_then(|p| p.validate().map(|()| p))
            .map_err(|error| StoreError::ExternalEditInvalid {
                path: todo_path,
                error,
            })?;
        let changes = (cache.version == file_version && cache.content == committed)
            .then(|| diff_plans(&cache.plan, &plan));
        cache.version = file_version;
        cache.content = committed;
        let version = self.commit(cache, EXTERNAL_WRITER, plan, changes, Some(bytes))?;
        self.event(RecoveryEvent::ExternalEditImported { version });
        Ok(())
    }

    /// Writes version `cache.version + 1`: audit record, then `TODO.md` (unless `existing`
    /// bytes are already there), then the version file. A crash between steps is repaired by
    /// [`Inner::sync`]: forward when `TODO.md` was written, back otherwise.
    fn commit(
        &self,
        cache: &mut Cache,
        writer: &str,
        plan: Plan,
        changes: Option<Vec<crate::ItemChange>>,
        existing: Option<Vec<u8>>,
    ) -> Result<u64, StoreError> {
        let durability = self.options.durability;
        let version = cache.version + 1;
        let text = match &existing {
            Some(_) => None,
            None => Some(render(&plan)),
        }
        .map(String::into_bytes);
        let bytes: &[u8] = match (&existing, &text) {
            (Some(b), _) | (None, Some(b)) => b,
            (None, None) => &[],
        };
        let content = hash_hex(bytes);
        let header_changed =
            plan.title != cache.plan.title || plan.description != cache.plan.description;
        let record = AuditRecord {
            version,
            writer: writer.to_owned(),
            ts_ms: now_ms(),
            content: content.clone(),
            changes,
            header_changed,
            prev: cache
                .tail
                .as_ref()
                .map_or_else(|| GENESIS_HASH.to_owned(), |r| r.hash.clone()),
            hash: String::new(),
        }
        .seal();
        let line = record.to_line();
        let prev_len = cache.audit_len;
        let prev_tail = cache.tail.clone();
        let audit_path = self.path(AUDIT_FILE);
        let mut audit = self.open_audit()?;
        audit
            .write_all(&line)
            .map_err(|e| StoreError::io("appending to", &audit_path, e))?;
        if durability.is_synced() {
            audit
                .sync_data()
                .map_err(|e| StoreError::io("syncing", &audit_path, e))?;
            if cache.tail.is_none() {
                sync_dir(&self.dir)?;
            }
        }
        cache.audit_len = cache.audit_len.saturating_add(line.len() as u64);
        cache.tail = Some(record);
        if existing.is_none() {
            let tmp = write_temp(&self.dir, TODO_FILE, bytes, durability)?;
            // People's editors do not take the lock: check for an edit made since the sync,
            // as late as possible, so that it is taken in rather than replaced.
            let on_disk = read_optional(&self.path(TODO_FILE))?;
            if on_disk.as_deref().map(hash_hex) != cache.content {
                let _ = fs::remove_file(&tmp);
                audit
                    .set_len(prev_len)
                    .map_err(|e| StoreError::io("truncating", &audit_path, e))?;
                if durability.is_synced() {
                    audit
                        .sync_data()
                        .map_err(|e| StoreError::io("syncing", &audit_path, e))?;
                }
                cache.audit_len = prev_len;
                cache.tail = prev_tail;
                self.sync(cache)?;
                return Err(StoreError::Conflict {
                    expected: version - 1,
                    current: cache.version,
                    attempts: 1,
                });
            }
            rename_into(&self.dir, &tmp, TODO_FILE, durability)?;
        }
        self.write_version_file(&VersionFile {
            version,
            hash: content.clone(),
            writer: writer.to_owned(),
        })?;
        cache.version = version;
        cache.content = Some(content);
        cache.plan = Arc::new(plan);
        self.publish(version);
        Ok(version)
    }

    fn publish(&self, version: u64) {
        let mut latest = lock(&self.latest);
        if version > *latest {
            *latest = version;
        }
        drop(latest);
        self.changed.notify_all();
        #[cfg(feature = "tokio")]
        self.notify.notify_waiters();
    }
}
