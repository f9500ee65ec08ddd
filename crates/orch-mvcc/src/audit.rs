//! The audit log: append-only JSONL, one record per commit, each record hashing the one before.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::AuditError;
use crate::plan::{ItemState, Plan};

/// The `prev` of the first record: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened to one item in a commit. `from == None` means added, `to == None` removed,
/// `from == to` edited without a state change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemChange {
    /// The item's id.
    pub id: String,
    /// State before the commit.
    pub from: Option<ItemState>,
    /// State after the commit.
    pub to: Option<ItemState>,
}

impl std::fmt::Display for ItemChange {
    /// `T1 pending -> done`, `T2 added (pending)`, `T3 removed (failed)`, `T4 edited (done)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.from, self.to) {
            (None, Some(to)) => write!(f, "{} added ({to})", self.id),
            (Some(from), None) => write!(f, "{} removed ({from})", self.id),
            (Some(from), Some(to)) if from == to => write!(f, "{} edited ({to})", self.id),
            (Some(from), Some(to)) => write!(f, "{} {from} -> {to}", self.id),
            (None, None) => write!(f, "{}", self.id),
        }
    }
}

/// One line of `audit.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The version this commit created (1, 2, ...).
    pub version: u64,
    /// Who committed (`external` for edits taken in from the file).
    pub writer: String,
    /// Commit time, milliseconds since the Unix epoch.
    pub ts_ms: u64,
    /// blake3 of the committed `TODO.md` bytes (hex).
    pub content: String,
    /// Changed items, or `None` when the previous plan was not known (an external edit seen
    /// by a process that had not read the version before it).
    pub changes: Option<Vec<ItemChange>>,
    /// Whether the title or description changed.
    #[serde(default)]
    pub header_changed: bool,
    /// The previous record's `hash` ([`GENESIS_HASH`] for version 1).
    pub prev: String,
    /// blake3 (hex) of this record's JSON without the `hash` field.
    pub hash: String,
}

#[derive(Serialize)]
struct RecordBody<'a> {
    version: u64,
    writer: &'a str,
    ts_ms: u64,
    content: &'a str,
    changes: &'a Option<Vec<ItemChange>>,
    header_changed: bool,
    prev: &'a str,
}

impl AuditRecord {
    /// The hash this record should carry.
    #[must_use]
    pub fn compute_hash(&self) -> String {
        let body = RecordBody {
            version: self.version,
            writer: &self.writer,
            ts_ms: self.ts_ms,
            content: &self.content,
            changes: &self.changes,
            header_changed: self.header_changed,
            prev: &self.prev,
        };
        // Serialising a struct of strings, integers and enums cannot fail.
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        blake3::hash(&bytes).to_hex().to_string()
    }

    pub(crate) fn seal(mut self) -> Self {
        self.hash = self.compute_hash();
        self
    }

    pub(crate) fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }
}

/// The item-level difference between two plans, in `new`'s order, removals last.
#[must_use]
pub fn diff_plans(old: &Plan, new: &Plan) -> Vec<ItemChange> {
    let old_items: HashMap<&str, &crate::Item> =
        old.items.iter().map(|i| (i.id.as_str(), i)).collect();
    let mut changes = Vec::new();
    for item in &new.items {
        match old_items.get(item.id.as_str()) {
            Some(prev) if *prev == item => {}
            Some(prev) => changes.push(ItemChange {
                id: item.id.as_str().to_owned(),
                from: Some(prev.state),
                to: Some(item.state),
            }),
            None => changes.push(ItemChange {
                id: item.id.as_str().to_owned(),
                from: None,
                to: Some(item.state),
            }),
        }
    }
    let new_ids: std::collections::HashSet<&str> =
        new.items.iter().map(|i| i.id.as_str()).collect();
    for item in &old.items {
        if !new_ids.contains(item.id.as_str()) {
            changes.push(ItemChange {
                id: item.id.as_str().to_owned(),
                from: Some(item.state),
                to: None,
            });
        }
    }
    changes
}

/// What [`verify_audit_log`] found in a log that verifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSummary {
    /// Number of records.
    pub records: u64,
    /// Version of the last record (0 for an empty log).
    pub last_version: u64,
    /// Hash of the last record ([`GENESIS_HASH`] for an empty log).
    pub last_hash: String,
}

