//! Comment-preserving edits of a JSONC document, as text splices.
//!
//! The document is parsed into an AST with byte ranges ([`jsonc_parser::parse_to_ast`]); an
//! edit inserts or removes text at those ranges and never rewrites anything else, so
//! comments, formatting and key order outside the edit stay byte for byte. Removing an
//! inserted member removes exactly the text the insertion added (the comma it added, the
//! separator and the member), so an insert followed by a removal gives the original text
//! back. Paths follow the **last** occurrence of a repeated key, as `JSON.parse` (and so
//! OpenCode) does.
//!
//! New text is indented like the document: the member indentation of the target object
//! (or its line's indentation plus the document's indent unit), computed once per edit from
//! the text, so the output grows linearly with what is inserted whatever the document's
//! shape.

use jsonc_parser::ast::{Object, ObjectProp, Value as Ast};
use jsonc_parser::common::Ranged;
use jsonc_parser::{CollectOptions, ParseOptions, ParseResult};
use serde_json::Value;

/// What OpenCode accepts in practice: comments and trailing commas, nothing looser.
pub(crate) fn parse_options() -> ParseOptions {
    ParseOptions {
        allow_comments: true,
        allow_trailing_commas: true,
        allow_loose_object_property_names: false,
        allow_missing_commas: false,
        allow_single_quoted_strings: false,
        allow_hexadecimal_numbers: false,
        ..ParseOptions::default()
    }
}

/// Parses `text` (without a BOM).
pub(crate) fn parse(text: &str) -> Result<ParseResult<'_>, jsonc_parser::errors::ParseError> {
    jsonc_parser::parse_to_ast(text, &CollectOptions::default(), &parse_options())
}

/// Why an edit cannot be made.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum EditError {
    /// The root (depth 0) or the value at `path[..depth]` is not an object.
    NotAnObject { depth: usize },
    /// The entry exists with another value and `force` is off.
    Conflict,
}

/// The last member named `key` of `obj`.
fn member<'o, 'a>(obj: &'o Object<'a>, key: &str) -> Option<(usize, &'o ObjectProp<'a>)> {
    obj.properties
        .iter()
        .enumerate()
        .rev()
        .find(|(_, p)| p.name.as_str() == key)
}

/// The value at `path` (last occurrences), as JSON.
pub(crate) fn lookup(text: &str, path: &[String]) -> Option<Value> {
    let parsed = parse(text).ok()?;
    let mut value = parsed.value.as_ref()?;
    for key in path {
        value = &member(value.as_object()?, key)?.1.value;
    }
    Some(value.clone().into())
}

/// One splice: replace `at..end` with `with`.
struct Splice {
    at: usize,
    end: usize,
    with: String,
}

impl Splice {
    fn insert(at: usize, with: String) -> Self {
        Self { at, end: at, with }
    }

    fn cut(at: usize, end: usize) -> Self {
        Self {
            at,
            end,
            with: String::new(),
        }
    }
}

fn apply(text: &str, mut splices: Vec<Splice>) -> String {
    splices.sort_by_key(|s| std::cmp::Reverse(s.at));
    let mut out = text.to_owned();
    for s in splices {
        out.replace_range(s.at..s.end, &s.with);
    }
    out
}

