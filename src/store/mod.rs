//! The prefix-relative keys one template sees, and confd's lookups over them
//! (`getv`, `gets`, `getvs`, `exists`, `ls`, `lsdir`). Template functions in
//! [`crate::template`] are thin wrappers over these methods.
//!
//! Semantics follow confd's memkv, with two of its bugs fixed: `ls("/")` lists every
//! top-level name (confd lists only top-level leaves) and `lsdir("/")` lists the
//! top-level directories (confd always returns nothing). Patterns are Go `path.Match`
//! globs, see [`Pattern`].
//!
//! A store is a view of a [`Snapshot`] ([`Store::cut`]): it holds the snapshot's `Arc`,
//! the resource's prefix and its selectors, and answers each lookup from the snapshot's
//! own map, turning relative keys into absolute ones and back; nothing is copied per
//! pass. Where and how keys are stored is the snapshot's business.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::kv::pattern::{Pattern, PatternError};
use crate::kv::{Snapshot, go_path, keys};

/// Keys relative to a resource's prefix (`/db/host`) to values, at one revision.
///
/// A view, not a copy: a pass over 100,000 keys used to copy every selected pair into
/// a map of relative keys first (about 25 MiB and 200,000 allocations per pass at that
/// size, measured with benches/render.rs); the view costs three `Arc` clones. The one
/// case a view cannot serve is a selected key that confd's path cleaning would rename
/// (`/app//db`, `/app/db/`, `/app/./db`): its relative key is not a slice of the
/// absolute one, so such a store falls back to the copy, found by one scan of the
/// selected keys (no allocation). Cloning is cheap: a render hands a clone to the
/// template functions for its duration.
#[derive(Debug, Clone, Default)]
pub struct Store {
    snapshot: Arc<Snapshot>,
    /// The prefix as keys spell it (`/app`), empty for `/`: absolute = base + relative.
    base: Arc<str>,
    selected: Arc<Selected>,
}

/// Which keys under the prefix the resource selected.
#[derive(Debug, Default)]
enum Selected {
    /// Everything under the prefix (`keys = ["/"]`, the common case): no test per key.
    #[default]
    All,
    /// A few selectors, tested in turn (cheaper than hashing each ancestor).
    Few(Vec<String>),
    /// Many selectors, as a set.
    Many(keys::Selection),
}

/// Up to this many selectors are tested in turn; more go into a set.
const FEW: usize = 8;

/// A lookup that cannot answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("key not found: {0}")]
    KeyNotFound(String),
    #[error(transparent)]
    BadPattern(#[from] PatternError),
}

impl Store {
    /// A store of relative keys as given (they start with `/`): for tests and for
    /// callers that build their own key space.
    pub fn new(revision: i64, kvs: BTreeMap<String, String>) -> Self {
        Store {
            snapshot: Arc::new(Snapshot::new(revision, kvs)),
            base: Arc::from(""),
            selected: Arc::new(Selected::All),
        }
    }

    /// The store one resource sees: the keys its `selectors` select in `snapshot`, made
    /// relative to its `prefix` as confd does (`/app/db/host` under prefix `/app` is
    /// `/db/host`). Selectors lie under the prefix (a resource joins them to it).
    pub fn cut(snapshot: &Arc<Snapshot>, prefix: &str, selectors: &[String]) -> Store {
        let merged = keys::merge(selectors.iter().cloned());
        let selected = if merged.iter().any(|s| s == prefix) {
            Selected::All
        } else if merged.len() <= FEW {
            Selected::Few(merged.clone())
        } else {
            Selected::Many(keys::Selection::new(&merged))
        };
        let view = Store {
            snapshot: Arc::clone(snapshot),
            base: Arc::from(if prefix == "/" { "" } else { prefix }),
            selected: Arc::new(selected),
        };
        let under_prefix = merged.iter().all(|s| keys::selects(prefix, s));
        // A snapshot without unclean keys needs no look at its keys (a scan of every
        // selected key per pass was 2–5 ms at 100,000 keys); otherwise only the
        // selected ones matter.
        let clean =
            |(key, _): (&String, &String)| key == view.prefix_key() || is_clean(view.relative(key));
        if under_prefix && (snapshot.all_clean() || view.raw("").all(clean)) {
            return view;
        }
        Store::copied(snapshot, prefix, &merged)
    }

