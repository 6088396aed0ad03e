//! One validated [`Config`] from four layers, lowest first: built-in defaults, the
//! config file (`conflux.toml`, confd.toml's keys), `CONFLUX_*` environment variables
//! and the command line. confd applies its config file *over* the flags; we follow
//! the order every other tool uses, and the README says so.
//!
//! The environment layer is read by clap (each flag's `env`), so by the time a
//! [`Cli`] reaches [`Config::load`] it already holds "environment or command line".

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cli::Cli;
use crate::values::{Wait, WaitError, toml_error_message};

pub const DEFAULT_CONFDIR: &str = "/etc/conflux";
pub const DEFAULT_NODE: &str = crate::backend::etcd::DEFAULT_ENDPOINT;
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(600);

/// A configuration problem: exit code 2, nothing was attempted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// `conflux.toml`, shaped like the file. confd's spellings are accepted
/// (`log-level` and `sync-only` with hyphens, `keepstagefile`); an unknown key is an
/// error that names it, with the line.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    backend: Option<String>,
    nodes: Option<Vec<String>>,
    confdir: Option<PathBuf>,
    prefix: Option<String>,
    interval: Option<u64>,
    watch: Option<bool>,
    onetime: Option<bool>,
    noop: Option<bool>,
    #[serde(rename = "sync-only", alias = "sync_only")]
    sync_only: Option<bool>,
    #[serde(
        rename = "keep-stage-file",
        alias = "keep_stage_file",
        alias = "keepstagefile"
    )]
    keep_stage_file: Option<bool>,
    #[serde(rename = "log-level", alias = "log_level")]
    log_level: Option<String>,
    file: Option<Vec<PathBuf>>,
    filter: Option<String>,
    username: Option<String>,
    password: Option<String>,
    /// Accepted for confd compatibility: credentials are used whenever given.
    #[serde(rename = "basic_auth")]
    _basic_auth: Option<bool>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    client_cakeys: Option<PathBuf>,
    wait: Option<String>,
    state_dir: Option<PathBuf>,
}

/// How the process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Apply every resource once and exit.
    Onetime,
    /// Apply at start, then re-apply resources as their keys change.
    Watch,
    /// Re-read and apply every `interval`.
    Interval(Duration),
}

/// Where keys come from, with the settings that backend needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendConfig {
    Etcd(EtcdConfig),
    File { paths: Vec<PathBuf>, filter: String },
    Env,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    pub nodes: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub client_ca_keys: Option<PathBuf>,
}

/// Everything the run needs, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub confdir: PathBuf,
    pub backend: BackendConfig,
    /// The global prefix, joined before every resource's prefix; `/` when none.
    pub prefix: String,
    pub mode: Mode,
    pub noop: bool,
    pub sync_only: bool,
    pub keep_stage_file: bool,
    pub log_level: tracing::Level,
    /// The coalescing window of resources that set none; `None`: a window only for
    /// resources with a reload ([`Wait::default_for`]).
    pub wait: Option<Wait>,
    /// conflux's own state (see [`crate::state`]); absolute.
    pub state_dir: PathBuf,
}

impl Config {
    /// Merges defaults, the config file, the environment and the flags.
    pub fn load(cli: &Cli) -> Result<Config, ConfigError> {
        let file = read_config_file(cli)?;
        merge(cli, file)
    }

    pub fn conf_d(&self) -> PathBuf {
        self.confdir.join("conf.d")
    }

    pub fn templates_dir(&self) -> PathBuf {
        self.confdir.join("templates")
    }
}

/// The config file named by `--config-file` (which must exist), else
/// `<confdir>/conflux.toml` if it exists.
fn read_config_file(cli: &Cli) -> Result<RawConfig, ConfigError> {
    let (path, required) = match &cli.config_file {
        Some(p) => (p.clone(), true),
        None => {
            let confdir = cli
                .confdir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFDIR));
            (confdir.join("conflux.toml"), false)
        }
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_config(&path, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(RawConfig::default()),
        Err(e) => Err(ConfigError::File {
            path,
            message: e.to_string(),
        }),
    }
}

