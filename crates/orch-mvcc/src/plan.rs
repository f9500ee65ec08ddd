//! The plan model: a title, a free-text description and a list of items.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::PlanError;

/// A stable item identifier such as `T1`, `auth.jwt` or `2-b`.
///
/// Ids start with an ASCII letter or digit and continue with ASCII letters, digits, `.`, `_`
/// or `-`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ItemId(String);

impl ItemId {
    /// Checks `id` against the id grammar.
    ///
    /// # Errors
    /// [`PlanError::InvalidId`] when `id` is empty or holds a character outside the grammar.
    pub fn new(id: impl Into<String>) -> Result<Self, PlanError> {
        let id = id.into();
        if is_valid_id(&id) {
            Ok(Self(id))
        } else {
            Err(PlanError::InvalidId { id })
        }
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Takes the text back.
    #[must_use]
    pub fn into_inner(self) -> String {
        self.0
    }
}

pub(crate) fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

pub(crate) fn is_valid_id(id: &str) -> bool {
    id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric()) && id.chars().all(is_id_char)
}

impl fmt::Debug for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ItemId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for ItemId {
    type Err = PlanError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for ItemId {
    type Error = PlanError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl TryFrom<&str> for ItemId {
    type Error = PlanError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<ItemId> for String {
    fn from(id: ItemId) -> Self {
        id.0
    }
}

/// Where an item stands. The checkbox in `TODO.md` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemState {
    /// `[ ]`: not started.
    #[default]
    Pending,
    /// `[~]`: a worker holds it.
    InProgress,
    /// `[?]`: done by a worker, waiting for a reviewer's verdict.
    InReview,
    /// `[x]`: accepted.
    Done,
    /// `[!]`: given up on.
    Failed,
}

impl ItemState {
    /// Every state, in checkbox order.
    pub const ALL: [Self; 5] = [
        Self::Pending,
        Self::InProgress,
        Self::InReview,
        Self::Done,
        Self::Failed,
    ];

    /// The character between the checkbox brackets that the renderer writes.
    #[must_use]
    pub fn marker(self) -> char {
        match self {
            Self::Pending => ' ',
            Self::InProgress => '~',
            Self::InReview => '?',
            Self::Done => 'x',
            Self::Failed => '!',
        }
    }

    /// Reads a checkbox character, accepting the variants people and models write:
    /// `x`/`X` done, `~`/`/`/`>` in progress, `?`/`r`/`R` in review, `!` failed.
    #[must_use]
    pub fn from_marker(c: char) -> Option<Self> {
        Some(match c {
            ' ' => Self::Pending,
            '~' | '/' | '>' => Self::InProgress,
            '?' | 'r' | 'R' => Self::InReview,
            'x' | 'X' => Self::Done,
            '!' => Self::Failed,
            _ => return None,
        })
    }

    /// `Done` or `Failed`: no further work will happen on the item.
    #[must_use]
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Done | Self::Failed)
    }

    /// `InProgress` or `InReview`: the item holds its files.
    #[must_use]
    pub fn is_active(self) -> bool {
        matches!(self, Self::InProgress | Self::InReview)
    }

    /// The name used in the audit log (`in_progress`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::InProgress => "in_progress",
            Self::InReview => "in_review",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }
}

impl fmt::Display for ItemState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One unit of work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Stable id, unique in the plan.
    pub id: ItemId,
    /// Where the item stands.
    pub state: ItemState,
    /// One line saying what to do.
    pub summary: String,
    /// Files the item owns. An entry ending in `/` owns a directory.
    pub files: Vec<String>,
    /// Items that must be `Done` before this one can start.
    pub deps: Vec<ItemId>,
    /// How many times a worker has attempted the item.
    pub attempts: u32,
    /// Free-form notes (reviewer feedback, failure reasons), oldest first. A note may span
    /// several lines; blank lines and surrounding whitespace are not kept.
    pub notes: Vec<String>,
}

