//! Memory-pressure readings: the cgroup limit when there is one, else `/proc/meminfo`.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Memory in use against the memory available to this process tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryUsage {
    /// Bytes in use.
    pub used_bytes: u64,
    /// Bytes allowed (cgroup limit or physical memory).
    pub limit_bytes: u64,
}

impl MemoryUsage {
    /// Used / limit in `0.0..=1.0` (more when a cgroup is over its limit); 0 for a zero limit.
    pub fn ratio(&self) -> f64 {
        if self.limit_bytes == 0 {
            0.0
        } else {
            self.used_bytes as f64 / self.limit_bytes as f64
        }
    }
}

/// Source of [`MemoryUsage`] readings. Inject a fake one in tests.
pub trait MemoryReader: Send + Sync + fmt::Debug {
    /// Reads the current usage.
    ///
    /// # Errors
    /// Any I/O or parse error; the controller then lets work through (fails open).
    fn read(&self) -> io::Result<MemoryUsage>;
}

/// Reads cgroup v2, then cgroup v1, then `/proc/meminfo`.
///
/// The cgroup is used only when it sets a limit; an unlimited cgroup (`max`, or v1's huge
/// sentinel) falls through to `/proc/meminfo` (`MemTotal - MemAvailable` over `MemTotal`).
#[derive(Debug, Clone)]
pub struct SystemMemoryReader {
    cgroup_root: PathBuf,
    proc_root: PathBuf,
}

impl Default for SystemMemoryReader {
    fn default() -> Self {
        Self::with_roots("/sys/fs/cgroup", "/proc")
    }
}

impl SystemMemoryReader {
    /// Reads from `/sys/fs/cgroup` and `/proc`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads from other roots (for tests, or a container's mounted view).
    pub fn with_roots(cgroup_root: impl Into<PathBuf>, proc_root: impl Into<PathBuf>) -> Self {
        Self {
            cgroup_root: cgroup_root.into(),
            proc_root: proc_root.into(),
        }
    }

    fn cgroup(&self) -> Option<MemoryUsage> {
        let v2 = read_pair(&self.cgroup_root, "memory.max", "memory.current");
        let v1 = || {
            let dir = self.cgroup_root.join("memory");
            read_pair(&dir, "memory.limit_in_bytes", "memory.usage_in_bytes")
        };
        v2.or_else(v1)
    }
}

fn read_pair(dir: &Path, limit: &str, current: &str) -> Option<MemoryUsage> {
    let limit = parse_cgroup_limit(&std::fs::read_to_string(dir.join(limit)).ok()?)?;
    let used = std::fs::read_to_string(dir.join(current))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(MemoryUsage {
        used_bytes: used,
        limit_bytes: limit,
    })
}

impl MemoryReader for SystemMemoryReader {
    fn read(&self) -> io::Result<MemoryUsage> {
        if let Some(u) = self.cgroup() {
            return Ok(u);
        }
        let path = self.proc_root.join("meminfo");
        let text = std::fs::read_to_string(&path)?;
        parse_meminfo(&text).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("no MemTotal/MemAvailable in {}", path.display()),
            )
        })
    }
}

/// Cgroup v1 reports "no limit" as a page-rounded `i64::MAX`; anything this large is no limit.
const CGROUP_V1_UNLIMITED: u64 = 1 << 60;

/// Parses a cgroup limit file (`memory.max` or `memory.limit_in_bytes`).
/// Returns `None` for "no limit" (`max`, a v1 sentinel, zero) or unparsable text.
pub fn parse_cgroup_limit(text: &str) -> Option<u64> {
    let text = text.trim();
    if text == "max" {
        return None;
    }
    let v: u64 = text.parse().ok()?;
    (v > 0 && v < CGROUP_V1_UNLIMITED).then_some(v)
}

/// Parses `/proc/meminfo` into used (`MemTotal - MemAvailable`) over `MemTotal`.
/// Returns `None` if either field is missing or `MemTotal` is zero.
pub fn parse_meminfo(text: &str) -> Option<MemoryUsage> {
    let field = |name: &str| -> Option<u64> {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            let mut parts = rest.split_whitespace();
            let value: u64 = parts.next()?.parse().ok()?;
            let scale = match parts.next() {
                Some("kB") | Some("KB") => 1024,
                None => 1,
                Some(_) => return None,
            };
            value.checked_mul(scale)
        })
    };
    let total = field("MemTotal")?;
    let available = field("MemAvailable")?;
    (total > 0).then(|| MemoryUsage {
        used_bytes: total.saturating_sub(available),
        limit_bytes: total,
    })
}

