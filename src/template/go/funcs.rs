//! confd's function map for the Go engine, under confd's names and with its
//! semantics: the store lookups (memkv's `get`, `gets`, `getv`, `getvs`, `exists`,
//! `ls`, `lsdir`, over the [`Store`](crate::store::Store) of the render in progress)
//! and the string, list and number helpers of confd's `template_funcs.go`. The
//! functions that look outside the store (environment, files, DNS, clock) are in
//! [`super::system`]; Go's built-ins (`printf`, `len`, `index`, `eq`, …) are gotmpl's.
//!
//! Every function is wrapped by [`super::locate::recorded`], so a failing call can be
//! found in the template for the error's line and column.

use base64::Engine as _;
use gotmpl::{FuncMap, TemplateError, Value};

use super::args::{
    Result, at_least, calling, exactly, int, kv_pair, str_list, str_value, string, strings,
};
use super::{json, locate, memkv, system};
use crate::kv::go_path;
use crate::store::LookupError;
use crate::template::functions::with_current_store;
use crate::template::gofmt;

type Func = fn(&[Value]) -> Result<Value>;

/// The whole map, built once per template set.
pub(super) fn func_map() -> FuncMap {
    let table: &[(&str, Func)] = &[
        ("get", get),
        ("gets", gets),
        ("getv", getv),
        ("getvs", getvs),
        ("exists", exists),
        ("ls", ls),
        ("lsdir", lsdir),
        ("base", |a| path_fn("base", a, go_path::base)),
        ("dir", |a| path_fn("dir", a, go_path::dir)),
        ("split", split),
        ("join", join),
        ("toUpper", |a| string_fn("toUpper", a, |s| s.to_uppercase())),
        ("toLower", |a| string_fn("toLower", a, |s| s.to_lowercase())),
        ("contains", contains),
        ("replace", replace),
        ("trimSuffix", trim_suffix),
        ("json", json::object),
        ("jsonArray", json::array),
        ("map", json::create_map),
        ("base64Encode", base64_encode),
        ("base64Decode", base64_decode),
        ("parseBool", parse_bool),
        ("reverse", reverse),
        ("sortByLength", sort_by_length),
        ("sortKVByLength", sort_kv_by_length),
        ("add", |a| arithmetic("add", a, i64::checked_add)),
        ("sub", |a| arithmetic("sub", a, i64::checked_sub)),
        ("mul", |a| arithmetic("mul", a, i64::checked_mul)),
        ("div", |a| arithmetic("div", a, i64::checked_div)),
        ("mod", |a| arithmetic("mod", a, i64::checked_rem)),
        ("seq", seq),
        ("atoi", atoi),
    ];
    let mut map: FuncMap = table
        .iter()
        .map(|(name, f)| (name.to_string(), locate::recorded(name, *f)))
        .collect();
    for (name, f) in system::functions() {
        map.insert(name.to_string(), locate::recorded(name, f));
    }
    map
}

/// A store lookup on the render in progress.
fn with_store<R>(name: &str, lookup: impl FnOnce(&crate::store::Store) -> R) -> Result<R> {
    with_current_store(lookup).ok_or_else(|| {
        calling(
            name,
            "store functions are only available while rendering a resource",
        )
    })
}

/// memkv's `ErrNotExist` text.
fn lookup_error(name: &str, err: LookupError) -> TemplateError {
    match err {
        LookupError::KeyNotFound(key) => calling(name, format!("key does not exist: {key}")),
        // Go's path.ErrBadPattern, whatever is wrong with the pattern.
        LookupError::BadPattern(_) => calling(name, "syntax error in pattern"),
    }
}

fn get(a: &[Value]) -> Result<Value> {
    exactly("get", a, 1)?;
    let key = string(a, 0)?;
    crate::template::functions::record(|| crate::template::functions::Lookup::Key(key.to_string()));
    with_store("get", |s| {
        s.getv(key)
            .map(|v| kv_pair(key, v))
            .map_err(|e| lookup_error("get", e))
    })?
}

/// `getv key [default]`: the default is used for a missing key only.
fn getv(a: &[Value]) -> Result<Value> {
    at_least("getv", a, 1)?;
    let key = string(a, 0)?;
    let default = match a.len() {
        1 => None,
        _ => Some(string(a, 1)?),
    };
    crate::template::functions::record(|| crate::template::functions::Lookup::Key(key.to_string()));
    with_store("getv", |s| match (s.get(key), default) {
        (Some(v), _) => Ok(str_value(v)),
        (None, Some(d)) => Ok(str_value(d)),
        (None, None) => Err(lookup_error(
            "getv",
            LookupError::KeyNotFound(key.to_string()),
        )),
    })?
}

