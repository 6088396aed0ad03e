//! What `/status` answers, as serializable types: the backend, the confdir, and each
//! resource's files, last outcome, applied revision, degradation, owed reload and next
//! retry. Kept up to date by [`super::Telemetry`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::outcome::{Done, Outcome, Work};

#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub backend: BackendStatus,
    pub confdir: ConfdirStatus,
    pub resources: BTreeMap<String, ResourceStatus>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct BackendStatus {
    pub name: String,
    pub endpoints: Vec<String>,
    pub connected: bool,
    pub revision: i64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ConfdirStatus {
    pub path: PathBuf,
    /// When the running resource set was loaded (RFC 3339).
    pub loaded_at: String,
    pub resources: usize,
    /// The last change to the confdir that was refused, and why; cleared when a valid
    /// set is loaded.
    pub last_refused: Option<Refused>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Refused {
    pub at: String,
    pub error: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ResourceStatus {
    pub files: Vec<PathBuf>,
    /// A pass of this resource has succeeded since the process started.
    pub applied_since_start: bool,
    /// The backend revision of the last successful apply.
    pub revision_applied: Option<i64>,
    /// The last pass failed, or a reload is owed.
    pub degraded: bool,
    pub reload_owed: bool,
    /// When the scheduler will try again (RFC 3339), after a failure.
    pub next_retry: Option<String>,
    pub last: Option<LastPass>,
}

/// The resource's last pass, from its outcome.
#[derive(Debug, Clone, Serialize)]
pub struct LastPass {
    pub at: String,
    pub work: &'static str,
    pub revision: i64,
    /// unchanged, updated, would_update, reloaded or failed.
    pub result: &'static str,
    /// The step that ended the pass.
    pub step: &'static str,
    pub error: Option<String>,
    /// Milliseconds each step that ran took.
    pub steps_ms: BTreeMap<&'static str, f64>,
    pub files_changed: Vec<PathBuf>,
}

impl LastPass {
    pub fn of(outcome: &Outcome, at: String) -> LastPass {
        LastPass {
            at,
            work: match outcome.work {
                Work::Apply => "apply",
                Work::Reload => "reload",
            },
            revision: outcome.revision,
            result: result_label(outcome),
            step: outcome.step.as_str(),
            error: outcome.result.as_ref().err().map(|e| e.to_string()),
            steps_ms: outcome
                .steps
                .iter()
                .map(|s| (s.step.as_str(), s.took.as_secs_f64() * 1000.0))
                .collect(),
            files_changed: outcome.files.iter().map(|f| f.path.clone()).collect(),
        }
    }
}

/// The `result` label of an outcome.
pub fn result_label(outcome: &Outcome) -> &'static str {
    match &outcome.result {
        Ok(Done::Unchanged) => "unchanged",
        Ok(Done::Updated) => "updated",
        Ok(Done::WouldUpdate) => "would_update",
        Ok(Done::Reloaded) => "reloaded",
        Err(_) => "failed",
    }
}