/// Sets `path` to `value`. `Ok(None)` when the value is already there.
pub(crate) fn set(
    text: &str,
    path: &[String],
    value: &Value,
    force: bool,
) -> Result<Option<String>, EditError> {
    let Some((last, parents)) = path.split_last() else {
        return Ok(None);
    };
    let parsed = parse(text).map_err(|_| EditError::NotAnObject { depth: 0 })?;
    let style = Style::of(text, parsed.value.as_ref().and_then(Ast::as_object));
    let Some(root) = parsed.value.as_ref() else {
        // Only whitespace and comments: append an object holding the entry.
        let mut out = text.trim_end().to_owned();
        if !out.is_empty() {
            out.push_str(style.newline);
        }
        out.push('{');
        out.push_str(style.newline);
        out.push_str(style.unit);
        out.push_str(&style.member(last_key_nested(path, value), style.unit));
        out.push_str(style.newline);
        out.push('}');
        out.push_str(style.newline);
        return Ok(Some(out));
    };
    let mut obj = root
        .as_object()
        .ok_or(EditError::NotAnObject { depth: 0 })?;
    for (depth, key) in parents.iter().enumerate() {
        match member(obj, key) {
            None => {
                // Insert the rest of the path as one nested value.
                let nested = nest(&path[depth + 1..], value);
                return Ok(Some(insert(text, &style, obj, key, &nested)));
            }
            Some((_, prop)) => {
                obj = prop
                    .value
                    .as_object()
                    .ok_or(EditError::NotAnObject { depth: depth + 1 })?;
            }
        }
    }
    match member(obj, last) {
        None => Ok(Some(insert(text, &style, obj, last, value))),
        Some((_, prop)) => {
            let current: Value = prop.value.clone().into();
            if &current == value {
                return Ok(None);
            }
            if !force {
                return Err(EditError::Conflict);
            }
            let range = prop.value.range();
            let with = if is_multiline(text, obj) {
                style.value(value, &line_indent(text, prop.range.start))
            } else {
                compact(value)
            };
            Ok(Some(apply(
                text,
                vec![Splice {
                    with,
                    ..Splice::cut(range.start, range.end)
                }],
            )))
        }
    }
}

/// `(path[0], {path[1]: … value})` for a document with no root value yet.
fn last_key_nested<'p>(path: &'p [String], value: &Value) -> (&'p str, Value) {
    (&path[0], nest(&path[1..], value))
}

/// `{rest[0]: {rest[1]: … value}}`, or `value` when `rest` is empty.
fn nest(rest: &[String], value: &Value) -> Value {
    rest.iter().rev().fold(value.clone(), |inner, key| {
        let mut map = serde_json::Map::new();
        map.insert(key.clone(), inner);
        Value::Object(map)
    })
}

/// What [`remove`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Removal {
    /// The entry was removed (with the containers it left empty): the new text.
    Removed(String),
    /// The entry holds another value; left alone.
    Differs,
    /// No entry at that path.
    Absent,
}

