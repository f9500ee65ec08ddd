//! The `TODO.md` grammar: [`parse`] and [`render`].
//!
//! ```text
//! plan        := fence? title description item* fence?
//! title       := "#"+ " " text                      first non-blank line
//! description := any lines before the first item line
//! item        := bullet " " "[" mark "]" " " id sep summary
//!                ( indent bullet " " key ":" value | continuation | blank )*
//! bullet      := "-" | "*" | "+" | digits "." | digits ")"
//! mark        := " " pending | "~" "/" ">" in progress | "?" "r" "R" in review
//!              | "x" "X" done | "!" failed                ("[]" is pending too)
//! id          := [A-Za-z0-9] [A-Za-z0-9._-]*           may be wrapped in ** or `
//! sep         := ":" or a dash ("-", "–", "—"), with spaces
//! key         := files | deps | attempts | note         (and aliases, any case)
//! ```
//!
//! Item lines start at column 1; their `key: value` lines are indented. A note continues on
//! following lines indented at least two columns deeper than its bullet. A list value
//! (`files`, `deps`) that is a none word as a whole (`none`, `n/a`, `-`, ...) is the empty
//! list; a none word among other entries is an error. The title, summaries and file names
//! hold no carriage return, and the title does not open with a code fence.

use crate::error::PlanError;
use crate::plan::{
    Item, ItemId, ItemState, Plan, SEPARATOR_CHARS, check_graph, check_text_fields, is_id_char,
};

/// Writes `plan` in the canonical `TODO.md` form. For a plan that passes
/// [`Plan::validate`], `parse(&render(plan)) == Ok(plan.clone())`.
#[must_use]
pub fn render(plan: &Plan) -> String {
    let mut out = String::with_capacity(64 + plan.items.len() * 64);
    out.push('#');
    if !plan.title.is_empty() {
        out.push(' ');
        out.push_str(&plan.title);
    }
    out.push('\n');
    if !plan.description.is_empty() {
        out.push('\n');
        out.push_str(&plan.description);
        out.push('\n');
    }
    if !plan.items.is_empty() {
        out.push('\n');
    }
    for item in &plan.items {
        render_item(&mut out, item);
    }
    out
}

fn render_item(out: &mut String, item: &Item) {
    out.push_str("- [");
    out.push(item.state.marker());
    out.push_str("] ");
    out.push_str(item.id.as_str());
    out.push_str(": ");
    out.push_str(&item.summary);
    out.push('\n');
    if !item.files.is_empty() {
        out.push_str("  - files: ");
        out.push_str(&item.files.join(", "));
        out.push('\n');
    }
    if !item.deps.is_empty() {
        out.push_str("  - deps: ");
        let deps: Vec<&str> = item.deps.iter().map(ItemId::as_str).collect();
        out.push_str(&deps.join(", "));
        out.push('\n');
    }
    if item.attempts > 0 {
        out.push_str("  - attempts: ");
        out.push_str(&item.attempts.to_string());
        out.push('\n');
    }
    for note in &item.notes {
        out.push_str("  - note:");
        for (i, line) in note.lines().enumerate() {
            out.push_str(if i == 0 { " " } else { "    " });
            out.push_str(line);
            out.push('\n');
        }
    }
}

