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

/// Where in a template something went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The template file, relative to `templates/`.
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// As Go's text/template counts it (and confd prints it): bytes since the start
    /// of the line, from 0.
    pub column: usize,
}

/// The call a failed Go render failed in, as Go's text/template names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoCall {
    pub at: Position,
    /// The template executing: the file, or the `{{define}}` that holds the call.
    pub template: String,
    /// The command as written (`getv "/db/host"`); empty when the action is not a
    /// command (a `{{template}}`).
    pub call: String,
}

/// A Go template's render that failed. Its Display is Go's (and so confd's) when the
/// failing call is known (see `go::locate`): `app.tmpl:2:7: executing "app.tmpl" at
/// <getv "/db/host">: error calling getv: key does not exist: /db/host`.
#[derive(Debug, thiserror::Error)]
#[error("{}{}", go_context(.call), go_message(.source))]
pub struct GoRenderError {
    pub call: Option<GoCall>,
    #[source]
    pub source: gotmpl::TemplateError,
}

fn go_context(call: &Option<GoCall>) -> String {
    let Some(c) = call else {
        return String::new();
    };
    let at = if c.call.is_empty() {
        String::new()
    } else {
        format!(" at <{}>", c.call)
    };
    format!(
        "{}:{}:{}: executing {:?}{at}: ",
        c.at.file, c.at.line, c.at.column, c.template
    )
}

/// gotmpl's message without its position (given before it) and its
/// `execution error: ` label, as Go words it.
fn go_message(error: &gotmpl::TemplateError) -> String {
    match error {
        gotmpl::TemplateError::At { source, .. } => go_message(source),
        gotmpl::TemplateError::Exec(message) => message.clone(),
        other => other.to_string(),
    }
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
