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
//! set by [`with_store`]. Filters (`json`, `base`, `toUpper`, ...) are in
//! [`super::filters`].

use std::cell::RefCell;
use std::net::{IpAddr, ToSocketAddrs};
use std::time::Duration;

use tera::{Error, Kwargs, State, Tera, TeraResult, Value};

use super::dns;
use crate::store::{LookupError, Store};

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
    tera.register_function("getv", getv);
    tera.register_function("get", get);
    tera.register_function("gets", gets);
    tera.register_function("getvs", getvs);
    tera.register_function("exists", exists);
    tera.register_function("ls", ls);
    tera.register_function("lsdir", lsdir);
    tera.register_function("getenv", getenv);
    tera.register_function("fileExists", file_exists);
    tera.register_function("lookupIP", |kw: Kwargs, _: &State| lookup_ip(kw, |_| true));
    tera.register_function("lookupIPV4", |kw: Kwargs, _: &State| {
        lookup_ip(kw, |ip| ip.is_ipv4())
    });
    tera.register_function("lookupIPV6", |kw: Kwargs, _: &State| {
        lookup_ip(kw, |ip| ip.is_ipv6())
    });
    tera.register_function("lookupSRV", lookup_srv);
    tera.register_function("seq", seq);
    tera.register_function("warn", warn);
    tera.register_function("datetime", datetime);
    tera.register_function("add", |kw: Kwargs, _: &State| {
        arithmetic(kw, "add", i64::checked_add)
    });
    tera.register_function("sub", |kw: Kwargs, _: &State| {
        arithmetic(kw, "sub", i64::checked_sub)
    });
    tera.register_function("mul", |kw: Kwargs, _: &State| {
        arithmetic(kw, "mul", i64::checked_mul)
    });
    tera.register_function("div", |kw: Kwargs, _: &State| {
        arithmetic(kw, "div", i64::checked_div)
    });
    tera.register_function("mod", |kw: Kwargs, _: &State| {
        arithmetic(kw, "mod", i64::checked_rem)
    });
}

/// A `{key, value}` map, the shape of confd's `KVPair` (`.Key`/`.Value` there).
pub(crate) fn kv(key: &str, value: &str) -> Value {
    let mut map = tera::Map::new();
    map.insert("key".into(), Value::from(key));
    map.insert("value".into(), Value::from(value));
    Value::from(map)
}

fn getv(kw: Kwargs, _: &State) -> TeraResult<String> {
    let key: &str = kw.must_get("key")?;
    let default: Option<&str> = kw.get("default")?;
    with_current(|store| match (store.get(key), default) {
        (Some(value), _) => Ok(value.to_string()),
        (None, Some(default)) => Ok(default.to_string()),
        (None, None) => Err(lookup_error(
            "getv",
            LookupError::KeyNotFound(key.to_string()),
        )),
    })
}

fn get(kw: Kwargs, _: &State) -> TeraResult<Value> {
    let key: &str = kw.must_get("key")?;
    with_current(|store| {
        let value = store.getv(key).map_err(|e| lookup_error("get", e))?;
        Ok(kv(key, value))
    })
}

fn gets(kw: Kwargs, _: &State) -> TeraResult<Vec<Value>> {
    let pattern: &str = kw.must_get("pattern")?;
    with_current(|store| {
        let pairs = store.gets(pattern).map_err(|e| lookup_error("gets", e))?;
        Ok(pairs.into_iter().map(|(k, v)| kv(k, v)).collect())
    })
}

fn getvs(kw: Kwargs, _: &State) -> TeraResult<Vec<String>> {
    let pattern: &str = kw.must_get("pattern")?;
    with_current(|store| {
        let values = store.getvs(pattern).map_err(|e| lookup_error("getvs", e))?;
        Ok(values.into_iter().map(String::from).collect())
    })
}

fn exists(kw: Kwargs, _: &State) -> TeraResult<bool> {
    let key: &str = kw.must_get("key")?;
    with_current(|store| Ok(store.exists(key)))
}

fn ls(kw: Kwargs, _: &State) -> TeraResult<Vec<String>> {
    let path: &str = kw.must_get("path")?;
    with_current(|store| Ok(store.ls(path)))
}

fn lsdir(kw: Kwargs, _: &State) -> TeraResult<Vec<String>> {
    let path: &str = kw.must_get("path")?;
    with_current(|store| Ok(store.lsdir(path)))
}