/// Reads `TODO.md` text.
///
/// Tolerates what people and language models tend to write: blank lines anywhere, `*`, `+`
/// or numbered bullets, upper-case `X`, trailing spaces, CRLF line ends, a surrounding
/// ```` ``` ```` or `~~~` fence, ids in `**bold**` or `` `code` ``, ` - ` or ` — `
/// instead of `:`, key aliases (`depends on`, `owns`, `feedback`, ...), back-ticked file
/// names, and `none`, `n/a`, `-` or `none (a remark)` for an empty list.
///
/// Whatever `parse` accepts passes [`Plan::validate`] and renders back to itself
/// (`parse(&render(&plan)) == Ok(plan)`): a field the format could not write back unchanged
/// (a file list entry `none` next to real files, a title opening with a code fence, a lone
/// carriage return inside a line, ...) is a syntax error at its line and column, never a
/// plan that fails validation later.
///
/// # Errors
/// [`PlanError::Syntax`] names the line, the column and what was expected;
/// [`PlanError::DuplicateId`], [`PlanError::UnknownDependency`] and
/// [`PlanError::DependencyCycle`] name the items and their lines. Lines and columns count
/// from 1 in `text` (a surrounding fence included). [`PlanError::line`] gives the line of
/// every error `parse` returns.
pub fn parse(text: &str) -> Result<Plan, PlanError> {
    let (plan, at) = parse_fields(text)?;
    // The field checks of `Plan::validate`. The grammar above already refuses what they
    // refuse (a property test holds that), so this only guards against the two drifting
    // apart, and turns such a drift into an error with a position.
    if let Err((item, error)) = check_text_fields(&plan) {
        let line = item.map_or(at.title, |i| at.items[i]);
        return Err(PlanError::Syntax {
            line,
            column: 1,
            expected: "text the plan format can write back unchanged".to_owned(),
            found: error.to_string(),
        });
    }
    check_graph(&plan, &|idx| at.items.get(idx).copied())?;
    Ok(plan)
}

/// 1-based lines of the title and of each item.
struct Positions {
    title: usize,
    items: Vec<usize>,
}

/// The grammar proper: the plan, and where its parts are. No graph checks.
fn parse_fields(text: &str) -> Result<(Plan, Positions), PlanError> {
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l).trim_end())
        .collect();
    let (start, end) = fence_bounds(&lines);
    let mut parser = Parser {
        plan: Plan::default(),
        item_lines: Vec::new(),
        note: None,
    };
    let mut i = start;
    while i < end && lines[i].is_empty() {
        i += 1;
    }
    if i >= end {
        return Err(syntax(
            i.min(lines.len().saturating_sub(1)),
            "",
            0,
            "a title line `# ...`",
        ));
    }
    parser.plan.title = parse_title(lines[i], i)?;
    let title = i + 1;
    i += 1;
    let desc_start = i;
    while i < end && !is_item_line(lines[i]) {
        i += 1;
    }
    parser.plan.description = normalize_description(&lines[desc_start..i].join("\n"));
    for (n, &line) in lines.iter().enumerate().take(end).skip(i) {
        parser.line(line, n)?;
    }
    let Parser {
        mut plan,
        item_lines,
        ..
    } = parser;
    for item in &mut plan.items {
        item.notes.retain(|n| !n.is_empty());
    }
    Ok((
        plan,
        Positions {
            title,
            items: item_lines,
        },
    ))
}

/// The range of lines inside an optional ```` ``` ```` or `~~~` fence.
fn fence_bounds(lines: &[&str]) -> (usize, usize) {
    let first = lines.iter().position(|l| !l.is_empty());
    let Some(first) = first else {
        return (0, lines.len());
    };
    let opening = lines[first].trim_start();
    let Some(marker) = ["```", "~~~"].into_iter().find(|m| opening.starts_with(m)) else {
        return (0, lines.len());
    };
    let last = lines.iter().rposition(|l| !l.is_empty()).unwrap_or(first);
    if last > first && lines[last].trim() == marker {
        (first + 1, last)
    } else {
        (first + 1, lines.len())
    }
}

fn parse_title(line: &str, n: usize) -> Result<String, PlanError> {
    let Some(rest) = line.strip_prefix('#') else {
        return Err(syntax(n, line, 0, "a title line `# ...`"));
    };
    let title = rest.trim_start_matches('#').trim();
    let start = line.len() - rest.trim_start_matches('#').trim_start().len();
    if title.starts_with("```") {
        return Err(syntax(
            n,
            line,
            start,
            "a title that does not start with a code fence",
        ));
    }
    no_lone_cr(line, start, title, n)?;
    Ok(title.to_owned())
}

