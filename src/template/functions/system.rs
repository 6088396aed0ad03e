//! The functions that look outside the store: `getenv`, `fileExists`, `lookupIP`,
//! `lookupIPV4`, `lookupIPV6`, `lookupSRV`, `datetime` and `warn`. Each follows
//! confd's rule for failures (a failed DNS lookup is an empty list, so a template
//! renders while DNS is down). How an SRV lookup is made is [`super::super::dns`]'s.

use std::net::{IpAddr, ToSocketAddrs};
use std::time::Duration;

use tera::{Error, Kwargs, State, Tera, TeraResult, Value};

use super::super::dns;

pub(super) fn register(tera: &mut Tera) {
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
    tera.register_function("warn", warn);
    tera.register_function("datetime", datetime);
}

fn getenv(kw: Kwargs, _: &State) -> TeraResult<String> {
    let name: &str = kw.must_get("name")?;
    let default: Option<&str> = kw.get("default")?;
    Ok(env_or_default(std::env::var(name).ok(), default))
}

/// confd's rule: an unset or empty variable gives the default, or `""`.
pub(in crate::template) fn env_or_default(value: Option<String>, default: Option<&str>) -> String {
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

pub(in crate::template) fn resolve(name: &str, keep: fn(&IpAddr) -> bool) -> Vec<String> {
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

/// How long one `lookupSRV` may take in all, every nameserver and search domain
/// included: a render must not hang on DNS.
pub(in crate::template) const SRV_TIMEOUT: Duration = Duration::from_secs(2);

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
    use super::super::testing::render;
    use super::*;

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
