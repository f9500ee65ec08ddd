//! The mission journal: an append-only JSONL log of what happened, fsynced in the background.
//!
//! With the versioned `TODO.md` it is enough to resume a mission after a crash: the journal
//! says which Worker turns finished (so their items go to review instead of being redone) and
//! which sessions a dead process left open (so they are closed).

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::{Condvar, Mutex};

use orch_core::AgentRole;
use serde::{Deserialize, Serialize};

use crate::events::MissionEvent;
use crate::totals::MissionTotals;

/// The journal's file name inside `.orchestrator/`.
pub const JOURNAL_FILE: &str = "journal.jsonl";

/// One thing the journal records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum JournalEntry {
    /// A mission event.
    Event {
        /// The event.
        event: MissionEvent,
    },
    /// A backend session was opened (or taken from a pool).
    SessionOpened {
        /// Its role.
        role: AgentRole,
        /// The backend's id for it.
        session: String,
    },
    /// A backend session was given back or closed.
    SessionClosed {
        /// The backend's id for it.
        session: String,
    },
    /// On resume, an item the plan shows done whose `ItemDone` event was lost in a crash
    /// (the plan was committed, the process died before the journal line).
    Reconciled {
        /// The item.
        item: String,
        /// Its state in the plan.
        state: String,
    },
    /// Sessions left open by an earlier process were closed on resume.
    StaleSessionsClosed {
        /// Their ids.
        sessions: Vec<String>,
    },
    /// Items were put back to pending with their attempts reset (`task_cli retry`): failed
    /// items and the items they blocked.
    ItemsReset {
        /// The items.
        items: Vec<String>,
        /// Who asked, and why.
        reason: String,
    },
    /// The mission's git workspace, recorded before its branch and worktree are created (a
    /// resumed run creates what is missing, and finds them again).
    GitWorkspace {
        /// How the mission uses git.
        mode: crate::git::GitMode,
        /// The mission's branch.
        branch: String,
        /// Its worktree.
        worktree: PathBuf,
        /// The commit it starts from.
        base: String,
        /// The user's branch it starts from (and merges back into).
        base_branch: String,
    },
    /// A Worker lane's branch and worktree, recorded before they are created.
    GitLane {
        /// The lane.
        lane: usize,
        /// Its branch.
        branch: String,
        /// Its worktree.
        worktree: PathBuf,
    },
    /// Worktrees removed and branches deleted (the end of a mission, or `clean`).
    GitRemoved {
        /// The worktrees.
        worktrees: Vec<PathBuf>,
        /// The branches.
        branches: Vec<String>,
    },
}

/// A journal line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalRecord {
    /// Position in the journal, from 0.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The process that wrote it.
    pub pid: u32,
    /// What happened.
    #[serde(flatten)]
    pub entry: JournalEntry,
}

/// A journal that cannot be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// I/O on the journal file.
    #[error("journal {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A line in the middle of the journal is not a record (the torn last line of a crash is
    /// repaired instead).
    #[error("journal {path}:{line}: not a journal record: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// What reading a journal found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JournalContents {
    /// The records, in order.
    pub records: Vec<JournalRecord>,
    /// Bytes of a torn last line that were cut off (a crash mid-write), if any.
    pub repaired_bytes: u64,
}

impl JournalContents {
    /// Sessions opened and never closed (by any process), in opening order.
    pub fn open_sessions(&self) -> Vec<String> {
        let mut open: Vec<String> = Vec::new();
        for record in &self.records {
            match &record.entry {
                JournalEntry::SessionOpened { session, .. } => {
                    if !open.contains(session) {
                        open.push(session.clone());
                    }
                }
                JournalEntry::SessionClosed { session } => open.retain(|s| s != session),
                JournalEntry::StaleSessionsClosed { sessions } => {
                    open.retain(|s| !sessions.contains(s))
                }
                JournalEntry::Event { .. }
                | JournalEntry::Reconciled { .. }
                | JournalEntry::ItemsReset { .. }
                | JournalEntry::GitWorkspace { .. }
                | JournalEntry::GitLane { .. }
                | JournalEntry::GitRemoved { .. } => {}
            }
        }
        open
    }