fn io_err(path: &Path, e: &io::Error) -> AuditError {
    AuditError::Io {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// Reads every record of the log at `path` (a missing file is an empty log), checking the
/// chain as it goes.
///
/// # Errors
/// The first broken record: [`AuditError::Malformed`], [`AuditError::HashMismatch`],
/// [`AuditError::VersionGap`], [`AuditError::BrokenChain`] or [`AuditError::TornTail`].
pub fn read_audit_log(path: &Path) -> Result<Vec<AuditRecord>, AuditError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_err(path, &e)),
    };
    let mut records = Vec::new();
    let mut prev_hash = GENESIS_HASH.to_owned();
    let mut rest: &[u8] = &bytes;
    let mut line_no = 0usize;
    while !rest.is_empty() {
        line_no += 1;
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            return Err(AuditError::TornTail {
                line: line_no,
                bytes: rest.len() as u64,
            });
        };
        let line = &rest[..nl];
        rest = &rest[nl + 1..];
        let record: AuditRecord =
            serde_json::from_slice(line).map_err(|e| AuditError::Malformed {
                line: line_no,
                reason: e.to_string(),
            })?;
        let computed = record.compute_hash();
        if computed != record.hash {
            return Err(AuditError::HashMismatch {
                line: line_no,
                version: record.version,
                stored: record.hash,
                computed,
            });
        }
        let expected = records.len() as u64 + 1;
        if record.version != expected {
            return Err(AuditError::VersionGap {
                line: line_no,
                expected,
                found: record.version,
            });
        }
        if record.prev != prev_hash {
            return Err(AuditError::BrokenChain {
                line: line_no,
                version: record.version,
            });
        }
        prev_hash.clone_from(&record.hash);
        records.push(record);
    }
    Ok(records)
}

/// Walks the hash chain of the log at `path`.
///
/// # Errors
/// As [`read_audit_log`]: the first broken record, by line.
pub fn verify_audit_log(path: &Path) -> Result<AuditSummary, AuditError> {
    let records = read_audit_log(path)?;
    Ok(AuditSummary {
        records: records.len() as u64,
        last_version: records.last().map_or(0, |r| r.version),
        last_hash: records
            .last()
            .map_or_else(|| GENESIS_HASH.to_owned(), |r| r.hash.clone()),
    })
}

/// The end of the log as seen by the store.
#[derive(Debug, Clone)]
pub(crate) struct Tail {
    /// The last complete record and the byte offset where its line starts.
    pub(crate) last: Option<(AuditRecord, u64)>,
    /// Length of the log up to the end of the last complete line.
    pub(crate) complete_len: u64,
    /// Bytes after that: an incomplete (torn) line.
    pub(crate) torn_bytes: u64,
}

/// Reads the last complete record by reading the file backwards in growing windows.
pub(crate) fn read_tail(file: &mut File, len: u64) -> io::Result<Result<Tail, String>> {
    let mut window = len.min(4096);
    loop {
        let start = len - window;
        let mut buf = vec![0u8; usize::try_from(window).unwrap_or(usize::MAX)];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf)?;
        let complete_end = buf.iter().rposition(|&b| b == b'\n').map(|p| p + 1);
        let Some(ce) = complete_end else {
            if start == 0 {
                return Ok(Ok(Tail {
                    last: None,
                    complete_len: 0,
                    torn_bytes: len,
                }));
            }
            window = (window * 2).min(len);
            continue;
        };
        let line_start = match buf[..ce - 1].iter().rposition(|&b| b == b'\n') {
            Some(p) => p + 1,
            None if start == 0 => 0,
            None => {
                window = (window * 2).min(len);
                continue;
            }
        };
        let record: AuditRecord = match serde_json::from_slice(&buf[line_start..ce - 1]) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e.to_string())),
        };
        let complete_len = start + ce as u64;
        return Ok(Ok(Tail {
            last: Some((record, start + line_start as u64)),
            complete_len,
            torn_bytes: len - complete_len,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Item, ItemId};

    #[test]
    fn diff_reports_added_changed_removed() {
        let mut old = Plan::new("t");
        old.push(Item::new(ItemId::new("A").unwrap(), "a"));
        old.push(Item::new(ItemId::new("B").unwrap(), "b"));
        let mut new = old.clone();
        new.set_state("A", ItemState::Done);
        new.remove("B");
        new.push(Item::new(ItemId::new("C").unwrap(), "c"));
        let d = diff_plans(&old, &new);
        assert_eq!(d.len(), 3);
        assert_eq!(d[0].from, Some(ItemState::Pending));
        assert_eq!(d[0].to, Some(ItemState::Done));
        assert_eq!((d[1].id.as_str(), d[1].from), ("C", None));
        assert_eq!((d[2].id.as_str(), d[2].to), ("B", None));
        assert_eq!(d[0].to_string(), "A pending -> done");
        assert_eq!(d[1].to_string(), "C added (pending)");
    }

    #[test]
    fn hash_covers_every_field() {
        let r = AuditRecord {
            version: 1,
            writer: "w".into(),
            ts_ms: 5,
            content: "c".into(),
            changes: None,
            header_changed: false,
            prev: GENESIS_HASH.into(),
            hash: String::new(),
        }
        .seal();
        let mut t = r.clone();
        t.writer = "x".into();
        assert_ne!(t.compute_hash(), r.hash);
        let mut t = r.clone();
        t.ts_ms = 6;
        assert_ne!(t.compute_hash(), r.hash);
        assert_eq!(r.compute_hash(), r.hash);
    }
}
