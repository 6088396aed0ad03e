//! `conflux register`'s settings: its own flags ([`RegisterArgs`]) and the etcd
//! connection the daemon would use (config file, `CONFLUX_*`, flags), validated into
//! one [`Setup`] before anything runs.

use std::time::Duration;

use crate::cli::{Cli, RegisterArgs};
use crate::command::Command;
use crate::config::{BackendConfig, Config, ConfigError, EtcdConfig};

use super::RegisterError;

/// Everything a registration needs, validated.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The daemon's configuration, whole: its log settings and state directory are
    /// this process's too, and a setting added there (a log format) reaches both.
    pub config: Config,
    /// `config`'s etcd settings (its backend is always etcd here).
    pub etcd: EtcdConfig,
    pub registration: Registration,
}

/// One key held under a lease while healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub key: String,
    /// The bytes put, as given (a value file is not trimmed).
    pub value: Vec<u8>,
    /// The lease TTL asked for; etcd may grant more (its minimum is about 2 s).
    pub ttl_secs: i64,
    /// `None`: healthy as long as the process runs.
    pub check: Option<HealthCheck>,
    /// Take the key from another live lease.
    pub replace: bool,
}

/// `--check-cmd` and its timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// The shell line, with `--check-timeout`.
    pub command: Command,
    pub interval: Duration,
    pub rise: u32,
    pub fall: u32,
}

/// The setup of `conflux register` from the parsed command line: the daemon's
/// configuration layers for the connection, the subcommand's flags for the rest.
pub fn load(cli: &Cli, args: &RegisterArgs) -> Result<Setup, RegisterError> {
    let config = Config::load(&etcd_layers(cli))?;
    let BackendConfig::Etcd(etcd) = config.backend.clone() else {
        return Err(invalid("conflux register needs the etcd backend".into()));
    };
    let value = match (&args.value, &args.value_file) {
        (Some(value), _) => value.clone().into_bytes(),
        (None, Some(path)) => std::fs::read(path).map_err(|source| RegisterError::ValueFile {
            path: path.clone(),
            source,
        })?,
        // clap's group requires one of them.
        (None, None) => return Err(invalid("--value or --value-file is required".into())),
    };
    Ok(Setup {
        registration: validate(args, value)?,
        config,
        etcd,
    })
}

/// The command line as the daemon's configuration sees it, with the backend forced to
/// etcd: a register always talks to etcd, even when the shared conflux.toml (or
/// `CONFLUX_BACKEND`) names another backend for the daemon, and the command line is
/// the layer that beats both. Nodes, credentials and TLS then come from the same
/// layers, with the same precedence, as the daemon's.
fn etcd_layers(cli: &Cli) -> Cli {
    Cli {
        backend: Some("etcdv3".into()),
        command: None,
        ..cli.clone()
    }
}

fn validate(args: &RegisterArgs, value: Vec<u8>) -> Result<Registration, RegisterError> {
    if args.key.is_empty() {
        return Err(invalid("--key must not be empty".into()));
    }
    if args.ttl.subsec_nanos() != 0 || args.ttl.is_zero() {
        return Err(invalid(format!(
            "--ttl must be a whole number of seconds, at least 1s (etcd leases count \
             seconds), not {:?}",
            args.ttl
        )));
    }
    let ttl_secs = i64::try_from(args.ttl.as_secs())
        .map_err(|_| invalid(format!("--ttl {:?} is too long", args.ttl)))?;
    let check = match &args.check_cmd {
        Some(line) => Some(health_check(args, line)?),
        None => None,
    };
    Ok(Registration {
        key: args.key.clone(),
        value,
        ttl_secs,
        check,
        replace: args.replace,
    })
}

/// HAProxy's rule for the timeout: without `timeout check`, a check may take up to
/// the interval (a longer default would let checks pile up behind a hung one).
fn health_check(args: &RegisterArgs, line: &str) -> Result<HealthCheck, RegisterError> {
    if line.trim().is_empty() {
        return Err(invalid("--check-cmd must not be empty".into()));
    }
    if args.check_interval.is_zero() {
        return Err(invalid("--check-interval must be more than 0".into()));
    }
    let timeout = args.check_timeout.unwrap_or(args.check_interval);
    if timeout.is_zero() {
        return Err(invalid("--check-timeout must be more than 0".into()));
    }
    Ok(HealthCheck {
        command: Command::new(line, timeout),
        interval: args.check_interval,
        rise: args.rise,
        fall: args.fall,
    })
}

fn invalid(message: String) -> RegisterError {
    RegisterError::Config(ConfigError::Invalid(message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Subcommand;

    fn parse(args: &[&str]) -> (Cli, RegisterArgs) {
        let mut cli = crate::cli::parse_from(
            ["conflux", "register", "--key", "/svc/a"]
                .into_iter()
                .chain(args.iter().copied()),
        )
        .expect("parses");
        match cli.command.take() {
            Some(Subcommand::Register(args)) => (cli, args),
            other => panic!("not register: {other:?}"),
        }
    }

    fn registration(args: &[&str]) -> Result<Registration, RegisterError> {
        let (_, args) = parse(args);
        validate(&args, b"v".to_vec())
    }

    #[test]
    fn defaults_are_haproxys() {
        let reg = registration(&["--value", "v", "--check-cmd", "true"]).expect("valid");
        assert_eq!(reg.ttl_secs, 10);
        let check = reg.check.expect("a check");
        assert_eq!((check.rise, check.fall), (2, 3));
        assert_eq!(check.interval, Duration::from_secs(2));
        assert_eq!(check.command.timeout, check.interval);
    }

    #[test]
    fn without_a_check_the_instance_is_always_healthy() {
        let reg = registration(&["--value", "v"]).expect("valid");
        assert_eq!(reg.check, None);
    }

    #[test]
    fn a_ttl_that_is_not_whole_seconds_is_refused() {
        let err = registration(&["--value", "v", "--ttl", "1500ms"]).expect_err("refused");
        assert!(err.to_string().contains("whole number of seconds"), "{err}");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn check_timing_without_a_check_is_a_usage_error() {
        let err = crate::cli::parse_from([
            "conflux", "register", "--key", "/k", "--value", "v", "--rise", "3",
        ])
        .expect_err("rejected");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn the_backend_is_etcd_whatever_the_daemon_uses() {
        let (mut cli, _) = parse(&["--value", "v", "--node", "http://e:2379"]);
        cli.backend = Some("env".into());
        let layers = etcd_layers(&cli);
        assert_eq!(layers.backend.as_deref(), Some("etcdv3"));
        assert_eq!(layers.nodes, vec!["http://e:2379"]);
    }
}
