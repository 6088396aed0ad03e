//! confd's template functions as Tera 2 functions. Tera 2 takes keyword arguments
//! only, so every argument is named:
//!
//! | function | arguments | returns | notes |
//! |---|---|---|---|
//! | `getv` | `key`, optional `default` | string | missing key: `default` if given (even `""`), else an error naming the key |
//! | `get` | `key` | map `{key, value}` | missing key: error |
//! | `gets` | `pattern` | list of `{key, value}`, sorted by key | Go `path.Match` glob; `*` never crosses `/`; bad pattern: error |
//! | `getvs` | `pattern` | list of strings, sorted by value | |
//! | `exists` | `key` | bool | exact key only |
//! | `ls` | `path` | sorted unique child names | `ls(path="/")` lists every top-level name |
//! | `lsdir` | `path` | sorted unique children that have children | `lsdir(path="/")` works |
//! | `getenv` | `name`, optional `default` | string | unset or empty: `default`, else `""` |
//! | `fileExists` | `path` | bool | true unless the path does not exist |
//! | `lookupIP` | `name` | sorted list of address strings | resolution error: empty list |
//! | `lookupIPV4`, `lookupIPV6` | `name` | same, one family | |
//! | `lookupSRV` | `service`, `proto`, `name` | list of `{target, port, priority, weight}` | `_service._proto.name`; error: empty list |
//! | `seq` | `start`, `end` | list of integers, inclusive | `start > end`: empty |
//! | `datetime` | optional `format` | string, local time now | strftime format (`%Y-%m-%d`); default RFC 3339 |
//! | `add`, `sub`, `mul`, `div`, `mod` | `a`, `b` | integer | division or modulo by 0, or overflow: error |
//! | `warn` | `message` | nothing | logs `message` as a warning (not in confd: for templates that skip bad values) |
//!
//! The store functions read the [`Store`] of the render in progress on this thread,
//! set by `with_store`; they are in `keys`. The functions that look outside the store
//! (environment, files, DNS, the clock, the log) are in `system`, and `seq` and the
//! integer arithmetic in `numbers`. Filters (`json`, `base`, `toUpper`, ...) are in
//! [`super::filters`].

mod keys;
mod numbers;
pub(super) mod system;
#[cfg(test)]
mod testing;
#[cfg(test)]
pub(crate) use testing::engine as testing_engine;

use std::cell::RefCell;

use tera::{Error, Tera, TeraResult, Value};

use crate::store::Store;

thread_local! {
    /// The store of the render running on this thread.
    ///
    /// Tera functions are registered once per `Tera` and must be `Send + Sync`, and
    /// renders of different resources run on several threads at once. A shared
    /// `Arc<RwLock<Store>>` would make concurrent renders read each other's store (or
    /// serialize them), and a `Tera` per render would re-parse every template. A Tera
    /// render is synchronous and calls functions on the caller's thread, so a
    /// thread-local set for exactly the duration of the render gives each render its
    /// own store with no locking. `Store` clones share their map, so setting it is O(1).
    static CURRENT: RefCell<Option<Store>> = const { RefCell::new(None) };
}

/// Puts the previous store back when a render ends, including by error or panic.
struct Restore(Option<Store>);

impl Drop for Restore {
    fn drop(&mut self) {
        let previous = self.0.take();
        CURRENT.with(|current| *current.borrow_mut() = previous);
    }
}

/// Runs `render` with `store` behind the store functions on this thread.
pub(crate) fn with_store<R>(store: &Store, render: impl FnOnce() -> R) -> R {
    let previous = CURRENT.with(|current| current.replace(Some(store.clone())));
    let _restore = Restore(previous);
    render()
}

/// Calls `lookup` with the store of the render in progress on this thread, if any:
/// the Go engine's store functions read it too.
pub(crate) fn with_current_store<R>(lookup: impl FnOnce(&Store) -> R) -> Option<R> {
    CURRENT.with(|current| current.borrow().as_ref().map(lookup))
}

/// A key lookup a render made, recorded for `conflux lint` (which keys a template
/// reads, to compare with its resource's `keys`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// `getv`, `get`, `exists`: one key.
    Key(String),
    /// `gets`, `getvs`: a glob.
    Pattern(String),
    /// `ls`, `lsdir`: a directory's children.
    List(String),
}

