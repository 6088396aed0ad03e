//! Check and reload commands as types: a shell line with `{{.src}}` and `{{.dest}}`
//! placeholders, run with `/bin/sh -c` in its own process group, with a timeout after
//! which the whole group is killed, and its output captured for the log.
//!
//! When to run a command is the pipeline's decision, not this module's.

use std::path::Path;
use std::time::Duration;

/// The default for `check_timeout` and `reload_timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// A `check_cmd` or `reload_cmd` as written in a resource file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The shell line, with `{{.src}}` / `{{.dest}}` not yet substituted.
    pub line: String,
    pub timeout: Duration,
}

impl Command {
    pub fn new(line: impl Into<String>, timeout: Duration) -> Self {
        Command { line: line.into(), timeout }
    }

    /// The shell line with `{{.src}}` (the staged file) and `{{.dest}}` substituted.
    pub fn expand(&self, src: &Path, dest: &Path) -> String {
        let _ = (src, dest);
        todo!("command helper")
    }
}
