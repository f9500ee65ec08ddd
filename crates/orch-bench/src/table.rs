//! The result table: one row per figure.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// One figure of the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Which benchmark (1–6).
    pub bench: u8,
    /// What is measured.
    pub figure: String,
    /// Our figure, rendered.
    pub ours: String,
    /// The baseline or bound, rendered (empty when there is none).
    pub baseline: String,
    /// ours ÷ baseline (or baseline ÷ ours where smaller is better, as the figure says).
    pub ratio: Option<f64>,
    /// The target, rendered.
    pub target: String,
    /// Whether the target is met (`None`: no target).
    pub met: Option<bool>,
}

impl Row {
    /// A row without baseline, ratio or target.
    pub fn info(bench: u8, figure: impl Into<String>, ours: impl Into<String>) -> Self {
        Row {
            bench,
            figure: figure.into(),
            ours: ours.into(),
            baseline: String::new(),
            ratio: None,
            target: String::new(),
            met: None,
        }
    }

    /// Sets the baseline and the ratio.
    #[must_use]
    pub fn baseline(mut self, baseline: impl Into<String>, ratio: f64) -> Self {
        self.baseline = baseline.into();
        self.ratio = Some(ratio);
        self
    }

    /// Sets the target and whether it is met.
    #[must_use]
    pub fn target(mut self, target: impl Into<String>, met: bool) -> Self {
        self.target = target.into();
        self.met = Some(met);
        self
    }
}

/// Renders rows as a Markdown table.
pub fn render(rows: &[Row]) -> String {
    let mut out = String::from(
        "| # | figure | ours | baseline | ratio | target | met? |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let ratio = r.ratio.map(|x| format!("{x:.2}")).unwrap_or_default();
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.bench, r.figure, r.ours, r.baseline, ratio, r.target, met
        );
    }
    out
}

/// Formats a duration in the most readable unit.
pub fn fmt_duration(d: std::time::Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

/// Peak resident set size of this process in bytes (`VmHWM`), Linux only.
pub fn peak_rss() -> Option<u64> {
    proc_status_kb("VmHWM:").map(|kb| kb * 1024)
}

/// Current resident set size in bytes (`VmRSS`), Linux only.
pub fn current_rss() -> Option<u64> {
    proc_status_kb("VmRSS:").map(|kb| kb * 1024)
}

fn proc_status_kb(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// User + system CPU time of this process, from `/proc/self/stat` (clock ticks of 10 ms).
pub fn cpu_time() -> Option<std::time::Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the full line: 11 and 12 here.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(std::time::Duration::from_millis(ticks * 10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_renders_every_column() {
        let rows = vec![
            Row::info(1, "a", "1")
                .baseline("2", 0.5)
                .target("≤ 1", true),
            Row::info(2, "b", "3"),
        ];
        let t = render(&rows);
        assert!(t.contains("| 1 | a | 1 | 2 | 0.50 | ≤ 1 | yes |"), "{t}");
        assert!(t.contains("| 2 | b | 3 |  |  |  |  |"), "{t}");
    }

    #[test]
    fn process_figures_are_readable_here() {
        if cfg!(target_os = "linux") {
            assert!(peak_rss().is_some_and(|b| b > 0));
            assert!(cpu_time().is_some());
        }
    }
}
