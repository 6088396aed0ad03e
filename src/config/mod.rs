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

mod confd;

pub use confd::SrvDiscovery;

use crate::cli::Cli;
use crate::template::Engine;
use crate::values::{Wait, WaitError, toml_error_redacted};

pub const DEFAULT_CONFDIR: &str = "/etc/conflux";
/// confd's confdir and config file: the defaults when started as `confd`.
pub const CONFD_CONFDIR: &str = "/etc/confd";
pub const CONFD_CONFIG_FILE: &str = "/etc/confd/confd.toml";
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
    metrics_addr: Option<String>,
    #[serde(rename = "log-format", alias = "log_format")]
    log_format: Option<String>,
    watch_confdir: Option<bool>,
    template_engine: Option<String>,
    /// confd's DNS SRV discovery and TLS keys (see [`confd`]).
    #[serde(flatten)]
    confd: confd::RawConfdKeys,
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
    /// Find the endpoints in DNS SRV records instead of `nodes` (confd's
    /// `srv_domain`/`srv_record`), at connection time.
    pub srv: Option<confd::SrvDiscovery>,
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
    /// Where to serve /metrics, /health, /ready and /status; `None`: nowhere.
    pub metrics_addr: Option<String>,
    pub log_format: LogFormat,
    /// `--noop --detailed-exitcode`: exit 3 when changes are pending.
    pub detailed_exitcode: bool,
    /// In watch mode, reload the confdir when it changes on disk.
    pub watch_confdir: bool,
    /// The config file read (or that would have been: it may not exist).
    pub config_file: PathBuf,
    /// The template engine of resources that name none.
    pub template_engine: Engine,
    /// confd settings given that conflux accepts and ignores, as confd spells them
    /// (`-auth-type`, `table`): `main` warns once, naming them.
    pub ignored: Vec<String>,
}

/// How logs are written on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    /// One JSON object per line: timestamp, level, message and the structured fields.
    Json,
}

impl Config {
    /// Merges defaults, the config file, the environment and the flags.
    pub fn load(cli: &Cli) -> Result<Config, ConfigError> {
        let (file, path) = read_config_file(cli)?;
        let mut config = merge(cli, file)?;
        config.config_file = absolute(path, "config file")?;
        Ok(config)
    }

    pub fn conf_d(&self) -> PathBuf {
        self.confdir.join("conf.d")
    }

    pub fn templates_dir(&self) -> PathBuf {
        self.confdir.join("templates")
    }
}

/// The config file named by `--config-file` (which must exist), else
/// `<confdir>/conflux.toml` if it exists (started as `confd`: confd's
/// `/etc/confd/confd.toml`, whatever the confdir, as confd reads it).
fn read_config_file(cli: &Cli) -> Result<(RawConfig, PathBuf), ConfigError> {
    let (path, required) = match &cli.config_file {
        Some(p) => (p.clone(), true),
        None if cli.as_confd => (PathBuf::from(CONFD_CONFIG_FILE), false),
        None => {
            let confdir = cli
                .confdir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFDIR));
            (confdir.join("conflux.toml"), false)
        }
    };
    let raw = match std::fs::read_to_string(&path) {
        Ok(text) => parse_config(&path, &text)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => RawConfig::default(),
        Err(e) => {
            return Err(ConfigError::File {
                path,
                message: e.to_string(),
            });
        }
    };
    Ok((raw, path))
}

/// Keys whose values are credentials: a config error never shows them.
const SECRET_KEYS: &[&str] = &["password", "username", "client_key"];

/// Parses the file, refusing a key that is neither conflux's nor confd's with its
/// name and line. (serde's `deny_unknown_fields` does not combine with the
/// `flatten`ed confd keys, so the table's keys are checked here first.) Errors never
/// quote the file's text: a line may hold a password.
fn parse_config(path: &Path, text: &str) -> Result<RawConfig, ConfigError> {
    let fail = |message| ConfigError::File {
        path: path.to_path_buf(),
        message,
    };
    let keys = toml::de::DeTable::parse(text)
        .map_err(|e| fail(toml_error_redacted(&e, text, SECRET_KEYS)))?;
    for key in keys.get_ref().keys() {
        if !is_known_key(key.get_ref().as_ref()) {
            let line = text[..key.span().start].matches('\n').count() + 1;
            return Err(fail(format!(
                "line {line}: unknown key `{}`",
                key.get_ref()
            )));
        }
    }
    toml::from_str(text).map_err(|e| fail(toml_error_redacted(&e, text, SECRET_KEYS)))
}

