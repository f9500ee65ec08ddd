//! One run at a time per project: an OS file lock that a run holds for its whole lifetime.
//!
//! A run owns a project's `.orchestrator/` directory by holding a POSIX record lock
//! (`fcntl(F_SETLK)`) on `.orchestrator/run.lock`. The kernel releases it when the process
//! ends, however it ends, so liveness is "the lock is held", never a pid probe that a reused
//! pid can fool. The kernel also names the holder (`F_GETLK` reports its pid), which is what
//! [`RunLock::signal`] signals, through a pidfd opened before the holder is checked once
//! more, so a signal can only reach the process that holds this directory's lock.
//!
//! Beside the lock, the run writes `.orchestrator/orchestrator.pid` ([`RunInfo`]: pid, run id,
//! start time) for people and tools to read, and removes it when it ends. One left behind by
//! a run that was killed is *stale*: [`RunLock::state`] reports it as such, and the next
//! [`RunLock::acquire`] removes it.
//!
//! Record locks belong to a process, and closing *any* descriptor of the file releases them;
//! so a process never opens the lock file of a directory it holds ([`RunLock::state`] answers
//! from memory for those).

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use rustix::fs::FlockOperation;
use rustix::process::{Flock, FlockOffsetType, FlockType};
use serde::{Deserialize, Serialize};

/// The lock file, inside the state directory.
pub const RUN_LOCK_FILE: &str = "run.lock";
/// The running process's [`RunInfo`], inside the state directory.
pub const PID_FILE: &str = "orchestrator.pid";

/// Lock files this process holds (their paths), so that it never opens one of them again.
static HELD: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Who runs (or ran) a mission in a directory: what `orchestrator.pid` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The process.
    pub pid: u32,
    /// A unique id of the run (start time and pid, in hex).
    pub run_id: String,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_at_ms: u64,
}

impl RunInfo {
    fn now() -> Self {
        let pid = std::process::id();
        let started_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        RunInfo {
            pid,
            run_id: format!("{started_at_ms:x}-{pid:x}-{:04x}", nanos & 0xffff),
            started_at_ms,
        }
    }

    /// Reads a pid file: the JSON this module writes, or a bare pid (older versions).
    fn read(path: &Path) -> io::Result<Option<RunInfo>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if let Ok(info) = serde_json::from_str::<RunInfo>(&text) {
            return Ok(Some(info));
        }
        Ok(text.trim().parse::<u32>().ok().map(|pid| RunInfo {
            pid,
            run_id: String::new(),
            started_at_ms: 0,
        }))
    }
}

/// The process that holds a directory's run lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its pid, as the kernel reports it for the lock.
    pub pid: u32,
    /// What its pid file says, when the pid file names the same process.
    pub info: Option<RunInfo>,
}

/// Whether a mission runs in a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunState {
    /// No run holds the directory and no pid file is left.
    Idle,
    /// A run holds the directory.
    Running(Holder),
    /// No run holds the directory, but a pid file was left by one that ended without
    /// cleaning up (killed, crashed). The next run removes it.
    Stale(RunInfo),
}

/// Why a directory could not be locked or its run signalled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunLockError {
    /// Another run holds the directory.
    #[error("another run (pid {}{}) holds {}", holder.pid, holder.info.as_ref().map(|i| format!(", run {}", i.run_id)).unwrap_or_default(), path.display())]
    Held {
        /// The lock file.
        path: PathBuf,
        /// Who holds it.
        holder: Holder,
    },
    /// No run holds the directory (for [`RunLock::signal`]).
    #[error("no run holds {}", path.display())]
    NotRunning {
        /// The lock file.
        path: PathBuf,
        /// A pid file left by a run that ended without cleaning up, if any.
        stale: Option<RunInfo>,
    },
    /// The lock file or the pid file could not be used.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> RunLockError + '_ {
    move |source| RunLockError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The whole-file write lock `F_GETLK` asks about.
fn whole_file() -> Flock {
    Flock {
        start: 0,
        length: 0,
        pid: None,
        typ: FlockType::WriteLock,
        offset_type: FlockOffsetType::Set,
    }
}

/// The pid of the process holding a lock on `file`, if any.
fn lock_holder(file: &File) -> io::Result<Option<u32>> {
    Ok(rustix::process::fcntl_getlk(file, &whole_file())?
        .filter(|lock| lock.typ != FlockType::Unlocked)
        .map(|lock| {
            lock.pid
                .map_or(std::process::id(), |pid| pid.as_raw_nonzero().get() as u32)
        }))
}

/// A run's hold on a project directory; released (and its pid file removed) on drop.
#[derive(Debug)]
#[must_use = "the directory is released when the lock is dropped"]
pub struct RunLock {
    file: File,
    lock_path: PathBuf,
    pid_path: PathBuf,
    info: RunInfo,
    stale: Option<RunInfo>,
}

