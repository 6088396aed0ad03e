//! Template resources: `<confdir>/conf.d/**/*.toml` files, each with confd's
//! `[template]` table, parsed into `RawResource` and validated into [`Resource`].
//! Code that holds a `Resource` never re-checks it.

use std::path::PathBuf;

use crate::command::Command;

/// One validated template resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// The resource file's path relative to `conf.d` (`nginx.toml`, `app/db.toml`):
    /// the name in logs, errors and metrics.
    pub name: String,
    /// The resource file itself.
    pub file: PathBuf,
    /// The template, relative to `<confdir>/templates` (its name in the template set).
    pub src: String,
    /// The file to write; absolute.
    pub dest: PathBuf,
    /// The full key prefix (the global `--prefix` joined with the resource's), `/` when none.
    pub prefix: String,
    /// Absolute selectors: the prefix joined with each of `keys`.
    pub selectors: Vec<String>,
    /// The mode to give dest; `None` keeps the existing dest's mode (0644 for a new file).
    pub mode: Option<u32>,
    /// The owner to give dest; `None` keeps the existing dest's (ours for a new file).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub check: Option<Command>,
    pub reload: Option<Command>,
}