impl Item {
    /// A pending item with no files, dependencies or notes.
    #[must_use]
    pub fn new(id: ItemId, summary: impl Into<String>) -> Self {
        Self {
            id,
            state: ItemState::Pending,
            summary: summary.into(),
            files: Vec::new(),
            deps: Vec::new(),
            attempts: 0,
            notes: Vec::new(),
        }
    }

    /// Sets the owned files.
    #[must_use]
    pub fn with_files<I, S>(mut self, files: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.files = files.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the dependencies.
    #[must_use]
    pub fn with_deps(mut self, deps: impl IntoIterator<Item = ItemId>) -> Self {
        self.deps = deps.into_iter().collect();
        self
    }

    /// Sets the state.
    #[must_use]
    pub fn with_state(mut self, state: ItemState) -> Self {
        self.state = state;
        self
    }

    /// Appends a note, normalised to what the format can hold: each line trimmed, blank lines
    /// dropped. A note that is blank after that is not added.
    pub fn add_note(&mut self, note: &str) {
        let lines: Vec<&str> = note
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        if !lines.is_empty() {
            self.notes.push(lines.join("\n"));
        }
    }

    /// Whether `self` and `other` claim a common file (equal paths, or one is a directory
    /// entry ending in `/` that holds the other).
    #[must_use]
    pub fn shares_files_with(&self, other: &Item) -> bool {
        self.files
            .iter()
            .any(|a| other.files.iter().any(|b| paths_overlap(a, b)))
    }
}

fn paths_overlap(a: &str, b: &str) -> bool {
    a == b || (a.ends_with('/') && b.starts_with(a)) || (b.ends_with('/') && a.starts_with(b))
}

/// Counts of items per state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StateCounts {
    /// `[ ]` items.
    pub pending: usize,
    /// `[~]` items.
    pub in_progress: usize,
    /// `[?]` items.
    pub in_review: usize,
    /// `[x]` items.
    pub done: usize,
    /// `[!]` items.
    pub failed: usize,
}

/// A plan: the content of `TODO.md`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// The `# title` line, without the `#`.
    pub title: String,
    /// Free text between the title and the first item; lines are right-trimmed, runs of
    /// blank lines collapse to one, and leading or trailing blank lines are dropped.
    pub description: String,
    /// The items, in file order.
    pub items: Vec<Item>,
}