/// A reader that returns a fixed, settable ratio; for tests and dry runs.
#[derive(Debug, Default)]
pub struct FixedMemoryReader {
    permille: std::sync::atomic::AtomicU64,
}

impl FixedMemoryReader {
    /// Starts at `ratio` (0.0 to 1.0).
    pub fn new(ratio: f64) -> Self {
        let r = Self::default();
        r.set(ratio);
        r
    }

    /// Sets the reported ratio (resolution 0.1 %).
    pub fn set(&self, ratio: f64) {
        let permille = (ratio.clamp(0.0, 10.0) * 1000.0).round() as u64;
        self.permille
            .store(permille, std::sync::atomic::Ordering::Relaxed);
    }
}

impl MemoryReader for FixedMemoryReader {
    fn read(&self) -> io::Result<MemoryUsage> {
        let used = self.permille.load(std::sync::atomic::Ordering::Relaxed);
        Ok(MemoryUsage {
            used_bytes: used,
            limit_bytes: 1000,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MEMINFO: &str =
        "MemTotal:       16000000 kB\nMemFree:  100 kB\nMemAvailable:    4000000 kB\n";

    #[test]
    fn meminfo_used_is_total_minus_available() {
        let u = parse_meminfo(MEMINFO).unwrap();
        assert_eq!(u.limit_bytes, 16_000_000 * 1024);
        assert_eq!(u.used_bytes, 12_000_000 * 1024);
        assert!((u.ratio() - 0.75).abs() < 1e-9);
    }

    #[test]
    fn cgroup_limit_sentinels_mean_no_limit() {
        assert_eq!(parse_cgroup_limit("max\n"), None);
        assert_eq!(parse_cgroup_limit("9223372036854771712\n"), None);
        assert_eq!(parse_cgroup_limit("536870912\n"), Some(536_870_912));
        assert_eq!(parse_cgroup_limit("junk"), None);
    }

    #[test]
    fn system_reader_prefers_limited_cgroup_then_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let cg = dir.path().join("cg");
        let proc_ = dir.path().join("proc");
        std::fs::create_dir_all(&cg).unwrap();
        std::fs::create_dir_all(&proc_).unwrap();
        std::fs::write(proc_.join("meminfo"), MEMINFO).unwrap();
        let reader = SystemMemoryReader::with_roots(&cg, &proc_);

        // No cgroup files: meminfo.
        assert!((reader.read().unwrap().ratio() - 0.75).abs() < 1e-9);
        // Unlimited v2 cgroup: still meminfo.
        std::fs::write(cg.join("memory.max"), "max\n").unwrap();
        std::fs::write(cg.join("memory.current"), "10\n").unwrap();
        assert!((reader.read().unwrap().ratio() - 0.75).abs() < 1e-9);
        // Limited v2 cgroup wins.
        std::fs::write(cg.join("memory.max"), "1000\n").unwrap();
        std::fs::write(cg.join("memory.current"), "900\n").unwrap();
        assert_eq!(
            reader.read().unwrap(),
            MemoryUsage {
                used_bytes: 900,
                limit_bytes: 1000
            }
        );
    }

    #[test]
    fn system_reader_reads_cgroup_v1() {
        let dir = tempfile::tempdir().unwrap();
        let mem = dir.path().join("memory");
        std::fs::create_dir_all(&mem).unwrap();
        std::fs::write(mem.join("memory.limit_in_bytes"), "2048\n").unwrap();
        std::fs::write(mem.join("memory.usage_in_bytes"), "512\n").unwrap();
        let reader = SystemMemoryReader::with_roots(dir.path(), dir.path().join("none"));
        assert_eq!(reader.read().unwrap().ratio(), 0.25);
    }

    proptest! {
        #[test]
        fn meminfo_parser_never_panics(s in "\\PC*") {
            let _ = parse_meminfo(&s);
            let _ = parse_cgroup_limit(&s);
        }

        #[test]
        fn meminfo_roundtrips_values(total in 1u64..1 << 40, avail_frac in 0.0f64..=1.0) {
            let avail = (total as f64 * avail_frac) as u64;
            let text = format!("MemTotal: {total} kB\nMemAvailable: {avail} kB\n");
            let u = parse_meminfo(&text).unwrap();
            prop_assert_eq!(u.limit_bytes, total * 1024);
            prop_assert_eq!(u.used_bytes, (total - avail) * 1024);
        }
    }
}
