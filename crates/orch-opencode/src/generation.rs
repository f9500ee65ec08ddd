//! The two generations of OpenCode, and finding a binary of either.
//!
//! OpenCode 1 ships as the npm package `opencode-ai` (the last is 1.18.33); OpenCode 2 as
//! `@opencode/cli` (2.1.2 here), with a different server API. [`find_opencode`] finds a
//! binary and tells its generation from `opencode --version` (`1.18.33` vs `opencode
//! v2.1.2`); an explicit `OPENCODE_BIN` always wins.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

/// A generation of OpenCode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Generation {
    /// OpenCode 1 (`opencode-ai`): routes at the root, `properties` in events.
    V1,
    /// OpenCode 2 (`@opencode/cli`): routes under `/api`, `{"data": …}` payloads.
    V2,
}

impl Generation {
    /// Both, oldest first.
    pub const ALL: [Generation; 2] = [Generation::V1, Generation::V2];

    /// `v1` or `v2`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Generation::V1 => "v1",
            Generation::V2 => "v2",
        }
    }

    /// The npm package that ships it.
    pub const fn npm_package(self) -> &'static str {
        match self {
            Generation::V1 => "opencode-ai",
            Generation::V2 => "@opencode/cli",
        }
    }

    /// The version this project pins and tests.
    pub const fn pinned_version(self) -> &'static str {
        match self {
            Generation::V1 => "1.18.33",
            Generation::V2 => "2.1.2",
        }
    }

    /// Where the project's installer puts it, relative to the repository root.
    pub const fn install_dir(self) -> &'static str {
        match self {
            Generation::V1 => ".tools/opencode",
            Generation::V2 => ".tools/opencode2",
        }
    }

    /// The generation and the bare version of what `opencode --version` printed
    /// (`1.18.33` → V1, `opencode v2.1.2` → V2), or `None` when it is not a version.
    pub fn from_version(output: &str) -> Option<(Generation, String)> {
        let words: Vec<&str> = output.split_whitespace().collect();
        let word = match words.as_slice() {
            [version] | ["opencode", version] => *version,
            _ => return None,
        };
        let version = word.strip_prefix(['v', 'V']).unwrap_or(word);
        let mut parts = version.split('.');
        let major: u64 = parts.next()?.parse().ok()?;
        let minor = parts.next()?;
        if !minor.starts_with(|c: char| c.is_ascii_digit()) {
            return None;
        }
        let generation = match major {
            0 | 1 => Generation::V1,
            _ => Generation::V2,
        };
        Some((generation, version.to_owned()))
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Generation {
    type Err = String;

    /// `v1`, `1`, `v2`, `2` (any case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "v1" | "1" => Ok(Generation::V1),
            "v2" | "2" => Ok(Generation::V2),
            other => Err(format!(
                "`{other}` is not an OpenCode generation (v1 or v2)"
            )),
        }
    }
}

/// A runnable OpenCode binary and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpencodeBinary {
    /// The executable.
    pub path: PathBuf,
    /// Its generation.
    pub generation: Generation,
    /// Its version (`1.18.33`, `2.1.2`).
    pub version: String,
}