const LONE_CR: &str = "a line break `\\n`, not a lone carriage return `\\r`, inside a line";

/// Refuses a `\r` inside `field`, which starts at byte `start` of `line`: the title, a
/// summary and file names must be single lines.
fn no_lone_cr(line: &str, start: usize, field: &str, n: usize) -> Result<(), PlanError> {
    match field.find('\r') {
        Some(at) => Err(syntax(n, line, start + at, LONE_CR)),
        None => Ok(()),
    }
}

/// Right-trims lines, collapses runs of blank lines and drops leading and trailing ones.
pub(crate) fn normalize_description(text: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for line in text.lines().map(str::trim_end) {
        if line.is_empty() && out.last().is_none_or(|l| l.is_empty()) {
            continue;
        }
        out.push(line);
    }
    while out.last().is_some_and(|l| l.is_empty()) {
        out.pop();
    }
    out.join("\n")
}

/// Length in bytes of a bullet at the start of `s` (`-`, `*`, `+`, `12.`, `3)`), not
/// counting the space after it.
fn bullet_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    match b.first()? {
        b'-' | b'*' | b'+' => Some(1),
        b'0'..=b'9' => {
            let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
            matches!(b.get(digits), Some(b'.' | b')')).then_some(digits + 1)
        }
        _ => None,
    }
}

/// Whether `line` starts an item in this grammar: a bullet (`-`, `*`, `+`, `1.`, `1)`) at
/// column 1, whitespace, then `[`. Such a line is read as an item or refused, never taken
/// for description text; a caller that cuts a plan out of a longer text can use it to find
/// where the items are.
///
/// ```
/// assert!(orch_mvcc::is_item_line("- [ ] T1: write the parser"));
/// assert!(orch_mvcc::is_item_line("2. [x] T2 — done"));
/// assert!(!orch_mvcc::is_item_line("  - files: a.rs"));
/// assert!(!orch_mvcc::is_item_line("Let me know if you want changes."));
/// ```
#[must_use]
pub fn is_item_line(line: &str) -> bool {
    let Some(len) = bullet_len(line) else {
        return false;
    };
    let rest = &line[len..];
    rest.starts_with([' ', '\t']) && rest.trim_start().starts_with('[')
}

/// Strips surrounding whitespace and back-ticks, the way list entries are read.
fn strip_code(s: &str) -> &str {
    s.trim_matches(|c: char| c == '`' || c.is_whitespace())
}

/// A list value that means "no entries": `none`, `n/a`, `-`, `—`, `(none)`, `nothing`, in
/// any case, optionally in back-ticks, followed by a `.` or a `(parenthetical remark)`.
pub(crate) fn is_none_value(s: &str) -> bool {
    let mut s = strip_code(s);
    if s.ends_with(')')
        && let Some(open) = s.find('(')
        && open > 0
    {
        s = strip_code(&s[..open]);
    }
    let s = strip_code(s.strip_suffix('.').unwrap_or(s));
    ["none", "-", "—", "n/a", "(none)", "nothing"]
        .iter()
        .any(|w| s.eq_ignore_ascii_case(w))
}

fn syntax(line: usize, text: &str, byte: usize, expected: &str) -> PlanError {
    let byte = byte.min(text.len());
    let column = text[..byte].chars().count() + 1;
    let rest = &text[byte..];
    let found = if rest.is_empty() {
        "end of line".to_owned()
    } else {
        let excerpt: String = rest.chars().take(24).collect();
        format!("{excerpt:?}")
    };
    PlanError::Syntax {
        line: line + 1,
        column,
        expected: expected.to_owned(),
        found,
    }
}

fn skip_ws(s: &str, i: usize) -> usize {
    i + (s[i..].len() - s[i..].trim_start_matches([' ', '\t']).len())
}