impl RunLock {
    /// Takes the run lock of `state_dir` (created if missing) without waiting, then writes
    /// the pid file (replacing a stale one).
    ///
    /// # Errors
    /// [`RunLockError::Held`] naming the holder when another run (or this process) holds it;
    /// [`RunLockError::Io`] when the directory or a file cannot be used.
    pub fn acquire(state_dir: &Path) -> Result<RunLock, RunLockError> {
        std::fs::create_dir_all(state_dir).map_err(io_error(state_dir))?;
        let lock_path = state_dir.join(RUN_LOCK_FILE);
        let pid_path = state_dir.join(PID_FILE);
        let mut held = HELD.lock();
        if held.contains(&lock_path) {
            return Err(RunLockError::Held {
                holder: Holder {
                    pid: std::process::id(),
                    info: RunInfo::read(&pid_path).ok().flatten(),
                },
                path: lock_path,
            });
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io_error(&lock_path))?;
        if let Err(e) = rustix::fs::fcntl_lock(&file, FlockOperation::NonBlockingLockExclusive) {
            let e = io::Error::from(e);
            if !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::PermissionDenied
            ) {
                return Err(RunLockError::Io {
                    path: lock_path,
                    source: e,
                });
            }
            let pid = lock_holder(&file)
                .map_err(io_error(&lock_path))?
                .unwrap_or(0);
            let info = RunInfo::read(&pid_path)
                .ok()
                .flatten()
                .filter(|i| i.pid == pid);
            return Err(RunLockError::Held {
                path: lock_path,
                holder: Holder { pid, info },
            });
        }
        // Ours now: a pid file still there was left by a run that did not clean up.
        let stale = RunInfo::read(&pid_path).ok().flatten();
        let info = RunInfo::now();
        let tmp = state_dir.join(format!("{PID_FILE}.{}.tmp", info.pid));
        let text = serde_json::to_string(&info).map_err(|e| RunLockError::Io {
            path: pid_path.clone(),
            source: io::Error::other(e),
        })?;
        std::fs::write(&tmp, text + "\n").map_err(io_error(&tmp))?;
        std::fs::rename(&tmp, &pid_path).map_err(io_error(&pid_path))?;
        held.push(lock_path.clone());
        Ok(RunLock {
            file,
            lock_path,
            pid_path,
            info,
            stale,
        })
    }

    /// The state directory this lock holds.
    pub fn state_dir(&self) -> &Path {
        self.lock_path.parent().unwrap_or(Path::new("."))
    }

    /// This run's pid, id and start time.
    pub fn info(&self) -> &RunInfo {
        &self.info
    }

    /// The stale pid file [`acquire`](Self::acquire) replaced, if there was one.
    pub fn replaced_stale(&self) -> Option<&RunInfo> {
        self.stale.as_ref()
    }

    /// Whether a run holds `state_dir`, and who. Writes nothing.
    ///
    /// # Errors
    /// When the lock file exists but cannot be opened or queried.
    pub fn state(state_dir: &Path) -> Result<RunState, RunLockError> {
        let lock_path = state_dir.join(RUN_LOCK_FILE);
        let pid_path = state_dir.join(PID_FILE);
        let pid_file = RunInfo::read(&pid_path).map_err(io_error(&pid_path))?;
        if HELD.lock().contains(&lock_path) {
            return Ok(RunState::Running(Holder {
                pid: std::process::id(),
                info: pid_file,
            }));
        }
        let file = match File::open(&lock_path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(pid_file.map_or(RunState::Idle, RunState::Stale));
            }
            Err(e) => return Err(io_error(&lock_path)(e)),
        };
        match lock_holder(&file).map_err(io_error(&lock_path))? {
            Some(pid) => Ok(RunState::Running(Holder {
                pid,
                info: pid_file.filter(|i| i.pid == pid),
            })),
            None => Ok(pid_file.map_or(RunState::Idle, RunState::Stale)),
        }
    }

    /// Sends `signal` to the run holding `state_dir`, and to no other process: the holder's
    /// pid comes from the kernel's record of the lock, a pidfd is opened on it, and the lock is
    /// checked once more before the signal goes through that pidfd (a holder that ended in
    /// between, its pid reused, is never signalled).
    ///
    /// # Errors
    /// [`RunLockError::NotRunning`] (with a stale pid file, if any) when no run holds the
    /// directory; [`RunLockError::Io`] when the lock cannot be queried or the signal sent.
    pub fn signal(
        state_dir: &Path,
        signal: rustix::process::Signal,
    ) -> Result<Holder, RunLockError> {
        let lock_path = state_dir.join(RUN_LOCK_FILE);
        let not_running = |path: &Path| RunLockError::NotRunning {
            path: path.to_owned(),
            stale: RunInfo::read(&state_dir.join(PID_FILE)).ok().flatten(),
        };
        let holder = match Self::state(state_dir)? {
            RunState::Running(holder) => holder,
            RunState::Idle | RunState::Stale(_) => return Err(not_running(&lock_path)),
        };
        if holder.pid == std::process::id() {
            return Err(RunLockError::Io {
                path: lock_path,
                source: io::Error::other("this process holds the lock; it does not signal itself"),
            });
        }
        send(state_dir, &lock_path, &holder, signal)?;
        Ok(holder)
    }
}