impl OpencodeBinary {
    /// Runs `path --version` and reads what it is.
    ///
    /// # Errors
    /// [`FindError::NotRunnable`] when it does not run or exits with an error;
    /// [`FindError::UnknownVersion`] when it prints no version.
    pub fn probe(path: impl Into<PathBuf>) -> Result<OpencodeBinary, FindError> {
        let path = path.into();
        let output =
            Command::new(&path)
                .arg("--version")
                .output()
                .map_err(|e| FindError::NotRunnable {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
        if !output.status.success() {
            return Err(FindError::NotRunnable {
                path,
                message: format!(
                    "`--version` exited with {}: {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            });
        }
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let (generation, version) =
            Generation::from_version(&text).ok_or_else(|| FindError::UnknownVersion {
                path: path.clone(),
                output: text.trim().to_owned(),
            })?;
        Ok(OpencodeBinary {
            path,
            generation,
            version,
        })
    }
}

/// No usable OpenCode binary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FindError {
    /// `OPENCODE_BIN` names a file that does not exist.
    #[error("OPENCODE_BIN is set to {}, which does not exist; unset it or point it at an opencode binary", path.display())]
    BadEnv {
        /// What it names.
        path: PathBuf,
    },
    /// The binary does not run.
    #[error("{} does not run: {message}", path.display())]
    NotRunnable {
        /// The binary.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// `--version` printed no version.
    #[error("{} --version printed {output:?}, not an OpenCode version", path.display())]
    UnknownVersion {
        /// The binary.
        path: PathBuf,
        /// What it printed.
        output: String,
    },
    /// `OPENCODE_BIN` is of the other generation than the one asked for.
    #[error("OPENCODE_BIN is {} (OpenCode {found}), but OpenCode {wanted} was asked for", path.display())]
    WrongGeneration {
        /// The binary.
        path: PathBuf,
        /// What it is.
        found: Generation,
        /// What was asked for.
        wanted: Generation,
    },
    /// Nothing found anywhere.
    #[error(
        "{} not found (looked at OPENCODE_BIN, {}, and PATH); install it with `scripts/install-opencode.sh` from the repository, or set OPENCODE_BIN",
        wanted.map_or_else(|| "OpenCode".to_owned(), |g| format!("OpenCode {g} ({} {})", g.npm_package(), g.pinned_version())),
        looked_at.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    Missing {
        /// The generation asked for, if any.
        wanted: Option<Generation>,
        /// The project-local paths tried.
        looked_at: Vec<PathBuf>,
    },
}

/// The binary of an installer-made install directory.
pub fn installed_binary(install_dir: &Path) -> PathBuf {
    install_dir.join("node_modules/.bin/opencode")
}

/// Finds OpenCode of the `wanted` generation (or either, OpenCode 2 first):
///
/// 1. `OPENCODE_BIN`, whatever else exists (its generation read from `--version`; an error if
///    it is not the wanted one);
/// 2. the project-local installs of the installer (`.tools/opencode2`, `.tools/opencode`) in
///    the current directory or an ancestor, then beside this crate (inside the repository);
/// 3. `opencode` (and `opencode2`) on `PATH`.
///
/// # Errors
/// [`FindError`], naming where it looked and what to do.
pub fn find_opencode(wanted: Option<Generation>) -> Result<OpencodeBinary, FindError> {
    find(wanted, true)
}

/// Finds OpenCode of `wanted` generation as [`find_opencode`] does, except that an
/// `OPENCODE_BIN` of the **other** generation is passed over (the project-local install and
/// `PATH` are searched instead): for code that needs one generation whatever generation the
/// environment selects, e.g. OpenCode 1 tests run next to OpenCode 2 ones.
///
/// # Errors
/// [`FindError`], naming where it looked and what to do.
pub fn find_generation(wanted: Generation) -> Result<OpencodeBinary, FindError> {
    find(Some(wanted), false)
}

fn find(wanted: Option<Generation>, env_decides: bool) -> Result<OpencodeBinary, FindError> {
    if let Some(bin) = std::env::var_os("OPENCODE_BIN").filter(|v| !v.is_empty()) {
        let path = PathBuf::from(bin);
        if !path.is_file() {
            return Err(FindError::BadEnv { path });
        }
        let found = OpencodeBinary::probe(path)?;
        match wanted {
            Some(wanted) if wanted != found.generation => {
                if env_decides {
                    return Err(FindError::WrongGeneration {
                        path: found.path,
                        found: found.generation,
                        wanted,
                    });
                }
            }
            _ => return Ok(found),
        }
    }
    let generations: Vec<Generation> = match wanted {
        Some(g) => vec![g],
        None => vec![Generation::V2, Generation::V1],
    };
    let accept = |path: PathBuf| -> Option<OpencodeBinary> {
        let found = OpencodeBinary::probe(path).ok()?;
        generations.contains(&found.generation).then_some(found)
    };
    let mut looked_at = Vec::new();
    let starts = [
        std::env::current_dir().ok(),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR"))),
    ];
    for generation in &generations {
        for start in starts.iter().flatten() {
            for dir in start.ancestors() {
                let candidate = installed_binary(&dir.join(generation.install_dir()));
                if candidate.is_file()
                    && let Some(found) = accept(candidate.clone())
                {
                    return Ok(found);
                }
                if !looked_at.contains(&candidate) {
                    looked_at.push(candidate);
                }
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            for name in ["opencode", "opencode2"] {
                let candidate = dir.join(name);
                if candidate.is_file()
                    && let Some(found) = accept(candidate)
                {
                    return Ok(found);
                }
            }
        }
    }
    Err(FindError::Missing { wanted, looked_at })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_tell_the_generation() {
        assert_eq!(
            Generation::from_version("1.18.33\n"),
            Some((Generation::V1, "1.18.33".into()))
        );
        assert_eq!(
            Generation::from_version("opencode v2.1.2"),
            Some((Generation::V2, "2.1.2".into()))
        );
        assert_eq!(
            Generation::from_version("0.9.1"),
            Some((Generation::V1, "0.9.1".into()))
        );
        assert_eq!(Generation::from_version("usage: opencode"), None);
        assert_eq!(Generation::from_version("true (GNU coreutils) 9.1"), None);
        assert_eq!(Generation::from_version("12"), None);
        assert_eq!("V2".parse::<Generation>(), Ok(Generation::V2));
        assert_eq!("1".parse::<Generation>(), Ok(Generation::V1));
        assert!("3".parse::<Generation>().is_err());
    }

    #[test]
    fn a_binary_that_prints_no_version_is_a_typed_error() {
        let err = OpencodeBinary::probe("/bin/true").unwrap_err();
        assert!(matches!(err, FindError::UnknownVersion { .. }), "{err}");
        let err = OpencodeBinary::probe("/nonexistent/opencode").unwrap_err();
        assert!(matches!(err, FindError::NotRunnable { .. }), "{err}");
    }
}
