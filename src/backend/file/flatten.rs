//! One data file's text → flat keys: nested maps become key paths, list items `/0`,
//! `/1`, …, and scalars are stringified as confd's yaml.v2 walk does (`3306`, `true`,
//! floats in Go's shortest form without exponent: `0.5`, `1e21` as
//! `1000000000000000000000`, `.inf` as `+Inf`). A null produces no key at all, as in
//! confd, whose walk has no case for nil; nor does an empty map or list.
//!
//! Finding, reading and merging files is left to the parent module; which format a
//! file has, and the parse error type, to `format`.

use std::collections::BTreeMap;

use super::format::{Format, ParseError};
use crate::kv::keys;

/// Absolute keys to values.
pub(super) type Kvs = BTreeMap<String, String>;

/// The keys of one document in `format`.
pub(super) fn parse(text: &str, format: Format) -> Result<Kvs, ParseError> {
    let mut kvs = Kvs::new();
    match format {
        Format::Yaml => {
            let mut doc: yaml_serde::Value =
                yaml_serde::from_str(text).map_err(ParseError::Yaml)?;
            doc.apply_merge().map_err(ParseError::Yaml)?;
            flatten_yaml(&doc, "/", &mut kvs)?;
        }
        Format::Json => {
            let doc: serde_json::Value = serde_json::from_str(text).map_err(ParseError::Json)?;
            flatten_json(&doc, "/", &mut kvs)?;
        }
        Format::Toml => {
            let doc: toml::Table =
                toml::from_str(text).map_err(|err| ParseError::toml(text, err))?;
            flatten_toml(&toml::Value::Table(doc), "/", &mut kvs)?;
        }
    }
    if kvs.contains_key("/") {
        return Err(ParseError::NotACollection { format });
    }
    Ok(kvs)
}

fn flatten_yaml(node: &yaml_serde::Value, key: &str, out: &mut Kvs) -> Result<(), ParseError> {
    use yaml_serde::Value;
    match node {
        Value::Null => {}
        Value::Bool(b) => put(out, key, b.to_string(), Format::Yaml)?,
        Value::Number(n) => put(out, key, yaml_number(n), Format::Yaml)?,
        Value::String(s) => put(out, key, s.clone(), Format::Yaml)?,
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                flatten_yaml(item, &keys::join(key, &i.to_string()), out)?;
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map {
                let segment = yaml_key(k).ok_or_else(|| ParseError::KeyNotScalar {
                    key: key.to_string(),
                })?;
                flatten_yaml(v, &keys::join(key, &segment), out)?;
            }
        }
        Value::Tagged(tagged) => flatten_yaml(&tagged.value, key, out)?,
    }
    Ok(())
}

fn yaml_key(key: &yaml_serde::Value) -> Option<String> {
    use yaml_serde::Value;
    match key {
        Value::Null => Some(String::new()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(yaml_number(n)),
        Value::String(s) => Some(s.clone()),
        Value::Tagged(tagged) => yaml_key(&tagged.value),
        Value::Sequence(_) | Value::Mapping(_) => None,
    }
}

fn yaml_number(n: &yaml_serde::Number) -> String {
    if let Some(i) = n.as_i64() {
        i.to_string()
    } else if let Some(u) = n.as_u64() {
        u.to_string()
    } else {
        go_float(n.as_f64().unwrap_or(f64::NAN))
    }
}

fn flatten_json(node: &serde_json::Value, key: &str, out: &mut Kvs) -> Result<(), ParseError> {
    use serde_json::Value;
    match node {
        Value::Null => {}
        Value::Bool(b) => put(out, key, b.to_string(), Format::Json)?,
        Value::Number(n) => {
            let text = match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => i.to_string(),
                (None, Some(u)) => u.to_string(),
                _ => go_float(n.as_f64().unwrap_or(f64::NAN)),
            };
            put(out, key, text, Format::Json)?;
        }
        Value::String(s) => put(out, key, s.clone(), Format::Json)?,
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                flatten_json(item, &keys::join(key, &i.to_string()), out)?;
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                flatten_json(v, &keys::join(key, k), out)?;
            }
        }
    }
    Ok(())
}