impl Lookup {
    /// The key or directory the lookup needs watched: the key; a glob's directory up
    /// to its first wildcard; the listed directory.
    pub fn directory(&self) -> String {
        match self {
            Lookup::Key(key) | Lookup::List(key) => key.clone(),
            Lookup::Pattern(pattern) => match pattern.find(['*', '?', '[', '\\']) {
                None => pattern.clone(),
                Some(i) => match pattern[..i].rfind('/') {
                    Some(j) if j > 0 => pattern[..j].to_string(),
                    _ => "/".to_string(),
                },
            },
        }
    }
}

impl std::fmt::Display for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lookup::Key(key) => write!(f, "key {key}"),
            Lookup::Pattern(pattern) => write!(f, "pattern {pattern}"),
            Lookup::List(path) => write!(f, "listing of {path}"),
        }
    }
}

thread_local! {
    /// The lookups of the renders running inside [`recording`] on this thread.
    static RECORDED: RefCell<Option<Vec<Lookup>>> = const { RefCell::new(None) };
}

/// Runs `f`, returning what it returns and every key lookup the renders in it made on
/// this thread (both engines record).
pub fn recording<R>(f: impl FnOnce() -> R) -> (R, Vec<Lookup>) {
    let previous = RECORDED.with(|r| r.replace(Some(Vec::new())));
    let result = f();
    let lookups = RECORDED.with(|r| r.replace(previous)).unwrap_or_default();
    (result, lookups)
}

/// Notes a lookup when a [`recording`] is under way (otherwise a no-op).
pub(crate) fn record(lookup: impl FnOnce() -> Lookup) {
    RECORDED.with(|r| {
        if let Some(lookups) = r.borrow_mut().as_mut() {
            lookups.push(lookup());
        }
    });
}

/// Calls `lookup` with the current render's store.
fn with_current<R>(lookup: impl FnOnce(&Store) -> TeraResult<R>) -> TeraResult<R> {
    CURRENT.with(|current| match &*current.borrow() {
        Some(store) => lookup(store),
        None => Err(Error::message(
            "store functions are only available while rendering a resource",
        )),
    })
}

/// Registers every function of the table above on `tera`.
pub(crate) fn register(tera: &mut Tera) {
    keys::register(tera);
    system::register(tera);
    numbers::register(tera);
}

/// A `{key, value}` map, the shape of confd's `KVPair` (`.Key`/`.Value` there).
///
/// Through Tera's serializer, which builds the map once and wraps it: `Value::from` a
/// map built here copied it into a second map (re-hashing both keys), a third of the
/// instructions of a `gets` over 100,000 keys (callgrind, benches/render.rs).
pub(crate) fn kv(key: &str, value: &str) -> Value {
    #[derive(serde::Serialize)]
    struct Kv<'a> {
        key: &'a str,
        value: &'a str,
    }
    Value::try_from_serializable(&Kv { key, value }).expect("two strings always serialize")
}

#[cfg(test)]
mod tests {
    use super::testing::{engine, render_with, store};
    use super::*;

    #[test]
    fn store_functions_outside_a_render_are_an_error() {
        let err = engine()
            .render_str(r#"{{ getv(key="/a") }}"#, &tera::Context::new(), false)
            .unwrap_err();
        assert!(err.to_string().contains("only available while rendering"));
    }

    #[test]
    fn the_previous_store_comes_back_after_a_render() {
        let outer = store(&[("/k", "outer")]);
        let inner = store(&[("/k", "inner")]);
        let out = with_store(&outer, || {
            let nested = with_store(&inner, || render_with(&inner, r#"{{ getv(key="/k") }}"#));
            let failed = with_store(&inner, || render_with(&inner, r#"{{ getv(key="/x") }}"#));
            assert!(failed.is_err());
            (
                nested.unwrap(),
                engine()
                    .render_str(r#"{{ getv(key="/k") }}"#, &tera::Context::new(), false)
                    .unwrap(),
            )
        });
        assert_eq!(out, ("inner".to_string(), "outer".to_string()));
        CURRENT.with(|c| assert!(c.borrow().is_none()));
    }
}
