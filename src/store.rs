//! The prefix-relative keys one template sees, and confd's lookups over them
//! (`getv`, `gets`, `getvs`, `exists`, `ls`, `lsdir`). Template functions in
//! [`crate::template`] are thin wrappers over these methods.
//!
//! Semantics follow confd's memkv, with two of its bugs fixed: `ls("/")` lists every
//! top-level name (confd lists only top-level leaves) and `lsdir("/")` lists the
//! top-level directories (confd always returns nothing). Patterns are Go `path.Match`
//! globs, see [`Pattern`].
//!
//! A store is cut out of a [`Snapshot`] by [`Store::cut`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::kv::pattern::{Pattern, PatternError};
use crate::kv::{Snapshot, go_path, keys};

/// Keys relative to a resource's prefix (`/db/host`) to values, at one revision.
///
/// Cloning is cheap (the map is shared): a render hands a clone to the template
/// functions for its duration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Store {
    revision: i64,
    kvs: Arc<BTreeMap<String, String>>,
}

/// A lookup that cannot answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("key not found: {0}")]
    KeyNotFound(String),
    #[error(transparent)]
    BadPattern(#[from] PatternError),
}

impl Store {
    pub fn new(revision: i64, kvs: BTreeMap<String, String>) -> Self {
        Store {
            revision,
            kvs: Arc::new(kvs),
        }
    }

    /// The store one resource sees: the keys its `selectors` select in `snapshot`, made
    /// relative to its `prefix` as confd does (`/app/db/host` under prefix `/app` is
    /// `/db/host`).
    pub fn cut(snapshot: &Snapshot, prefix: &str, selectors: &[String]) -> Store {
        let mut kvs = BTreeMap::new();
        for selector in selectors {
            for (key, value) in snapshot.selected(selector) {
                kvs.insert(keys::relative(prefix, key), value.clone());
            }
        }
        Store::new(snapshot.revision, kvs)
    }

    pub fn revision(&self) -> i64 {
        self.revision
    }

    pub fn len(&self) -> usize {
        self.kvs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kvs.is_empty()
    }

