//! The project's files as the mission sees them (the Planner's file list, an item's files
//! before and after its Worker turn, their diff), and [`Offload`]: the worker threads that
//! read and diff them, so no file I/O or diff runs on an async thread.

use std::path::{Path, PathBuf};

use orch_queue::WorkStealingPool;
use tokio::sync::oneshot;

/// The mission's threads for blocking work: reading and walking files, diffing them,
/// writing the report. An `orch-queue` work-stealing pool, so a burst of diffs (many Worker
/// turns ending together) spreads over its threads.
#[derive(Debug)]
pub(crate) struct Offload {
    pool: Option<WorkStealingPool>,
}

impl Offload {
    /// A pool of `threads` threads (falls back to tokio's blocking threads when the pool
    /// cannot start).
    pub(crate) fn new(threads: usize) -> Self {
        let pool = WorkStealingPool::builder()
            .threads(threads.max(1))
            .name_prefix("orch-mission-io")
            .build()
            .map_err(
                |e| tracing::warn!(error = %e, "no offload pool; using tokio's blocking threads"),
            )
            .ok();
        Offload { pool }
    }

    /// Runs `work` on a pool thread and waits for its result without blocking the runtime.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let (tx, rx) = oneshot::channel();
        let task = move || {
            let _ = tx.send(work());
        };
        let task = match &self.pool {
            Some(pool) => match pool.spawn(task) {
                Ok(()) => None,
                Err(rejected) => Some(rejected.into_inner()),
            },
            None => Some(task),
        };
        if let Some(task) = task {
            // Shut down, or never started: tokio's blocking threads do it.
            let _ = tokio::task::spawn_blocking(task).await;
        }
        match rx.await {
            Ok(value) => value,
            // Only a panicking `work` drops the sender; let the panic surface here.
            Err(_) => panic!("offloaded work panicked"),
        }
    }
}

impl Drop for Offload {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            let _ = pool.shutdown(orch_queue::ShutdownPolicy::Drain);
        }
    }
}

/// Files of the project (relative paths, sorted), for the Planner; skips VCS, build and
/// orchestrator state directories. At most 5,000.
pub(crate) fn project_files(dir: &Path) -> Vec<String> {
    const SKIP: [&str; 6] = [
        ".git",
        ".orchestrator",
        "target",
        "node_modules",
        ".opencode",
        ".tools",
    ];
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if SKIP.iter().any(|s| name == *s) {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
            if out.len() > 5_000 {
                break;
            }
        }
    }
    out.sort();
    out
}

/// The item's files as they are now (missing files read as empty).
pub(crate) fn read_files(dir: &Path, files: &[String]) -> Vec<(String, String)> {
    files
        .iter()
        .map(|f| {
            let text = std::fs::read(dir.join(f))
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            (f.clone(), text)
        })
        .collect()
}

/// A unified diff of each file between two readings.
pub(crate) fn diff_files(before: &[(String, String)], after: &[(String, String)]) -> String {
    let mut out = String::new();
    for ((name, old), (_, new)) in before.iter().zip(after) {
        if old != new {
            let diff = similar::TextDiff::from_lines(old, new);
            out.push_str(
                &diff
                    .unified_diff()
                    .context_radius(3)
                    .header(&format!("a/{name}"), &format!("b/{name}"))
                    .to_string(),
            );
        }
    }
    out
}

/// The item's files read now, diffed against `before`: what its Worker turn changed.
pub(crate) fn diff_since(dir: &Path, files: &[String], before: &[(String, String)]) -> String {
    diff_files(before, &read_files(dir, files))
}

/// The text a review gets for an item whose diff was lost (a restart): its files as they
/// are.
pub(crate) fn current_contents(dir: &Path, files: &[String]) -> String {
    read_files(dir, files)
        .into_iter()
        .map(|(f, t)| {
            format!("--- {f} (current content; the attempt's diff was lost in a restart)\n{t}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Writes `text` to `path` whole (a temporary file renamed over it).
pub(crate) fn write_whole(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp: PathBuf = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffs_show_changed_files_only() {
        let before = vec![
            ("a.txt".to_owned(), "one\n".to_owned()),
            ("b.txt".to_owned(), "same\n".to_owned()),
        ];
        let after = vec![
            ("a.txt".to_owned(), "one\ntwo\n".to_owned()),
            ("b.txt".to_owned(), "same\n".to_owned()),
        ];
        let diff = diff_files(&before, &after);
        assert!(
            diff.contains("--- a/a.txt") && diff.contains("+two"),
            "{diff}"
        );
        assert!(!diff.contains("b.txt"));
    }

    #[test]
    fn offloaded_work_returns_its_value_and_survives_a_shut_pool() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let offload = Offload::new(2);
            assert_eq!(offload.run(|| 6 * 7).await, 42);
            if let Some(pool) = &offload.pool {
                let _ = pool.shutdown(orch_queue::ShutdownPolicy::Drain);
            }
            assert_eq!(offload.run(|| "after").await, "after");
        });
    }

    #[test]
    fn project_files_skip_state_and_vcs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".git")).unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join(".git/HEAD"), "x").unwrap();
        std::fs::write(dir.path().join("src/a.rs"), "x").unwrap();
        std::fs::write(dir.path().join("README.md"), "x").unwrap();
        assert_eq!(project_files(dir.path()), ["README.md", "src/a.rs"]);
    }
}
