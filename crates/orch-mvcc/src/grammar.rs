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
//! following lines indented at least two columns deeper than its bullet.

use crate::error::PlanError;
use crate::plan::{Item, ItemId, ItemState, Plan, SEPARATOR_CHARS, check_graph, is_id_char};

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
/// ```` ``` ```` fence, ids in `**bold**` or `` `code` ``, ` - ` or ` — ` instead of `:`,
/// key aliases (`depends on`, `owns`, `feedback`, ...), back-ticked file names and `none`
/// for an empty list.
///
/// # Errors
/// [`PlanError::Syntax`] names the line, the column and what was expected;
/// [`PlanError::DuplicateId`], [`PlanError::UnknownDependency`] and
/// [`PlanError::DependencyCycle`] name the items and their lines.
pub fn parse(text: &str) -> Result<Plan, PlanError> {
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
    i += 1;
    let desc_start = i;
    while i < end && !looks_like_item(lines[i]) {
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
    check_graph(&plan, &|idx| item_lines.get(idx).copied())?;
    Ok(plan)
}

/// The range of lines inside an optional ```` ``` ```` fence.
fn fence_bounds(lines: &[&str]) -> (usize, usize) {
    let first = lines.iter().position(|l| !l.is_empty());
    let Some(first) = first else {
        return (0, lines.len());
    };
    if !lines[first].trim_start().starts_with("```") {
        return (0, lines.len());
    }
    let last = lines.iter().rposition(|l| !l.is_empty()).unwrap_or(first);
    if last > first && lines[last].trim() == "```" {
        (first + 1, last)
    } else {
        (first + 1, lines.len())
    }
}

fn parse_title(line: &str, n: usize) -> Result<String, PlanError> {
    let Some(rest) = line.strip_prefix('#') else {
        return Err(syntax(n, line, 0, "a title line `# ...`"));
    };
    Ok(rest.trim_start_matches('#').trim().to_owned())
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

/// A line that starts an item: a bullet at column 1, whitespace, then `[`.
pub(crate) fn looks_like_item(line: &str) -> bool {
    let Some(len) = bullet_len(line) else {
        return false;
    };
    let rest = &line[len..];
    rest.starts_with([' ', '\t']) && rest.trim_start().starts_with('[')
}

pub(crate) fn is_none_word(s: &str) -> bool {
    let s = s.trim();
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
            if !looks_like_item(line) {
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
                item.files.extend(split_list(value).map(str::to_owned));
            }
            "deps" | "dep" | "depends" | "depends on" | "dependencies" | "requires" | "after"
            | "blocked by" => {
                for dep in split_list(value) {
                    let id = dep.trim_matches('*');
                    match ItemId::new(id) {
                        Ok(id) => item.deps.push(id),
                        Err(_) => {
                            let at = line[value_start..]
                                .find(dep)
                                .map_or(value_start, |p| p + value_start);
                            return Err(syntax(n, line, at, "an item id such as `T1`"));
                        }
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

fn split_list(value: &str) -> impl Iterator<Item = &str> {
    let value = if is_none_word(value) { "" } else { value };
    value
        .split(',')
        .map(|s| s.trim().trim_matches('`').trim())
        .filter(|s| !s.is_empty())
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
    let sep_len =
        line[sep_start..].len() - line[sep_start..].trim_start_matches(SEPARATOR_CHARS).len();
    let sep = &line[sep_start..sep_start + sep_len];
    if !sep.contains([':', '-', '—', '–']) {
        return Err(syntax(n, line, sep_start, "`:` after the item id"));
    }
    let summary = line[sep_start + sep_len..].trim();
    if summary.is_empty() {
        return Err(syntax(n, line, sep_start + sep_len, "a one-line summary"));
    }
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
    fn empty_title_round_trips() {
        let plan = Plan::default();
        assert_eq!(render(&plan), "#\n");
        assert_eq!(parse("#\n").unwrap(), plan);
    }
}
