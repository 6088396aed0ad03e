//! confd's configuration keys and flags that are not conflux's own: DNS SRV
//! discovery of the etcd endpoints (`srv_domain`, `srv_record`, `scheme`), TLS's
//! `client_insecure`, and the settings of backends conflux does not have (vault,
//! dynamodb, redis), which are accepted and named in one warning so that a confd
//! host starts unchanged; confd's `CONFD_CLIENT_*` variables for the TLS files. Merging the rest is [`super`]'s job; the SRV lookup itself
//! happens when the backend connects ([`crate::run`]).

use serde::Deserialize;

use super::ConfigError;
use crate::cli::Cli;

/// confd's keys in the config file that conflux reads but does not own.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawConfdKeys {
    scheme: Option<String>,
    srv_domain: Option<String>,
    srv_record: Option<String>,
    client_insecure: Option<bool>,
    auth_token: Option<String>,
    auth_type: Option<String>,
    app_id: Option<String>,
    user_id: Option<String>,
    role_id: Option<String>,
    secret_id: Option<String>,
    table: Option<String>,
    separator: Option<String>,
    path: Option<String>,
}

/// The keys of confd's backends that conflux lacks: accepted, named in one warning
/// ([`ignored`]), and otherwise ignored.
pub(super) const FOREIGN_KEYS: &[&str] = &[
    "auth_token",
    "auth_type",
    "app_id",
    "user_id",
    "role_id",
    "secret_id",
    "table",
    "separator",
    "path",
];

/// Where to find the etcd endpoints in DNS, as confd does: the SRV record's
/// targets, each as `<scheme>://<target>:<port>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvDiscovery {
    /// The full record name (`_etcd._tcp.example.com.`).
    pub record: String,
    /// `http` or `https`.
    pub scheme: String,
}

impl SrvDiscovery {
    /// The endpoints for SRV `targets` (target, port): the target's trailing dot
    /// dropped, an IPv6 literal in brackets, as Go's `net.JoinHostPort`.
    pub fn endpoints(&self, targets: &[(String, u16)]) -> Vec<String> {
        targets
            .iter()
            .map(|(target, port)| {
                let host = target.trim_end_matches('.');
                if host.contains(':') {
                    format!("{}://[{host}]:{port}", self.scheme)
                } else {
                    format!("{}://{host}:{port}", self.scheme)
                }
            })
            .collect()
    }
}

/// confd's rule: `srv_record` if given, else `_<backend>._tcp.<srv_domain>.`.
pub(super) fn srv_discovery(
    cli: &Cli,
    file: &RawConfdKeys,
    backend: &str,
) -> Result<Option<SrvDiscovery>, ConfigError> {
    let scheme = cli
        .scheme
        .clone()
        .or(file.scheme.clone())
        .unwrap_or_else(|| "http".into());
    if scheme != "http" && scheme != "https" {
        return Err(ConfigError::Invalid(format!(
            "unknown scheme {scheme:?}: expected http or https"
        )));
    }
    let record = cli.srv_record.clone().or(file.srv_record.clone());
    let domain = cli.srv_domain.clone().or(file.srv_domain.clone());
    let record = match (record, domain) {
        (Some(record), _) if !record.is_empty() => record,
        (_, Some(domain)) if !domain.is_empty() => format!("_{backend}._tcp.{domain}."),
        _ => return Ok(None),
    };
    Ok(Some(SrvDiscovery { record, scheme }))
}

/// confd's `CONFD_CLIENT_CERT`, `CONFD_CLIENT_KEY` and `CONFD_CLIENT_CAKEYS`: read
/// when neither a flag (or its `CONFLUX_*` variable) nor the config file sets the
/// file, as confd reads them.
pub(super) fn env_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(Into::into)
}

/// The confd settings given that conflux ignores, as confd spells them, flags first.
pub(super) fn ignored(cli: &Cli, file: &RawConfdKeys) -> Vec<String> {
    let mut names: Vec<String> = cli.foreign.given().into_iter().map(String::from).collect();
    if cli.client_insecure {
        names.push("-client-insecure".into());
    }
    let keys = [
        ("auth_token", file.auth_token.is_some()),
        ("auth_type", file.auth_type.is_some()),
        ("app_id", file.app_id.is_some()),
        ("user_id", file.user_id.is_some()),
        ("role_id", file.role_id.is_some()),
        ("secret_id", file.secret_id.is_some()),
        ("table", file.table.is_some()),
        ("separator", file.separator.is_some()),
        ("path", file.path.is_some()),
        ("client_insecure", file.client_insecure == Some(true)),
    ];
    names.extend(
        keys.into_iter()
            .filter(|(_, given)| *given)
            .map(|(name, _)| name.to_string()),
    );
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        crate::cli::parse_from(std::iter::once("conflux").chain(args.iter().copied()))
            .expect("parses")
    }

    #[test]
    fn srv_domain_names_the_backend_record_and_srv_record_wins() {
        let file = RawConfdKeys {
            srv_domain: Some("example.com".into()),
            scheme: Some("https".into()),
            ..Default::default()
        };
        let srv = srv_discovery(&cli(&[]), &file, "etcd").unwrap().unwrap();
        assert_eq!(srv.record, "_etcd._tcp.example.com.");
        assert_eq!(srv.scheme, "https");
        let srv = srv_discovery(&cli(&["-srv-record", "_c._tcp.x."]), &file, "etcd")
            .unwrap()
            .unwrap();
        assert_eq!(srv.record, "_c._tcp.x.");
        assert_eq!(
            srv_discovery(&cli(&[]), &RawConfdKeys::default(), "etcd").unwrap(),
            None
        );
        assert!(srv_discovery(&cli(&["-scheme", "ftp"]), &file, "etcd").is_err());
    }

    #[test]
    fn endpoints_follow_join_host_port() {
        let srv = SrvDiscovery {
            record: "r".into(),
            scheme: "http".into(),
        };
        assert_eq!(
            srv.endpoints(&[("etcd-1.example.com.".into(), 2379), ("::1".into(), 2380)]),
            vec!["http://etcd-1.example.com:2379", "http://[::1]:2380"]
        );
    }

    #[test]
    fn ignored_settings_are_named_as_confd_spells_them() {
        let file = RawConfdKeys {
            table: Some("t".into()),
            client_insecure: Some(true),
            ..Default::default()
        };
        assert_eq!(
            ignored(&cli(&["-auth-type", "token"]), &file),
            vec!["-auth-type", "table", "client_insecure"]
        );
    }
}
