//! Which OpenCode a real-server target runs, shared by the test binaries and benches
//! (included with `#[path]`).

use std::path::PathBuf;

use orch_opencode::{Generation, find_generation};

/// The binary of `generation`: `OPENCODE_BIN_V1` / `OPENCODE_BIN_V2` when set (as in
/// `orch_testkit::opencode`), else [`find_generation`] (`OPENCODE_BIN` when it is of that
/// generation, else the project-local install, else `PATH`). Without it the target's tests
/// are skipped, or fail when `CI` is set (tests that need OpenCode never skip on CI).
///
/// # Panics
/// When it is missing and `CI` is set.
pub(crate) fn binary_or_skip(generation: Generation) -> Option<PathBuf> {
    let var = match generation {
        Generation::V1 => "OPENCODE_BIN_V1",
        Generation::V2 => "OPENCODE_BIN_V2",
    };
    if let Some(path) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    match find_generation(generation) {
        Ok(found) => Some(found.path),
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("{e} (CI is set: tests that need OpenCode fail, never skip)")
        }
        Err(e) => {
            eprintln!("skipping the OpenCode {generation} tests: {e}");
            None
        }
    }
}