fn gets(a: &[Value]) -> Result<Value> {
    exactly("gets", a, 1)?;
    let pattern = string(a, 0)?;
    crate::template::functions::record(|| {
        crate::template::functions::Lookup::Pattern(pattern.to_string())
    });
    with_store("gets", |s| {
        let pairs = s.gets(pattern).map_err(|e| lookup_error("gets", e))?;
        Ok(Value::List(
            pairs.into_iter().map(|(k, v)| kv_pair(k, v)).collect(),
        ))
    })?
}

fn getvs(a: &[Value]) -> Result<Value> {
    exactly("getvs", a, 1)?;
    let pattern = string(a, 0)?;
    crate::template::functions::record(|| {
        crate::template::functions::Lookup::Pattern(pattern.to_string())
    });
    with_store("getvs", |s| {
        s.getvs(pattern)
            .map(str_list)
            .map_err(|e| lookup_error("getvs", e))
    })?
}

fn exists(a: &[Value]) -> Result<Value> {
    exactly("exists", a, 1)?;
    let key = string(a, 0)?;
    crate::template::functions::record(|| crate::template::functions::Lookup::Key(key.to_string()));
    with_store("exists", |s| Value::Bool(s.exists(key)))
}

fn ls(a: &[Value]) -> Result<Value> {
    exactly("ls", a, 1)?;
    let path = string(a, 0)?;
    crate::template::functions::record(|| {
        crate::template::functions::Lookup::List(path.to_string())
    });
    with_store("ls", |s| str_list(memkv::list(s, path)))
}

fn lsdir(a: &[Value]) -> Result<Value> {
    exactly("lsdir", a, 1)?;
    let path = string(a, 0)?;
    crate::template::functions::record(|| {
        crate::template::functions::Lookup::List(path.to_string())
    });
    with_store("lsdir", |s| str_list(memkv::list_dir(s, path)))
}

fn path_fn(name: &str, a: &[Value], f: fn(&str) -> String) -> Result<Value> {
    exactly(name, a, 1)?;
    Ok(str_value(f(string(a, 0)?)))
}

fn string_fn(name: &str, a: &[Value], f: impl Fn(&str) -> String) -> Result<Value> {
    exactly(name, a, 1)?;
    Ok(str_value(f(string(a, 0)?)))
}

/// Go's `strings.Split`: an empty separator splits after each character, and an
/// empty string is one empty element.
fn split(a: &[Value]) -> Result<Value> {
    exactly("split", a, 2)?;
    let (s, sep) = (string(a, 0)?, string(a, 1)?);
    Ok(if sep.is_empty() {
        str_list(s.chars().map(String::from))
    } else {
        str_list(s.split(sep))
    })
}

fn join(a: &[Value]) -> Result<Value> {
    exactly("join", a, 2)?;
    let items = strings(a, 0)?;
    let sep = string(a, 1)?;
    let parts: Vec<&str> = items.iter().map(|s| &**s).collect();
    Ok(str_value(parts.join(sep)))
}

fn contains(a: &[Value]) -> Result<Value> {
    exactly("contains", a, 2)?;
    Ok(Value::Bool(string(a, 0)?.contains(string(a, 1)?)))
}

/// Go's `strings.Replace(s, old, new, n)`: `n < 0` replaces every occurrence.
fn replace(a: &[Value]) -> Result<Value> {
    exactly("replace", a, 4)?;
    let (s, old, new) = (string(a, 0)?, string(a, 1)?, string(a, 2)?);
    let n = int(a, 3)?;
    Ok(str_value(match usize::try_from(n) {
        Ok(n) => s.replacen(old, new, n),
        Err(_) => s.replace(old, new),
    }))
}

fn trim_suffix(a: &[Value]) -> Result<Value> {
    exactly("trimSuffix", a, 2)?;
    let (s, suffix) = (string(a, 0)?, string(a, 1)?);
    Ok(str_value(s.strip_suffix(suffix).unwrap_or(s)))
}

fn base64_encode(a: &[Value]) -> Result<Value> {
    exactly("base64Encode", a, 1)?;
    Ok(str_value(
        base64::engine::general_purpose::STANDARD.encode(string(a, 0)?),
    ))
}

/// Go's `string(bytes)` keeps invalid UTF-8 as it is; a Rust string cannot, so such
/// bytes become U+FFFD (the only place the output can differ from confd's).
fn base64_decode(a: &[Value]) -> Result<Value> {
    exactly("base64Decode", a, 1)?;
    let s = string(a, 0)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| calling("base64Decode", go_base64_error(s, &e)))?;
    Ok(str_value(String::from_utf8_lossy(&bytes).into_owned()))
}

