//! Installing the orchestrator's entries (agents, …) into a project's OpenCode config.
//!
//! The file is edited by text splices at the ranges of its syntax tree (`jsonc_edit`), so
//! comments, formatting, key order and every entry we do not touch stay byte-for-byte as they
//! were, and uninstall removes exactly the text install added (an install followed by an
//! uninstall gives the original bytes back). A UTF-8 byte-order mark is accepted and kept. A
//! repeated key resolves to its last occurrence, as in `JSON.parse` (what OpenCode reads), for
//! install, dry run, verification and uninstall alike. `opencode.jsonc` is preferred when
//! present, then `opencode.json`; with neither, a new `opencode.json` is created.
//!
//! Each change is safe: the file must parse (otherwise it is left untouched and the error
//! names line and column); a timestamped backup is written first (the last 5 are kept); the
//! new text goes to a temporary file that is renamed over the original; the result is read
//! back and verified; on any failure the backup is restored. Installing twice changes nothing
//! the second time, `dry_run` only computes the diff, and uninstall removes only entries that
//! still hold exactly what install wrote.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::jsonc_edit::{self, EditError, Removal};

/// File names OpenCode reads, in order of preference.
pub const CONFIG_FILES: [&str; 2] = ["opencode.jsonc", "opencode.json"];
const NEW_FILE: &str = "{\n  \"$schema\": \"https://opencode.ai/config.json\"\n}\n";
const BACKUP_MARK: &str = ".orch-backup-";

/// Why an install or uninstall did not happen (the file is then unchanged or restored).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// The existing file is not valid JSONC; it was not touched.
    #[error("cannot parse {}: {message} at line {line}, column {column}; the file was left untouched", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// The file's root, or a container on an entry's path, is not an object.
    #[error("{} at `{key}` is not an object; cannot install there", path.display())]
    NotAnObject {
        /// The file.
        path: PathBuf,
        /// Dotted path of the offending value.
        key: String,
    },
    /// An entry already exists with a different value (and `force` is off).
    #[error("{} already has a different `{key}`; refusing to overwrite it (use force to replace)", path.display())]
    Conflict {
        /// The file.
        path: PathBuf,
        /// Dotted path of the entry.
        key: String,
    },
    /// Reading, writing or renaming failed; the original content was restored.
    #[error("i/o error on {}: {source}{}", path.display(), if *restored { " (original restored)" } else { "" })]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
        /// Whether the backup was put back.
        restored: bool,
    },
    /// The written file did not read back as expected; the original content was restored.
    #[error("verification of {} failed: {message}; original restored", path.display())]
    Verify {
        /// The file.
        path: PathBuf,
        /// What did not match.
        message: String,
    },
}

/// One value to install at a path of object keys (e.g. `["agent", "orch-worker"]`).
#[derive(Clone, Debug, PartialEq)]
pub struct InstallEntry {
    /// Object keys from the root.
    pub path: Vec<String>,
    /// The value.
    pub value: Value,
}

/// What to install.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InstallSpec {
    /// The entries.
    pub entries: Vec<InstallEntry>,
    /// Replace entries that exist with a different value (default: refuse with
    /// [`InstallError::Conflict`]).
    pub force: bool,
}

impl InstallSpec {
    /// An empty spec.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an agent definition (`agent.<name>`).
    pub fn agent(self, name: impl Into<String>, definition: Value) -> Self {
        self.entry(["agent".to_owned(), name.into()], definition)
    }

    /// Adds a value at `path`.
    pub fn entry<I, S>(mut self, path: I, value: Value) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.entries.push(InstallEntry {
            path: path.into_iter().map(Into::into).collect(),
            value,
        });
        self
    }

    /// Replaces differing existing entries.
    pub fn force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }
}

/// What an install, uninstall or dry run did (or would do).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct InstallReport {
    /// The config file.
    pub path: PathBuf,
    /// Whether the file changed (or, for a dry run, would change).
    pub changed: bool,
    /// The backup written before the change.
    pub backup: Option<PathBuf>,
    /// Unified diff of the change (empty when nothing changes).
    pub diff: String,
    /// Dotted paths left alone by uninstall because they no longer hold what install wrote.
    pub kept: Vec<String>,
}

type Hook = Arc<dyn Fn(&Path) -> std::io::Result<()> + Send + Sync>;

/// Installs [`InstallSpec`]s into the OpenCode config of one project directory.
#[derive(Clone)]
pub struct ConfigInstaller {
    dir: PathBuf,
    keep_backups: usize,
    after_write: Option<Hook>,
}

