//! The key space at one revision, kept current. A backend produces a [`Snapshot`]; the daemon keeps
//! one mirror of every range its resources need and applies watch events to it in
//! revision order; every render of one cycle reads the same snapshot, so resources
//! never disagree with each other.
//!
//! Reading from a backend is left to [`crate::backend`]; what one template sees is a
//! [`crate::store::Store`] cut from a snapshot.
//!
//! [`Mirror`] is the daemon's copy of the key space, kept current by the watch;
//! [`Interest`] answers which resources a set of changed keys concerns.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::kv::{Change, Event, Snapshot};

/// The daemon's copy of the key space: one [`Snapshot`] kept current by applying
/// [`Change`]s in revision order, handed out as a cheap `Arc` for render cycles.
///
/// Copy on write, not a persistent map: a change clones the map only when a render
/// still holds the previous snapshot, so at most once per snapshot handed out, never
/// once per event (after the first clone the new map is ours alone and takes events in
/// place). Cloning 100,000 keys costs about 5–12 ms and dropping the copy about 2 ms
/// (measured on the 2-core build machine), and snapshots are handed out only when
/// applies start, which coalescing bounds. A persistent map (`im`, `rpds`) would make
/// every change O(log n) but every read slower, and would change the [`Snapshot`] type
/// that stores and templates read.
#[derive(Debug, Clone, Default)]
pub struct Mirror {
    current: Arc<Snapshot>,
}

impl Mirror {
    pub fn new(snapshot: Snapshot) -> Self {
        Mirror {
            current: Arc::new(snapshot),
        }
    }

    /// The revision of the last change applied.
    pub fn revision(&self) -> i64 {
        self.current.revision
    }

    /// The key space as it is now; later changes do not alter it.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.current)
    }

    /// Applies one change and returns the keys whose value it changed (added,
    /// altered or removed), in key order. Events at or below the current revision were
    /// applied already (a resumed watch may repeat them) and are ignored. A reset
    /// replaces everything, whatever its revision: it is the backend's word on the
    /// whole key space.
    pub fn apply(&mut self, change: Change) -> Vec<String> {
        match change {
            Change::Events { revision, events } => self.apply_events(revision, events),
            Change::Reset(snapshot) => self.reset(snapshot),
            Change::Progress { .. } => Vec::new(),
        }
    }

    fn apply_events(&mut self, revision: i64, events: Vec<Event>) -> Vec<String> {
        if revision <= self.current.revision {
            return Vec::new();
        }
        let mut changed = BTreeSet::new();
        for event in events {
            // Look before writing: `make_mut` clones when a render holds the snapshot,
            // and a put of the value a key already has must not pay for that.
            match event {
                Event::Put { key, value } => {
                    if self.current.kvs.get(&key) != Some(&value) {
                        Arc::make_mut(&mut self.current).insert(key.clone(), value);
                        changed.insert(key);
                    }
                }
                Event::Delete { key } => {
                    if self.current.kvs.contains_key(&key) {
                        Arc::make_mut(&mut self.current).remove(&key);
                        changed.insert(key);
                    }
                }
            }
        }
        if self.current.revision != revision {
            Arc::make_mut(&mut self.current).revision = revision;
        }
        changed.into_iter().collect()
    }

    fn reset(&mut self, snapshot: Snapshot) -> Vec<String> {
        let changed = differing_keys(&self.current.kvs, &snapshot.kvs);
        self.current = Arc::new(snapshot);
        changed
    }
}

/// The keys present in only one of two maps or with different values, in key order:
/// one merge walk over both.
fn differing_keys(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> Vec<String> {
    let mut changed = Vec::new();
    let mut a = old.iter().peekable();
    let mut b = new.iter().peekable();
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => return changed,
            (Some((k, _)), None) => {
                changed.push((*k).clone());
                a.next();
            }
            (None, Some((k, _))) => {
                changed.push((*k).clone());
                b.next();
            }
            (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => {
                    changed.push((*ka).clone());
                    a.next();
                }
                std::cmp::Ordering::Greater => {
                    changed.push((*kb).clone());
                    b.next();
                }
                std::cmp::Ordering::Equal => {
                    if va != vb {
                        changed.push((*ka).clone());
                    }
                    a.next();
                    b.next();
                }
            },
        }
    }
}

/// Which resources a changed key concerns: an index from selector to the resources
/// (by position) that hold it. A key is selected exactly by itself, by each of its
/// ancestors at a `/` and by `/` (see [`crate::kv::keys::selects`]), so a lookup costs one hash
/// probe per path segment, whatever the number of resources.
#[derive(Debug, Clone, Default)]
pub struct Interest {
    by_selector: HashMap<String, Vec<usize>>,
}