    /// The store as a map of cleaned relative keys, as confd builds it.
    fn copied(snapshot: &Snapshot, prefix: &str, selectors: &[String]) -> Store {
        let mut kvs = BTreeMap::new();
        for selector in selectors {
            for (key, value) in snapshot.selected(selector) {
                kvs.insert(keys::relative(prefix, key), value.clone());
            }
        }
        Store::new(snapshot.revision, kvs)
    }

    pub fn revision(&self) -> i64 {
        self.snapshot.revision
    }

    /// How many keys the store holds (counted: O(keys)).
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// The value of exactly `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        let absolute = self.absolute(key)?;
        if !self.selects(&absolute) {
            return None;
        }
        self.snapshot.kvs.get(absolute.as_ref()).map(String::as_str)
    }

    /// Every key with its value, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.starting_with("")
    }

    /// confd's `getv` without a default: the value of `key`, or an error naming it.
    pub fn getv(&self, key: &str) -> Result<&str, LookupError> {
        self.get(key)
            .ok_or_else(|| LookupError::KeyNotFound(key.to_string()))
    }

    /// Every key matching the glob `pattern`, with its value, sorted by key.
    pub fn gets(&self, pattern: &str) -> Result<Vec<(&str, &str)>, LookupError> {
        let pattern = Pattern::parse(pattern)?;
        // Keys are sorted, so only the range sharing the pattern's literal prefix
        // can match: `/upstream/*` never looks at keys outside `/upstream/`.
        Ok(self
            .starting_with(&pattern.literal_prefix())
            .filter(|(k, _)| pattern.matches_after_literal_prefix(k))
            .collect())
    }

    /// The values of every key matching `pattern`, sorted by value (as confd does).
    pub fn getvs(&self, pattern: &str) -> Result<Vec<&str>, LookupError> {
        let mut values: Vec<&str> = self.gets(pattern)?.into_iter().map(|(_, v)| v).collect();
        values.sort_unstable();
        Ok(values)
    }

    /// A fan-out's matches: every path `depth` segments deep (a key, or a directory
    /// with keys below it) that `pattern` matches, in order, with the value when the
    /// path is itself a key.
    pub fn matches(&self, pattern: &Pattern, depth: usize) -> Vec<(String, Option<&str>)> {
        // A map, not a run of equal neighbours: `/s/web-x` sorts between `/s/web` and
        // `/s/web/a`.
        let mut found: BTreeMap<&str, Option<&str>> = BTreeMap::new();
        for (key, value) in self.iter() {
            let Some(path) = first_segments(key, depth) else {
                continue;
            };
            if !pattern.matches(path) {
                continue;
            }
            let value = (path.len() == key.len()).then_some(value);
            let seen = found.entry(path).or_default();
            *seen = seen.or(value);
        }
        found
            .into_iter()
            .map(|(path, value)| (path.to_string(), value))
            .collect()
    }

    /// Whether exactly `key` is present; a "directory" with keys below it is not a key.
    pub fn exists(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Sorted unique names of the immediate children of `path`. A key equal to `path`
    /// contributes its own base name, as in confd (`ls("/e")` is `["e"]` when `/e` is a key).
    pub fn ls(&self, path: &str) -> Vec<String> {
        let path = keys::join("", path);
        let mut names = BTreeSet::new();
        for (key, _) in self.starting_with(&path) {
            if key == path {
                names.insert(go_path::base(key));
            } else if let Some(rest) = below(&path, key) {
                names.insert(first_segment(rest).to_string());
            }
        }
        names.into_iter().collect()
    }

    /// Sorted unique names of the immediate children of `path` that have children.
    pub fn lsdir(&self, path: &str) -> Vec<String> {
        let path = keys::join("", path);
        let mut names = BTreeSet::new();
        for (key, _) in self.starting_with(&path) {
            if let Some((child, _)) = below(&path, key).and_then(|rest| rest.split_once('/')) {
                names.insert(child.to_string());
            }
        }
        names.into_iter().collect()
    }

    /// The selected keys whose relative key starts with `start` (as a string), relative,
    /// in key order: one range of the snapshot's map, never the whole of it.
    fn starting_with<'a>(&'a self, start: &str) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.raw(start)
            .map(|(key, value)| (self.relative(key), value.as_str()))
            .filter(move |(key, _)| key.starts_with(start))
    }

    /// Selected absolute keys under the prefix whose relative key may start with
    /// `start`: the prefix's own key (relative `/`) first, then the range below it.
    fn raw<'a>(&'a self, start: &str) -> impl Iterator<Item = (&'a String, &'a String)> {
        let own = self.snapshot.kvs.get_key_value(self.prefix_key());
        let from = if start.starts_with('/') {
            format!("{}{start}", self.base)
        } else {
            format!("{}/", self.base)
        };
        let below = self
            .snapshot
            .kvs
            .range(from.clone()..)
            .take_while(move |(k, _)| k.starts_with(from.as_str()));
        // Every key of the range lies below the prefix: with all of it selected there is
        // nothing to test per key.
        let all = matches!(*self.selected, Selected::All);
        own.filter(|(k, _)| self.selects(k)).into_iter().chain(
            below.filter(move |(k, _)| k.as_str() != self.prefix_key() && (all || self.selects(k))),
        )
    }

    /// The key a template calls `/`.
    fn prefix_key(&self) -> &str {
        if self.base.is_empty() {
            "/"
        } else {
            &self.base
        }
    }

    /// The absolute key of a relative one; `None` for a key that is not relative.
    fn absolute<'k>(&self, key: &'k str) -> Option<Cow<'k, str>> {
        if !key.starts_with('/') {
            return None;
        }
        Some(match (self.base.is_empty(), key == "/") {
            (true, _) => Cow::Borrowed(key),
            (false, true) => Cow::Owned(self.base.to_string()),
            (false, false) => Cow::Owned(format!("{}{key}", self.base)),
        })
    }

    /// The relative key of an absolute key under the prefix: a slice of it.
    fn relative<'k>(&self, key: &'k str) -> &'k str {
        match key.get(self.base.len()..) {
            Some("") | None => "/",
            Some(rest) => rest,
        }
    }

    /// Whether the resource selected the absolute `key`.
    fn selects(&self, key: &str) -> bool {
        match &*self.selected {
            Selected::All => keys::selects(self.prefix_key(), key),
            Selected::Few(selectors) => selectors.iter().any(|s| keys::selects(s, key)),
            Selected::Many(selection) => selection.selects(key),
        }
    }
}

/// Whether the relative key of a key below the prefix is already what confd's path
/// cleaning makes of it; `/` is not (it is what `/app/` leaves under `/app`).
fn is_clean(relative: &str) -> bool {
    relative != "/" && keys::is_clean(relative)
}

/// The part of `key` below the normalized directory `dir`, without the leading `/`;
/// `None` when `key` is not strictly below `dir`.
fn below<'k>(dir: &str, key: &'k str) -> Option<&'k str> {
    let rest = if dir == "/" {
        key.strip_prefix('/')?
    } else {
        key.strip_prefix(dir)?.strip_prefix('/')?
    };
    (!rest.is_empty()).then_some(rest)
}

/// The first `depth` segments of `key` (`/a/b/c`, 2 → `/a/b`); `None` when it has fewer.
fn first_segments(key: &str, depth: usize) -> Option<&str> {
    let mut ends = key.match_indices('/').map(|(i, _)| i).skip(1);
    match ends.nth(depth.checked_sub(1)?) {
        Some(end) => Some(&key[..end]),
        None => (key.matches('/').count() == depth).then_some(key),
    }
}

fn first_segment(rest: &str) -> &str {
    rest.split('/').next().unwrap_or(rest)
}

#[cfg(test)]
mod tests;