fn parse_config(path: &Path, text: &str) -> Result<RawConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::File {
        path: path.to_path_buf(),
        message: toml_error_message(&e),
    })
}

fn merge(cli: &Cli, file: RawConfig) -> Result<Config, ConfigError> {
    let confdir = cli
        .confdir
        .clone()
        .or(file.confdir)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFDIR));
    // Relative dests resolve against the confdir, and commands run from conflux's own
    // working directory: make it absolute so the paths they see are unambiguous.
    let confdir = absolute(confdir, "confdir")?;
    let backend_name = cli
        .backend
        .clone()
        .or(file.backend)
        .unwrap_or_else(|| "etcdv3".into());
    let backend = match backend_name.as_str() {
        "etcdv3" | "etcd" => BackendConfig::Etcd(EtcdConfig {
            nodes: pick_list(&cli.nodes, file.nodes).unwrap_or_else(|| vec![DEFAULT_NODE.into()]),
            username: cli.username.clone().or(file.username),
            password: cli.password.clone().or(file.password),
            client_cert: cli.client_cert.clone().or(file.client_cert),
            client_key: cli.client_key.clone().or(file.client_key),
            client_ca_keys: cli.client_ca_keys.clone().or(file.client_cakeys),
        }),
        "file" => {
            let paths = pick_list(&cli.files, file.file).unwrap_or_default();
            if paths.is_empty() {
                return Err(ConfigError::Invalid(
                    "the file backend needs at least one --file (a data file or directory)".into(),
                ));
            }
            let filter = cli
                .filter
                .clone()
                .or(file.filter)
                .unwrap_or_else(|| "*".into());
            BackendConfig::File { paths, filter }
        }
        "env" => BackendConfig::Env,
        other => {
            return Err(ConfigError::Invalid(format!(
                "unknown backend {other:?}: expected etcdv3 (or etcd), file or env"
            )));
        }
    };
    let interval = cli
        .interval
        .or(file.interval)
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_INTERVAL);
    if interval.is_zero() {
        return Err(ConfigError::Invalid(
            "--interval must be at least 1 second".into(),
        ));
    }
    // confd: onetime beats watch, watch beats interval.
    let mode = if cli.onetime || file.onetime.unwrap_or(false) {
        Mode::Onetime
    } else if cli.watch || file.watch.unwrap_or(false) {
        Mode::Watch
    } else {
        Mode::Interval(interval)
    };
    let level = cli
        .log_level
        .clone()
        .or(file.log_level)
        .unwrap_or_else(|| "info".into());
    Ok(Config {
        confdir,
        backend,
        prefix: crate::kv::keys::join("", &cli.prefix.clone().or(file.prefix).unwrap_or_default()),
        mode,
        noop: cli.noop || file.noop.unwrap_or(false),
        sync_only: cli.sync_only || file.sync_only.unwrap_or(false),
        keep_stage_file: cli.keep_stage_file || file.keep_stage_file.unwrap_or(false),
        log_level: parse_level(&level)?,
        state_dir: absolute(
            cli.state_dir
                .clone()
                .or(file.state_dir)
                .unwrap_or_else(|| PathBuf::from(crate::state::DEFAULT_DIR)),
            "state_dir",
        )?,
        wait: cli
            .wait
            .clone()
            .or(file.wait)
            .map(|w| w.parse())
            .transpose()
            .map_err(|e: WaitError| ConfigError::Invalid(e.to_string()))?,
    })
}

fn absolute(path: PathBuf, what: &str) -> Result<PathBuf, ConfigError> {
    std::path::absolute(&path)
        .map_err(|e| ConfigError::Invalid(format!("{what} {}: {e}", path.display())))
}

