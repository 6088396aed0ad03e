//! Reading a Go function's arguments from gotmpl's untyped [`Value`]s with the checks
//! Go's reflection makes when text/template calls a typed function (`func(string,
//! int)`), and its error texts: `wrong number of args for getv: want at least 1 got 0`,
//! `wrong type for value; expected string; got int`. The functions themselves are in
//! [`super::funcs`] and [`super::system`].

use std::sync::Arc;

use gotmpl::{TemplateError, Value};

pub(super) type Result<T> = std::result::Result<T, TemplateError>;

/// A function failed the way a Go function returning an `error` fails:
/// `error calling NAME: MESSAGE`, as text/template reports it.
pub(super) fn calling(name: &str, message: impl std::fmt::Display) -> TemplateError {
    TemplateError::Exec(format!("error calling {name}: {message}"))
}

/// Exactly `want` arguments.
pub(super) fn exactly(name: &str, args: &[Value], want: usize) -> Result<()> {
    if args.len() == want {
        Ok(())
    } else {
        Err(TemplateError::Exec(format!(
            "wrong number of args for {name}: want {want} got {}",
            args.len()
        )))
    }
}

/// At least `want` arguments (a Go variadic function).
pub(super) fn at_least(name: &str, args: &[Value], want: usize) -> Result<()> {
    if args.len() >= want {
        Ok(())
    } else {
        Err(TemplateError::Exec(format!(
            "wrong number of args for {name}: want at least {want} got {}",
            args.len()
        )))
    }
}

/// Go's name for the type of `value`, as its error messages print it.
fn go_type(value: &Value) -> &'static str {
    match value {
        Value::Nil => "<nil>",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::Uint(_) => "uint",
        Value::Float(_) => "float64",
        Value::String(_) => "string",
        Value::List(_) => "[]interface {}",
        Value::Map(_) => "map[string]interface {}",
        Value::Function(_) => "func",
    }
}

fn wrong_type(expected: &str, got: &Value) -> TemplateError {
    TemplateError::Exec(format!(
        "wrong type for value; expected {expected}; got {}",
        go_type(got)
    ))
}

pub(super) fn string(args: &[Value], i: usize) -> Result<&str> {
    match &args[i] {
        Value::String(s) => Ok(s),
        other => Err(wrong_type("string", other)),
    }
}

pub(super) fn int(args: &[Value], i: usize) -> Result<i64> {
    match &args[i] {
        Value::Int(n) => Ok(*n),
        Value::Uint(n) => i64::try_from(*n).map_err(|_| wrong_type("int", &args[i])),
        other => Err(wrong_type("int", other)),
    }
}

/// A `[]string` argument: a list whose every element is a string.
pub(super) fn strings(args: &[Value], i: usize) -> Result<Vec<Arc<str>>> {
    let Value::List(items) = &args[i] else {
        return Err(wrong_type("[]string", &args[i]));
    };
    items
        .iter()
        .map(|item| match item {
            Value::String(s) => Ok(Arc::clone(s)),
            other => Err(wrong_type("string", other)),
        })
        .collect()
}

pub(super) fn str_value(s: impl Into<Arc<str>>) -> Value {
    Value::String(s.into())
}

pub(super) fn str_list<S: Into<Arc<str>>>(items: impl IntoIterator<Item = S>) -> Value {
    Value::List(items.into_iter().map(str_value).collect())
}

/// A `{Key, Value}` map: confd's `memkv.KVPair`, whose fields templates read as
/// `.Key` and `.Value`.
pub(super) fn kv_pair(key: &str, value: &str) -> Value {
    map([("Key", str_value(key)), ("Value", str_value(value))])
}

pub(super) fn map<'a>(entries: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
    Value::Map(Arc::new(
        entries
            .into_iter()
            .map(|(k, v)| (Arc::<str>::from(k), v))
            .collect(),
    ))
}