fn flatten_toml(node: &toml::Value, key: &str, out: &mut Kvs) -> Result<(), ParseError> {
    use toml::Value;
    let toml = Format::Toml;
    match node {
        Value::String(s) => put(out, key, s.clone(), toml)?,
        Value::Integer(i) => put(out, key, i.to_string(), toml)?,
        Value::Float(f) => put(out, key, go_float(*f), toml)?,
        Value::Boolean(b) => put(out, key, b.to_string(), toml)?,
        Value::Datetime(d) => put(out, key, d.to_string(), toml)?,
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                flatten_toml(item, &keys::join(key, &i.to_string()), out)?;
            }
        }
        Value::Table(map) => {
            for (k, v) in map {
                flatten_toml(v, &keys::join(key, k), out)?;
            }
        }
    }
    Ok(())
}

fn put(out: &mut Kvs, key: &str, value: String, format: Format) -> Result<(), ParseError> {
    match out.entry(key.to_string()) {
        std::collections::btree_map::Entry::Occupied(_) => Err(ParseError::Collision {
            format,
            key: key.to_string(),
        }),
        std::collections::btree_map::Entry::Vacant(slot) => {
            slot.insert(value);
            Ok(())
        }
    }
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)`: the shortest digits that read back
/// as `f`, never an exponent. Rust's `Display` agrees except for the infinities.
fn go_float(f: f64) -> String {
    if f.is_infinite() {
        if f > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        f.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: `a: {b: x}` and `"a/b": y` in one file collided silently (the map's
    /// order decided which value a template saw).
    #[test]
    fn one_key_given_twice_in_one_file_is_an_error_naming_it() {
        let cases = [
            ("a: {b: x}\n\"a/b\": y\n", Format::Yaml),
            ("{\"a\": {\"b\": 1}, \"a/b\": 2}", Format::Json),
            ("\"a/b\" = 1\n[a]\nb = 2\n", Format::Toml),
            ("a//b: 1\na/b: 2\n", Format::Yaml),
        ];
        for (text, format) in cases {
            let err = parse(text, format).expect_err(text);
            assert!(
                matches!(err, ParseError::Collision { .. }),
                "{text}: {err:?}"
            );
            assert!(err.to_string().contains("/a/b"), "{err}");
        }
        assert!(parse("a: {b: x}\nc: y\n", Format::Yaml).is_ok());
    }

    fn kvs(pairs: &[(&str, &str)]) -> Kvs {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn nested_yaml_becomes_flat_keys() {
        let yaml = "
app:
  db:
    host: 127.0.0.1
    port: 3306
    tls: true
    ratio: 0.5
    big: 1.0e21
    whole: 2.0
    none: ~
  hosts: [a, b]
  items:
    - name: x
      weight: -1
  inf: .inf
  1: one
";
        assert_eq!(
            parse(yaml, Format::Yaml).unwrap(),
            kvs(&[
                ("/app/1", "one"),
                ("/app/db/big", "1000000000000000000000"),
                ("/app/db/host", "127.0.0.1"),
                ("/app/db/port", "3306"),
                ("/app/db/ratio", "0.5"),
                ("/app/db/tls", "true"),
                ("/app/db/whole", "2"),
                ("/app/hosts/0", "a"),
                ("/app/hosts/1", "b"),
                ("/app/inf", "+Inf"),
                ("/app/items/0/name", "x"),
                ("/app/items/0/weight", "-1"),
            ])
        );
    }

    /// The module's promise of the YAML 1.2 core schema (confd's yaml.v2 made these
    /// `true`/`false`), kept across the move from serde_yaml to yaml_serde.
    #[test]
    fn yes_and_on_stay_strings() {
        assert_eq!(
            parse("a: yes\nb: on\nc: off\nd: True\n", Format::Yaml).unwrap(),
            kvs(&[("/a", "yes"), ("/b", "on"), ("/c", "off"), ("/d", "true")])
        );
    }

    #[test]
    fn yaml_merge_keys_are_applied() {
        let yaml = "base: &b\n  port: 80\nweb:\n  <<: *b\n  host: h\n";
        assert_eq!(
            parse(yaml, Format::Yaml).unwrap(),
            kvs(&[
                ("/base/port", "80"),
                ("/web/host", "h"),
                ("/web/port", "80")
            ])
        );
    }

    #[test]
    fn nested_json_becomes_flat_keys() {
        let json =
            r#"{"db": {"port": 3306, "on": false, "f": 0.1, "n": null, "list": [1, {"k": "v"}]}}"#;
        assert_eq!(
            parse(json, Format::Json).unwrap(),
            kvs(&[
                ("/db/f", "0.1"),
                ("/db/list/0", "1"),
                ("/db/list/1/k", "v"),
                ("/db/on", "false"),
                ("/db/port", "3306"),
            ])
        );
    }

    #[test]
    fn nested_toml_becomes_flat_keys() {
        let toml = "
key = \"v\"
when = 1979-05-27T07:32:00Z
[db]
port = 3306
tls = true
ratio = 1.5
hosts = [\"a\", \"b\"]
[[db.users]]
name = \"u\"
";
        assert_eq!(
            parse(toml, Format::Toml).unwrap(),
            kvs(&[
                ("/db/hosts/0", "a"),
                ("/db/hosts/1", "b"),
                ("/db/port", "3306"),
                ("/db/ratio", "1.5"),
                ("/db/tls", "true"),
                ("/db/users/0/name", "u"),
                ("/key", "v"),
                ("/when", "1979-05-27T07:32:00Z"),
            ])
        );
    }

    #[test]
    fn floats_print_like_go() {
        assert_eq!(go_float(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(go_float(1e-7), "0.0000001");
        assert_eq!(go_float(3.0), "3");
        assert_eq!(go_float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(go_float(f64::NAN), "NaN");
    }

    #[test]
    fn an_empty_document_has_no_keys() {
        assert_eq!(parse("", Format::Yaml).unwrap(), Kvs::new());
        assert_eq!(parse("", Format::Toml).unwrap(), Kvs::new());
    }

    #[test]
    fn a_bare_scalar_is_an_error() {
        let err = parse("just a string\n", Format::Yaml).unwrap_err();
        assert!(err.to_string().contains("top level"), "{err}");
    }

    #[test]
    fn errors_give_the_line_and_column() {
        let yaml = parse("a: b\nc: [unclosed\n", Format::Yaml).unwrap_err();
        let json = parse("{\n  \"a\": 1,\n}", Format::Json).unwrap_err();
        let toml = parse("a = 1\nb = \n", Format::Toml).unwrap_err();
        assert!(yaml.to_string().contains("at line 3 column 1"), "{yaml}");
        assert_eq!(json.to_string(), "trailing comma at line 3 column 1");
        let toml_text = toml.to_string();
        assert!(
            !toml_text.contains('\n') && toml_text.ends_with("at line 2 column 5"),
            "{toml}"
        );
        let typed = [yaml, json, toml].map(|err| (err.format(), err.line()));
        assert_eq!(
            typed,
            [
                (Format::Yaml, Some(3)),
                (Format::Json, Some(3)),
                (Format::Toml, Some(2))
            ]
        );
    }
}

/// Properties over any input: no document panics the flattener, and nested maps of
/// plain keys come back as the paths and values they hold.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_text_in_any_format_neither_panics(text in ".{0,64}") {
            for format in [Format::Yaml, Format::Json, Format::Toml] {
                let _ = parse(&text, format);
            }
        }

        #[test]
        fn nested_json_flattens_to_its_paths(
            tree in proptest::collection::btree_map(
                "[a-z]{1,4}",
                proptest::collection::btree_map("[a-z]{1,4}", "[a-zA-Z0-9 ]{0,8}", 1..4),
                1..4,
            )
        ) {
            let text = serde_json::to_string(&tree).expect("serializable");
            let kvs = parse(&text, Format::Json).expect("valid JSON");
            let mut expected = Kvs::new();
            for (a, inner) in &tree {
                for (b, value) in inner {
                    expected.insert(format!("/{a}/{b}"), value.clone());
                }
            }
            prop_assert_eq!(kvs, expected);
        }
    }
}