fn lookup_error(function: &str, err: LookupError) -> Error {
    Error::message(format!("{function}: {err}"))
}

fn getenv(kw: Kwargs, _: &State) -> TeraResult<String> {
    let name: &str = kw.must_get("name")?;
    let default: Option<&str> = kw.get("default")?;
    Ok(env_or_default(std::env::var(name).ok(), default))
}

/// confd's rule: an unset or empty variable gives the default, or `""`.
fn env_or_default(value: Option<String>, default: Option<&str>) -> String {
    match value {
        Some(value) if !value.is_empty() => value,
        _ => default.unwrap_or_default().to_string(),
    }
}

/// confd's `!os.IsNotExist(os.Stat(path))`: a path we may not stat still "exists".
fn file_exists(kw: Kwargs, _: &State) -> TeraResult<bool> {
    let path: &str = kw.must_get("path")?;
    Ok(match std::fs::metadata(path) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    })
}

/// Addresses of `name` as sorted strings; like confd, a failed lookup is an empty
/// list rather than an error, so a template can render while DNS is down.
fn lookup_ip(kw: Kwargs, keep: fn(&IpAddr) -> bool) -> TeraResult<Vec<String>> {
    let name: &str = kw.must_get("name")?;
    Ok(resolve(name, keep))
}

