//! The command line, with confd's flag names and meanings. Every long flag also works
//! with a single dash (`-onetime`, `-node=http://…`), as Go's `flag` package accepts,
//! so existing confd command lines and systemd units keep working.
//!
//! Flags are only parsed here; [`crate::config`] merges them with the config file and
//! the environment and validates the result.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;

const AFTER_HELP: &str = "\
Examples:
  # Render every resource once from etcd and exit (a script, a container entrypoint):
  conflux --onetime --backend etcdv3 --node http://127.0.0.1:2379 --confdir /etc/conflux

  # Watch etcd and re-apply resources as their keys change:
  conflux --watch --node http://10.0.0.1:2379 --node http://10.0.0.2:2379

  # Show what would change, as a unified diff on stdout, without touching anything:
  conflux --onetime --noop --backend file --file data.yaml --confdir .

  # confd's single-dash spelling works too:
  conflux -onetime -backend env -confdir /etc/conflux

Exit codes (--onetime):
  0  every resource was applied (or was already up to date)
  1  at least one resource failed (render, check, write or reload), or the backend
     could not be reached; the others were applied
  2  usage or configuration error: bad flag, bad config file, missing confdir or
     templates, credentials or TLS settings the backend refuses

Precedence: defaults < config file < CONFLUX_* environment < command line.";

/// Flags as given; `None` means "not given here", so that the config file and the
/// environment can fill it in (see [`crate::config`]).
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "conflux",
    version,
    about = "Render config files from etcd, files or environment variables; check, swap in and reload.",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// Root directory holding conf.d/ and templates/ [default: /etc/conflux]
    #[arg(long, value_name = "DIR", env = "CONFLUX_CONFDIR")]
    pub confdir: Option<PathBuf>,

    /// Config file [default: <confdir>/conflux.toml; absent is fine unless named]
    #[arg(long, value_name = "FILE", env = "CONFLUX_CONFIG_FILE")]
    pub config_file: Option<PathBuf>,

    /// Backend: etcdv3 (or its alias etcd), file, env [default: etcdv3]
    #[arg(long, value_name = "NAME", env = "CONFLUX_BACKEND")]
    pub backend: Option<String>,

    /// Backend endpoint; repeatable and comma-separated [default: http://127.0.0.1:2379]
    #[arg(
        long = "node",
        value_name = "URL",
        value_delimiter = ',',
        env = "CONFLUX_NODES"
    )]
    pub nodes: Vec<String>,

    /// Key prefix, joined before every resource's own prefix
    #[arg(long, value_name = "PREFIX", env = "CONFLUX_PREFIX")]
    pub prefix: Option<String>,

    /// Apply every resource once and exit
    #[arg(long, env = "CONFLUX_ONETIME")]
    pub onetime: bool,

    /// Watch the backend and re-apply resources as their keys change
    #[arg(long, env = "CONFLUX_WATCH")]
    pub watch: bool,

    /// Seconds between re-reads in interval mode (neither --watch nor --onetime) [default: 600]
    #[arg(long, value_name = "SECS", env = "CONFLUX_INTERVAL")]
    pub interval: Option<u64>,

    /// Write nothing, run nothing: print a unified diff of every change on stdout
    #[arg(long, env = "CONFLUX_NOOP")]
    pub noop: bool,

    /// Write files but run no check_cmd or reload_cmd
    #[arg(long, env = "CONFLUX_SYNC_ONLY")]
    pub sync_only: bool,

    /// Keep the staged file instead of deleting it
    #[arg(long, env = "CONFLUX_KEEP_STAGE_FILE")]
    pub keep_stage_file: bool,

    /// Log level: error, warn, info, debug, trace (confd's panic and fatal mean error) [default: info]
    #[arg(long, value_name = "LEVEL", env = "CONFLUX_LOG_LEVEL")]
    pub log_level: Option<String>,

    /// Data file or directory for the file backend; repeatable
    #[arg(
        long = "file",
        value_name = "PATH",
        env = "CONFLUX_FILE",
        value_delimiter = ','
    )]
    pub files: Vec<PathBuf>,

    /// Glob matched against file names inside --file directories [default: *]
    #[arg(long, value_name = "GLOB", env = "CONFLUX_FILTER")]
    pub filter: Option<String>,

    /// Username for the backend
    #[arg(long, value_name = "USER", env = "CONFLUX_USERNAME")]
    pub username: Option<String>,

    /// Password for the backend
    #[arg(long, value_name = "PASSWORD", env = "CONFLUX_PASSWORD")]
    pub password: Option<String>,

    /// Accepted for confd compatibility: credentials are used whenever given
    #[arg(long, env = "CONFLUX_BASIC_AUTH")]
    pub basic_auth: bool,

    /// Client certificate (PEM) for TLS to the backend
    #[arg(long, value_name = "FILE", env = "CONFLUX_CLIENT_CERT")]
    pub client_cert: Option<PathBuf>,

    /// Client key (PEM) for TLS to the backend
    #[arg(long, value_name = "FILE", env = "CONFLUX_CLIENT_KEY")]
    pub client_key: Option<PathBuf>,

    /// CA certificate(s) (PEM) to verify the backend with
    #[arg(long, value_name = "FILE", env = "CONFLUX_CLIENT_CAKEYS")]
    pub client_ca_keys: Option<PathBuf>,

    /// Coalescing window for resources without their own `wait`: `"<min>[:<max>]"`
    /// [default: 100ms:1s for a resource with a reload_cmd, 0 without]
    #[arg(long, value_name = "MIN[:MAX]", env = "CONFLUX_WAIT")]
    pub wait: Option<String>,

    /// Where conflux keeps its own state (owed reloads, what it last wrote); created
    /// with mode 0700 [default: /var/lib/conflux]
    #[arg(long, value_name = "DIR", env = "CONFLUX_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

