//! confd's `json`, `jsonArray` and `map` for the Go engine. JSON numbers become
//! floats, as Go's `encoding/json` makes them `float64` in an `interface{}`.

use std::sync::Arc;

use gotmpl::Value;

use super::args::{Result, calling, exactly, string};

/// confd's `UnmarshalJsonObject`: a JSON object as a map.
pub(super) fn object(a: &[Value]) -> Result<Value> {
    exactly("json", a, 1)?;
    match parse("json", string(a, 0)?)? {
        serde_json::Value::Null => Ok(Value::Map(Arc::default())),
        value @ serde_json::Value::Object(_) => Ok(to_value(value)),
        other => Err(cannot_unmarshal("json", &other, "map[string]interface {}")),
    }
}

/// confd's `UnmarshalJsonArray`: a JSON array as a list.
pub(super) fn array(a: &[Value]) -> Result<Value> {
    exactly("jsonArray", a, 1)?;
    match parse("jsonArray", string(a, 0)?)? {
        serde_json::Value::Null => Ok(Value::List(Arc::new([]))),
        value @ serde_json::Value::Array(_) => Ok(to_value(value)),
        other => Err(cannot_unmarshal("jsonArray", &other, "[]interface {}")),
    }
}

/// confd's `CreateMap`: `map "k1" v1 "k2" v2`.
pub(super) fn create_map(a: &[Value]) -> Result<Value> {
    if !a.len().is_multiple_of(2) {
        return Err(calling("map", "invalid map call"));
    }
    let mut map = std::collections::BTreeMap::new();
    for pair in a.chunks(2) {
        let Value::String(key) = &pair[0] else {
            return Err(calling("map", "map keys must be strings"));
        };
        map.insert(Arc::clone(key), pair[1].clone());
    }
    Ok(Value::Map(Arc::new(map)))
}

fn parse(name: &str, text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| calling(name, e))
}

/// Go's `json.UnmarshalTypeError` text.
fn cannot_unmarshal(name: &str, value: &serde_json::Value, into: &str) -> gotmpl::TemplateError {
    let kind = match value {
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
        serde_json::Value::Null => "null",
    };
    calling(
        name,
        format!("json: cannot unmarshal {kind} into Go value of type {into}"),
    )
}

pub(super) fn to_value(json: serde_json::Value) -> Value {
    match json {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(b),
        serde_json::Value::Number(n) => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        serde_json::Value::String(s) => Value::String(s.into()),
        serde_json::Value::Array(items) => Value::List(items.into_iter().map(to_value).collect()),
        serde_json::Value::Object(map) => Value::Map(Arc::new(
            map.into_iter()
                .map(|(k, v)| (Arc::<str>::from(k), to_value(v)))
                .collect(),
        )),
    }
}