impl Interest {
    /// Indexes the selectors of each resource; resource `i` is the `i`th item.
    pub fn new<'a>(resources: impl IntoIterator<Item = &'a [String]>) -> Self {
        let mut by_selector: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, selectors) in resources.into_iter().enumerate() {
            for selector in selectors {
                let holders = by_selector.entry(selector.clone()).or_default();
                if holders.last() != Some(&i) {
                    holders.push(i);
                }
            }
        }
        Interest { by_selector }
    }

    /// The resources that select any of `keys`, in position order.
    pub fn affected<'a>(&self, keys: impl IntoIterator<Item = &'a str>) -> BTreeSet<usize> {
        let mut out = BTreeSet::new();
        for key in keys {
            for selector in selectors_of(key) {
                if let Some(holders) = self.by_selector.get(selector) {
                    out.extend(holders);
                }
            }
        }
        out
    }
}

/// Every selector that selects `key`: the key, its ancestors at each `/`, and `/`.
fn selectors_of(key: &str) -> impl Iterator<Item = &str> {
    let ancestors = key
        .char_indices()
        .filter(|&(i, c)| c == '/' && i > 0)
        .map(move |(i, _)| &key[..i]);
    let root = key.starts_with('/').then_some("/");
    std::iter::once(key).chain(ancestors).chain(root)
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

    fn put(key: &str, value: &str) -> Event {
        Event::Put {
            key: key.to_string(),
            value: value.to_string(),
        }
    }

    fn events(revision: i64, events: Vec<Event>) -> Change {
        Change::Events { revision, events }
    }

    #[test]
    fn mirror_reports_the_keys_a_change_altered() {
        let mut m = Mirror::new(snapshot(&[("/a", "1"), ("/b", "2")]));
        let changed = m.apply(events(
            8,
            vec![
                put("/a", "1"),
                put("/b", "3"),
                put("/c", "4"),
                Event::Delete {
                    key: "/gone".into(),
                },
            ],
        ));
        assert_eq!(changed, vec!["/b", "/c"]);
        assert_eq!(m.revision(), 8);
        let changed = m.apply(events(9, vec![Event::Delete { key: "/a".into() }]));
        assert_eq!(changed, vec!["/a"]);
        assert_eq!(m.snapshot().kvs.get("/a"), None);
    }

    #[test]
    fn mirror_ignores_events_at_or_below_its_revision() {
        let mut m = Mirror::new(snapshot(&[("/a", "1")]));
        assert!(m.apply(events(7, vec![put("/a", "old")])).is_empty());
        assert!(m.apply(events(3, vec![put("/a", "older")])).is_empty());
        assert_eq!(m.snapshot().kvs.get("/a").map(String::as_str), Some("1"));
        assert_eq!(m.revision(), 7);
    }

    #[test]
    fn a_held_snapshot_does_not_see_later_changes() {
        let mut m = Mirror::new(snapshot(&[("/a", "1")]));
        let held = m.snapshot();
        m.apply(events(8, vec![put("/a", "2")]));
        assert_eq!(held.kvs.get("/a").map(String::as_str), Some("1"));
        assert_eq!(held.revision, 7);
        assert_eq!(m.snapshot().kvs.get("/a").map(String::as_str), Some("2"));
    }

    #[test]
    fn a_reset_reports_added_altered_and_removed_keys() {
        let mut m = Mirror::new(snapshot(&[("/a", "1"), ("/b", "2"), ("/c", "3")]));
        let mut next = snapshot(&[("/b", "2"), ("/c", "x"), ("/d", "4")]);
        next.revision = 20;
        assert_eq!(m.apply(Change::Reset(next)), vec!["/a", "/c", "/d"]);
        assert_eq!(m.revision(), 20);
    }

    #[test]
    fn interest_finds_resources_by_any_selector_that_selects_a_key() {
        let r0 = vec!["/app/db".to_string()];
        let r1 = vec!["/app".to_string(), "/app/db".to_string()];
        let r2 = vec!["/other".to_string()];
        let r3 = vec!["/".to_string()];
        let interest = Interest::new([r0.as_slice(), r1.as_slice(), r2.as_slice(), r3.as_slice()]);
        let hit = |key: &str| interest.affected([key]).into_iter().collect::<Vec<_>>();
        assert_eq!(hit("/app/db/host"), vec![0, 1, 3]);
        assert_eq!(hit("/app/db"), vec![0, 1, 3]);
        assert_eq!(hit("/app/db-x"), vec![1, 3]);
        assert_eq!(hit("/other"), vec![2, 3]);
        assert_eq!(hit("/otherwise"), vec![3]);
    }
}