impl fmt::Debug for ConfigInstaller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigInstaller")
            .field("dir", &self.dir)
            .field("keep_backups", &self.keep_backups)
            .finish_non_exhaustive()
    }
}

fn dotted(path: &[String]) -> String {
    path.join(".")
}

const BOM: char = '\u{feff}';

/// The text without its byte-order mark, and the mark (`""` when there is none).
fn split_bom(text: &str) -> (&'static str, &str) {
    match text.strip_prefix(BOM) {
        Some(rest) => ("\u{feff}", rest),
        None => ("", text),
    }
}

impl ConfigInstaller {
    /// An installer for the project in `dir`; keeps 5 backups.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            keep_backups: 5,
            after_write: None,
        }
    }

    /// How many backups to keep (default 5, at least 1).
    pub fn keep_backups(mut self, n: usize) -> Self {
        self.keep_backups = n.max(1);
        self
    }

    /// A hook run right after the new file is in place and before it is verified; an error
    /// from it is treated like a failed write (the backup is restored). For fault-injection
    /// tests and for callers that validate the config further (e.g. by asking OpenCode).
    pub fn after_write(
        mut self,
        hook: impl Fn(&Path) -> std::io::Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.after_write = Some(Arc::new(hook));
        self
    }

    /// The config file used: `opencode.jsonc` if present, else `opencode.json` (which is
    /// created if neither exists).
    pub fn config_path(&self) -> PathBuf {
        CONFIG_FILES
            .iter()
            .map(|name| self.dir.join(name))
            .find(|p| p.is_file())
            .unwrap_or_else(|| self.dir.join(CONFIG_FILES[1]))
    }

    /// The backups of the config file, oldest first.
    ///
    /// # Errors
    /// When the directory cannot be read.
    pub fn backups(&self) -> std::io::Result<Vec<PathBuf>> {
        let path = self.config_path();
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            return Ok(Vec::new());
        };
        let prefix = format!("{name}{BACKUP_MARK}");
        let mut found: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
            })
            .collect();
        found.sort();
        Ok(found)
    }

    /// Installs `spec`.
    ///
    /// # Errors
    /// See [`InstallError`]; on every error the file is unchanged (or restored).
    pub fn install(&self, spec: &InstallSpec) -> Result<InstallReport, InstallError> {
        self.change(spec, Mode::Install, false)
    }

    /// Computes what [`ConfigInstaller::install`] would change, without writing anything.
    ///
    /// # Errors
    /// As `install`, minus the write errors.
    pub fn dry_run(&self, spec: &InstallSpec) -> Result<InstallReport, InstallError> {
        self.change(spec, Mode::Install, true)
    }

    /// Removes the entries of `spec` that still hold exactly the installed value (others are
    /// reported in [`InstallReport::kept`]), and containers left empty by that removal.
    ///
    /// # Errors
    /// See [`InstallError`].
    pub fn uninstall(&self, spec: &InstallSpec) -> Result<InstallReport, InstallError> {
        self.change(spec, Mode::Uninstall, false)
    }

    fn change(
        &self,
        spec: &InstallSpec,
        mode: Mode,
        dry_run: bool,
    ) -> Result<InstallReport, InstallError> {
        let path = self.config_path();
        let io = |source| InstallError::Io {
            path: path.clone(),
            source,
            restored: false,
        };
        let existed = path.is_file();
        let old = if existed {
            std::fs::read_to_string(&path).map_err(io)?
        } else {
            String::new()
        };
        let (bom, body) = split_bom(&old);
        let base = if existed { body } else { NEW_FILE };
        jsonc_edit::parse(base).map_err(|e| InstallError::Parse {
            path: path.clone(),
            line: e.line_display(),
            column: e.column_display(),
            message: e.kind().to_string(),
        })?;
        let mut text = base.to_owned();
        let mut kept = Vec::new();
        for entry in spec.entries.iter().filter(|e| !e.path.is_empty()) {
            match mode {
                Mode::Install => {
                    match jsonc_edit::set(&text, &entry.path, &entry.value, spec.force) {
                        Ok(Some(changed)) => text = changed,
                        Ok(None) => {}
                        Err(EditError::Conflict) => {
                            return Err(InstallError::Conflict {
                                path: path.clone(),
                                key: dotted(&entry.path),
                            });
                        }
                        Err(EditError::NotAnObject { depth }) => {
                            return Err(InstallError::NotAnObject {
                                path: path.clone(),
                                key: if depth == 0 {
                                    "(root)".into()
                                } else {
                                    dotted(&entry.path[..depth])
                                },
                            });
                        }
                    }
                }
                Mode::Uninstall => match jsonc_edit::remove(&text, &entry.path, &entry.value) {
                    Removal::Removed(changed) => text = changed,
                    Removal::Differs => kept.push(dotted(&entry.path)),
                    Removal::Absent => {}
                },
            }
        }
        let new = format!("{bom}{text}");
        // Uninstalling from a file that does not exist changes nothing (and creates nothing).
        let changed = (existed || mode != Mode::Uninstall) && new != old;
        let diff = if changed {
            similar::TextDiff::from_lines(&old, &new)
                .unified_diff()
                .header(&path.to_string_lossy(), &path.to_string_lossy())
                .to_string()
        } else {
            String::new()
        };
        let mut report = InstallReport {
            path: path.clone(),
            changed,
            backup: None,
            diff,
            kept,
        };
        if !changed || dry_run {
            return Ok(report);
        }
        // Check the new text before touching the disk.
        self.verify_text(&new, spec, mode, &path)?;
        let backup = if existed {
            Some(self.backup(&path, &old).map_err(io)?)
        } else {
            None
        };
        report.backup = backup.clone();
        if let Err(e) = self.write_and_verify(&path, &new, spec, mode) {
            let restored = self.restore(&path, existed, &old).is_ok();
            return Err(match e {
                InstallError::Io { path, source, .. } => InstallError::Io {
                    path,
                    source,
                    restored,
                },
                other => other,
            });
        }
        self.rotate().map_err(io)?;
        Ok(report)
    }

    fn verify_text(
        &self,
        text: &str,
        spec: &InstallSpec,
        mode: Mode,
        path: &Path,
    ) -> Result<(), InstallError> {
        let (_, text) = split_bom(text);
        jsonc_edit::parse(text).map_err(|e| InstallError::Verify {
            path: path.to_owned(),
            message: format!("result does not parse: {e}"),
        })?;
        for entry in spec.entries.iter().filter(|e| !e.path.is_empty()) {
            let found = jsonc_edit::lookup(text, &entry.path);
            let ok = match mode {
                Mode::Install => found.as_ref() == Some(&entry.value),
                Mode::Uninstall => found.as_ref() != Some(&entry.value),
            };
            if !ok {
                return Err(InstallError::Verify {
                    path: path.to_owned(),
                    message: format!("`{}` does not hold the expected value", dotted(&entry.path)),
                });
            }
        }
        Ok(())
    }

    fn write_and_verify(
        &self,
        path: &Path,
        text: &str,
        spec: &InstallSpec,
        mode: Mode,
    ) -> Result<(), InstallError> {
        let io = |source| InstallError::Io {
            path: path.to_owned(),
            source,
            restored: false,
        };
        atomic_write(path, text).map_err(io)?;
        if let Some(hook) = &self.after_write {
            hook(path).map_err(io)?;
        }
        let back = std::fs::read_to_string(path).map_err(io)?;
        if back != text {
            return Err(InstallError::Verify {
                path: path.to_owned(),
                message: "file content differs from what was written".into(),
            });
        }
        self.verify_text(&back, spec, mode, path)
    }

    fn restore(&self, path: &Path, existed: bool, old: &str) -> std::io::Result<()> {
        if existed {
            atomic_write(path, old)
        } else {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        }
    }

    fn backup(&self, path: &Path, old: &str) -> std::io::Result<PathBuf> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        // Zero-padded epoch ms sorts by time; a counter separates backups of the same ms.
        for n in 0..1000u32 {
            let candidate = self.dir.join(format!("{name}{BACKUP_MARK}{ms:015}-{n:03}"));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&candidate)
            {
                Ok(mut f) => {
                    f.write_all(old.as_bytes())?;
                    f.sync_all()?;
                    return Ok(candidate);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::other("too many backups in one millisecond"))
    }

    fn rotate(&self) -> std::io::Result<()> {
        let backups = self.backups()?;
        let excess = backups.len().saturating_sub(self.keep_backups);
        for old in &backups[..excess] {
            std::fs::remove_file(old)?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Install,
    Uninstall,
}

/// Writes `text` to a temporary file in the same directory, syncs it, and renames it over
/// `path` (atomic on POSIX file systems).
fn atomic_write(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".opencode-config-")
        .tempfile_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    if let Ok(meta) = std::fs::metadata(path) {
        tmp.as_file().set_permissions(meta.permissions())?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