/// Removes the entry at `path` if it holds `expected`, and the containers (never the root)
/// that its removal leaves empty.
pub(crate) fn remove(text: &str, path: &[String], expected: &Value) -> Removal {
    let Ok(parsed) = parse(text) else {
        return Removal::Absent;
    };
    let Some(mut obj) = parsed.value.as_ref().and_then(Ast::as_object) else {
        return Removal::Absent;
    };
    // (object, index of the member on the path) from the root down.
    let mut chain: Vec<(&Object<'_>, usize)> = Vec::new();
    for (depth, key) in path.iter().enumerate() {
        let Some((index, prop)) = member(obj, key) else {
            return Removal::Absent;
        };
        chain.push((obj, index));
        if depth + 1 == path.len() {
            let current: Value = prop.value.clone().into();
            if &current != expected {
                return Removal::Differs;
            }
        } else {
            match prop.value.as_object() {
                Some(o) => obj = o,
                None => return Removal::Absent,
            }
        }
    }
    // The outermost member whose removal empties nothing else: climb while the object
    // holding the member has no other member (never removing the root object itself).
    let mut at = chain.len() - 1;
    while at > 0 && chain[at].0.properties.len() == 1 {
        at -= 1;
    }
    let (obj, index) = chain[at];
    Removal::Removed(apply(text, remove_member(text, obj, index)))
}

/// The splices that remove member `index` of `obj` with its separator, keeping comments.
fn remove_member(text: &str, obj: &Object<'_>, index: usize) -> Vec<Splice> {
    let b = text.as_bytes();
    let m = &obj.properties[index];
    let (open, close) = (obj.range.start, obj.range.end - 1);
    let key_start = m.range.start;
    let value_end = m.range.end;
    // Whitespace right before the key (the separator an insertion added).
    let mut ws_start = key_start;
    while ws_start > open + 1 && matches!(b[ws_start - 1], b' ' | b'\t' | b'\n' | b'\r') {
        ws_start -= 1;
    }
    let next_start = obj
        .properties
        .get(index + 1)
        .map_or(close, |p| p.range.start);
    let own_comma = find_comma(text, value_end, next_start);
    let cut = Splice::cut;
    if obj.properties.len() == 1 {
        let inner_rest_is_blank = text[open + 1..ws_start].trim().is_empty()
            && text[own_comma.map_or(value_end, |c| c + 1)..close]
                .trim()
                .is_empty();
        if inner_rest_is_blank {
            return vec![cut(open + 1, close)];
        }
    }
    match own_comma {
        Some(c) => {
            if text[value_end..c].trim().is_empty() {
                vec![cut(ws_start, c + 1)]
            } else {
                vec![cut(ws_start, value_end), cut(c, c + 1)]
            }
        }
        None if index > 0 => {
            let prev_end = obj.properties[index - 1].range.end;
            match find_comma(text, prev_end, key_start) {
                Some(c) if c + 1 == ws_start => vec![cut(c, value_end)],
                Some(c) => vec![cut(c, c + 1), cut(ws_start, value_end)],
                None => vec![cut(ws_start, value_end)],
            }
        }
        None => vec![cut(ws_start, value_end)],
    }
}

/// The position of the comma in the trivia `text[from..to]` (comments skipped).
fn find_comma(text: &str, from: usize, to: usize) -> Option<usize> {
    let b = text.as_bytes();
    let mut i = from;
    while i < to {
        match b[i] {
            b',' => return Some(i),
            b'/' if b.get(i + 1) == Some(&b'/') => {
                i = text[i..to].find('\n').map_or(to, |n| i + n);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = text[i + 2..to].find("*/").map_or(to, |n| i + 2 + n + 2);
            }
            _ => i += 1,
        }
    }
    None
}

/// Inserts member `key: value` at the end of `obj`.
fn insert(text: &str, style: &Style, obj: &Object<'_>, key: &str, value: &Value) -> String {
    let multiline = is_multiline(text, obj);
    let (open, close) = (obj.range.start, obj.range.end - 1);
    let Some(last) = obj.properties.last() else {
        let outer = line_indent(text, open);
        let indent = format!("{outer}{}", style.unit);
        let inner = &text[open + 1..close];
        if inner.trim().is_empty() {
            let with = if multiline {
                format!(
                    "{nl}{indent}{}{nl}{outer}",
                    style.member((key, value.clone()), &indent),
                    nl = style.newline
                )
            } else {
                format!("{}: {}", json_string(key), compact(value))
            };
            return apply(
                text,
                vec![Splice {
                    with,
                    ..Splice::cut(open + 1, close)
                }],
            );
        }
        // Comments only: the member goes after the last of them.
        let after = open + 1 + inner.trim_end().len();
        let mut with = style.separated(multiline, &indent, key, value);
        if multiline && !text[after..close].contains('\n') {
            with.push_str(style.newline);
            with.push_str(&outer);
        }
        return apply(text, vec![Splice::insert(after, with)]);
    };
    let value_end = last.range.end;
    // After the last member: its comma (if it has one) and the comments on its line.
    let (comma, line_end) = trailing_trivia(text, value_end, close);
    let indent = member_indent(text, style, obj, last);
    let member = style.separated(multiline, &indent, key, value);
    let splices = match comma {
        // A trailing comma: the new member takes one too.
        Some(_) => vec![Splice::insert(line_end, format!("{member},"))],
        // The comma right after the value, the member after the line's comments.
        None if line_end == value_end => vec![Splice::insert(value_end, format!(",{member}"))],
        None => vec![
            Splice::insert(value_end, ",".to_owned()),
            Splice::insert(line_end, member),
        ],
    };
    apply(text, splices)
}

/// From the end of a member's value: the position of its comma (if any) and the end of the
/// comma and comments that follow it on the same line.
fn trailing_trivia(text: &str, from: usize, close: usize) -> (Option<usize>, usize) {
    let b = text.as_bytes();
    let (mut i, mut end, mut comma) = (from, from, None);
    while i < close {
        match b[i] {
            b' ' | b'\t' => i += 1,
            b',' if comma.is_none() => {
                comma = Some(i);
                i += 1;
                end = i;
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                i = text[i..close].find(['\r', '\n']).map_or(close, |n| i + n);
                end = i;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = text[i + 2..close]
                    .find("*/")
                    .map_or(close, |n| i + 2 + n + 2);
                end = i;
            }
            _ => break,
        }
    }
    // A comma on a later line (after a newline) still belongs to this member.
    if comma.is_none() {
        comma = find_comma(text, from, close);
        if let Some(c) = comma {
            end = end.max(c + 1);
        }
    }
    (comma, end)
}

fn is_multiline(text: &str, obj: &Object<'_>) -> bool {
    let inner = &text[obj.range.start..obj.range.end];
    inner.contains('\n') || (obj.properties.is_empty() && text.contains('\n'))
}

/// The indentation of new members of `obj`: that of its last member when it starts its
/// line, else the object's line indentation plus one unit.
fn member_indent(text: &str, style: &Style, obj: &Object<'_>, last: &ObjectProp<'_>) -> String {
    let start = last.range.start;
    let line_start = text[..start].rfind('\n').map_or(0, |n| n + 1);
    let before = &text[line_start..start];
    if before.chars().all(|c| c == ' ' || c == '\t') {
        before.to_owned()
    } else {
        format!("{}{}", line_indent(text, obj.range.start), style.unit)
    }
}

/// The leading whitespace of the line holding `pos`.
fn line_indent(text: &str, pos: usize) -> String {
    let line_start = text[..pos].rfind('\n').map_or(0, |n| n + 1);
    text[line_start..]
        .chars()
        .take_while(|c| *c == ' ' || *c == '\t')
        .collect()
}

/// The document's newline and indentation unit.
struct Style {
    newline: &'static str,
    unit: &'static str,
}

impl Style {
    fn of(text: &str, root: Option<&Object<'_>>) -> Style {
        let newline = if text.contains("\r\n") { "\r\n" } else { "\n" };
        // The root's first member on a line of its own: its indentation beyond the root's.
        if let Some(first) = root.and_then(|r| r.properties.first()) {
            let start = first.range.start;
            let line_start = text[..start].rfind('\n').map_or(0, |n| n + 1);
            let own = &text[line_start..start];
            let outer = line_indent(text, root.map_or(0, |r| r.range.start));
            if line_start > 0
                && own.chars().all(|c| c == ' ' || c == '\t')
                && let Some(unit) = own.strip_prefix(outer.as_str())
            {
                match unit {
                    "\t" => {
                        return Style {
                            newline,
                            unit: "\t",
                        };
                    }
                    " " | "  " | "   " | "    " => {
                        return Style {
                            newline,
                            unit: ["", " ", "  ", "   ", "    "][unit.len()],
                        };
                    }
                    _ => {}
                }
            }
        }
        // Otherwise the smallest indentation of a line that starts with a key.
        let mut unit = "  ";
        let mut best = usize::MAX;
        for line in text.lines() {
            let ws = line.len() - line.trim_start().len();
            if ws == 0 || !line.trim_start().starts_with('"') {
                continue;
            }
            if line.starts_with('\t') {
                unit = "\t";
                break;
            }
            if ws < best {
                best = ws;
                unit = ["  ", " ", "  ", "   ", "    "][ws.min(4)];
            }
        }
        Style { newline, unit }
    }

    /// A new member with its separator: on a line of its own indented by `indent`, or after
    /// a space in a one-line object.
    fn separated(&self, multiline: bool, indent: &str, key: &str, value: &Value) -> String {
        if multiline {
            format!(
                "{}{indent}{}",
                self.newline,
                self.member((key, value.clone()), indent)
            )
        } else {
            format!(" {}: {}", json_string(key), compact(value))
        }
    }

    /// `"key": value` with the value's later lines indented by `indent`.
    fn member(&self, (key, value): (&str, Value), indent: &str) -> String {
        format!("{}: {}", json_string(key), self.value(&value, indent))
    }

    /// `value` pretty-printed, its later lines indented by `indent`.
    fn value(&self, value: &Value, indent: &str) -> String {
        let mut out = Vec::new();
        let formatter = serde_json::ser::PrettyFormatter::with_indent(self.unit.as_bytes());
        let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
        serde::Serialize::serialize(value, &mut ser).unwrap_or_default();
        let pretty = String::from_utf8(out).unwrap_or_default();
        pretty.replace('\n', &format!("{}{indent}", self.newline))
    }
}

fn json_string(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// `value` on one line, with a space after `:` and `,`.
fn compact(value: &Value) -> String {
    match value {
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(compact).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) => {
            let members: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", json_string(k), compact(v)))
                .collect();
            format!("{{{}}}", members.join(", "))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(p: &str) -> Vec<String> {
        p.split('.').map(str::to_owned).collect()
    }

    fn round_trip(original: &str, p: &str, value: Value) -> String {
        let installed = set(original, &path(p), &value, false).unwrap().unwrap();
        assert_eq!(
            lookup(&installed, &path(p)),
            Some(value.clone()),
            "{installed}"
        );
        match remove(&installed, &path(p), &value) {
            Removal::Removed(back) => assert_eq!(back, original, "installed:\n{installed}"),
            other => panic!("{other:?}"),
        }
        installed
    }

    #[test]
    fn insert_then_remove_gives_the_original_bytes() {
        for original in [
            "{}",
            "{}\n",
            r#"{"a": 1}"#,
            "{\n  \"a\": 1\n}\n",
            "{\n  \"a\": 1,\n}\n",
            "{\n  \"a\": 1 // one\n}\n",
            "{\n  \"a\": 1, // one\n  /* tail */\n}\n",
            "{\r\n    \"a\": {\r\n        \"b\": true\r\n    }\r\n}\r\n",
            "\t{\n\t\t\"agent\": {\"x\": 1} /* c */\n\t}",
            r#"{"agent": {"build": {"model": "x"} /* keep me */ }}"#,
        ] {
            round_trip(
                original,
                "agent.orch-worker",
                json!({"mode": "primary", "n": [1, 2]}),
            );
            round_trip(original, "deep.b.c", json!("deep"));
        }
    }

    #[test]
    fn an_emptied_object_holding_only_whitespace_comes_back_as_braces() {
        let installed = set("{\n}\n", &path("a"), &json!(1), false)
            .unwrap()
            .unwrap();
        assert_eq!(installed, "{\n  \"a\": 1\n}\n");
        assert_eq!(
            remove(&installed, &path("a"), &json!(1)),
            Removal::Removed("{}\n".into())
        );
    }

    #[test]
    fn new_members_follow_the_documents_indentation() {
        let installed = round_trip(
            "{\n    \"agent\": {\n        \"mine\": {}\n    }\n}\n",
            "agent.new",
            json!({"k": 1}),
        );
        assert_eq!(
            installed,
            "{\n    \"agent\": {\n        \"mine\": {},\n        \"new\": {\n            \"k\": 1\n        }\n    }\n}\n"
        );
    }

    #[test]
    fn the_last_duplicate_is_the_one_edited() {
        let text = "{\"mcp\": {\"a\": 1}, \"mcp\": {\"b\": 2}}";
        let installed = set(text, &path("mcp.c"), &json!(3), false)
            .unwrap()
            .unwrap();
        assert_eq!(
            installed,
            "{\"mcp\": {\"a\": 1}, \"mcp\": {\"b\": 2, \"c\": 3}}"
        );
        assert_eq!(
            lookup(&installed, &path("mcp")),
            Some(json!({"b": 2, "c": 3}))
        );
    }

    #[test]
    fn conflicts_and_non_objects_are_reported() {
        assert_eq!(
            set(r#"{"a": 1}"#, &path("a"), &json!(2), false),
            Err(EditError::Conflict)
        );
        assert_eq!(
            set(r#"{"a": 1}"#, &path("a.b"), &json!(2), false),
            Err(EditError::NotAnObject { depth: 1 })
        );
        assert_eq!(
            set("[]", &path("a"), &json!(2), false),
            Err(EditError::NotAnObject { depth: 0 })
        );
        assert_eq!(
            set(r#"{"a": 1}"#, &path("a"), &json!(2), true)
                .unwrap()
                .unwrap(),
            r#"{"a": 2}"#
        );
    }
}
