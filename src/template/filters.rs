//! confd's one-argument helpers as Tera 2 filters: `{{ "/a/b" | base }}` where confd
//! wrote `{{base "/a/b"}}`. Extra arguments are keywords.
//!
//! | filter | input | arguments | returns | notes |
//! |---|---|---|---|---|
//! | `json` | string | `default` | map | invalid JSON or not an object: `default` when given, else an error |
//! | `jsonArray` | string | `default` | list | invalid JSON or not an array: `default` when given, else an error |
//! | `base`, `dir` | string | | string | Go `path.Base` / `path.Dir` |
//! | `toUpper`, `toLower` | string | | string | |
//! | `base64Encode`, `base64Decode` | string | | string | standard alphabet, padded; bad input or non-UTF-8 result: error |
//! | `parseBool` | string | | bool | `1 t T TRUE true True 0 f F FALSE false False`, else error |
//! | `atoi` | string | | integer | decimal with optional sign, else error |
//! | `trimSuffix` | string | `suffix` | string | |
//! | `sortByLength` | list of strings | | list | shortest first, stable |
//! | `sortKVByLength` | list of `{key, value}` | | list | by key length, stable |
//!
//! Tera's own `split`, `join`, `replace`, `reverse`, `upper`, `lower`, `trim` and the
//! `containing` test cover confd's other string helpers.

use base64::Engine;
use tera::{Error, Kwargs, State, Tera, TeraResult, Value};

use crate::kv::go_path;

/// Registers every filter of the table above on `tera`.
pub(crate) fn register(tera: &mut Tera) {
    tera.register_filter("json", json);
    tera.register_filter("jsonArray", json_array);
    tera.register_filter("base", |s: &str, _: Kwargs, _: &State| go_path::base(s));
    tera.register_filter("dir", |s: &str, _: Kwargs, _: &State| go_path::dir(s));
    tera.register_filter("toUpper", |s: &str, _: Kwargs, _: &State| s.to_uppercase());
    tera.register_filter("toLower", |s: &str, _: Kwargs, _: &State| s.to_lowercase());
    tera.register_filter("base64Encode", |s: &str, _: Kwargs, _: &State| {
        base64::engine::general_purpose::STANDARD.encode(s)
    });
    tera.register_filter("base64Decode", base64_decode);
    tera.register_filter("parseBool", |s: &str, _: Kwargs, _: &State| parse_bool(s));
    tera.register_filter("atoi", atoi);
    tera.register_filter("trimSuffix", trim_suffix);
    tera.register_filter("sortByLength", sort_by_length);
    tera.register_filter("sortKVByLength", sort_kv_by_length);
}

fn parse_json(filter: &str, s: &str) -> TeraResult<serde_json::Value> {
    serde_json::from_str(s).map_err(|e| Error::message(format!("{filter}: invalid JSON: {e}")))
}

fn json(s: &str, kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    or_default(kwargs, || match parse_json("json", s)? {
        object @ serde_json::Value::Object(_) => Ok(Value::from_serializable(&object)),
        other => Err(Error::message(format!(
            "json: expected a JSON object, got {}",
            json_kind(&other)
        ))),
    })
}

fn json_array(s: &str, kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    or_default(kwargs, || match parse_json("jsonArray", s)? {
        array @ serde_json::Value::Array(_) => Ok(Value::from_serializable(&array)),
        other => Err(Error::message(format!(
            "jsonArray: expected a JSON array, got {}",
            json_kind(&other)
        ))),
    })
}

/// The parse, or the `default` keyword when the parse fails and one was given: lets a
/// template skip one bad value (a route written by hand) instead of failing the
/// whole render.
fn or_default(kwargs: Kwargs, parse: impl FnOnce() -> TeraResult<Value>) -> TeraResult<Value> {
    let default = kwargs.get::<Value>("default")?;
    match (parse(), default) {
        (Ok(v), _) => Ok(v),
        (Err(_), Some(d)) => Ok(d),
        (Err(e), None) => Err(e),
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn base64_decode(s: &str, _: Kwargs, _: &State) -> TeraResult<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| Error::message(format!("base64Decode: {e}")))?;
    String::from_utf8(bytes)
        .map_err(|_| Error::message("base64Decode: the decoded bytes are not UTF-8"))
}

