//! Commit messages of a mission (subject, body, trailers), the commits read back with their
//! trailers, and branch slugs.

use serde::{Deserialize, Serialize};

use super::ITEM_TRAILER;

/// A commit message: a subject line, a body, and trailers (`Key: value` lines at the end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitMessage {
    /// The first line (one line; longer subjects are cut at 72 characters).
    pub subject: String,
    /// Paragraphs after it (may be empty).
    pub body: String,
    /// `(key, value)` trailers, in order.
    pub trailers: Vec<(String, String)>,
}

impl CommitMessage {
    /// The message as git gets it: the subject, a blank line, the body, a blank line, the
    /// trailers. Line breaks in the subject and in trailer values become spaces, and a body
    /// line that would read as a trailer paragraph on its own is left as it is (the trailers
    /// are always the last paragraph).
    pub fn render(&self) -> String {
        let one_line = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut subject = one_line(&self.subject);
        if subject.chars().count() > 72 {
            subject = subject.chars().take(71).collect::<String>() + "…";
        }
        let mut text = subject;
        let body = self.body.trim();
        if !body.is_empty() {
            text.push_str("\n\n");
            text.push_str(body);
        }
        if !self.trailers.is_empty() {
            text.push_str("\n\n");
            for (key, value) in &self.trailers {
                text.push_str(&format!("{key}: {}\n", one_line(value)));
            }
        }
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text
    }
}

/// A commit as `git log` shows it, with its trailers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitInfo {
    /// The full hash.
    pub sha: String,
    /// The subject line.
    pub subject: String,
    /// The trailers, in order.
    #[serde(default)]
    pub trailers: Vec<(String, String)>,
    /// Whether it is a merge (more than one parent).
    #[serde(default)]
    pub merge: bool,
}

impl CommitInfo {
    /// The value of the first trailer `key` (case-insensitive, as git compares them).
    pub fn trailer(&self, key: &str) -> Option<&str> {
        self.trailers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// The plan item it commits (`Orch-Item`), if any.
    pub fn item(&self) -> Option<&str> {
        self.trailer(ITEM_TRAILER)
    }
}

/// The `git log` format [`parse_log`] reads: fields split by 0x1f, records ended by 0x1e.
pub(crate) const LOG_FORMAT: &str = "--format=%H%x1f%P%x1f%s%x1f%(trailers:only,unfold)%x1e";

/// Commits from `git log` output in [`LOG_FORMAT`]; `None` for output that is not.
pub(crate) fn parse_log(text: &str) -> Option<Vec<CommitInfo>> {
    let mut commits = Vec::new();
    for record in text.split('\u{1e}') {
        let record = record.trim_start_matches('\n');
        if record.trim().is_empty() {
            continue;
        }
        let mut fields = record.split('\u{1f}');
        let sha = fields.next()?.trim();
        let parents = fields.next()?;
        let subject = fields.next()?;
        let trailers = fields.next()?;
        if sha.len() < 40 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        commits.push(CommitInfo {
            sha: sha.to_owned(),
            subject: subject.to_owned(),
            trailers: trailers
                .lines()
                .filter_map(|line| {
                    let (k, v) = line.split_once(':')?;
                    Some((k.trim().to_owned(), v.trim().to_owned()))
                })
                .collect(),
            merge: parents.split_whitespace().count() > 1,
        });
    }
    Some(commits)
}

/// A branch-name slug for `text`: lowercase ASCII letters and digits in words joined by
/// `-`, at most 40 characters cut at a word, `mission` when nothing is left.
///
/// ```
/// assert_eq!(orch_agents::git::slug("Add JWT auth!"), "add-jwt-auth");
/// assert_eq!(orch_agents::git::slug("日本"), "mission");
/// ```
pub fn slug(text: &str) -> String {
    let mut out = String::new();
    for word in text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let word = word.to_ascii_lowercase();
        let extra = usize::from(!out.is_empty()) + word.len();
        if out.len() + extra > 40 {
            if out.is_empty() {
                out = word.chars().take(40).collect();
            }
            break;
        }
        if !out.is_empty() {
            out.push('-');
        }
        out.push_str(&word);
    }
    if out.is_empty() {
        "mission".to_owned()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_message_ends_with_its_trailers() {
        let message = CommitMessage {
            subject: "T3: readme\nwith a break".into(),
            body: "The tests pass.\n# a heading kept\nVERDICT: PASS".into(),
            trailers: vec![
                ("Orch-Item".into(), "T3".into()),
                ("Orch-Attempts".into(), "2".into()),
            ],
        };
        assert_eq!(
            message.render(),
            "T3: readme with a break\n\nThe tests pass.\n# a heading kept\nVERDICT: PASS\n\nOrch-Item: T3\nOrch-Attempts: 2\n"
        );
    }

    #[test]
    fn long_subjects_are_cut() {
        let message = CommitMessage {
            subject: "x".repeat(100),
            body: String::new(),
            trailers: Vec::new(),
        };
        assert_eq!(message.render().trim_end().chars().count(), 72);
    }

    #[test]
    fn log_records_parse_with_their_trailers() {
        let sha = "a".repeat(40);
        let text = format!(
            "{sha}\u{1f}{p}\u{1f}T1: module\u{1f}Orch-Item: T1\nOrch-Attempts: 1\n\u{1e}\n{sha}\u{1f}{p} {p}\u{1f}Merge\u{1f}\u{1e}\n",
            p = "b".repeat(40)
        );
        let commits = parse_log(&text).unwrap();
        assert_eq!(commits.len(), 2);
        assert_eq!(commits[0].item(), Some("T1"));
        assert_eq!(commits[0].trailer("orch-attempts"), Some("1"));
        assert!(!commits[0].merge && commits[1].merge);
        assert_eq!(commits[1].item(), None);
        assert_eq!(parse_log("not a log\u{1e}"), None);
    }

    proptest! {
        /// Whatever the text, a slug is a valid, short path component of a branch name.
        #[test]
        fn slugs_are_valid_branch_components(text in "\\PC{0,80}") {
            let s = slug(&text);
            prop_assert!(!s.is_empty() && s.len() <= 40);
            prop_assert!(s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
            prop_assert!(!s.starts_with('-') && !s.ends_with('-') && !s.contains("--"));
        }
    }
}