struct OpenNote {
    item: usize,
    note: usize,
    min_indent: usize,
}

struct Parser {
    plan: Plan,
    item_lines: Vec<usize>,
    note: Option<OpenNote>,
}

fn indent_width(line: &str) -> usize {
    line.chars()
        .take_while(|c| matches!(c, ' ' | '\t'))
        .map(|c| if c == '\t' { 4 } else { 1 })
        .sum()
}

impl Parser {
    fn line(&mut self, line: &str, n: usize) -> Result<(), PlanError> {
        if line.is_empty() {
            self.note = None;
            return Ok(());
        }
        if !line.starts_with([' ', '\t']) {
            self.note = None;
            if !is_item_line(line) {
                return Err(syntax(n, line, 0, "an item line like `- [ ] T1: summary`"));
            }
            let item = parse_item_line(line, n)?;
            self.plan.items.push(item);
            self.item_lines.push(n + 1);
            return Ok(());
        }
        let indent = indent_width(line);
        if let Some(open) = &self.note
            && indent >= open.min_indent
        {
            let note = &mut self.plan.items[open.item].notes[open.note];
            if !note.is_empty() {
                note.push('\n');
            }
            note.push_str(line.trim());
            return Ok(());
        }
        self.note = None;
        self.meta_line(line, n, indent)
    }

    fn meta_line(&mut self, line: &str, n: usize, indent: usize) -> Result<(), PlanError> {
        const EXPECTED: &str = "`- files:`, `- deps:`, `- attempts:` or `- note:` under an item";
        let start = skip_ws(line, 0);
        let Some(blen) = bullet_len(&line[start..]) else {
            return Err(syntax(n, line, start, EXPECTED));
        };
        let after = start + blen;
        if !line[after..].starts_with([' ', '\t']) {
            return Err(syntax(n, line, after, "a space after the bullet"));
        }
        let key_start = skip_ws(line, after);
        if line[key_start..].starts_with('[') {
            return Err(syntax(
                n,
                line,
                key_start,
                "a `key: value` line (nested items are not supported: make it a top-level item with `deps`)",
            ));
        }
        let Some(colon) = line[key_start..].find(':').map(|c| c + key_start) else {
            return Err(syntax(n, line, key_start, "`key: value`"));
        };
        let key: String = line[key_start..colon]
            .chars()
            .filter(|c| !matches!(c, '*' | '`' | '_'))
            .collect::<String>()
            .trim()
            .to_ascii_lowercase();
        let mut value_start = skip_ws(line, (colon + 1).min(line.len()));
        if line[key_start..colon].starts_with('*') {
            // `**Files:** a.rs`: the bold closes after the colon.
            value_start = skip_ws(
                line,
                value_start
                    + (line[value_start..].len()
                        - line[value_start..].trim_start_matches('*').len()),
            );
        }
        let value = line[value_start..].trim();
        let item_index = self.plan.items.len() - 1;
        let item = &mut self.plan.items[item_index];
        match key.as_str() {
            "files" | "file" | "owns" | "owned files" | "paths" | "path" => {
                for (at, file) in list_entries(line, value_start) {
                    if is_none_value(file) {
                        return Err(syntax(
                            n,
                            line,
                            at,
                            "a file path (`none` stands alone, for an empty list)",
                        ));
                    }
                    no_lone_cr(line, at, file, n)?;
                    item.files.push(file.to_owned());
                }
            }
            "deps" | "dep" | "depends" | "depends on" | "dependencies" | "requires" | "after"
            | "blocked by" => {
                for (at, dep) in list_entries(line, value_start) {
                    let id = dep.trim_matches('*');
                    match ItemId::new(id) {
                        Ok(id) => item.deps.push(id),
                        Err(_) => return Err(syntax(n, line, at, "an item id such as `T1`")),
                    }
                }
            }
            "attempts" | "attempt" | "tries" => {
                item.attempts = value
                    .parse()
                    .map_err(|_| syntax(n, line, value_start, "a whole number of attempts"))?;
            }
            "note" | "notes" | "review" | "feedback" | "reviewer note" | "reason" => {
                item.notes.push(value.to_owned());
                self.note = Some(OpenNote {
                    item: item_index,
                    note: item.notes.len() - 1,
                    min_indent: indent + 2,
                });
            }
            _ => {
                return Err(syntax(
                    n,
                    line,
                    key_start,
                    "one of `files`, `deps`, `attempts`, `note`",
                ));
            }
        }
        // An empty note that got no continuation lines is dropped at the next line.
        Ok(())
    }
}

