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
    /// Absolute keys (`/app/db/host`) to values.
    pub kvs: BTreeMap<String, String>,
}

impl Snapshot {
    pub fn new(revision: i64, kvs: BTreeMap<String, String>) -> Self {
        Snapshot { revision, kvs }
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
