//! confd's `ls` and `lsdir` exactly as its store (memkv) answers them, for the Go
//! engine, where output must match confd's byte for byte. The Tera engine uses
//! [`Store::ls`] and [`Store::lsdir`], which fix memkv's answers at the root (`ls "/"`
//! lists only the top-level keys that have no children, and `lsdir "/"` lists
//! nothing); everywhere else the two agree.

use std::collections::BTreeSet;

use crate::kv::go_path;
use crate::store::Store;

/// memkv's `List(filePath)`: the names below `path`, and the base name of a key
/// equal to `path`, sorted and unique.
pub(super) fn list(store: &Store, path: &str) -> Vec<String> {
    let prefix = terms(path);
    let mut names = BTreeSet::new();
    for (key, _) in store.iter() {
        if key == path {
            names.insert(go_path::base(key));
            continue;
        }
        if same_prefix(&prefix, &terms(&go_path::dir(key))) {
            let rest = strip_key(key, path);
            names.insert(rest.split('/').next().unwrap_or(rest).to_string());
        }
    }
    names.into_iter().collect()
}

/// memkv's `ListDir(filePath)`: the names below `path` that have children.
pub(super) fn list_dir(store: &Store, path: &str) -> Vec<String> {
    let prefix = terms(path);
    let mut names = BTreeSet::new();
    for (key, _) in store.iter() {
        if !key.starts_with(path) {
            continue;
        }
        let items = terms(&go_path::dir(key));
        if same_prefix(&prefix, &items) && items.len() > prefix.len() {
            names.insert(items[prefix.len()].clone());
        }
    }
    names.into_iter().collect()
}

/// `strings.Split(path.Clean(p), "/")`.
fn terms(path: &str) -> Vec<String> {
    go_path::clean(path).split('/').map(String::from).collect()
}

fn same_prefix(prefix: &[String], test: &[String]) -> bool {
    test.len() >= prefix.len() && prefix.iter().zip(test).all(|(p, t)| p == t)
}

/// `TrimPrefix(TrimPrefix(key, prefix), "/")`.
fn strip_key<'k>(key: &'k str, prefix: &str) -> &'k str {
    let key = key.strip_prefix(prefix).unwrap_or(key);
    key.strip_prefix('/').unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        // memkv's own test data.
        let kvs = [
            ("/a/b/c", "1"),
            ("/a/d", "22"),
            ("/e", "333"),
            ("/f/g", "4"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Store::new(1, kvs)
    }

    #[test]
    fn like_memkv_including_the_root() {
        let s = store();
        assert_eq!(list(&s, "/a"), vec!["b", "d"]);
        assert_eq!(list(&s, "/a/"), vec!["b", "d"]);
        assert_eq!(list(&s, "/e"), vec!["e"]);
        assert_eq!(list_dir(&s, "/a"), vec!["b"]);
        assert!(list_dir(&s, "/a/d").is_empty());
        // memkv's root: only the top-level keys without children, no directories.
        assert_eq!(list(&s, "/"), vec!["e"]);
        assert!(list_dir(&s, "/").is_empty());
        assert!(list(&s, "").is_empty());
    }
}
