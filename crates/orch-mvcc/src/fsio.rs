//! Atomic file replacement and the durability setting.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::error::StoreError;

/// Whether commits wait for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// fsync the audit record, each temporary file and the directory after each rename: a
    /// commit that returned survives power loss.
    #[default]
    Fsync,
    /// No fsync at all. Commits stay atomic and consistent if the *process* dies (the kernel
    /// keeps the written pages), but a power loss or kernel crash may lose recent commits or
    /// leave the files disagreeing. For tests and benchmarks only.
    NoSync,
}

impl Durability {
    pub(crate) fn is_synced(self) -> bool {
        matches!(self, Self::Fsync)
    }
}

/// Replaces `dir/name` with `bytes`: temp file, (fsync), rename, (fsync of `dir`).
pub(crate) fn write_atomic(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    durability: Durability,
) -> Result<(), StoreError> {
    let tmp = write_temp(dir, name, bytes, durability)?;
    rename_into(dir, &tmp, name, durability)
}

/// Writes `bytes` to the temp file of `dir/name` (and fsyncs it); returns its path.
pub(crate) fn write_temp(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    durability: Durability,
) -> Result<std::path::PathBuf, StoreError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| StoreError::io("creating", &tmp, e))?;
    file.write_all(bytes)
        .map_err(|e| StoreError::io("writing", &tmp, e))?;
    if durability.is_synced() {
        file.sync_all()
            .map_err(|e| StoreError::io("syncing", &tmp, e))?;
    }
    drop(file);
    Ok(tmp)
}

/// Renames a temp file over `dir/name` (and fsyncs `dir`).
pub(crate) fn rename_into(
    dir: &Path,
    tmp: &Path,
    name: &str,
    durability: Durability,
) -> Result<(), StoreError> {
    let target = dir.join(name);
    fs::rename(tmp, &target).map_err(|e| StoreError::io("renaming into", &target, e))?;
    if durability.is_synced() {
        sync_dir(dir)?;
    }
    Ok(())
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    // Directories cannot be opened for syncing on Windows; renames there are durable via
    // MoveFileEx semantics, so skipping is the best available.
    if cfg!(unix) {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StoreError::io("syncing directory", dir, e))?;
    }
    Ok(())
}
