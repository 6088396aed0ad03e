//! confd's functions that look outside the store, for the Go engine: `getenv`,
//! `fileExists`, `lookupIP`, `lookupIPV4`, `lookupIPV6`, `lookupSRV` and `datetime`.
//! The lookups themselves are shared with the Tera engine
//! ([`crate::template::functions`]); this module shapes their answers as confd's Go
//! functions return them (`net.SRV` fields `.Target`, `.Port`, …; `time.Time`).

use std::net::IpAddr;

use gotmpl::Value;

use super::args::{Result, at_least, exactly, map, str_list, str_value, string};
use super::gotime;
use crate::template::dns;
use crate::template::functions::system::{SRV_TIMEOUT, env_or_default, resolve};

type Func = fn(&[Value]) -> Result<Value>;

pub(super) fn functions() -> Vec<(&'static str, Func)> {
    vec![
        ("getenv", getenv),
        ("fileExists", file_exists),
        ("lookupIP", |a| lookup_ip("lookupIP", a, |_| true)),
        ("lookupIPV4", |a| {
            lookup_ip("lookupIPV4", a, IpAddr::is_ipv4)
        }),
        ("lookupIPV6", |a| {
            lookup_ip("lookupIPV6", a, IpAddr::is_ipv6)
        }),
        ("lookupSRV", lookup_srv),
        ("datetime", datetime),
    ]
}

/// `getenv NAME [default]`: unset or empty gives the default, else `""`.
fn getenv(a: &[Value]) -> Result<Value> {
    at_least("getenv", a, 1)?;
    let name = string(a, 0)?;
    let default = if a.len() > 1 {
        Some(string(a, 1)?)
    } else {
        None
    };
    Ok(str_value(env_or_default(std::env::var(name).ok(), default)))
}

/// confd's `util.IsFileExist`: false only when the path does not exist.
fn file_exists(a: &[Value]) -> Result<Value> {
    exactly("fileExists", a, 1)?;
    Ok(Value::Bool(match std::fs::metadata(string(a, 0)?) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    }))
}

fn lookup_ip(name: &str, a: &[Value], keep: fn(&IpAddr) -> bool) -> Result<Value> {
    exactly(name, a, 1)?;
    Ok(str_list(resolve(string(a, 0)?, keep)))
}

/// `lookupSRV service proto name`: Go's `[]*net.SRV`, sorted as confd sorts them;
/// a failed lookup is an empty list.
fn lookup_srv(a: &[Value]) -> Result<Value> {
    exactly("lookupSRV", a, 3)?;
    let (service, proto, name) = (string(a, 0)?, string(a, 1)?, string(a, 2)?);
    let records = dns::lookup_srv(service, proto, name, SRV_TIMEOUT).unwrap_or_else(|err| {
        tracing::debug!(service, proto, name, cause = %err, "lookupSRV failed");
        Vec::new()
    });
    Ok(Value::List(
        records
            .iter()
            .map(|r| {
                map([
                    ("Target", str_value(r.target.as_str())),
                    ("Port", Value::Int(r.port.into())),
                    ("Priority", Value::Int(r.priority.into())),
                    ("Weight", Value::Int(r.weight.into())),
                ])
            })
            .collect(),
    ))
}

/// confd's `datetime` is Go's `time.Now`, read as `{{datetime}}` (its `String()`)
/// or `{{datetime.Format "2006-01-02"}}`. Go calls the method `Format` with the
/// layout; gotmpl, which has no methods, hands a chain's arguments to the function
/// at its head, so here the layout arrives as `datetime`'s own argument and the
/// answer is a value whose field `Format` is the formatted time.
fn datetime(a: &[Value]) -> Result<Value> {
    let now = chrono::Local::now().fixed_offset();
    match a {
        [] => Ok(str_value(gotime::format(&now, gotime::STRING_LAYOUT))),
        [_] => {
            let layout = string(a, 0)?;
            Ok(map([("Format", str_value(gotime::format(&now, layout)))]))
        }
        _ => exactly("datetime", a, 1).map(|()| Value::Nil),
    }
}