/// The holder's pid as the OS takes it.
fn holder_pid(lock_path: &Path, holder: &Holder) -> Result<rustix::process::Pid, RunLockError> {
    rustix::process::Pid::from_raw(holder.pid as i32).ok_or_else(|| RunLockError::Io {
        path: lock_path.to_owned(),
        source: io::Error::other("the lock holder has no pid"),
    })
}

#[cfg(target_os = "linux")]
fn send(
    state_dir: &Path,
    lock_path: &Path,
    holder: &Holder,
    signal: rustix::process::Signal,
) -> Result<(), RunLockError> {
    let pid = holder_pid(lock_path, holder)?;
    let pidfd = match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => fd,
        // The holder ended since the lock was read.
        Err(rustix::io::Errno::SRCH) => {
            return Err(RunLockError::NotRunning {
                path: lock_path.to_owned(),
                stale: None,
            });
        }
        Err(e) => return Err(io_error(lock_path)(e.into())),
    };
    // The pidfd names one process for good; it is the run only if it still holds the lock.
    match RunLock::state(state_dir)? {
        RunState::Running(now) if now.pid == holder.pid => {}
        _ => {
            return Err(RunLockError::NotRunning {
                path: lock_path.to_owned(),
                stale: None,
            });
        }
    }
    rustix::process::pidfd_send_signal(&pidfd, signal).map_err(|e| io_error(lock_path)(e.into()))
}

#[cfg(not(target_os = "linux"))]
fn send(
    _state_dir: &Path,
    lock_path: &Path,
    holder: &Holder,
    signal: rustix::process::Signal,
) -> Result<(), RunLockError> {
    let pid = holder_pid(lock_path, holder)?;
    rustix::process::kill_process(pid, signal).map_err(|e| io_error(lock_path)(e.into()))
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // The pid file goes first (while the lock still says no one else can write it), and
        // only if it is still ours.
        if RunInfo::read(&self.pid_path)
            .ok()
            .flatten()
            .is_some_and(|i| i.run_id == self.info.run_id)
        {
            let _ = std::fs::remove_file(&self.pid_path);
        }
        HELD.lock().retain(|p| p != &self.lock_path);
        // Closing `file` releases the lock; the lock file itself stays (deleting it would
        // let two processes lock two different files of the same name).
        let _ = &self.file;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_directory_is_refused_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(".orchestrator");
        assert_eq!(RunLock::state(&state).unwrap(), RunState::Idle);
        let lock = RunLock::acquire(&state).unwrap();
        assert_eq!(lock.info().pid, std::process::id());
        match RunLock::state(&state).unwrap() {
            RunState::Running(holder) => {
                assert_eq!(holder.pid, std::process::id());
                assert_eq!(holder.info.as_ref(), Some(lock.info()));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            RunLock::acquire(&state),
            Err(RunLockError::Held { .. })
        ));
        let info = lock.info().clone();
        drop(lock);
        assert_eq!(RunLock::state(&state).unwrap(), RunState::Idle);
        assert!(!state.join(PID_FILE).exists());
        let again = RunLock::acquire(&state).unwrap();
        assert_ne!(again.info().run_id, info.run_id);
    }

    #[test]
    fn a_pid_file_without_a_lock_is_stale_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(".orchestrator");
        std::fs::create_dir_all(&state).unwrap();
        // A bare pid of a process that is alive (this one): still stale, no lock is held.
        std::fs::write(state.join(PID_FILE), format!("{}\n", std::process::id())).unwrap();
        match RunLock::state(&state).unwrap() {
            RunState::Stale(info) => assert_eq!(info.pid, std::process::id()),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            RunLock::signal(&state, rustix::process::Signal::TERM),
            Err(RunLockError::NotRunning { stale: Some(_), .. })
        ));
        let lock = RunLock::acquire(&state).unwrap();
        assert_eq!(
            lock.replaced_stale().map(|i| i.pid),
            Some(std::process::id())
        );
    }
}