    /// Whether the last Worker attempt of `item` finished its turn (and was not reviewed since).
    pub fn worker_finished(&self, item: &str) -> bool {
        let mut finished = false;
        for record in &self.records {
            if let JournalEntry::ItemsReset { items, .. } = &record.entry
                && items.iter().any(|i| i == item)
            {
                finished = false;
            }
            if let JournalEntry::Event { event } = &record.entry {
                match event {
                    MissionEvent::ItemStarted { item: i, .. } if i == item => finished = false,
                    MissionEvent::TurnFinished {
                        role: AgentRole::Worker,
                        item: Some(i),
                        ..
                    } if i == item => finished = true,
                    MissionEvent::Reviewed { item: i, .. } if i == item => finished = false,
                    _ => {}
                }
            }
        }
        finished
    }

    /// Items whose last attempt passed review: an `ItemDone` after their last `ItemStarted`.
    pub fn passed(&self) -> std::collections::BTreeSet<String> {
        let mut passed = std::collections::BTreeSet::new();
        for record in &self.records {
            match &record.entry {
                JournalEntry::Event {
                    event: MissionEvent::ItemStarted { item, .. },
                } => {
                    passed.remove(item);
                }
                JournalEntry::Event {
                    event: MissionEvent::ItemDone { item, .. },
                } => {
                    passed.insert(item.clone());
                }
                JournalEntry::ItemsReset { items, .. } => {
                    for item in items {
                        passed.remove(item);
                    }
                }
                _ => {}
            }
        }
        passed
    }

    /// The commit of each item on the mission's branch (`ItemCommitted` events).
    pub fn commits(&self) -> std::collections::BTreeMap<String, String> {
        let mut commits = std::collections::BTreeMap::new();
        for record in &self.records {
            if let JournalEntry::Event {
                event: MissionEvent::ItemCommitted { item, sha, .. },
            } = &record.entry
            {
                commits.insert(item.clone(), sha.clone());
            }
        }
        commits
    }

    /// The lane each item last started on (`ItemStarted` events).
    pub fn lanes(&self) -> std::collections::BTreeMap<String, usize> {
        let mut lanes = std::collections::BTreeMap::new();
        for record in &self.records {
            if let JournalEntry::Event {
                event: MissionEvent::ItemStarted { item, lane, .. },
            } = &record.entry
            {
                lanes.insert(item.clone(), *lane);
            }
        }
        lanes
    }

    /// How many times each item was marked done (events, and reconciliations on resume).
    pub fn done_counts(&self) -> std::collections::BTreeMap<String, u32> {
        let mut counts = std::collections::BTreeMap::new();
        for record in &self.records {
            match &record.entry {
                JournalEntry::Event {
                    event: MissionEvent::ItemDone { item, .. },
                } => *counts.entry(item.clone()).or_default() += 1,
                JournalEntry::Reconciled { item, state } if state == "done" => {
                    *counts.entry(item.clone()).or_default() += 1;
                }
                _ => {}
            }
        }
        counts
    }
}

/// An open journal.
///
/// Every record is written (`write(2)`) before [`append`](Journal::append) returns, so it
/// survives a crash of the process. With `fsync`, a background thread also fsyncs the file
/// whenever records were written since its last fsync (group commit): a crash of the machine
/// loses at most the records of the last few milliseconds, and no caller ever waits for a
/// disk flush. Dropping the journal waits for the last fsync.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
    next_seq: u64,
    syncer: Option<Syncer>,
    pid: u32,
    /// The figures of every record, kept up to date by `append`.
    totals: MissionTotals,
}