/// The entries of the comma-separated list that starts at byte `start` of `line`, stripped
/// of whitespace and back-ticks, each with its byte offset in `line`. Empty entries are
/// skipped; a value that means "none" as a whole ([`is_none_value`]) has no entries.
fn list_entries(line: &str, start: usize) -> Vec<(usize, &str)> {
    let value = &line[start..];
    if is_none_value(value) {
        return Vec::new();
    }
    let mut entries = Vec::new();
    let mut at = start;
    for part in value.split(',') {
        let entry = strip_code(part);
        if !entry.is_empty() {
            let lead = part.len()
                - part
                    .trim_start_matches(|c: char| c == '`' || c.is_whitespace())
                    .len();
            entries.push((at + lead, entry));
        }
        at += part.len() + 1;
    }
    entries
}

fn parse_item_line(line: &str, n: usize) -> Result<Item, PlanError> {
    let blen = bullet_len(line).unwrap_or(1);
    let open = skip_ws(line, blen);
    if !line[open..].starts_with('[') {
        return Err(syntax(n, line, open, "`[` opening the checkbox"));
    }
    let mark_at = open + 1;
    let mut chars = line[mark_at..].chars();
    let (state, close) = match chars.next() {
        Some(']') => (ItemState::Pending, mark_at),
        Some(c) => match ItemState::from_marker(c) {
            Some(state) => (state, mark_at + c.len_utf8()),
            None => {
                return Err(syntax(
                    n,
                    line,
                    mark_at,
                    "a checkbox state: ` ` pending, `~` in progress, `?` in review, `x` done or `!` failed",
                ));
            }
        },
        None => return Err(syntax(n, line, mark_at, "a checkbox state")),
    };
    if !line[close..].starts_with(']') {
        return Err(syntax(n, line, close, "`]` closing the checkbox"));
    }
    let mut i = skip_ws(line, close + 1);
    i += line[i..].len() - line[i..].trim_start_matches(['*', '`']).len();
    let id_len = line[i..]
        .find(|c: char| !is_id_char(c))
        .unwrap_or(line.len() - i);
    let id_text = &line[i..i + id_len];
    let id = ItemId::new(id_text).map_err(|_| syntax(n, line, i, "an item id such as `T1`"))?;
    let sep_start = i + id_len;
    // Separator characters and any whitespace (a no-break space too), so the summary never
    // starts with either: `Plan::validate` refuses such a summary.
    let sep_len = line[sep_start..].len()
        - line[sep_start..]
            .trim_start_matches(|c: char| SEPARATOR_CHARS.contains(&c) || c.is_whitespace())
            .len();
    let sep = &line[sep_start..sep_start + sep_len];
    if !sep.contains([':', '-', '—', '–']) {
        return Err(syntax(n, line, sep_start, "`:` after the item id"));
    }
    let summary_start = sep_start + sep_len;
    let summary = line[summary_start..].trim_end();
    if summary.is_empty() {
        return Err(syntax(n, line, summary_start, "a one-line summary"));
    }
    no_lone_cr(line, summary_start, summary, n)?;
    let mut item = Item::new(id, summary);
    item.state = state;
    Ok(item)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_canonical_form() {
        let text = "# Add JWT auth\n\nSome context.\n\n- [x] T1: Add the middleware\n  - files: src/auth.rs, src/main.rs\n- [~] T2: Wire it up\n  - deps: T1\n  - attempts: 2\n  - note: tests missing\n    second line\n";
        let plan = parse(text).unwrap();
        assert_eq!(plan.title, "Add JWT auth");
        assert_eq!(plan.description, "Some context.");
        assert_eq!(plan.items.len(), 2);
        assert_eq!(plan.items[0].state, ItemState::Done);
        assert_eq!(plan.items[0].files, ["src/auth.rs", "src/main.rs"]);
        assert_eq!(plan.items[1].deps[0].as_str(), "T1");
        assert_eq!(plan.items[1].attempts, 2);
        assert_eq!(plan.items[1].notes, ["tests missing\nsecond line"]);
        assert_eq!(render(&plan), text);
    }

    #[test]
    fn forgives_model_output() {
        let text = "```markdown\n## Plan  \n\n\n* [X] **T1**: first   \r\n    * Files: `a.rs`, `b.rs`\n\n    * Depends on: none\n+ [ ] `T2` — second\n  - DEPS: T1\n1. [] T3 - third\n```\n";
        let plan = parse(text).unwrap();
        assert_eq!(plan.title, "Plan");
        assert_eq!(plan.items[0].state, ItemState::Done);
        assert_eq!(plan.items[0].id.as_str(), "T1");
        assert_eq!(plan.items[0].summary, "first");
        assert_eq!(plan.items[0].files, ["a.rs", "b.rs"]);
        assert!(plan.items[0].deps.is_empty());
        assert_eq!(plan.items[1].summary, "second");
        assert_eq!(plan.items[2].state, ItemState::Pending);
        let plan = parse("# t\n- [ ] A: a\n  - **Files:** `x.rs`\n  - Owns: n/a\n").unwrap();
        assert_eq!(plan.items[0].files, ["x.rs"]);
    }

    fn syntax_at(text: &str) -> (usize, usize, String) {
        match parse(text) {
            Err(PlanError::Syntax {
                line,
                column,
                expected,
                ..
            }) => (line, column, expected),
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_line_and_column() {
        assert_eq!(syntax_at("no title\n").0, 1);
        let (line, col, exp) = syntax_at("# t\n- [y] T1: x\n");
        assert_eq!((line, col), (2, 4));
        assert!(exp.contains("checkbox state"));
        let (line, col, _) = syntax_at("# t\n- [ ] T1 x\n");
        assert_eq!((line, col), (2, 9));
        let (line, col, exp) = syntax_at("# t\n- [ ] T1: x\n  - colour: red\n");
        assert_eq!((line, col), (3, 5));
        assert!(exp.contains("files"));
        let (line, _, _) = syntax_at("# t\n- [ ] T1: x\nstray text\n");
        assert_eq!(line, 3);
        let (line, col, _) = syntax_at("# t\n- [ ] T1: x\n  - attempts: many\n");
        assert_eq!((line, col), (3, 15));
        let (line, _, _) = syntax_at("# t\n- [ ] T1:   \n");
        assert_eq!(line, 2);
    }

    #[test]
    fn graph_errors_name_lines() {
        let err = parse("# t\n- [ ] A: a\n- [ ] A: b\n").unwrap_err();
        assert_eq!(
            err,
            PlanError::DuplicateId {
                id: "A".into(),
                line: Some(3),
                first_line: Some(2)
            }
        );
        let err = parse("# t\n- [ ] A: a\n  - deps: B\n").unwrap_err();
        assert!(matches!(
            err,
            PlanError::UnknownDependency { line: Some(2), .. }
        ));
        let err = parse("# t\n- [ ] A: a\n  - deps: B\n- [ ] B: b\n  - deps: A\n").unwrap_err();
        assert!(matches!(err, PlanError::DependencyCycle { .. }), "{err}");
        assert!(err.to_string().contains("A -> B -> A"), "{err}");
    }

    #[test]
    fn none_words_mean_an_empty_list() {
        for value in [
            "none",
            "None",
            "n/a",
            "-",
            "—",
            "(none)",
            "nothing",
            "",
            "`none`",
            "none.",
            "None (documentation only)",
            "n/a (docs, tests)",
        ] {
            let text = format!("# t\n- [ ] A: a\n  - files: {value}\n  - deps: {value}\n");
            let plan = parse(&text).unwrap_or_else(|e| panic!("{value:?}: {e}"));
            assert!(plan.items[0].files.is_empty(), "{value:?}");
            assert!(plan.items[0].deps.is_empty(), "{value:?}");
            assert_eq!(plan.validate(), Ok(()), "{value:?}");
        }
    }

    #[test]
    fn a_none_word_among_files_is_an_error_at_its_column() {
        let (line, col, exp) = syntax_at("# t\n- [ ] A: a\n  - files: a.rs, none\n");
        assert_eq!((line, col), (3, 18));
        assert!(exp.contains("stands alone"), "{exp}");
        let (line, col, _) = syntax_at("# t\n- [ ] A: a\n  - files: `-`, b.rs\n");
        assert_eq!((line, col), (3, 13));
    }

    #[test]
    fn file_entries_lose_every_surrounding_backtick_and_space() {
        let plan = parse("# t\n- [ ] A: a\n  - files: ` `a.rs` `, ``b.rs``\n").unwrap();
        assert_eq!(plan.items[0].files, ["a.rs", "b.rs"]);
        assert_eq!(plan.validate(), Ok(()));
    }

    #[test]
    fn what_validate_refuses_is_a_syntax_error_with_a_position() {
        let (line, col, exp) = syntax_at("# ```t\n- [ ] A: a\n");
        assert_eq!((line, col), (1, 3));
        assert!(exp.contains("code fence"), "{exp}");
        let (line, col, exp) = syntax_at("# t\n- [ ] A: a\rb\n");
        assert_eq!((line, col), (2, 11));
        assert!(exp.contains("carriage return"), "{exp}");
        let (line, col, _) = syntax_at("# t\n- [ ] A: a\n  - files: x\ry.rs\n");
        assert_eq!((line, col), (3, 13));
        let (line, col, _) = syntax_at("# a\rb\n- [ ] A: a\n");
        assert_eq!((line, col), (1, 4));
    }

    #[test]
    fn a_summary_never_starts_with_a_separator_or_a_space() {
        let plan = parse("# t\n- [ ] A:\u{a0}\u{3000}- x\n").unwrap();
        assert_eq!(plan.items[0].summary, "x");
        assert_eq!(plan.validate(), Ok(()));
        assert_eq!(parse(&render(&plan)), Ok(plan));
    }

    #[test]
    fn tilde_fences_are_accepted() {
        let plan = parse("~~~markdown\n# t\n- [ ] A: a\n~~~\n").unwrap();
        assert_eq!(plan.items.len(), 1);
    }

    #[test]
    fn error_positions_are_reported_by_accessors() {
        let err = parse("# t\n- [ ] T1: x\n  - colour: red\n").unwrap_err();
        assert_eq!((err.line(), err.column()), (Some(3), Some(5)));
        let err = parse("# t\n- [ ] A: a\n  - deps: B\n").unwrap_err();
        assert_eq!((err.line(), err.column()), (Some(2), None));
        let mut plan = Plan::new("t");
        plan.push(Item::new(ItemId::new("A").unwrap(), " a"));
        assert_eq!(plan.validate().unwrap_err().line(), None);
    }

    #[test]
    fn empty_title_round_trips() {
        let plan = Plan::default();
        assert_eq!(render(&plan), "#\n");
        assert_eq!(parse("#\n").unwrap(), plan);
    }
}
