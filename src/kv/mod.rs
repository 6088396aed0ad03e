//! The key space as every other module sees it, and nothing else: a [`Snapshot`] of
//! keys at one revision, the [`Event`]s and [`Change`]s a watch reports, key paths and
//! selectors ([`keys`]), Go's `path.Match` globs ([`pattern`]) and path helpers
//! ([`go_path`]).
//!
//! A leaf: it depends on no other module of conflux. Backends produce these types, the
//! mirror keeps them, stores and templates read them.

pub mod go_path;
pub mod keys;
pub mod pattern;

use std::collections::BTreeMap;

/// Every selected key with its value, read at one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The backend's revision (etcd's store revision; a read counter for files).
    pub revision: i64,
    /// Absolute keys (`/app/db/host`) to values. Change it through [`Snapshot::insert`]
    /// and [`Snapshot::remove`], which keep the count of unclean keys.
    pub kvs: BTreeMap<String, String>,
    /// How many keys are not in clean path form (see [`keys::is_clean`]): a store can
    /// read a snapshot with none in place, without looking at every key per pass.
    unclean: usize,
}

impl Snapshot {
    pub fn new(revision: i64, kvs: BTreeMap<String, String>) -> Self {
        let unclean = kvs.keys().filter(|k| !keys::is_clean(k)).count();
        Snapshot {
            revision,
            kvs,
            unclean,
        }
    }

    /// Whether every key is in clean path form.
    pub fn all_clean(&self) -> bool {
        self.unclean == 0
    }

    /// Sets `key` to `value`.
    pub fn insert(&mut self, key: String, value: String) {
        let clean = keys::is_clean(&key);
        if self.kvs.insert(key, value).is_none() && !clean {
            self.unclean += 1;
        }
    }

    /// Removes `key`; whether it was there.
    pub fn remove(&mut self, key: &str) -> bool {
        let removed = self.kvs.remove(key).is_some();
        if removed && !keys::is_clean(key) {
            self.unclean -= 1;
        }
        removed
    }

    /// Every key that `selector` selects, in key order: the selector itself, then
    /// everything below it. A plain range from the selector would also pass siblings
    /// such as `/app/db-x`, which sort between `/app/db` and `/app/db/`.
    pub fn selected<'a>(
        &'a self,
        selector: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a String)> + 'a {
        let exact = self.kvs.get_key_value(selector);
        let below = if selector == "/" {
            String::from("/")
        } else {
            format!("{selector}/")
        };
        let children = self
            .kvs
            .range(below.clone()..)
            .take_while(move |(k, _)| k.starts_with(&below));
        exact.into_iter().chain(children)
    }
}

/// One key changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Put { key: String, value: String },
    Delete { key: String },
}

impl Event {
    pub fn key(&self) -> &str {
        match self {
            Event::Put { key, .. } | Event::Delete { key } => key,
        }
    }
}

/// What a watch reports, in revision order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Events committed at `revision`, to apply to the mirror in order.
    Events { revision: i64, events: Vec<Event> },
    /// The whole selected key space again (after a compaction, or for backends that
    /// cannot report single events): replace the mirror with it.
    Reset(Snapshot),
    /// The watch is live and has delivered everything up to `revision` (sent when a
    /// watch is created and on progress notifications): nothing to apply.
    Progress { revision: i64 },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unclean_keys_are_counted_through_inserts_and_removes() {
        let mut s = Snapshot::new(1, [("/a//b".to_string(), "x".to_string())].into());
        assert!(!s.all_clean());
        s.insert("/c/".into(), "y".into());
        s.insert("/c/".into(), "z".into());
        s.insert("/d".into(), "w".into());
        assert!(s.remove("/a//b"));
        assert!(!s.all_clean());
        assert!(s.remove("/c/"));
        assert!(!s.remove("/c/"));
        assert!(s.all_clean());
        assert_eq!(s.kvs.len(), 1);
    }

    #[test]
    fn selected_skips_siblings_that_sort_inside_the_range() {
        let s = Snapshot::new(
            7,
            [
                ("/app/db", "a"),
                ("/app/db-x", "b"),
                ("/app/db/host", "c"),
                ("/app/dbx", "d"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        );
        let keys: Vec<_> = s.selected("/app/db").map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, vec!["/app/db", "/app/db/host"]);
    }
}