impl Plan {
    /// An empty plan with a title.
    #[must_use]
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            ..Self::default()
        }
    }

    /// The item with id `id`.
    #[must_use]
    pub fn item(&self, id: impl AsRef<str>) -> Option<&Item> {
        let id = id.as_ref();
        self.items.iter().find(|i| i.id.as_str() == id)
    }

    /// The item with id `id`, for changing it.
    pub fn item_mut(&mut self, id: impl AsRef<str>) -> Option<&mut Item> {
        let id = id.as_ref();
        self.items.iter_mut().find(|i| i.id.as_str() == id)
    }

    /// Sets an item's state; returns the previous state, or `None` when there is no such item.
    pub fn set_state(&mut self, id: impl AsRef<str>, state: ItemState) -> Option<ItemState> {
        self.item_mut(id)
            .map(|item| std::mem::replace(&mut item.state, state))
    }

    /// Appends an item.
    pub fn push(&mut self, item: Item) {
        self.items.push(item);
    }

    /// Removes and returns the item with id `id`.
    pub fn remove(&mut self, id: impl AsRef<str>) -> Option<Item> {
        let id = id.as_ref();
        let pos = self.items.iter().position(|i| i.id.as_str() == id)?;
        Some(self.items.remove(pos))
    }

    /// Items that can start now: pending, every dependency `Done`, and no active
    /// (in progress or in review) item owning one of their files. Ready items may still share
    /// files with each other; [`Plan::ready_batch`] picks a conflict-free set.
    #[must_use]
    pub fn ready_items(&self) -> Vec<&Item> {
        let done: HashSet<&str> = self
            .items
            .iter()
            .filter(|i| i.state == ItemState::Done)
            .map(|i| i.id.as_str())
            .collect();
        let active: Vec<&Item> = self.items.iter().filter(|i| i.state.is_active()).collect();
        self.items
            .iter()
            .filter(|i| i.state == ItemState::Pending)
            .filter(|i| i.deps.iter().all(|d| done.contains(d.as_str())))
            .filter(|i| !active.iter().any(|a| a.shares_files_with(i)))
            .collect()
    }

    /// Ready items, in plan order, skipping any that shares a file with one picked before it:
    /// a set that can all be started at once.
    #[must_use]
    pub fn ready_batch(&self) -> Vec<&Item> {
        let mut picked: Vec<&Item> = Vec::new();
        for item in self.ready_items() {
            if !picked.iter().any(|p| p.shares_files_with(item)) {
                picked.push(item);
            }
        }
        picked
    }

    /// Counts items per state.
    #[must_use]
    pub fn counts(&self) -> StateCounts {
        let mut c = StateCounts::default();
        for item in &self.items {
            match item.state {
                ItemState::Pending => c.pending += 1,
                ItemState::InProgress => c.in_progress += 1,
                ItemState::InReview => c.in_review += 1,
                ItemState::Done => c.done += 1,
                ItemState::Failed => c.failed += 1,
            }
        }
        c
    }

    /// Every item is `Done` or `Failed`.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.items.iter().all(|i| i.state.is_terminal())
    }

    /// Checks that the plan is well formed and that [`render`](crate::render) writes text
    /// that [`parse`](crate::parse) reads back as this very plan.
    ///
    /// # Errors
    /// The first problem found: duplicate ids, a dependency on a missing id, a dependency
    /// cycle, or a field the format cannot hold ([`PlanError::Unrepresentable`]).
    pub fn validate(&self) -> Result<(), PlanError> {
        check_text_fields(self).map_err(|(_, error)| error)?;
        check_graph(self, &|_| None)
    }
}

fn unrepresentable(item: Option<&ItemId>, reason: impl Into<String>) -> PlanError {
    PlanError::Unrepresentable {
        item: item.map(|i| i.as_str().to_owned()),
        reason: reason.into(),
    }
}

fn is_trimmed_line(s: &str) -> bool {
    !s.contains(['\n', '\r']) && s.trim() == s
}

pub(crate) const SEPARATOR_CHARS: &[char] = &['*', '`', ':', ' ', '\t', '-', '—', '–'];

/// The checks of [`Plan::validate`] on the title, the description and the items' fields. An
/// error comes with the index of the item it is about (`None`: the title or description).
pub(crate) fn check_text_fields(plan: &Plan) -> Result<(), (Option<usize>, PlanError)> {
    check_header(plan).map_err(|e| (None, e))?;
    for (index, item) in plan.items.iter().enumerate() {
        check_item(item).map_err(|e| (Some(index), e))?;
    }
    Ok(())
}

fn check_header(plan: &Plan) -> Result<(), PlanError> {
    if !is_trimmed_line(&plan.title) {
        return Err(unrepresentable(
            None,
            "the title must be one line without surrounding whitespace",
        ));
    }
    if plan.description != crate::grammar::normalize_description(&plan.description) {
        return Err(unrepresentable(
            None,
            "the description must be right-trimmed lines with no leading, trailing or doubled blank lines",
        ));
    }
    if plan.title.starts_with("```") {
        return Err(unrepresentable(
            None,
            "the title must not start with a code fence",
        ));
    }
    for line in plan.description.lines() {
        if crate::grammar::is_item_line(line) {
            return Err(unrepresentable(
                None,
                format!("description line {line:?} would read as an item"),
            ));
        }
    }
    Ok(())
}

