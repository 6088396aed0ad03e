//! What can go wrong with templates, as types a caller can branch on, each keeping the
//! error it came from as its `source`. The Display texts are what an operator reads:
//! a render error names the template and, through Tera's report, the file, line and
//! column and (for a missing key) the key, with either engine. Producing them is the rest of
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
    #[error("{source}{}", .hint.as_ref().map(|h| format!("\n{h}")).unwrap_or_default())]
    Invalid {
        #[source]
        source: tera::Error,
        /// What the template's text suggests (Go syntax, a positional argument).
        hint: Option<String>,
    },
    /// gotmpl refused it as a Go template; its message names the template, line and
    /// column.
    #[error("{0}")]
    GoInvalid(#[source] gotmpl::TemplateError),
}

/// Where in a template something went wrong: 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The template file, relative to `templates/`.
    pub file: String,
    pub line: usize,
    pub column: usize,
}

/// A Go template's render that failed, with the position of the failing call where
/// it is known (see `go::locate`).
#[derive(Debug, thiserror::Error)]
#[error("{}{source}", at_position(.at))]
pub struct GoRenderError {
    pub at: Option<Position>,
    #[source]
    pub source: gotmpl::TemplateError,
}

fn at_position(at: &Option<Position>) -> String {
    at.as_ref()
        .map(|p| format!("{}:{}:{}: ", p.file, p.line, p.column))
        .unwrap_or_default()
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
    /// A Go template's render failed; the error names the file, line and column of
    /// the failing call when a function of ours failed.
    #[error("template {name}: {source}")]
    GoFailed {
        name: String,
        #[source]
        source: Box<GoRenderError>,
    },
    /// The template set was loaded without that engine (no resource used it).
    #[error("template {name}: the {engine} engine is not loaded")]
    EngineNotLoaded { name: String, engine: super::Engine },
}