/// Go's `base64.CorruptInputError` text: `illegal base64 data at input byte N`.
fn go_base64_error(input: &str, err: &base64::DecodeError) -> String {
    let at = match err {
        base64::DecodeError::InvalidByte(at, _) | base64::DecodeError::InvalidLastSymbol(at, _) => {
            *at
        }
        _ => input.len(),
    };
    format!("illegal base64 data at input byte {at}")
}

/// Go's `strconv.ParseBool`, with its error text.
fn parse_bool(a: &[Value]) -> Result<Value> {
    exactly("parseBool", a, 1)?;
    match string(a, 0)? {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(Value::Bool(true)),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(Value::Bool(false)),
        s => Err(calling(
            "parseBool",
            format!("strconv.ParseBool: parsing {}: invalid syntax", go_quote(s)),
        )),
    }
}

/// Go's `strconv.Atoi`, with its error texts.
fn atoi(a: &[Value]) -> Result<Value> {
    exactly("atoi", a, 1)?;
    let s = string(a, 0)?;
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(calling(
            "atoi",
            format!("strconv.Atoi: parsing {}: invalid syntax", go_quote(s)),
        ));
    }
    s.parse::<i64>().map(Value::Int).map_err(|_| {
        calling(
            "atoi",
            format!("strconv.Atoi: parsing {}: value out of range", go_quote(s)),
        )
    })
}

/// `%q` of a string, as Go's `strconv.Quote` writes it.
fn go_quote(s: &str) -> String {
    gofmt::sprintf("%q", &[str_value(s)]).unwrap_or_else(|_| format!("{s:?}"))
}

/// confd's `Reverse`: a list in reverse order (it reverses `[]string` and
/// `[]KVPair`; anything else comes back as it was).
fn reverse(a: &[Value]) -> Result<Value> {
    exactly("reverse", a, 1)?;
    Ok(match &a[0] {
        Value::List(items) => Value::List(items.iter().rev().cloned().collect()),
        other => other.clone(),
    })
}

/// confd's `SortByLength`: shortest first. Go's `sort.Sort` is not stable; for the
/// short lists templates sort (under 13 elements Go uses insertion sort, which is)
/// a stable sort gives the same order.
fn sort_by_length(a: &[Value]) -> Result<Value> {
    exactly("sortByLength", a, 1)?;
    let mut items = strings(a, 0)?;
    items.sort_by_key(|s| s.len());
    Ok(str_list(items))
}

fn sort_kv_by_length(a: &[Value]) -> Result<Value> {
    exactly("sortKVByLength", a, 1)?;
    let Value::List(items) = &a[0] else {
        return Err(calling("sortKVByLength", "expected a list of KVPairs"));
    };
    let mut keyed = items
        .iter()
        .map(|kv| match kv.field("Key") {
            Some(Value::String(k)) => Ok((k.len(), kv.clone())),
            _ => Err(calling("sortKVByLength", "expected a list of KVPairs")),
        })
        .collect::<Result<Vec<_>>>()?;
    keyed.sort_by_key(|(len, _)| *len);
    Ok(Value::List(keyed.into_iter().map(|(_, kv)| kv).collect()))
}

/// confd's `add`, `sub`, `mul`, `div`, `mod` on Go `int`s. Go panics on a division
/// by zero, which text/template reports as an error calling the function; overflow
/// wraps in Go, and is an error here rather than a silently wrong number.
fn arithmetic(name: &str, a: &[Value], op: fn(i64, i64) -> Option<i64>) -> Result<Value> {
    exactly(name, a, 2)?;
    let (x, y) = (int(a, 0)?, int(a, 1)?);
    if y == 0 && matches!(name, "div" | "mod") {
        return Err(calling(name, "runtime error: integer divide by zero"));
    }
    op(x, y)
        .map(Value::Int)
        .ok_or_else(|| calling(name, format!("integer overflow: {x}, {y}")))
}

/// confd's `Seq(first, last)`: `[first, …, last]`, empty when `first > last`.
fn seq(a: &[Value]) -> Result<Value> {
    exactly("seq", a, 2)?;
    let (first, last) = (int(a, 0)?, int(a, 1)?);
    if last.saturating_sub(first) > 1_000_000 {
        return Err(calling("seq", "more than a million numbers"));
    }
    Ok(Value::List((first..=last).map(Value::Int).collect()))
}
