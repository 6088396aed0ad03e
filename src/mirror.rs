//! The key space at one revision. A backend produces a [`Snapshot`]; the daemon keeps
//! one mirror of every range its resources need and applies watch events to it in
//! revision order; every render of one cycle reads the same snapshot, so resources
//! never disagree with each other.
//!
//! Reading from a backend is left to [`crate::backend`]; what one template sees is a
//! [`Store`] cut from a snapshot by [`Snapshot::store`].

use std::collections::BTreeMap;

use crate::keys;
use crate::store::Store;

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

    /// The store one resource sees: the keys its `selectors` select, made relative to
    /// its `prefix` as confd does (`/app/db/host` under prefix `/app` is `/db/host`).
    pub fn store(&self, prefix: &str, selectors: &[String]) -> Store {
        let mut kvs = BTreeMap::new();
        for selector in selectors {
            for (key, value) in self.selected(selector) {
                kvs.insert(keys::relative(prefix, key), value.clone());
            }
        }
        Store::new(self.revision, kvs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(pairs: &[(&str, &str)]) -> Snapshot {
        Snapshot::new(
            7,
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn selected_skips_siblings_that_sort_inside_the_range() {
        let s = snapshot(&[
            ("/app/db", "a"),
            ("/app/db-x", "b"),
            ("/app/db/host", "c"),
            ("/app/dbx", "d"),
        ]);
        let keys: Vec<_> = s.selected("/app/db").map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, vec!["/app/db", "/app/db/host"]);
    }

    #[test]
    fn store_strips_the_prefix() {
        let s = snapshot(&[
            ("/app/db/host", "h"),
            ("/app/web/port", "80"),
            ("/other", "x"),
        ]);
        let store = s.store("/app", &["/app/db".to_string()]);
        assert_eq!(store.revision(), 7);
        assert_eq!(store.get("/db/host"), Some("h"));
        assert_eq!(store.get("/web/port"), None);
    }
}
