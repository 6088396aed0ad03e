//! What can go wrong with templates, as types a caller can branch on, each keeping the
//! error it came from as its `source`. The Display texts are what an operator reads:
//! a render error names the template and, through Tera's report, the file, line and
//! column and (for a missing key) the key. Producing them is the rest of
//! [`super`]'s job.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// A template set that could not be loaded at all: `templates/` is missing, or a
/// directory in it cannot be listed.
#[derive(Debug, thiserror::Error)]
#[error("cannot load templates from {}: {source}", .dir.display())]
pub struct LoadError {
    pub dir: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Why one template did not load. The others still did; rendering this one reports
/// it.
#[derive(Debug, thiserror::Error)]
pub enum BrokenTemplate {
    /// A dangling link, an unreadable file, or one that is not UTF-8.
    #[error("cannot read {}: {source}", .path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Tera refused it: a syntax error, an unknown function or filter, a missing parent
    /// or include.
    #[error("{0}")]
    Invalid(#[source] tera::Error),
}

/// A render that failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The template exists but did not load. Shared with the template set, which keeps
    /// the error for every render of it (neither `io::Error` nor `tera::Error` clones).
    #[error("template {name} did not load: {source}")]
    NotLoaded {
        name: String,
        #[source]
        source: Arc<BrokenTemplate>,
    },
    #[error("template {name} not found in {}", .dir.display())]
    NotFound { name: String, dir: PathBuf },
    /// Tera's report names the file, line and column (of an included template too).
    /// Boxed: a `tera::Error` is large, and this error travels inside every caller's
    /// `Result` (clippy's `result_large_err` keeps them small).
    #[error("template {name}: {source}")]
    Failed {
        name: String,
        #[source]
        source: Box<tera::Error>,
    },
}