/// Go's `strconv.ParseBool`.
fn parse_bool(s: &str) -> TeraResult<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        // Never the value itself: values are often secrets, and the error's location
        // in the template says which key it came from.
        _ => Err(Error::message(
            "parseBool: invalid syntax: expected 1, t, T, TRUE, true, True, 0, f, F, FALSE, false or False (the value is not shown)",
        )),
    }
}

/// Go's `strconv.Atoi`: optional sign, decimal digits, nothing else.
fn atoi(s: &str, _: Kwargs, _: &State) -> TeraResult<i64> {
    s.parse::<i64>().map_err(|e| {
        Error::message(format!(
            "atoi: expected a decimal integer: {e} (the value is not shown)"
        ))
    })
}

fn trim_suffix(s: &str, kw: Kwargs, _: &State) -> TeraResult<String> {
    let suffix: &str = kw.must_get("suffix")?;
    Ok(s.strip_suffix(suffix).unwrap_or(s).to_string())
}

/// Shortest first. Stable, where confd's was not, so equal lengths keep their order.
fn sort_by_length(mut list: Vec<String>, _: Kwargs, _: &State) -> Vec<String> {
    list.sort_by_key(String::len);
    list
}

fn sort_kv_by_length(list: &[Value], _: Kwargs, _: &State) -> TeraResult<Vec<Value>> {
    let mut keyed = list
        .iter()
        .map(|kv| Ok((kv_key_len(kv)?, kv.clone())))
        .collect::<TeraResult<Vec<(usize, Value)>>>()?;
    keyed.sort_by_key(|(len, _)| *len);
    Ok(keyed.into_iter().map(|(_, kv)| kv).collect())
}

