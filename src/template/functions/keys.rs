//! confd's store functions (`getv`, `get`, `gets`, `getvs`, `exists`, `ls`, `lsdir`)
//! over the [`Store`](crate::store::Store) of the render in progress. What a lookup
//! means (prefixes, Go globs, children) is the store's; this module only reads the
//! keyword arguments and shapes the answers as confd does.

use tera::{Error, Kwargs, State, Tera, TeraResult, Value};

use super::{Lookup, kv, record, with_current};
use crate::store::LookupError;

pub(super) fn register(tera: &mut Tera) {
    tera.register_function("getv", getv);
    tera.register_function("get", get);
    tera.register_function("gets", gets);
    tera.register_function("getvs", getvs);
    tera.register_function("exists", exists);
    tera.register_function("ls", ls);
    tera.register_function("lsdir", lsdir);
}

fn getv(kw: Kwargs, _: &State) -> TeraResult<String> {
    let key: &str = kw.must_get("key")?;
    let default: Option<&str> = kw.get("default")?;
    record(|| Lookup::Key(key.to_string()));
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
    record(|| Lookup::Key(key.to_string()));
    with_current(|store| {
        let value = store.getv(key).map_err(|e| lookup_error("get", e))?;
        Ok(kv(key, value))
    })
}

fn gets(kw: Kwargs, _: &State) -> TeraResult<Vec<Value>> {
    let pattern: &str = kw.must_get("pattern")?;
    record(|| Lookup::Pattern(pattern.to_string()));
    with_current(|store| {
        let pairs = store.gets(pattern).map_err(|e| lookup_error("gets", e))?;
        Ok(pairs.into_iter().map(|(k, v)| kv(k, v)).collect())
    })
}

fn getvs(kw: Kwargs, _: &State) -> TeraResult<Vec<String>> {
    let pattern: &str = kw.must_get("pattern")?;
    record(|| Lookup::Pattern(pattern.to_string()));
    with_current(|store| {
        let values = store.getvs(pattern).map_err(|e| lookup_error("getvs", e))?;
        Ok(values.into_iter().map(String::from).collect())
    })
}

fn exists(kw: Kwargs, _: &State) -> TeraResult<bool> {
    let key: &str = kw.must_get("key")?;
    record(|| Lookup::Key(key.to_string()));
    with_current(|store| Ok(store.exists(key)))
}

fn ls(kw: Kwargs, _: &State) -> TeraResult<Vec<String>> {
    let path: &str = kw.must_get("path")?;
    record(|| Lookup::List(path.to_string()));
    with_current(|store| Ok(store.ls(path)))
}

fn lsdir(kw: Kwargs, _: &State) -> TeraResult<Vec<String>> {
    let path: &str = kw.must_get("path")?;
    record(|| Lookup::List(path.to_string()));
    with_current(|store| Ok(store.lsdir(path)))
}

fn lookup_error(function: &str, err: LookupError) -> Error {
    Error::message(format!("{function}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{render, render_err};

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
}