/// conflux's keys, as `packaging/conflux.toml` documents them (a test holds it to
/// that): [`RawConfig`]'s and the confd keys conflux honours.
const KEYS: &[&str] = &[
    "backend",
    "nodes",
    "confdir",
    "prefix",
    "interval",
    "watch",
    "onetime",
    "noop",
    "sync-only",
    "keep-stage-file",
    "log-level",
    "file",
    "filter",
    "username",
    "password",
    "basic_auth",
    "client_cert",
    "client_key",
    "client_cakeys",
    "wait",
    "state_dir",
    "metrics_addr",
    "log-format",
    "watch_confdir",
    "template_engine",
    "scheme",
    "srv_domain",
    "srv_record",
    "client_insecure",
];

/// Other spellings of [`KEYS`] that [`RawConfig`] accepts.
const ALIASES: &[&str] = &[
    "sync_only",
    "keep_stage_file",
    "keepstagefile",
    "log_level",
    "log_format",
];

fn is_known_key(key: &str) -> bool {
    KEYS.contains(&key) || ALIASES.contains(&key) || confd::FOREIGN_KEYS.contains(&key)
}

fn merge(cli: &Cli, file: RawConfig) -> Result<Config, ConfigError> {
    let default_confdir = if cli.as_confd {
        CONFD_CONFDIR
    } else {
        DEFAULT_CONFDIR
    };
    let confdir = cli
        .confdir
        .clone()
        .or(file.confdir)
        .unwrap_or_else(|| PathBuf::from(default_confdir));
    // Relative dests resolve against the confdir, and commands run from conflux's own
    // working directory: make it absolute so the paths they see are unambiguous.
    let confdir = absolute(confdir, "confdir")?;
    let default_config_file = confdir.join("conflux.toml");
    let backend_name = cli
        .backend
        .clone()
        .or(file.backend)
        .unwrap_or_else(|| "etcdv3".into());
    let backend = match backend_name.as_str() {
        "etcdv3" | "etcd" => BackendConfig::Etcd(EtcdConfig {
            nodes: pick_list(&cli.nodes, file.nodes).unwrap_or_else(|| vec![DEFAULT_NODE.into()]),
            srv: confd::srv_discovery(cli, &file.confd, &backend_name)?,
            username: cli.username.clone().or(file.username),
            password: cli.password.clone().or(file.password),
            client_cert: cli
                .client_cert
                .clone()
                .or(file.client_cert)
                .or_else(|| confd::env_path("CONFD_CLIENT_CERT")),
            client_key: cli
                .client_key
                .clone()
                .or(file.client_key)
                .or_else(|| confd::env_path("CONFD_CLIENT_KEY")),
            client_ca_keys: cli
                .client_ca_keys
                .clone()
                .or(file.client_cakeys)
                .or_else(|| confd::env_path("CONFD_CLIENT_CAKEYS")),
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
    let log_format = match cli
        .log_format
        .clone()
        .or(file.log_format)
        .as_deref()
        .unwrap_or("text")
    {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            return Err(ConfigError::Invalid(format!(
                "unknown log format {other:?}: expected text or json"
            )));
        }
    };
    let noop = cli.noop || file.noop.unwrap_or(false);
    if cli.detailed_exitcode && !(noop && mode == Mode::Onetime) {
        return Err(ConfigError::Invalid(
            "--detailed-exitcode needs --noop and --onetime".into(),
        ));
    }
    let level = cli
        .log_level
        .clone()
        .or(file.log_level)
        .unwrap_or_else(|| "info".into());
    let template_engine = match cli.template_engine.clone().or(file.template_engine) {
        Some(e) => e
            .parse()
            .map_err(|e: crate::template::UnknownEngine| ConfigError::Invalid(e.to_string()))?,
        None if cli.as_confd => Engine::Go,
        None => Engine::default(),
    };
    let ignored = confd::ignored(cli, &file.confd);
    Ok(Config {
        template_engine,
        ignored,
        confdir,
        backend,
        prefix: crate::kv::keys::join("", &cli.prefix.clone().or(file.prefix).unwrap_or_default()),
        mode,
        noop,
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
        metrics_addr: cli.metrics_addr.clone().or(file.metrics_addr),
        log_format,
        detailed_exitcode: cli.detailed_exitcode,
        watch_confdir: !cli.no_watch_confdir && file.watch_confdir.unwrap_or(true),
        config_file: default_config_file,
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
mod tests;

/// Properties over any input: no config file text panics the parser.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_config_text_neither_panics(text in ".{0,80}") {
            let _ = parse_config(Path::new("conflux.toml"), &text);
        }

        #[test]
        fn any_value_of_a_known_key_neither_panics(key in "(backend|prefix|wait|log-level|nodes|interval|password)", value in ".{0,16}") {
            let text = format!("{key} = {value:?}\n");
            if let Ok(raw) = parse_config(Path::new("conflux.toml"), &text) {
                let _ = merge(&Cli::default(), raw);
            }
        }
    }
}