/// A list flag given on the command line replaces the file's list, as any flag does.
fn pick_list<T: Clone>(cli: &[T], file: Option<Vec<T>>) -> Option<Vec<T>> {
    if cli.is_empty() {
        file
    } else {
        Some(cli.to_vec())
    }
}

/// confd's levels (logrus): panic and fatal mean error here.
fn parse_level(level: &str) -> Result<tracing::Level, ConfigError> {
    Ok(match level.to_ascii_lowercase().as_str() {
        "" | "info" => tracing::Level::INFO,
        "panic" | "fatal" | "error" => tracing::Level::ERROR,
        "warn" | "warning" => tracing::Level::WARN,
        "debug" => tracing::Level::DEBUG,
        "trace" => tracing::Level::TRACE,
        other => {
            return Err(ConfigError::Invalid(format!(
                "unknown log level {other:?}: expected error, warn, info, debug or trace"
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        crate::cli::parse_from(std::iter::once("conflux").chain(args.iter().copied()))
            .expect("parses")
    }

    fn raw(text: &str) -> RawConfig {
        parse_config(Path::new("conflux.toml"), text).expect("valid")
    }

    #[test]
    fn defaults() {
        let c = merge(&Cli::default(), RawConfig::default()).expect("valid");
        assert_eq!(c.confdir, PathBuf::from("/etc/conflux"));
        assert_eq!(c.mode, Mode::Interval(Duration::from_secs(600)));
        assert_eq!(c.prefix, "/");
        match c.backend {
            BackendConfig::Etcd(e) => assert_eq!(e.nodes, vec![DEFAULT_NODE]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn command_line_beats_config_file() {
        let file =
            raw("backend = \"env\"\nprefix = \"/file\"\ninterval = 5\nlog-level = \"debug\"\n");
        let c = merge(&cli(&["--prefix", "/flag", "--backend", "env"]), file).expect("valid");
        assert_eq!(c.prefix, "/flag");
        assert_eq!(c.mode, Mode::Interval(Duration::from_secs(5)));
        assert_eq!(c.log_level, tracing::Level::DEBUG);
    }

    #[test]
    fn confd_keys_are_accepted() {
        let file = raw(
            "backend = \"etcdv3\"\nnodes = [\"http://a:2379\"]\nsync-only = true\nkeepstagefile = true\n\
             client_cakeys = \"/ca.pem\"\nbasic_auth = true\nusername = \"u\"\npassword = \"p\"\nwatch = true\n",
        );
        let c = merge(&Cli::default(), file).expect("valid");
        assert!(c.sync_only && c.keep_stage_file);
        assert_eq!(c.mode, Mode::Watch);
        match c.backend {
            BackendConfig::Etcd(e) => {
                assert_eq!(e.nodes, vec!["http://a:2379"]);
                assert_eq!(e.client_ca_keys, Some(PathBuf::from("/ca.pem")));
                assert_eq!(e.username.as_deref(), Some("u"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_key_names_key_file_and_line() {
        let err = parse_config(
            Path::new("/etc/conflux/conflux.toml"),
            "backend = \"env\"\nbogus = 1\n",
        )
        .expect_err("rejected")
        .to_string();
        assert!(err.contains("/etc/conflux/conflux.toml"), "{err}");
        assert!(err.contains("bogus"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn onetime_beats_watch() {
        let c = merge(
            &cli(&["--onetime", "--watch", "--backend", "env"]),
            RawConfig::default(),
        )
        .expect("valid");
        assert_eq!(c.mode, Mode::Onetime);
    }

    #[test]
    fn bad_values_are_configuration_errors() {
        assert!(merge(&cli(&["--backend", "consul"]), RawConfig::default()).is_err());
        assert!(merge(&cli(&["--backend", "file"]), RawConfig::default()).is_err());
        assert!(merge(&cli(&["--log-level", "loud"]), RawConfig::default()).is_err());
    }
}