fn check_item(item: &Item) -> Result<(), PlanError> {
    let id = Some(&item.id);
    if !is_valid_id(item.id.as_str()) {
        return Err(PlanError::InvalidId {
            id: item.id.as_str().to_owned(),
        });
    }
    if item.summary.is_empty()
        || !is_trimmed_line(&item.summary)
        || item.summary.starts_with(SEPARATOR_CHARS)
    {
        return Err(unrepresentable(
            id,
            "the summary must be one non-empty trimmed line not starting with `*`, `` ` ``, `:` or a dash",
        ));
    }
    for file in &item.files {
        if file.is_empty()
            || !is_trimmed_line(file)
            || file.contains(',')
            || file.starts_with('`')
            || file.ends_with('`')
            || crate::grammar::is_none_value(file)
        {
            return Err(unrepresentable(
                id,
                format!(
                    "file {file:?} must be non-empty, trimmed, without `,` or `` ` `` at its ends, and not a word for none"
                ),
            ));
        }
    }
    // `files: none (a, b)` reads as no files: the list as written must not say "none".
    if item.files.len() > 1 && crate::grammar::is_none_value(&item.files.join(", ")) {
        return Err(unrepresentable(
            id,
            format!("files {:?} would read back as `none`", item.files),
        ));
    }
    for dep in &item.deps {
        if !is_valid_id(dep.as_str()) {
            return Err(PlanError::InvalidId {
                id: dep.as_str().to_owned(),
            });
        }
    }
    for note in &item.notes {
        if note.is_empty() || note.lines().any(|l| l.is_empty() || l.trim() != l) {
            return Err(unrepresentable(
                id,
                "a note must be non-empty trimmed lines (use Item::add_note to normalise)",
            ));
        }
    }
    Ok(())
}