    /// The value of exactly `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.kvs.get(key).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.kvs.iter()
    }

    /// confd's `getv` without a default: the value of `key`, or an error naming it.
    pub fn getv(&self, key: &str) -> Result<&str, LookupError> {
        self.get(key)
            .ok_or_else(|| LookupError::KeyNotFound(key.to_string()))
    }

    /// Every key matching the glob `pattern`, with its value, sorted by key.
    pub fn gets(&self, pattern: &str) -> Result<Vec<(&str, &str)>, LookupError> {
        let pattern = Pattern::parse(pattern)?;
        let prefix = pattern.literal_prefix();
        // Keys are sorted, so only the range sharing the pattern's literal prefix
        // can match: `/upstream/*` never looks at keys outside `/upstream/`.
        Ok(self
            .kvs
            .range::<str, _>((
                std::ops::Bound::Included(prefix.as_str()),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(prefix.as_str()))
            .filter(|(k, _)| pattern.matches(k))
            .map(|(k, v)| (k.as_str(), v.as_str()))
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
        for (key, value) in self.kvs.iter() {
            let Some(path) = first_segments(key, depth) else {
                continue;
            };
            if !pattern.matches(path) {
                continue;
            }
            let value = (path.len() == key.len()).then_some(value.as_str());
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
        self.kvs.contains_key(key)
    }

    /// Sorted unique names of the immediate children of `path`. A key equal to `path`
    /// contributes its own base name, as in confd (`ls("/e")` is `["e"]` when `/e` is a key).
    pub fn ls(&self, path: &str) -> Vec<String> {
        let path = keys::join("", path);
        let mut names = BTreeSet::new();
        for key in self.kvs.keys() {
            if *key == path {
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
        for key in self.kvs.keys() {
            if let Some((child, _)) = below(&path, key).and_then(|rest| rest.split_once('/')) {
                names.insert(child.to_string());
            }
        }
        names.into_iter().collect()
    }
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
mod tests {
    use super::*;

    fn store(pairs: &[(&str, &str)]) -> Store {
        Store::new(
            3,
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// confd's verified vectors for `/a/b/c=1, /a/d=22, /e=333`.
    fn confd_store() -> Store {
        store(&[("/a/b/c", "1"), ("/a/d", "22"), ("/e", "333")])
    }

    #[test]
    fn confd_vectors() {
        let s = confd_store();
        assert_eq!(s.ls("/a"), vec!["b", "d"]);
        assert_eq!(s.lsdir("/a"), vec!["b"]);
        assert_eq!(s.getvs("/a/*").unwrap(), vec!["22"]);
        assert!(!s.exists("/a"));
        assert!(s.exists("/e"));
    }

    #[test]
    fn ls_of_a_key_lists_its_own_base_name() {
        assert_eq!(confd_store().ls("/e"), vec!["e"]);
        assert_eq!(confd_store().ls("/a/b/c"), vec!["c"]);
    }

    #[test]
    fn ls_and_lsdir_of_root_list_top_level_names() {
        // confd lists only leaves for ls "/" and nothing for lsdir "/"; fixed here.
        let s = confd_store();
        assert_eq!(s.ls("/"), vec!["a", "e"]);
        assert_eq!(s.lsdir("/"), vec!["a"]);
        assert_eq!(s.ls(""), vec!["a", "e"]);
    }

    #[test]
    fn ls_normalizes_the_path_and_skips_siblings() {
        let s = store(&[("/a/x", "1"), ("/ab/y", "2"), ("/a/z/w", "3")]);
        assert_eq!(s.ls("/a/"), vec!["x", "z"]);
        assert_eq!(s.lsdir("/a/"), vec!["z"]);
        assert!(s.ls("/missing").is_empty());
        assert!(s.lsdir("/a/x").is_empty());
    }

    #[test]
    fn getv_names_the_missing_key() {
        let s = confd_store();
        assert_eq!(s.getv("/e"), Ok("333"));
        assert_eq!(
            s.getv("/nope").unwrap_err().to_string(),
            "key not found: /nope"
        );
    }

    #[test]
    fn gets_sorts_by_key_and_getvs_by_value() {
        let s = store(&[
            ("/up/a", "9"),
            ("/up/b", "10"),
            ("/up/c/d", "x"),
            ("/upx", "y"),
        ]);
        assert_eq!(
            s.gets("/up/*").unwrap(),
            vec![("/up/a", "9"), ("/up/b", "10")]
        );
        assert_eq!(s.getvs("/up/*").unwrap(), vec!["10", "9"]);
        assert_eq!(s.gets("/up/*/*").unwrap(), vec![("/up/c/d", "x")]);
        assert!(s.gets("/none/*").unwrap().is_empty());
        assert_eq!(s.gets("/*").unwrap(), vec![("/upx", "y")]);
    }

    #[test]
    fn a_bad_pattern_is_an_error() {
        for bad in ["/a/[", "/a/[]", "/a/[^]", "/a\\", "/a/[a-]", "/[z"] {
            assert!(
                matches!(confd_store().gets(bad), Err(LookupError::BadPattern(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn store_strips_the_prefix() {
        let s = Snapshot::new(
            7,
            [
                ("/app/db/host", "h"),
                ("/app/web/port", "80"),
                ("/other", "x"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        );
        let store = Store::cut(&s, "/app", &["/app/db".to_string()]);
        assert_eq!(store.revision(), 7);
        assert_eq!(store.get("/db/host"), Some("h"));
        assert_eq!(store.get("/web/port"), None);
    }

    #[test]
    fn clones_share_the_map() {
        let s = confd_store();
        let c = s.clone();
        assert!(Arc::ptr_eq(&s.kvs, &c.kvs));
        assert_eq!(c.revision(), 3);
    }

    #[test]
    fn matches_are_keys_and_directories_at_the_pattern_depth() {
        let s = store(&[
            ("/s/api/1", "a"),
            ("/s/web", "w"),
            ("/s/web-x/1", "x"),
            ("/s/web/1", "b"),
            ("/t/other", "o"),
        ]);
        let pattern = Pattern::parse("/s/*").unwrap();
        assert_eq!(
            s.matches(&pattern, 2),
            vec![
                ("/s/api".to_string(), None),
                ("/s/web".to_string(), Some("w")),
                ("/s/web-x".to_string(), None),
            ]
        );
        let deep = Pattern::parse("/s/*/1").unwrap();
        assert_eq!(s.matches(&deep, 3).len(), 3);
    }
}
