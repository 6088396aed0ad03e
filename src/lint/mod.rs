//! `conflux lint`: a confdir checked before it ships. The same loaders the daemon uses
//! (config, resources, templates) report what they refuse as findings with file, line
//! and column; with data, every output is rendered in memory (`data`), missing keys and
//! keys outside a resource's `keys` are reported, and `--check` runs the check commands
//! on the renders in a temporary directory. Nothing is written outside it, no
//! `reload_cmd` runs.
//!
//! Printing and exit codes are `main`'s; the findings are [`finding`]'s type.

mod data;
pub mod finding;

use std::path::PathBuf;

use crate::backend::Backend;
use crate::backend::file::FileBackend;
use crate::cli::{Cli, LintArgs};
use crate::confdir::{Confdir, ConfdirError};
use crate::config::{Config, ConfigError};

pub use finding::{Finding, Severity};

/// Everything lint found, in the order it looked.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether the confdir fails: any error, or any finding at all when `strict`.
    pub fn failed(&self, strict: bool) -> bool {
        self.findings
            .iter()
            .any(|f| strict || f.severity == Severity::Error)
    }
}

/// Lints the confdir `cli` names.
pub async fn run(cli: &Cli, args: &LintArgs) -> Report {
    let mut report = Report::default();
    let config = match Config::load(cli) {
        Ok(config) => config,
        Err(e) => {
            report.findings.push(config_finding(cli, e));
            return report;
        }
    };
    let confdir = match Confdir::load(&config) {
        Ok(confdir) => confdir,
        Err(e) => {
            report.findings.push(confdir_finding(&config, e));
            return report;
        }
    };
    static_findings(&config, &confdir, &mut report.findings);
    if let Some(snapshot) = data(&config, args, &confdir, &mut report.findings).await {
        data::render_all(
            &config,
            &confdir,
            &std::sync::Arc::new(snapshot),
            args.check,
            &mut report.findings,
        );
    }
    report
        .findings
        .sort_by(|a, b| (&a.path, a.line, a.column).cmp(&(&b.path, b.line, b.column)));
    report
}

/// What the loaders refused: resource files and templates.
fn static_findings(config: &Config, confdir: &Confdir, out: &mut Vec<Finding>) {
    for e in &confdir.errors {
        let text = e.problem.to_string();
        // A TOML syntax error carries its own position in its text.
        let (line, column) = match e.line {
            Some(line) => (Some(line), None),
            None => finding::line_column_in(&text),
        };
        out.push(Finding::error(&e.file, finding::without_position(&text)).at(line, column));
    }
    let used = confdir.broken_templates_in_use();
    for (name, engine, cause) in confdir.template_errors() {
        let path = config.templates_dir().join(name);
        let text = cause.to_string();
        let (line, column) = finding::position_in(&text, name).unzip();
        let message = format!("{engine} template: {}", finding::one_line(&text));
        let f = if used.contains(&name) {
            Finding::error(&path, message)
        } else {
            Finding::warning(&path, format!("{message} (no resource renders it)"))
        };
        out.push(f.at(line, column));
    }
}

/// The data to render with: the `--file`s, or a snapshot of the configured backend.
async fn data(
    config: &Config,
    args: &LintArgs,
    confdir: &Confdir,
    out: &mut Vec<Finding>,
) -> Option<crate::kv::Snapshot> {
    let selectors = confdir.selectors();
    let read = if !args.files.is_empty() {
        let backend = FileBackend::new(args.files.clone(), "*".into());
        backend.snapshot(&selectors).await
    } else if args.with_backend {
        match crate::run::connect_backend(config).await {
            Ok(backend) => backend.snapshot(&selectors).await,
            Err(e) => Err(e),
        }
    } else {
        return None;
    };
    match read {
        Ok(snapshot) => Some(snapshot),
        Err(e) => {
            let path = args
                .files
                .first()
                .cloned()
                .unwrap_or_else(|| PathBuf::from("backend"));
            out.push(Finding::error(&path, format!("cannot read the data: {e}")));
            None
        }
    }
}

fn config_finding(cli: &Cli, e: ConfigError) -> Finding {
    match e {
        ConfigError::File { path, message } => {
            let (line, column) = finding::line_column_in(&message);
            Finding::error(&path, finding::without_position(&message)).at(line, column)
        }
        other => {
            let path = cli
                .config_file
                .clone()
                .unwrap_or_else(|| PathBuf::from("conflux.toml"));
            Finding::error(&path, other)
        }
    }
}

fn confdir_finding(config: &Config, e: ConfdirError) -> Finding {
    let path = match &e {
        ConfdirError::Missing { path, .. } => path.clone(),
        ConfdirError::Unreadable { dir, .. } => dir.clone(),
        ConfdirError::SameDest { second, .. } => second.clone(),
        ConfdirError::Templates(_) => config.templates_dir(),
    };
    Finding::error(&path, e)
}