/// Duplicate ids, unknown dependencies and cycles. `line_of(index)` gives an item's line in
/// the source, when there is one.
pub(crate) fn check_graph(
    plan: &Plan,
    line_of: &dyn Fn(usize) -> Option<usize>,
) -> Result<(), PlanError> {
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(plan.items.len());
    for (i, item) in plan.items.iter().enumerate() {
        if let Some(&first) = index.get(item.id.as_str()) {
            return Err(PlanError::DuplicateId {
                id: item.id.as_str().to_owned(),
                line: line_of(i),
                first_line: line_of(first),
            });
        }
        index.insert(item.id.as_str(), i);
    }
    for (i, item) in plan.items.iter().enumerate() {
        for dep in &item.deps {
            if !index.contains_key(dep.as_str()) {
                return Err(PlanError::UnknownDependency {
                    item: item.id.as_str().to_owned(),
                    dependency: dep.as_str().to_owned(),
                    line: line_of(i),
                });
            }
        }
    }
    // Iterative three-colour DFS; a grey node reached again closes a cycle.
    #[derive(Clone, Copy, PartialEq)]
    enum Colour {
        White,
        Grey,
        Black,
    }
    let n = plan.items.len();
    let mut colour = vec![Colour::White; n];
    let deps_of = |i: usize| -> Vec<usize> {
        plan.items[i]
            .deps
            .iter()
            .filter_map(|d| index.get(d.as_str()).copied())
            .collect()
    };
    for start in 0..n {
        if colour[start] != Colour::White {
            continue;
        }
        let mut stack: Vec<(usize, Vec<usize>, usize)> = vec![(start, deps_of(start), 0)];
        colour[start] = Colour::Grey;
        while let Some((node, children, next)) = stack.last_mut() {
            if let Some(&child) = children.get(*next) {
                *next += 1;
                match colour[child] {
                    Colour::White => {
                        colour[child] = Colour::Grey;
                        let grand = deps_of(child);
                        stack.push((child, grand, 0));
                    }
                    Colour::Grey => {
                        let from = stack.iter().position(|(n, _, _)| *n == child).unwrap_or(0);
                        let mut cycle: Vec<String> = stack[from..]
                            .iter()
                            .map(|(n, _, _)| plan.items[*n].id.as_str().to_owned())
                            .collect();
                        cycle.push(plan.items[child].id.as_str().to_owned());
                        return Err(PlanError::DependencyCycle {
                            cycle,
                            line: line_of(child),
                        });
                    }
                    Colour::Black => {}
                }
            } else {
                colour[*node] = Colour::Black;
                stack.pop();
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ItemId {
        ItemId::new(s).unwrap()
    }

    fn sample() -> Plan {
        let mut p = Plan::new("t");
        p.push(Item::new(id("A"), "a").with_files(["src/a.rs"]));
        p.push(
            Item::new(id("B"), "b")
                .with_files(["src/b.rs"])
                .with_deps([id("A")]),
        );
        p.push(Item::new(id("C"), "c").with_files(["src/"]));
        p.push(Item::new(id("D"), "d").with_files(["src/d.rs"]));
        p
    }

    #[test]
    fn ids_follow_the_grammar() {
        assert!(ItemId::new("T1").is_ok());
        assert!(ItemId::new("a.b_c-1").is_ok());
        assert!(ItemId::new("").is_err());
        assert!(ItemId::new("-x").is_err());
        assert!(ItemId::new("a b").is_err());
    }

    #[test]
    fn ready_items_need_done_deps_and_free_files() {
        let mut p = sample();
        let ready: Vec<&str> = p.ready_items().iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ready, ["A", "C", "D"]);
        // C owns the directory holding A's and D's files: it waits for a later batch.
        let batch: Vec<&str> = p.ready_batch().iter().map(|i| i.id.as_str()).collect();
        assert_eq!(batch, ["A", "D"]);
        p.set_state("C", ItemState::InProgress);
        assert!(p.ready_items().is_empty());
        p.set_state("C", ItemState::Done);
        p.set_state("A", ItemState::Done);
        let ready: Vec<&str> = p.ready_items().iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ready, ["B", "D"]);
    }

    #[test]
    fn validate_finds_cycles_and_unknown_deps() {
        let mut p = sample();
        assert!(p.validate().is_ok());
        p.item_mut("A").unwrap().deps.push(id("B"));
        let err = p.validate().unwrap_err();
        assert!(
            matches!(&err, PlanError::DependencyCycle { cycle, .. } if cycle.len() == 3),
            "{err}"
        );
        p.item_mut("A").unwrap().deps = vec![id("Z")];
        assert!(matches!(
            p.validate(),
            Err(PlanError::UnknownDependency { .. })
        ));
        p.item_mut("A").unwrap().deps.clear();
        p.push(Item::new(id("A"), "again"));
        assert!(matches!(p.validate(), Err(PlanError::DuplicateId { .. })));
    }

    #[test]
    fn files_that_would_read_back_as_none_are_refused() {
        let mut p = Plan::new("t");
        p.push(Item::new(id("A"), "a").with_files(["none (a", "b)"]));
        assert!(matches!(
            p.validate(),
            Err(PlanError::Unrepresentable { .. })
        ));
        p.items[0].files = vec!["none".into()];
        assert!(p.validate().is_err());
        p.items[0].files = vec!["none.rs".into()];
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn add_note_normalises() {
        let mut item = Item::new(id("A"), "a");
        item.add_note("  first  \n\n  second ");
        item.add_note("   \n ");
        assert_eq!(item.notes, ["first\nsecond"]);
    }

    #[test]
    fn counts_and_finished() {
        let mut p = sample();
        assert_eq!(p.counts().pending, 4);
        for s in ["A", "B", "C"] {
            p.set_state(s, ItemState::Done);
        }
        assert!(!p.is_finished());
        p.set_state("D", ItemState::Failed);
        assert!(p.is_finished());
        assert_eq!(p.counts().done, 3);
    }
}
