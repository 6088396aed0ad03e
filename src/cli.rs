//! The command line, with confd's flag names and meanings. Every long flag also works
//! with a single dash (`-onetime`, `-node=http://…`), as Go's `flag` package accepts,
//! so existing confd command lines and systemd units keep working. confd's flags are
//! all accepted: those of backends conflux lacks are collected in [`ForeignFlags`]
//! for one warning; an unknown one is refused with its name as typed. Started as
//! `confd` (`argv[0]`), [`Cli::as_confd`] asks for confd's defaults.
//!
//! Without a subcommand, conflux is the confd-compatible daemon (or one-shot run).
//! A subcommand (`conflux register`) is another tool sharing the connection flags
//! (`--node`, credentials, TLS, `--config-file`, `--log-level`, `--state-dir`), which
//! are `global`: they may come before or after its name. A flag of the daemon alone
//! (`--watch`) next to a subcommand is a usage error rather than silently ignored.
//! A new subcommand is one more variant of [`Subcommand`] with its own `Args` struct;
//! the single-dash rewrite (`normalize`) learns its flags from clap by itself.
//!
//! Flags are only parsed here; [`crate::config`] merges them with the config file and
//! the environment and validates the result.
//! The man pages and shell completions are generated from this same definition
//! ([`docs`]), so they say what `--help` says.

pub mod docs;
mod lint;
mod normalize;
mod register;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser};

pub use lint::LintArgs;
pub use normalize::normalize_args;
pub use register::RegisterArgs;

mod confd;

pub use confd::ForeignFlags;
use confd::unknown_flag;

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

  # confd's Go templates, unchanged (or install conflux as `confd`: confdir
  # /etc/confd, config file /etc/confd/confd.toml and the Go engine by default):
  conflux --onetime --template-engine go --confdir /etc/confd --config-file /etc/confd/confd.toml

Exit codes (--onetime):
  0  every resource was applied (or was already up to date)
  1  at least one resource failed (render, check, write or reload), or the backend
     could not be reached; the others were applied
  2  usage or configuration error: bad flag, bad config file, missing confdir or
     templates, credentials or TLS settings the backend refuses
  3  with --noop --detailed-exitcode: changes are pending (0 then means none)

Precedence: defaults < config file < CONFLUX_* environment < command line.

Register this instance in etcd while it is healthy (see `conflux register --help`):
  conflux register --key /gateway/services/api/i1 --value '{\"addr\": \"127.0.0.1:9001\"}' \\
      --check-cmd 'curl -fsS -m 1 http://127.0.0.1:9001/health'";

/// `conflux --version`: the version and the commit it was built from (`build.rs`:
/// `unknown` when built outside a git checkout), as confd's `-version` names its Git SHA.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("CONFLUX_BUILD_COMMIT"),
    ")"
);

