//! Go's helpers that confd templates lean on, for the Tera engine, under Go's names:
//! `printf` with Go's `fmt` verbs (`%s %d %05d %-20s %.2f %q %x %v`, through
//! [`super::gofmt`], so both engines format alike), `contains`, `len` and `index`.
//! Tera 2 takes keyword arguments only:
//!
//! | call | returns |
//! |---|---|
//! | `printf(format="%s:%d", args=[host, port])`, or `port \| printf(format="%05d")` | string |
//! | `name \| contains(substr="web")` | bool |
//! | `list \| len`, `map \| len`, `string \| len` (bytes, as Go counts) | integer |
//! | `list \| index(i=1)`, `map \| index(key="k")` | the element; out of range or missing: error |

use std::sync::Arc;

use tera::{Error, Kwargs, State, Tera, TeraResult, Value};

use super::gofmt;

pub(super) fn register(tera: &mut Tera) {
    tera.register_function("printf", printf_function);
    tera.register_filter("printf", printf_filter);
    tera.register_filter("contains", contains);
    tera.register_filter("len", len);
    tera.register_filter("index", index);
}

fn printf_function(kw: Kwargs, _: &State) -> TeraResult<String> {
    let format: &str = kw.must_get("format")?;
    let args: Option<Vec<Value>> = kw.get("args")?;
    sprintf(format, &args.unwrap_or_default())
}

fn printf_filter(value: Value, kw: Kwargs, _: &State) -> TeraResult<String> {
    let format: &str = kw.must_get("format")?;
    sprintf(format, &[value])
}

fn sprintf(format: &str, args: &[Value]) -> TeraResult<String> {
    let values: Vec<gotmpl::Value> = args.iter().map(to_go).collect();
    gofmt::sprintf(format, &values).map_err(|e| Error::message(format!("printf: {e}")))
}

/// A Tera value as gotmpl's, for Go's `fmt`: integers stay integers (`%d`), floats
/// floats (`%.2f`), lists and maps keep their shape (`%v` prints `[a b]`, `map[k:v]`).
fn to_go(value: &Value) -> gotmpl::Value {
    if let Some(s) = value.as_str() {
        return gotmpl::Value::String(s.into());
    }
    if let Some(b) = value.as_bool() {
        return gotmpl::Value::Bool(b);
    }
    if value.is_i64() || value.is_u64() || value.is_i128() || value.is_u128() {
        if let Some(n) = value.as_i64() {
            return gotmpl::Value::Int(n);
        }
        if let Some(n) = value.as_u64() {
            return gotmpl::Value::Uint(n);
        }
    }
    if let Some(f) = value.as_f64() {
        return gotmpl::Value::Float(f);
    }
    if let Some(items) = value.as_array() {
        return gotmpl::Value::List(items.iter().map(to_go).collect());
    }
    if let Some(map) = value.as_map() {
        return gotmpl::Value::Map(Arc::new(
            map.iter()
                .map(|(k, v)| (Arc::<str>::from(k.to_string()), to_go(v)))
                .collect(),
        ));
    }
    gotmpl::Value::Nil
}

fn contains(s: &str, kw: Kwargs, _: &State) -> TeraResult<bool> {
    let substr: &str = kw.must_get("substr")?;
    Ok(s.contains(substr))
}

/// Go's `len`: bytes of a string, elements of a list or map.
fn len(value: Value, _: Kwargs, _: &State) -> TeraResult<usize> {
    if let Some(s) = value.as_str() {
        return Ok(s.len());
    }
    if let Some(items) = value.as_array() {
        return Ok(items.len());
    }
    if let Some(map) = value.as_map() {
        return Ok(map.len());
    }
    Err(Error::message(format!("len of {}", value.name())))
}

/// Go's `index`: `list | index(i=1)` or `map | index(key="k")`.
fn index(value: Value, kw: Kwargs, _: &State) -> TeraResult<Value> {
    if let Some(items) = value.as_array() {
        let i: i64 = kw.must_get("i")?;
        return usize::try_from(i)
            .ok()
            .and_then(|i| items.get(i))
            .cloned()
            .ok_or_else(|| {
                Error::message(format!("index out of range: {i} (length {})", items.len()))
            });
    }
    if let Some(map) = value.as_map() {
        let key: &str = kw.must_get("key")?;
        return map
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v.clone())
            .ok_or_else(|| Error::message(format!("index: no key {key:?}")));
    }
    Err(Error::message(format!("cannot index {}", value.name())))
}

#[cfg(test)]
mod tests {
    use super::super::functions::testing_engine;

    fn render(template: &str) -> String {
        let mut context = tera::Context::new();
        context.insert("port", &8080);
        context.insert("ratio", &0.5);
        context.insert("hosts", &vec!["a", "bb"]);
        context.insert("name", &"web-1");
        testing_engine()
            .render_str(template, &context, false)
            .unwrap_or_else(|e| panic!("{template}: {e:?}"))
    }

    #[test]
    fn printf_has_go_verbs() {
        assert_eq!(
            render(
                r#"{{ printf(format="%s:%05d|%-6s|%.2f|%q|%x|%v", args=[name, port, "ab", ratio, "q", 255, hosts]) }}"#
            ),
            r#"web-1:08080|ab    |0.50|"q"|ff|[a bb]"#
        );
        assert_eq!(render(r#"{{ ratio | printf(format="%.2f") }}"#), "0.50");
        assert_eq!(
            render(r#"{{ printf(format="%d", args=["x"]) }}"#),
            "%!d(string=x)"
        );
    }

    #[test]
    fn contains_len_index() {
        assert_eq!(
            render(
                r#"{{ name | contains(substr="web") }} {{ hosts | len }} {{ name | len }} {{ hosts | index(i=1) }}"#
            ),
            "true 2 5 bb"
        );
    }
}