/// Every long flag name, and whether it takes a value, for the single-dash rewrite.
fn long_flags() -> Vec<(String, bool)> {
    use clap::CommandFactory;
    let mut flags: Vec<(String, bool)> = Cli::command()
        .get_arguments()
        .filter_map(|a| {
            a.get_long()
                .map(|l| (l.to_string(), a.get_action().takes_values()))
        })
        .collect();
    flags.extend([("help".to_string(), false), ("version".to_string(), false)]);
    flags
}

/// Rewrites confd's single-dash long flags (`-onetime`, `-node=x`) to their double-dash
/// form. Only known flag names are rewritten, and never the value of a flag that takes
/// one (`--prefix -onetime` keeps its prefix), so an unknown `-bogus` still fails as
/// usage.
pub fn normalize_args<I>(args: I) -> Vec<OsString>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    let flags = long_flags();
    let mut out = Vec::new();
    let mut value_expected = false;
    let mut rest_are_values = false;
    for arg in args.into_iter().map(Into::into) {
        let text = arg.to_str().unwrap_or("");
        if rest_are_values || std::mem::take(&mut value_expected) {
            out.push(arg);
            continue;
        }
        if text == "--" {
            rest_are_values = true;
            out.push(arg);
            continue;
        }
        let Some((name, inline_value)) = long_flag_name(text) else {
            out.push(arg);
            continue;
        };
        match flags.iter().find(|(n, _)| n == name) {
            Some((_, takes_value)) => {
                value_expected = *takes_value && !inline_value;
                if text.starts_with("--") {
                    out.push(arg);
                } else {
                    out.push(OsString::from(format!("-{text}")));
                }
            }
            None => out.push(arg),
        }
    }
    out
}

/// The flag name of `-name`, `--name`, `-name=v` or `--name=v`, and whether a value
/// was given inline.
fn long_flag_name(arg: &str) -> Option<(&str, bool)> {
    let body = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'))?;
    if body.is_empty() || body.starts_with('-') {
        return None;
    }
    Some(match body.split_once('=') {
        Some((name, _)) => (name, true),
        None => (body, false),
    })
}

/// Parses the process's arguments (after the single-dash rewrite).
pub fn parse_from<I>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    Cli::try_parse_from(normalize_args(args))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        parse_from(std::iter::once("conflux").chain(args.iter().copied())).expect("parses")
    }

    #[test]
    fn single_dash_long_flags_work() {
        let cli = parse(&[
            "-onetime",
            "-node=http://127.0.0.1:2379",
            "-backend",
            "env",
            "-sync-only",
        ]);
        assert!(cli.onetime);
        assert!(cli.sync_only);
        assert_eq!(cli.nodes, vec!["http://127.0.0.1:2379"]);
        assert_eq!(cli.backend.as_deref(), Some("env"));
    }

    #[test]
    fn nodes_repeat_and_split_on_commas() {
        let cli = parse(&["--node", "a:1,b:2", "-node", "c:3"]);
        assert_eq!(cli.nodes, vec!["a:1", "b:2", "c:3"]);
    }

    #[test]
    fn values_that_look_like_flags_are_left_alone() {
        let args = normalize_args(["conflux", "--prefix", "-onetime", "-watch", "-", "-5"]);
        assert_eq!(
            args,
            ["conflux", "--prefix", "-onetime", "--watch", "-", "-5"].map(OsString::from)
        );
    }

    #[test]
    fn unknown_single_dash_flag_is_a_usage_error() {
        let err = parse_from(["conflux", "-bogus"]).expect_err("rejected");
        assert_eq!(err.exit_code(), 2);
    }
}