/// Flags as given; `None` means "not given here", so that the config file and the
/// environment can fill it in (see [`crate::config`]).
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "conflux",
    version = VERSION,
    about = "Render config files from etcd, files or environment variables; check, swap in and reload.",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// Root directory holding conf.d/ and templates/ [default: /etc/conflux]
    #[arg(long, value_name = "DIR", env = "CONFLUX_CONFDIR", global = true)]
    pub confdir: Option<PathBuf>,

    /// Config file [default: <confdir>/conflux.toml; absent is fine unless named]
    #[arg(long, value_name = "FILE", env = "CONFLUX_CONFIG_FILE", global = true)]
    pub config_file: Option<PathBuf>,

    /// Backend: etcdv3 (or its alias etcd), file, env [default: etcdv3]
    #[arg(long, value_name = "NAME", env = "CONFLUX_BACKEND")]
    pub backend: Option<String>,

    /// Backend endpoint; repeatable and comma-separated [default: http://127.0.0.1:2379]
    #[arg(
        long = "node",
        value_name = "URL",
        value_delimiter = ',',
        env = "CONFLUX_NODES",
        global = true
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
    #[arg(long, value_name = "LEVEL", env = "CONFLUX_LOG_LEVEL", global = true)]
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
    #[arg(long, value_name = "USER", env = "CONFLUX_USERNAME", global = true)]
    pub username: Option<String>,

    /// Password for the backend
    #[arg(long, value_name = "PASSWORD", env = "CONFLUX_PASSWORD", global = true)]
    pub password: Option<String>,

    /// Accepted for confd compatibility: credentials are used whenever given
    #[arg(long, env = "CONFLUX_BASIC_AUTH", global = true)]
    pub basic_auth: bool,

    /// Client certificate (PEM) for TLS to the backend
    #[arg(long, value_name = "FILE", env = "CONFLUX_CLIENT_CERT", global = true)]
    pub client_cert: Option<PathBuf>,

    /// Client key (PEM) for TLS to the backend
    #[arg(long, value_name = "FILE", env = "CONFLUX_CLIENT_KEY", global = true)]
    pub client_key: Option<PathBuf>,

    /// CA certificate(s) (PEM) to verify the backend with
    #[arg(
        long,
        value_name = "FILE",
        env = "CONFLUX_CLIENT_CAKEYS",
        global = true
    )]
    pub client_ca_keys: Option<PathBuf>,

    /// Coalescing window for resources without their own `wait`: `"<min>[:<max>]"`
    /// [default: 100ms:1s for a resource with a reload_cmd, 0 without]
    #[arg(long, value_name = "MIN[:MAX]", env = "CONFLUX_WAIT")]
    pub wait: Option<String>,

    /// Where conflux keeps its own state (owed reloads, what it last wrote); created
    /// with mode 0700 [default: /var/lib/conflux]
    #[arg(long, value_name = "DIR", env = "CONFLUX_STATE_DIR", global = true)]
    pub state_dir: Option<PathBuf>,

    /// Serve /metrics, /health, /ready and /status over HTTP on this address (e.g.
    /// 127.0.0.1:9100) [default: off]
    #[arg(long, value_name = "ADDR", env = "CONFLUX_METRICS_ADDR")]
    pub metrics_addr: Option<String>,

    /// Log format on stderr: text or json (one object per line) [default: text]
    #[arg(long, value_name = "FORMAT", env = "CONFLUX_LOG_FORMAT", global = true)]
    pub log_format: Option<String>,

    /// With --noop: exit 0 when nothing would change, 3 when changes are pending, 1 on
    /// errors (as terraform plan -detailed-exitcode)
    #[arg(long, env = "CONFLUX_DETAILED_EXITCODE")]
    pub detailed_exitcode: bool,

    /// In --watch mode, do not reload conf.d and templates when they change on disk
    /// (SIGHUP still does)
    #[arg(long, env = "CONFLUX_NO_WATCH_CONFDIR")]
    pub no_watch_confdir: bool,

    /// Template language of resources that set no `engine`: tera, or go (confd's Go
    /// text/template) [default: tera; go when started as confd]
    #[arg(long, value_name = "ENGINE", env = "CONFLUX_TEMPLATE_ENGINE")]
    pub template_engine: Option<String>,

    /// Scheme of etcd endpoints found through DNS SRV records: http or https [default: http]
    #[arg(long, value_name = "SCHEME", env = "CONFLUX_SCHEME", global = true)]
    pub scheme: Option<String>,

    /// Find the etcd endpoints in the SRV record `_<backend>._tcp.<DOMAIN>.`
    #[arg(long, value_name = "DOMAIN", env = "CONFLUX_SRV_DOMAIN", global = true)]
    pub srv_domain: Option<String>,

    /// Find the etcd endpoints in this SRV record (`_etcd-client._tcp.example.com`)
    #[arg(long, value_name = "RECORD", env = "CONFLUX_SRV_RECORD", global = true)]
    pub srv_record: Option<String>,

    /// Accepted for confd compatibility; certificates are still verified (confd
    /// accepts this flag and verifies them too)
    #[arg(long, env = "CONFLUX_CLIENT_INSECURE", global = true)]
    pub client_insecure: bool,

    /// Settings of confd backends conflux does not have (vault, dynamodb, redis,
    /// consul): accepted, with a warning, and ignored.
    #[command(flatten)]
    pub foreign: ForeignFlags,

    /// Started under the name `confd`: confd's defaults (confdir /etc/confd, config
    /// file /etc/confd/confd.toml, engine go). Set from `argv[0]`, not a flag.
    #[arg(skip)]
    pub as_confd: bool,

    /// Another tool instead of the daemon; none runs the daemon (or `--onetime`).
    #[command(subcommand)]
    pub command: Option<Subcommand>,
}

/// The tools besides the daemon.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Subcommand {
    /// Hold a key in etcd under a lease while this instance is healthy (the writing half
    /// of service discovery); revoke it on SIGTERM
    Register(RegisterArgs),
    /// Check a confdir (conflux.toml, resources, templates; with data, every render and
    /// the keys it reads) and report one finding per line; writes nothing
    Lint(LintArgs),
}

/// Parses the process's arguments (after the single-dash rewrite). Started as
/// `confd` (the file name of `argv[0]`), the result asks for confd's defaults.
pub fn parse_from<I>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    let args = normalize_args(args);
    if let Some(flag) = unknown_flag(&args) {
        return Err(Cli::command().error(
            clap::error::ErrorKind::UnknownArgument,
            format!("unknown flag {flag}"),
        ));
    }
    let as_confd = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .is_some_and(|name| name == "confd");
    let mut command = Cli::command();
    let matches = command.try_get_matches_from_mut(args)?;
    refuse_daemon_flags(&mut command, &matches)?;
    let mut cli = Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut command))?;
    cli.as_confd = as_confd;
    Ok(cli)
}

