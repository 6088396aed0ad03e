//! Tera 2 set-up for config files: autoescape off, every template under
//! `<confdir>/templates` loaded under its relative path (so `include`, `extends` and
//! components work across the directory), and confd's function set registered
//! (see [`functions`] and [`filters`]).
//!
//! Which store a render reads is decided by the caller; reading keys is [`Store`]'s job.

use std::path::Path;

use crate::store::Store;

/// Every template of a confdir, parsed once.
pub struct Templates {
    _private: (),
}

/// A template set that could not be loaded at all (missing or unreadable directory).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct LoadError {
    pub message: String,
}

/// A render that failed. Its Display names the template file, line and column, and
/// for a missing key the key.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RenderError {
    pub message: String,
}

impl Templates {
    /// Loads every file under `dir` (recursively, following symlinks). A template with
    /// a syntax error does not stop the others from loading: rendering it reports the
    /// error.
    pub fn load(dir: &Path) -> Result<Templates, LoadError> {
        let _ = dir;
        todo!("template helper")
    }

    /// Whether a template of that name exists (loaded or broken).
    pub fn contains(&self, name: &str) -> bool {
        let _ = name;
        todo!("template helper")
    }

    /// Renders template `name` with `store` behind the store functions, and the
    /// variable `revision` set to the store's revision.
    pub fn render(&self, name: &str, store: &Store) -> Result<String, RenderError> {
        let _ = (name, store);
        todo!("template helper")
    }
}