fn kv_key_len(kv: &Value) -> TeraResult<usize> {
    kv.get_from_path("key")
        .and_then(Value::as_str)
        .map(str::len)
        .ok_or_else(|| {
            Error::message(format!(
                "sortKVByLength: expected a list of {{key, value}} maps, found {}",
                kv.name()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::template::functions;

    fn engine() -> Tera {
        let mut tera = Tera::new();
        tera.autoescape_on(Vec::<&str>::new());
        functions::register(&mut tera);
        register(&mut tera);
        tera
    }

    fn try_render(template: &str) -> TeraResult<String> {
        let store = Store::new(
            1,
            [
                ("/services/a", "x"),
                ("/services/bbb", "y"),
                ("/services/cc", "z"),
                (
                    "/cfg",
                    r#"{"port": 80, "hosts": ["h1", "h2"], "tls": {"on": true}}"#,
                ),
                ("/list", r#"["a", "b"]"#),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        );
        functions::with_store(&store, || {
            engine().render_str(template, &tera::Context::new(), false)
        })
    }

    fn render(template: &str) -> String {
        try_render(template).unwrap_or_else(|e| panic!("{template}: {e}"))
    }

    fn render_err(template: &str) -> String {
        try_render(template).expect_err(template).to_string()
    }

    #[test]
    fn json_parses_objects_only() {
        // confd template_test.go: {{$data := json (getv "/test/data")}} ...
        let t = r#"{% set c = getv(key="/cfg") | json %}{{ c.port }} {{ c.hosts | join(sep=",") }} {{ c.tls.on }}"#;
        assert_eq!(render(t), "80 h1,h2 true");
        assert!(
            render_err(r#"{{ "[1]" | json }}"#)
                .contains("json: expected a JSON object, got an array")
        );
        assert!(render_err(r#"{{ "{" | json }}"#).contains("json: invalid JSON"));
    }

    #[test]
    fn json_array_parses_arrays_only() {
        let t = r#"{% for x in getv(key="/list") | jsonArray %}{{ x }};{% endfor %}"#;
        assert_eq!(render(t), "a;b;");
        assert!(
            render_err(r#"{{ "{}" | jsonArray }}"#).contains("jsonArray: expected a JSON array")
        );
        assert!(render_err(r#"{{ "nope" | jsonArray }}"#).contains("jsonArray: invalid JSON"));
    }

    #[test]
    fn json_default_replaces_a_bad_value_only() {
        assert_eq!(render(r#"{{ "{" | json(default="bad") }}"#), "bad");
        assert_eq!(render(r#"{{ "[1]" | json(default="bad") }}"#), "bad");
        assert_eq!(
            render(r#"{% set o = getv(key="/cfg") | json(default="bad") %}{{ o.port }}"#),
            "80"
        );
        assert_eq!(render(r#"{{ "x" | jsonArray(default=[]) | length }}"#), "0");
    }

    #[test]
    fn warn_renders_as_nothing() {
        assert_eq!(render(r#"a{{ warn(message="route r skipped") }}b"#), "ab");
    }

    #[test]
    fn base_and_dir_follow_go_path() {
        assert_eq!(
            render(r#"{{ "/a/b/c" | base }} {{ "/a/b/c" | dir }}"#),
            "c /a/b"
        );
        assert_eq!(
            render(r#"{{ "/a" | dir }} {{ "" | base }} {{ "x" | dir }}"#),
            "/ . ."
        );
    }

    #[test]
    fn case_filters() {
        assert_eq!(
            render(r#"{{ "aBc" | toUpper }} {{ "aBc" | toLower }}"#),
            "ABC abc"
        );
    }

    #[test]
    fn base64_round_trip_and_bad_input() {
        assert_eq!(
            render(r#"{{ "hello world" | base64Encode }}"#),
            "aGVsbG8gd29ybGQ="
        );
        assert_eq!(
            render(r#"{{ "aGVsbG8gd29ybGQ=" | base64Decode }}"#),
            "hello world"
        );
        assert!(render_err(r#"{{ "!!!" | base64Decode }}"#).contains("base64Decode:"));
        assert!(render_err(r#"{{ "/w==" | base64Decode }}"#).contains("not UTF-8"));
    }

    #[test]
    fn parse_bool_accepts_go_spellings_only() {
        for yes in ["1", "t", "T", "TRUE", "true", "True"] {
            assert!(parse_bool(yes).unwrap(), "{yes}");
        }
        for no in ["0", "f", "F", "FALSE", "false", "False"] {
            assert!(!parse_bool(no).unwrap(), "{no}");
        }
        for bad in ["yes", "tRUE", "", " true"] {
            assert!(parse_bool(bad).is_err(), "{bad}");
        }
        assert_eq!(render(r#"{% if "T" | parseBool %}on{% endif %}"#), "on");
        let err = render_err(r#"{% set v = "s3" ~ "cret" %}{{ v | parseBool }}"#);
        assert!(err.contains("parseBool: invalid syntax"), "{err}");
        assert!(!err.contains("s3cret"), "the value is never shown: {err}");
    }

    #[test]
    fn atoi_parses_decimal_integers() {
        assert_eq!(
            render(r#"{{ "42" | atoi + 1 }} {{ "-7" | atoi }} {{ "+3" | atoi }}"#),
            "43 -7 3"
        );
        // Built at render time, so that the template's source does not hold it either.
        let err = render_err(r#"{% set v = "s3" ~ "cret" %}{{ v | atoi }}"#);
        assert!(err.contains("atoi: expected a decimal integer"), "{err}");
        assert!(!err.contains("s3cret"), "the value is never shown: {err}");
        assert!(render_err(r#"{{ " 1" | atoi }}"#).contains("atoi:"));
    }

    #[test]
    fn trim_suffix_removes_one_suffix() {
        assert_eq!(
            render(r#"{{ "a.conf.conf" | trimSuffix(suffix=".conf") }}"#),
            "a.conf"
        );
        assert_eq!(render(r#"{{ "abc" | trimSuffix(suffix="x") }}"#), "abc");
    }

    #[test]
    fn sort_by_length_is_stable() {
        let t = r#"{{ ["ccc", "b", "a", "dd"] | sortByLength | join(sep=",") }}"#;
        assert_eq!(render(t), "b,a,dd,ccc");
    }

    #[test]
    fn sort_kv_by_length_sorts_on_the_key() {
        let t = r#"{% for kv in gets(pattern="/services/*") | sortKVByLength %}{{ kv.value }}{% endfor %}"#;
        assert_eq!(render(t), "xzy");
        assert!(render_err(r#"{{ [1] | sortKVByLength }}"#).contains("sortKVByLength: expected"));
    }

    #[test]
    fn tera_builtins_cover_split_join_replace_reverse() {
        let t = r#"{{ "a,b" | split(pat=",") | reverse | join(sep="-") }} {{ "aXa" | replace(from="X", to="y") }}"#;
        assert_eq!(render(t), "b-a aya");
        assert_eq!(
            render(r#"{% if "abc" is containing(pat="b") %}yes{% endif %}"#),
            "yes"
        );
        // docs/functions.md promises these replacements for confd's contains and map.
        assert_eq!(render(r#"{% if "b" in "abc" %}yes{% endif %}"#), "yes");
        assert_eq!(render(r#"{% set m = {"k": "v"} %}{{ m.k }}"#), "v");
    }
}
