//! Key paths as confd treats them: joining a prefix and a key, the rule that a key
//! selects itself and everything below it (`/app/db` selects `/app/db/host`, never
//! `/app/dbx`), and merging the selectors of many resources into the fewest ranges a
//! backend has to read or watch.
//!
//! Parsing templates or talking to a backend is left to others; this is pure logic.

/// Joins key paths the way Go's `path.Join("/", a, b)` does: one leading `/`, no
/// trailing `/`, no empty segments. `join("/app/", "/db/")` is `/app/db`, and
/// `join("", "")` is `/`.
pub fn join(prefix: &str, key: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + key.len() + 1);
    for segment in prefix.split('/').chain(key.split('/')) {
        if segment.is_empty() || segment == "." {
            continue;
        }
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Whether `key` is what Go's path cleaning leaves unchanged below `/`: a leading `/`,
/// no empty or `.` segment (so no `//` and no trailing `/`). `/` itself is clean. The
/// keys a template sees are cleaned (confd's `path.Join`), so an unclean key cannot be
/// shown under its own spelling.
pub fn is_clean(key: &str) -> bool {
    key == "/"
        || key
            .strip_prefix('/')
            .is_some_and(|rest| rest.split('/').all(|s| !s.is_empty() && s != "."))
}

/// Whether `selector` selects `key`: the key itself or anything below it.
/// The root selector `/` selects every key.
pub fn selects(selector: &str, key: &str) -> bool {
    if selector == "/" {
        return key.starts_with('/');
    }
    match key.strip_prefix(selector) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The key a template sees for an absolute `key` under `prefix`: confd's
/// `path.Join("/", strings.TrimPrefix(key, prefix))`.
pub fn relative(prefix: &str, key: &str) -> String {
    if prefix == "/" {
        return join("", key);
    }
    join("", key.strip_prefix(prefix).unwrap_or(key))
}

/// The selectors of many resources reduced to the fewest that select the same keys:
/// sorted, and without any selector that another one already covers.
pub fn merge(selectors: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut all: Vec<String> = selectors.into_iter().collect();
    all.sort();
    all.dedup();
    let mut merged: Vec<String> = Vec::with_capacity(all.len());
    // After sorting, a covering selector comes before everything it covers, except
    // that siblings such as `/a-b` sort between `/a` and `/a/x`: compare against every
    // kept selector that is a string prefix, not only the last one.
    for s in all {
        if !merged.iter().rev().any(|m| selects(m, &s)) {
            merged.push(s);
        }
    }
    merged
}

/// Selectors as a set that answers [`selects`] in time proportional to the key's depth,
/// not to the number of selectors: for filtering a read of thousands of keys against
/// thousands of resources.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    selectors: std::collections::HashSet<String>,
    everything: bool,
}

impl Selection {
    pub fn new(selectors: &[String]) -> Self {
        Selection {
            everything: selectors.iter().any(|s| s == "/"),
            selectors: selectors.iter().cloned().collect(),
        }
    }

    /// Whether any selector selects `key`: the key itself or one of its ancestors is
    /// a selector.
    pub fn selects(&self, key: &str) -> bool {
        if self.everything {
            return key.starts_with('/');
        }
        let mut path = key;
        loop {
            if self.selectors.contains(path) {
                return true;
            }
            match path.rfind('/') {
                Some(i) if i > 0 => path = &path[..i],
                _ => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_normalizes_slashes() {
        assert_eq!(join("/app/", "/db/"), "/app/db");
        assert_eq!(join("app", "db"), "/app/db");
        assert_eq!(join("", ""), "/");
        assert_eq!(join("/", "/"), "/");
        assert_eq!(join("//a//b", ""), "/a/b");
    }

    #[test]
    fn a_key_selects_itself_and_below_but_not_siblings() {
        assert!(selects("/app/db", "/app/db"));
        assert!(selects("/app/db", "/app/db/host"));
        assert!(!selects("/app/db", "/app/dbx"));
        assert!(!selects("/app/db", "/app/db-x"));
        assert!(selects("/", "/anything/at/all"));
    }

    #[test]
    fn relative_strips_the_prefix() {
        assert_eq!(relative("/app", "/app/db/host"), "/db/host");
        assert_eq!(relative("/", "/db/host"), "/db/host");
        assert_eq!(relative("/app", "/app"), "/");
    }

    #[test]
    fn selection_agrees_with_selects() {
        let selectors: Vec<String> = ["/a", "/a-b", "/c/d"].map(String::from).to_vec();
        let selection = Selection::new(&selectors);
        for key in [
            "/a", "/a/x/y", "/a-b", "/a-b/z", "/ab", "/c", "/c/d/e", "/c/dd", "/", "x",
        ] {
            let slow = selectors.iter().any(|s| selects(s, key));
            assert_eq!(selection.selects(key), slow, "{key}");
        }
        assert!(Selection::new(&["/".to_string()]).selects("/any/key"));
    }

    #[test]
    fn merge_drops_covered_selectors() {
        let m = merge(
            ["/a/x", "/a", "/a-b", "/b", "/a/y/z", "/b"]
                .into_iter()
                .map(String::from),
        );
        assert_eq!(m, vec!["/a", "/a-b", "/b"]);
        assert_eq!(merge(["/x".to_string(), "/".to_string()]), vec!["/"]);
    }
}

/// Properties over any input: merging keeps exactly the keys the selectors selected,
/// `Selection` agrees with `selects`, and joining is idempotent.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof!["[a-c]{1,2}", Just("a-b".to_string()), Just("".to_string())]
    }

    fn path() -> impl Strategy<Value = String> {
        proptest::collection::vec(segment(), 0..4).prop_map(|s| format!("/{}", s.join("/")))
    }

    proptest! {
        #[test]
        fn merged_selectors_select_the_same_keys(
            selectors in proptest::collection::vec(path().prop_map(|p| join("", &p)), 0..6),
            keys in proptest::collection::vec(path().prop_map(|p| join("", &p)), 0..12),
        ) {
            let merged = merge(selectors.clone());
            let selection = Selection::new(&selectors);
            for key in &keys {
                let before = selectors.iter().any(|s| selects(s, key));
                prop_assert_eq!(merged.iter().any(|s| selects(s, key)), before);
                prop_assert_eq!(selection.selects(key), before);
            }
        }

        #[test]
        fn join_is_normal_and_idempotent(a in "[a-z/.]{0,12}", b in "[a-z/.]{0,12}") {
            let joined = join(&a, &b);
            prop_assert!(joined.starts_with('/'));
            prop_assert!(!joined.contains("//"));
            prop_assert_eq!(join("", &joined), joined.clone());
        }
    }
}
