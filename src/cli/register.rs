//! `conflux register`'s own flags, as given. The connection flags it shares with the
//! daemon are the top level's (global); [`crate::register`] validates both into a
//! `Registration`.
//!
//! Every flag also reads `CONFLUX_REGISTER_<NAME>`, so that a systemd template unit can
//! hold one registration per environment file (`packaging/conflux-register@.service`).

use std::path::PathBuf;
use std::time::Duration;

use clap::ArgGroup;

use crate::values::parse_duration;

const AFTER_HELP: &str = "\
The key is put under a lease of --ttl, kept alive every third of it, while the instance
is healthy: with --check-cmd, after --rise passing checks in a row, until --fall failing
ones in a row (HAProxy's defaults: 2 and 3); without it, while conflux register runs.
SIGTERM or SIGINT revoke the lease (the key is deleted at once) and exit 0; a killed
instance's key outlives it by the TTL at most. When etcd is away it retries with
backoff and registers again when etcd is back.

Example (a systemd unit per registration: packaging/conflux-register@.service):
  conflux register --node http://127.0.0.1:2379 --key /gateway/services/api/i1 \\
      --value '{\"addr\": \"127.0.0.1:9001\"}' --ttl 10s \\
      --check-cmd 'curl -fsS -m 1 http://127.0.0.1:9001/health' --check-interval 2s

Exit codes:
  0  stopped by SIGTERM or SIGINT (the lease was revoked)
  1  the key is held by another instance (another lease; see --replace), was taken
     over by one, or another conflux register for this key is running
  2  usage or configuration error: bad flag or config file, unreadable --value-file,
     unusable state directory, credentials or TLS settings etcd refuses";

#[derive(Debug, Clone, clap::Args)]
// Its own flags under their own heading: the connection flags it shares with the
// daemon (global) would otherwise interleave with them in `--help`.
#[command(
    after_help = AFTER_HELP,
    next_help_heading = "Registration",
    group(ArgGroup::new("value_source").required(true).args(["value", "value_file"]))
)]
pub struct RegisterArgs {
    /// The key to hold, written as given (--prefix does not apply), e.g.
    /// /gateway/services/api/i1
    #[arg(long, value_name = "KEY", env = "CONFLUX_REGISTER_KEY")]
    pub key: String,

    /// The value to put, e.g. '{"addr": "10.0.0.5:9001"}'
    #[arg(long, value_name = "VALUE", env = "CONFLUX_REGISTER_VALUE")]
    pub value: Option<String>,

    /// A file whose content (as is, read at start) is the value
    #[arg(long, value_name = "FILE", env = "CONFLUX_REGISTER_VALUE_FILE")]
    pub value_file: Option<PathBuf>,

    /// Time to live of the lease, in whole seconds: how long the key outlives an
    /// instance killed without a chance to revoke it
    #[arg(
        long,
        value_name = "DURATION",
        env = "CONFLUX_REGISTER_TTL",
        value_parser = parse_duration,
        default_value = "10s"
    )]
    pub ttl: Duration,

    /// Health check: a shell line (/bin/sh -c, its own process group) that exits 0 when
    /// the instance is healthy [default: none, registered while running]
    #[arg(long, value_name = "CMD", env = "CONFLUX_REGISTER_CHECK_CMD")]
    pub check_cmd: Option<String>,

    /// Time between the starts of two health checks
    #[arg(
        long,
        value_name = "DURATION",
        env = "CONFLUX_REGISTER_CHECK_INTERVAL",
        value_parser = parse_duration,
        default_value = "2s",
        requires = "check_cmd"
    )]
    pub check_interval: Duration,

    /// A check running longer fails, and its process group is killed [default: the
    /// check interval]
    #[arg(
        long,
        value_name = "DURATION",
        env = "CONFLUX_REGISTER_CHECK_TIMEOUT",
        value_parser = parse_duration,
        requires = "check_cmd"
    )]
    pub check_timeout: Option<Duration>,

    /// Passing checks in a row that make an unhealthy instance healthy (registered)
    #[arg(
        long,
        value_name = "N",
        env = "CONFLUX_REGISTER_RISE",
        default_value_t = 2,
        value_parser = clap::value_parser!(u32).range(1..),
        requires = "check_cmd"
    )]
    pub rise: u32,

    /// Failing checks in a row that make a healthy instance unhealthy (deregistered)
    #[arg(
        long,
        value_name = "N",
        env = "CONFLUX_REGISTER_FALL",
        default_value_t = 3,
        value_parser = clap::value_parser!(u32).range(1..),
        requires = "check_cmd"
    )]
    pub fall: u32,

    /// Take the key even when another instance holds it under its own lease (that
    /// instance then stops with exit code 1)
    #[arg(long, env = "CONFLUX_REGISTER_REPLACE")]
    pub replace: bool,
}