/// A daemon flag given on the command line next to a subcommand (`conflux --watch
/// register`) is refused: it would be ignored, and the operator meant something by it.
/// The environment is not held against it (`CONFLUX_WATCH` set for the daemon's unit
/// must not break a register started from the same environment).
fn refuse_daemon_flags(
    command: &mut clap::Command,
    matches: &clap::ArgMatches,
) -> Result<(), clap::Error> {
    let Some(name) = matches.subcommand_name() else {
        return Ok(());
    };
    let given = command.get_arguments().find(|arg| {
        !arg.is_global_set()
            && matches.value_source(arg.get_id().as_str())
                == Some(clap::parser::ValueSource::CommandLine)
    });
    match given.and_then(|arg| arg.get_long()) {
        Some(long) => {
            let message = format!("--{long} is a flag of the daemon, not of `conflux {name}`");
            Err(command.error(clap::error::ErrorKind::ArgumentConflict, message))
        }
        None => Ok(()),
    }
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
    fn unknown_single_dash_flag_is_a_usage_error_naming_it() {
        let err = parse_from(["conflux", "-bogus"]).expect_err("rejected");
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("unknown flag -bogus"), "{err}");
        let err = parse_from(["conflux", "-onetime", "-bogus=1"]).expect_err("rejected");
        assert!(err.to_string().contains("unknown flag -bogus"), "{err}");
        let err = parse_from(["conflux", "--bogus"]).expect_err("rejected");
        assert!(err.to_string().contains("--bogus"), "{err}");
        // After a bare word (a subcommand), flags are the subcommand's to judge.
        assert_eq!(
            unknown_flag(&normalize_args(["conflux", "-onetime", "sub", "-x-y"])),
            None
        );
    }

    #[test]
    fn confd_flags_are_accepted_in_single_dash_form() {
        let cli = parse(&[
            "-scheme",
            "https",
            "-srv-domain",
            "example.com",
            "-srv-record=_etcd._tcp.example.com.",
            "-client-insecure",
            "-auth-type",
            "app-id",
            "-table",
            "t",
            "-template-engine",
            "go",
        ]);
        assert_eq!(cli.scheme.as_deref(), Some("https"));
        assert_eq!(cli.srv_domain.as_deref(), Some("example.com"));
        assert_eq!(cli.srv_record.as_deref(), Some("_etcd._tcp.example.com."));
        assert!(cli.client_insecure);
        assert_eq!(cli.foreign.given(), vec!["-auth-type", "-table"]);
        assert_eq!(cli.template_engine.as_deref(), Some("go"));
        assert!(!cli.as_confd);
    }

    #[test]
    fn started_as_confd() {
        let cli = parse_from(["/usr/local/bin/confd", "-onetime"]).expect("parses");
        assert!(cli.as_confd);
        assert!(!parse_from(["confd-x"]).expect("parses").as_confd);
    }

    fn register(cli: Cli) -> (Cli, RegisterArgs) {
        let mut cli = cli;
        match cli.command.take() {
            Some(Subcommand::Register(args)) => (cli, args),
            other => panic!("not register: {other:?}"),
        }
    }

    #[test]
    fn connection_flags_work_before_and_after_the_subcommand() {
        let (cli, args) = register(parse(&[
            "--node",
            "http://a:2379",
            "register",
            "--username",
            "u",
            "--password",
            "p",
            "--key",
            "/svc/a",
            "--value",
            "x",
        ]));
        assert_eq!(cli.nodes, vec!["http://a:2379"]);
        assert_eq!(cli.username.as_deref(), Some("u"));
        assert_eq!(args.key, "/svc/a");
        assert_eq!(args.value.as_deref(), Some("x"));
    }

    #[test]
    fn register_flags_take_a_single_dash_too() {
        let (cli, args) = register(parse(&[
            "-confdir", "/c", "register", "-key", "/k", "-value=v", "-ttl", "30s", "-node", "n:1",
            "-replace",
        ]));
        assert_eq!(cli.confdir.as_deref(), Some(std::path::Path::new("/c")));
        assert_eq!(cli.nodes, vec!["n:1"]);
        assert_eq!(args.ttl, std::time::Duration::from_secs(30));
        assert!(args.replace);
    }

    #[test]
    fn a_daemon_flag_next_to_a_subcommand_is_a_usage_error() {
        let err = parse_from([
            "conflux", "--watch", "register", "--key", "/k", "--value", "v",
        ])
        .expect_err("rejected");
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string().contains("--watch is a flag of the daemon"),
            "{err}"
        );
    }

    #[test]
    fn lint_takes_its_flags_and_the_global_ones() {
        let mut cli = parse(&[
            "-confdir", "/c", "lint", "--file", "d.yaml", "-check", "--format", "json",
        ]);
        let Some(Subcommand::Lint(args)) = cli.command.take() else {
            panic!("lint");
        };
        assert_eq!(cli.confdir.as_deref(), Some(std::path::Path::new("/c")));
        assert_eq!(args.files, vec![std::path::PathBuf::from("d.yaml")]);
        assert!(args.check && !args.strict);
        assert_eq!(args.format, "json");
    }

    #[test]
    fn without_a_subcommand_nothing_changes() {
        let cli = parse(&["--watch", "--state-dir", "/s"]);
        assert!(cli.command.is_none());
        assert!(cli.watch);
    }
}