/// The journal's fsync thread and what it has done.
#[derive(Debug)]
struct Syncer {
    shared: Arc<(Mutex<SyncState>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct SyncState {
    written: u64,
    synced: u64,
    closing: bool,
}

impl Syncer {
    fn start(file: File, path: PathBuf) -> io::Result<Self> {
        let shared: Arc<(Mutex<SyncState>, Condvar)> = Arc::default();
        let state = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("journal-fsync".into())
            .spawn(move || {
                let (lock, changed) = &*state;
                let mut s = lock.lock();
                loop {
                    if s.written == s.synced {
                        if s.closing {
                            break;
                        }
                        changed.wait(&mut s);
                        continue;
                    }
                    let target = s.written;
                    drop(s);
                    if let Err(e) = file.sync_data() {
                        tracing::warn!(path = %path.display(), error = %e, "cannot fsync the mission journal");
                    }
                    s = lock.lock();
                    s.synced = target;
                    changed.notify_all();
                }
            })?;
        Ok(Syncer {
            shared,
            thread: Some(thread),
        })
    }

    fn written(&self) {
        let (lock, changed) = &*self.shared;
        lock.lock().written += 1;
        changed.notify_all();
    }

    /// Waits until every record written so far is fsynced.
    fn flush(&self) {
        let (lock, changed) = &*self.shared;
        let mut s = lock.lock();
        let target = s.written;
        while s.synced < target {
            changed.wait(&mut s);
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        let (lock, changed) = &*self.shared;
        lock.lock().closing = true;
        changed.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Journal {
    /// Reads the journal in `dir` (missing: empty), cutting off a torn last line.
    ///
    /// # Errors
    /// [`JournalError::Io`], or [`JournalError::Corrupt`] for a bad line that is not the last.
    pub fn read(dir: &Path) -> Result<JournalContents, JournalError> {
        let path = dir.join(JOURNAL_FILE);
        let io_err = |source| JournalError::Io {
            path: path.clone(),
            source,
        };
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(JournalContents::default()),
            Err(e) => return Err(io_err(e)),
        };
        let mut contents = JournalContents::default();
        let mut reader = BufReader::new(file);
        let mut line = String::new();
        let mut number = 0;
        loop {
            line.clear();
            let read = reader.read_line(&mut line).map_err(io_err)?;
            if read == 0 {
                break;
            }
            number += 1;
            let complete = line.ends_with('\n');
            match serde_json::from_str::<JournalRecord>(line.trim_end()) {
                Ok(record) if complete => contents.records.push(record),
                // A last line without its newline was cut by a crash, parseable or not.
                _ if !complete => contents.repaired_bytes = read as u64,
                Err(e) => {
                    return Err(JournalError::Corrupt {
                        path: path.clone(),
                        line: number,
                        message: e.to_string(),
                    });
                }
                Ok(_) => unreachable!("complete and parsed is the first arm"),
            }
        }
        Ok(contents)
    }

    /// Opens the journal in `dir` for appending (creating it), repairing a torn last line.
    /// `fsync = false` never fsyncs records (tests and benchmarks).
    ///
    /// # Errors
    /// As [`Journal::read`].
    pub fn open(dir: &Path, fsync: bool) -> Result<(Self, JournalContents), JournalError> {
        let contents = Self::read(dir)?;
        let path = dir.join(JOURNAL_FILE);
        let io_err = |source| JournalError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io_err)?;
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io_err)?;
        if contents.repaired_bytes > 0 {
            let len = file.metadata().map_err(io_err)?.len();
            file.set_len(len.saturating_sub(contents.repaired_bytes))
                .map_err(io_err)?;
            file.seek(SeekFrom::End(0)).map_err(io_err)?;
            file.sync_all().map_err(io_err)?;
        }
        let next_seq = contents.records.last().map_or(0, |r| r.seq + 1);
        let syncer = if fsync {
            let handle = file.try_clone().map_err(io_err)?;
            Some(Syncer::start(handle, path.clone()).map_err(io_err)?)
        } else {
            None
        };
        Ok((
            Journal {
                file,
                path,
                next_seq,
                syncer,
                pid: std::process::id(),
                totals: MissionTotals::from_records(&contents.records),
            },
            contents,
        ))
    }

    /// Appends one record: written before this returns, fsynced in the background (see
    /// [`Journal`]).
    ///
    /// # Errors
    /// [`JournalError::Io`].
    pub fn append(&mut self, entry: JournalEntry) -> Result<(), JournalError> {
        let record = JournalRecord {
            seq: self.next_seq,
            at_ms: now_ms(),
            pid: self.pid,
            entry,
        };
        let mut line = serde_json::to_string(&record).map_err(|e| JournalError::Io {
            path: self.path.clone(),
            source: io::Error::other(e),
        })?;
        line.push('\n');
        let io_err = |source| JournalError::Io {
            path: self.path.clone(),
            source,
        };
        self.file.write_all(line.as_bytes()).map_err(io_err)?;
        if let Some(syncer) = &self.syncer {
            syncer.written();
        }
        self.next_seq += 1;
        self.totals.observe(&record);
        Ok(())
    }

    /// The mission's figures over every record in the journal (those read at open and those
    /// appended since): what [`MissionTotals::from_records`] gives on the file.
    pub fn totals(&self) -> &MissionTotals {
        &self.totals
    }

    /// Appends one record to the journal of `dir` (opening and closing it), fsynced before
    /// this returns: for a tool that changes a mission between runs (`task_cli retry`).
    ///
    /// # Errors
    /// As [`Journal::open`] and [`Journal::append`].
    pub fn append_once(dir: &Path, entry: JournalEntry) -> Result<(), JournalError> {
        let (mut journal, _) = Self::open(dir, false)?;
        journal.append(entry)?;
        journal.file.sync_data().map_err(|source| JournalError::Io {
            path: journal.path.clone(),
            source,
        })
    }

    /// Waits until every record appended so far is on disk (a no-op without fsync).
    pub fn flush(&self) {
        if let Some(syncer) = &self.syncer {
            syncer.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(item: &str) -> JournalEntry {
        JournalEntry::Event {
            event: MissionEvent::ItemDone {
                item: item.into(),
                attempts: 1,
            },
        }
    }

    #[test]
    fn records_round_trip_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, contents) = Journal::open(dir.path(), true).unwrap();
        assert!(contents.records.is_empty());
        journal.append(event("T1")).unwrap();
        journal
            .append(JournalEntry::SessionOpened {
                role: AgentRole::Worker,
                session: "ses_1".into(),
            })
            .unwrap();
        drop(journal);
        let (mut journal, contents) = Journal::open(dir.path(), true).unwrap();
        assert_eq!(contents.records.len(), 2);
        assert_eq!(contents.records[1].seq, 1);
        journal.append(event("T2")).unwrap();
        let contents = Journal::read(dir.path()).unwrap();
        assert_eq!(contents.records[2].seq, 2);
        assert_eq!(contents.open_sessions(), vec!["ses_1".to_owned()]);
        assert_eq!(contents.done_counts().get("T2"), Some(&1));
    }

    #[test]
    fn fsyncs_catch_up_with_every_record_and_drop_waits_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(dir.path(), true).unwrap();
        for i in 0..200 {
            journal.append(event(&format!("T{i}"))).unwrap();
        }
        journal.flush();
        let syncer = journal.syncer.as_ref().unwrap();
        let (written, synced) = {
            let s = syncer.shared.0.lock();
            (s.written, s.synced)
        };
        assert_eq!((written, synced), (200, 200));
        journal.append(event("last")).unwrap();
        let shared = Arc::clone(&journal.syncer.as_ref().unwrap().shared);
        drop(journal);
        let s = shared.0.lock();
        assert_eq!(
            (s.written, s.synced),
            (201, 201),
            "drop waited for the last fsync"
        );
        assert_eq!(Journal::read(dir.path()).unwrap().records.len(), 201);
    }

    #[test]
    fn a_torn_last_line_is_cut_off_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(dir.path(), false).unwrap();
        journal.append(event("T1")).unwrap();
        drop(journal);
        let path = dir.path().join(JOURNAL_FILE);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"seq\":1,\"at_ms\":");
        std::fs::write(&path, &text).unwrap();
        let (mut journal, contents) = Journal::open(dir.path(), false).unwrap();
        assert_eq!(contents.records.len(), 1);
        assert_eq!(contents.repaired_bytes, 17);
        journal.append(event("T2")).unwrap();
        let contents = Journal::read(dir.path()).unwrap();
        assert_eq!(contents.records.len(), 2);
        assert_eq!(contents.repaired_bytes, 0);
    }

    #[test]
    fn a_bad_line_in_the_middle_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(JOURNAL_FILE), "garbage\n{}\n").unwrap();
        match Journal::read(dir.path()).unwrap_err() {
            JournalError::Corrupt { line, .. } => assert_eq!(line, 1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn worker_finished_tracks_the_last_attempt() {
        let rec = |event| JournalRecord {
            seq: 0,
            at_ms: 0,
            pid: 0,
            entry: JournalEntry::Event { event },
        };
        let started = || {
            rec(MissionEvent::ItemStarted {
                item: "T1".into(),
                attempt: 1,
                lane: 0,
                warm: false,
            })
        };
        let finished = || {
            rec(MissionEvent::TurnFinished {
                role: AgentRole::Worker,
                item: Some("T1".into()),
                tokens: Default::default(),
                elapsed_ms: 1,
                tool_calls: 0,
                cost: 0.0,
                model: None,
            })
        };
        let mut contents = JournalContents {
            records: vec![started(), finished()],
            repaired_bytes: 0,
        };
        assert!(contents.worker_finished("T1"));
        assert!(!contents.worker_finished("T2"));
        contents.records.push(started());
        assert!(!contents.worker_finished("T1"));
    }
}