fn resolve(name: &str, keep: fn(&IpAddr) -> bool) -> Vec<String> {
    let Ok(addrs) = (name, 0).to_socket_addrs() else {
        return Vec::new();
    };
    let mut ips: Vec<String> = addrs
        .map(|a| a.ip())
        .filter(keep)
        .map(|ip| ip.to_string())
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

/// How long one SRV query waits for the nameserver.
const SRV_TIMEOUT: Duration = Duration::from_secs(2);

fn lookup_srv(kw: Kwargs, _: &State) -> TeraResult<Vec<Value>> {
    let service: &str = kw.get("service")?.unwrap_or_default();
    let proto: &str = kw.get("proto")?.unwrap_or_default();
    let name: &str = kw.must_get("name")?;
    // confd renders an empty list when the lookup fails; the cause is for debugging.
    let records = dns::lookup_srv(service, proto, name, SRV_TIMEOUT).unwrap_or_else(|err| {
        tracing::debug!(service, proto, name, cause = %err, "lookupSRV failed");
        Vec::new()
    });
    Ok(records.iter().map(srv_value).collect())
}

fn srv_value(record: &dns::Srv) -> Value {
    let mut map = tera::Map::new();
    map.insert("target".into(), Value::from(record.target.as_str()));
    map.insert("port".into(), Value::from(record.port));
    map.insert("priority".into(), Value::from(record.priority));
    map.insert("weight".into(), Value::from(record.weight));
    Value::from(map)
}

/// More elements than any config needs; `seq` refuses larger ranges instead of
/// exhausting memory on a typo.
const MAX_SEQ_LEN: i64 = 1_000_000;

fn seq(kw: Kwargs, _: &State) -> TeraResult<Vec<i64>> {
    let start: i64 = kw.must_get("start")?;
    let end: i64 = kw.must_get("end")?;
    if start > end {
        return Ok(Vec::new());
    }
    if end.saturating_sub(start) >= MAX_SEQ_LEN {
        return Err(Error::message(format!(
            "seq: {start}..{end} has more than {MAX_SEQ_LEN} elements"
        )));
    }
    Ok((start..=end).collect())
}

fn datetime(kw: Kwargs, _: &State) -> TeraResult<String> {
    let format: Option<&str> = kw.get("format")?;
    format_time(chrono::Local::now(), format)
}

/// `now` in a strftime `format`, or RFC 3339 without one. An invalid format is an
/// error here, because chrono's `to_string` would panic on it.
fn format_time(now: chrono::DateTime<chrono::Local>, format: Option<&str>) -> TeraResult<String> {
    use chrono::format::{Item, StrftimeItems};
    let Some(format) = format else {
        return Ok(now.to_rfc3339());
    };
    let items: Vec<Item<'_>> = StrftimeItems::new(format).collect();
    if items.iter().any(|item| matches!(item, Item::Error)) {
        return Err(Error::message(format!(
            "datetime: invalid format {format:?}"
        )));
    }
    Ok(now.format_with_items(items.into_iter()).to_string())
}

/// confd's integer `add`/`sub`/`mul`/`div`/`mod`. `checked_*` turns division by zero
/// and overflow into an error where Go panicked (division) or wrapped (the rest).
fn arithmetic(kw: Kwargs, name: &str, op: fn(i64, i64) -> Option<i64>) -> TeraResult<i64> {
    let a: i64 = kw.must_get("a")?;
    let b: i64 = kw.must_get("b")?;
    op(a, b).ok_or_else(|| {
        let why = if b == 0 && matches!(name, "div" | "mod") {
            "division by zero"
        } else {
            "integer overflow"
        };
        Error::message(format!("{name}: {why} ({a}, {b})"))
    })
}

/// `warn(message)`: logs `message` as a warning of the render under way and renders
/// as nothing, so a template that skips a bad value (a route that is not JSON) says so
/// in the log instead of dropping it silently.
fn warn(kwargs: Kwargs, _: &State) -> TeraResult<String> {
    let message: &str = kwargs.must_get("message")?;
    tracing::warn!(message, "template warning");
    Ok(String::new())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn store(pairs: &[(&str, &str)]) -> Store {
        let kvs: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Store::new(1, kvs)
    }

    fn engine() -> Tera {
        let mut tera = Tera::new();
        tera.autoescape_on(Vec::<&str>::new());
        register(&mut tera);
        super::super::filters::register(&mut tera);
        tera
    }

    fn render_with(store: &Store, template: &str) -> TeraResult<String> {
        with_store(store, || {
            engine().render_str(template, &tera::Context::new(), false)
        })
    }

    fn render(template: &str) -> String {
        let s = store(&[
            ("/a/b/c", "1"),
            ("/a/d", "22"),
            ("/e", "333"),
            ("/upstream/app1", "10.0.0.1:80"),
            ("/upstream/app2", "10.0.0.2:80"),
            ("/empty", ""),
        ]);
        render_with(&s, template).unwrap_or_else(|e| panic!("{template}: {e}"))
    }

    fn render_err(template: &str) -> String {
        render_with(&store(&[("/a", "1")]), template)
            .expect_err(template)
            .to_string()
    }

    #[test]
    fn getv_with_and_without_default() {
        assert_eq!(render(r#"{{ getv(key="/e") }}"#), "333");
        assert_eq!(render(r#"{{ getv(key="/nope", default="x") }}"#), "x");
        assert_eq!(render(r#"[{{ getv(key="/nope", default="") }}]"#), "[]");
        // An empty value is a value: the default is only for missing keys.
        assert_eq!(render(r#"[{{ getv(key="/empty", default="x") }}]"#), "[]");
        assert!(
            render_err(r#"{{ getv(key="/db/host") }}"#).contains("getv: key not found: /db/host")
        );
    }

    #[test]
    fn get_returns_key_and_value() {
        assert_eq!(
            render(r#"{% set kv = get(key="/e") %}{{ kv.key }}={{ kv.value }}"#),
            "/e=333"
        );
        let err = render_err(r#"{% set kv = get(key="/x") %}{{ kv.value }}"#);
        assert!(err.contains("get: key not found: /x"), "{err}");
    }

    #[test]
    fn gets_iterates_like_confd_upstreams() {
        // confd template_test.go: {{range gets "/upstream/*"}}...{{end}}
        let out = render(
            r#"{% for kv in gets(pattern="/upstream/*") %}{{ kv.key | base }} {{ kv.value }};{% endfor %}"#,
        );
        assert_eq!(out, "app1 10.0.0.1:80;app2 10.0.0.2:80;");
        assert!(render_err(r#"{{ gets(pattern="/a/[") }}"#).contains("gets: bad pattern"));
    }

    #[test]
    fn getvs_exists_ls_lsdir() {
        assert_eq!(
            render(r#"{{ getvs(pattern="/a/*") | join(sep=",") }}"#),
            "22"
        );
        assert_eq!(
            render(r#"{{ exists(key="/a") }} {{ exists(key="/e") }}"#),
            "false true"
        );
        assert_eq!(render(r#"{{ ls(path="/a") | join(sep=",") }}"#), "b,d");
        assert_eq!(render(r#"{{ lsdir(path="/a") | join(sep=",") }}"#), "b");
        assert_eq!(
            render(r#"{{ ls(path="/") | join(sep=",") }}"#),
            "a,e,empty,upstream"
        );
        assert_eq!(
            render(r#"{{ lsdir(path="/") | join(sep=",") }}"#),
            "a,upstream"
        );
    }

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

    #[test]
    fn getenv_falls_back_on_unset_or_empty() {
        assert_eq!(env_or_default(Some("v".into()), Some("d")), "v");
        assert_eq!(env_or_default(Some(String::new()), Some("d")), "d");
        assert_eq!(env_or_default(None, Some("d")), "d");
        assert_eq!(env_or_default(None, None), "");
        // Through a template, without set_var (unsound while other test threads run).
        let path = std::env::var("PATH").unwrap();
        assert_eq!(render(r#"{{ getenv(name="PATH", default="d") }}"#), path);
        assert_eq!(
            render(r#"{{ getenv(name="CONFLUX_TEST_UNSET_VARIABLE", default="d") }}"#),
            "d"
        );
        assert_eq!(
            render(r#"[{{ getenv(name="CONFLUX_TEST_UNSET_VARIABLE") }}]"#),
            "[]"
        );
    }

    #[test]
    fn file_exists_checks_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "x").unwrap();
        let t = format!(
            r#"{{{{ fileExists(path="{}") }}}} {{{{ fileExists(path="{}/nope") }}}}"#,
            path.display(),
            dir.path().display()
        );
        assert_eq!(render(&t), "true false");
    }

    #[test]
    fn lookup_ip_of_localhost() {
        assert!(
            render(r#"{{ lookupIP(name="localhost") | join(sep=",") }}"#).contains("127.0.0.1")
        );
        assert_eq!(
            render(r#"{{ lookupIPV4(name="127.0.0.1") | join(sep=",") }}"#),
            "127.0.0.1"
        );
        assert_eq!(
            render(r#"{{ lookupIPV6(name="127.0.0.1") | length }}"#),
            "0"
        );
        assert_eq!(
            render(r#"{{ lookupIPV6(name="::1") | join(sep=",") }}"#),
            "::1"
        );
    }

    #[test]
    fn seq_is_inclusive_and_empty_when_reversed() {
        assert_eq!(
            render(r#"{{ seq(start=1, end=3) | join(sep=",") }}"#),
            "1,2,3"
        );
        assert_eq!(render(r#"{{ seq(start=5, end=3) | length }}"#), "0");
        assert_eq!(
            render(r#"{{ seq(start=-1, end=-1) | join(sep=",") }}"#),
            "-1"
        );
        assert!(render_err(r#"{{ seq(start=0, end=100000000) }}"#).contains("seq:"));
    }

    #[test]
    fn arithmetic_matches_confd() {
        assert_eq!(
            render(r#"{{ add(a=1, b=2) }} {{ sub(a=1, b=2) }} {{ mul(a=3, b=4) }}"#),
            "3 -1 12"
        );
        assert_eq!(
            render(r#"{{ div(a=7, b=2) }} {{ mod(a=7, b=2) }} {{ div(a=-7, b=2) }}"#),
            "3 1 -3"
        );
        assert!(render_err(r#"{{ div(a=1, b=0) }}"#).contains("div: division by zero"));
        assert!(render_err(r#"{{ mod(a=1, b=0) }}"#).contains("mod: division by zero"));
        assert!(
            render_err(r#"{{ add(a=9223372036854775807, b=1) }}"#)
                .contains("add: integer overflow")
        );
    }

    #[test]
    fn datetime_formats_now() {
        use chrono::TimeZone;
        let t = chrono::Local
            .with_ymd_and_hms(2024, 2, 29, 13, 4, 5)
            .unwrap();
        assert_eq!(
            format_time(t, Some("%Y-%m-%d %H:%M:%S")).unwrap(),
            "2024-02-29 13:04:05"
        );
        assert!(
            format_time(t, None)
                .unwrap()
                .starts_with("2024-02-29T13:04:05")
        );
        assert!(format_time(t, Some("%Q")).is_err());
        let year = render(r#"{{ datetime(format="%Y") }}"#);
        assert_eq!(year.len(), 4, "{year}");
        assert!(chrono::DateTime::parse_from_rfc3339(&render("{{ datetime() }}")).is_ok());
    }
}
