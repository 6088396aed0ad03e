//! `conflux lint`'s own flags, as given. The confdir, config file and backend settings
//! are the top level's (global); [`crate::lint`] does the work.

use std::path::PathBuf;

const AFTER_HELP: &str = "\
Checks a confdir before it ships (CI, a package's ExecStartPre): conflux.toml, every
resource file (keys, modes, owners, commands, waits, outputs) and every template
(syntax, unknown functions and filters, missing src). With data (--file, or
--with-backend) it also renders every output in memory and reports missing keys and
keys a template reads that its resource's `keys` do not cover (the watch would never
re-render on them); --check runs each check_cmd on the rendered files in a temporary
directory. It writes nothing outside a temporary directory and runs no reload_cmd.

One finding per line on stdout: path:line:col: error|warning: message (line and column
where known), or one JSON object per line with --format json.

Examples:
  conflux lint --confdir /etc/conflux
  conflux lint --confdir . --file examples/gateway.yaml --check

Exit codes:
  0  no error (and no warning with --strict)
  1  at least one error (or warning, with --strict)
  2  usage error";

#[derive(Debug, Clone, Default, clap::Args)]
#[command(after_help = AFTER_HELP, next_help_heading = "Lint")]
pub struct LintArgs {
    /// Data to render with (YAML, JSON or TOML, as the file backend reads it);
    /// repeatable
    #[arg(long = "file", value_name = "DATA")]
    pub files: Vec<PathBuf>,

    /// Render with a snapshot of the configured backend (etcd) instead of --file
    #[arg(long, conflicts_with = "files")]
    pub with_backend: bool,

    /// Also run each check_cmd on the rendered files, in a temporary directory
    #[arg(long)]
    pub check: bool,

    /// Output: text (path:line:col: severity: message) or json (one object per line)
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub format: String,

    /// Warnings fail too (exit 1)
    #[arg(long)]
    pub strict: bool,
}
