//! What one pass of the pipeline did: the one record that the scheduler, the logs, the
//! exit code (and metrics, health and status) all read. A pass is either an apply
//! (render → compare → stage → check → swap → reload) or a reload alone (one owed since
//! an earlier swap).
//!
//! The record says which resource, at which revision, which step ended the pass, how
//! long each step that ran took, which files changed, and, for a failure, a typed error
//! that keeps its source. Producing it is the pipeline's job; deciding what follows
//! (a retry, an exit code) is the scheduler's and the caller's.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use tracing::{debug, error, info, warn};

use crate::command::CommandError;
use crate::template::RenderError;

/// What a pass was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Work {
    /// Render, compare, and when dest differs stage, check, swap and reload.
    Apply,
    /// Run the reload command alone: dest already holds the render whose reload failed.
    Reload,
}

/// The steps of a pass, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    Render,
    Compare,
    Stage,
    Check,
    Swap,
    Reload,
}

impl Step {
    pub const ALL: [Step; 6] = [
        Step::Render,
        Step::Compare,
        Step::Stage,
        Step::Check,
        Step::Swap,
        Step::Reload,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Render => "render",
            Step::Compare => "compare",
            Step::Stage => "stage",
            Step::Check => "check",
            Step::Swap => "swap",
            Step::Reload => "reload",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a pass that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// dest already had the rendered content, mode and owner.
    Unchanged,
    /// dest was replaced (and reloaded, when the resource has a reload command and
    /// commands run).
    Updated,
    /// noop: dest differs; [`Outcome::diff`] says how. Nothing was written.
    WouldUpdate,
    /// dest was already right, but a reload was owed (its last reload had failed,
    /// perhaps in an earlier process): the reload ran again and succeeded.
    Reloaded,
}

/// How one file differs from what the pass wanted (a file that changed, or would).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FileChange {
    pub path: PathBuf,
    pub created: bool,
    /// A file a fan-out wrote whose match is gone: removed with the rest of its unit.
    pub removed: bool,
    pub content: bool,
    pub mode: Option<(u32, u32)>,
    pub owner: Option<((u32, u32), (u32, u32))>,
}

impl FileChange {
    pub fn any(&self) -> bool {
        self.created || self.removed || self.content || self.mode.is_some() || self.owner.is_some()
    }
}

impl fmt::Display for FileChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.created {
            parts.push("new file".to_string());
        }
        if self.removed {
            parts.push("removed".to_string());
        }
        if self.content {
            parts.push("content".to_string());
        }
        if let Some((from, to)) = self.mode {
            parts.push(format!("mode {from:04o} -> {to:04o}"));
        }
        if let Some(((fu, fg), (tu, tg))) = self.owner {
            parts.push(format!("owner {fu}:{fg} -> {tu}:{tg}"));
        }
        f.write_str(&parts.join(", "))
    }
}

/// How long one step took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepTime {
    pub step: Step,
    pub took: Duration,
}

/// One pass of one resource.
#[derive(Debug)]
pub struct Outcome {
    pub resource: String,
    /// The revision of the snapshot the pass rendered (0 for a reload alone).
    pub revision: i64,
    pub work: Work,
    /// The step that ended the pass: the failed one, or the last one that ran.
    pub step: Step,
    /// Each step that ran, in order, with how long it took.
    pub steps: Vec<StepTime>,
    /// The files that changed (or, for noop, would).
    pub files: Vec<FileChange>,
    /// noop: a unified diff of what would change, for the caller to print.
    pub diff: Option<String>,
    pub result: Result<Done, ApplyError>,
    /// After this pass, dest holds a render whose reload has not succeeded.
    pub reload_owed: bool,
    /// The service refused the new files and the unit was rolled back to its previous
    /// set: the resource runs on older data until a later pass succeeds.
    pub degraded: bool,
    /// The whole pass.
    pub elapsed: Duration,
}

impl Outcome {
    /// A pass that ran no timed step and changed no file (a reload task that never
    /// started, a fake in tests).
    pub fn bare(
        resource: String,
        revision: i64,
        work: Work,
        step: Step,
        result: Result<Done, ApplyError>,
        reload_owed: bool,
    ) -> Outcome {
        Outcome {
            resource,
            revision,
            work,
            step,
            steps: Vec::new(),
            files: Vec::new(),
            diff: None,
            result,
            reload_owed,
            degraded: false,
            elapsed: Duration::ZERO,
        }
    }

    pub fn is_ok(&self) -> bool {
        self.result.is_ok()
    }

    /// dest was replaced in this pass.
    pub fn changed(&self) -> bool {
        matches!(self.result, Ok(Done::Updated))
            || (self.result.is_err() && self.step == Step::Reload && self.work == Work::Apply)
    }

    /// The step that failed, if the pass failed.
    pub fn failed_step(&self) -> Option<Step> {
        self.result.as_ref().err().map(|_| self.step)
    }

    /// How long `step` took, if it ran (summed, for a step that ran in parts: a unit's
    /// per-file checks and its check in place).
    pub fn took(&self, step: Step) -> Option<Duration> {
        self.steps
            .iter()
            .filter(|s| s.step == step)
            .map(|s| s.took)
            .reduce(|a, b| a + b)
    }

    /// The one place a pass is logged. `retry_in`: when the scheduler will try again.
    pub fn log(&self, retry_in: Option<Duration>) {
        let resource = self.resource.as_str();
        let revision = self.revision;
        let elapsed_ms = self.elapsed.as_millis() as u64;
        match (&self.result, self.work) {
            (Ok(Done::Reloaded), Work::Reload) => {
                info!(resource, elapsed_ms, "owed reload succeeded")
            }
            (Ok(done), _) => {
                let changed = matches!(done, Done::Updated | Done::Reloaded);
                if changed {
                    let ms = |step| self.took(step).map(|d| d.as_secs_f64() * 1e3);
                    let (render_ms, compare_ms, stage_ms) =
                        (ms(Step::Render), ms(Step::Compare), ms(Step::Stage));
                    let (check_ms, swap_ms, reload_ms) =
                        (ms(Step::Check), ms(Step::Swap), ms(Step::Reload));
                    let files = self.files.len();
                    for file in &self.files {
                        debug!(resource, dest = %file.path.display(), changes = %file, "changed");
                    }
                    info!(
                        resource,
                        revision,
                        changed,
                        files,
                        elapsed_ms,
                        render_ms,
                        compare_ms,
                        stage_ms,
                        check_ms,
                        swap_ms,
                        reload_ms,
                        "applied"
                    )
                } else {
                    info!(resource, revision, changed, elapsed_ms, "applied")
                }
            }
            (Err(cause), Work::Reload) => {
                warn!(resource, elapsed_ms, %cause, retry_in = ?retry_in, "owed reload failed")
            }
            (Err(cause), Work::Apply) if self.degraded => {
                error!(resource, revision, elapsed_ms, cause = %cause, retry_in = ?retry_in, degraded = true, "reload failed: rolled back to the previous files")
            }
            (Err(cause), Work::Apply) if self.step == Step::Reload => {
                error!(resource, revision, elapsed_ms, cause = %cause, retry_in = ?retry_in, "reload failed after swap")
            }
            (Err(cause), Work::Apply) => {
                error!(resource, revision, step = %self.step, elapsed_ms, cause = %cause, retry_in = ?retry_in, "apply failed")
            }
        }
    }
}

/// A failed pass, by step. Every variant names the resource and its dest.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{resource}: cannot render {}: {source}", .dest.display())]
    Render {
        resource: String,
        dest: PathBuf,
        #[source]
        source: RenderError,
    },
    #[error("{resource}: cannot read the current {}: {source}", .dest.display())]
    Compare {
        resource: String,
        dest: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{resource}: cannot stage a new {}: {source}", .dest.display())]
    Stage {
        resource: String,
        dest: PathBuf,
        #[source]
        source: StageError,
    },
    #[error(
        "{resource}: check of the new {} failed, the file was left untouched and not reloaded: `{command}`: {source}",
        .dest.display()
    )]
    Check {
        resource: String,
        dest: PathBuf,
        /// The line as run.
        command: String,
        #[source]
        source: CommandError,
    },
    #[error(
        "{resource}: cannot move the new file into {}: {source}; the file was left untouched",
        .dest.display()
    )]
    Swap {
        resource: String,
        dest: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{resource}: the new {} IS in place, but its reload failed: `{command}`: {source}",
        .dest.display()
    )]
    Reload {
        resource: String,
        dest: PathBuf,
        /// The line as run.
        command: String,
        #[source]
        source: CommandError,
    },
    /// `min_keys`: too few keys selected (a wiped prefix, an ACL mistake); nothing
    /// was rendered or written.
    #[error(
        "{resource}: only {seen} key(s) selected, fewer than min_keys = {min}: \
         not applied, the files and the service were left as they are"
    )]
    TooFewKeys {
        resource: String,
        seen: usize,
        min: usize,
    },
    /// Two matches of a unit's fan-outs (or a match and a fixed output) render the
    /// same file.
    #[error("{resource}: {} is rendered twice (by {first} and {second}); nothing was written", .dest.display())]
    SameDest {
        resource: String,
        dest: PathBuf,
        first: String,
        second: String,
    },
    /// The unit's reload failed and its previous files were put back.
    #[error(
        "{resource}: the reload of the new files failed: `{command}`: {source}; {}",
        restored_text(.restored)
    )]
    RolledBack {
        resource: String,
        /// The line as run.
        command: String,
        #[source]
        source: CommandError,
        /// How the rollback went: `Ok` when the previous files are back and reloaded.
        restored: Result<(), String>,
    },
    /// The pass panicked (a bug): the step it was in is the outcome's step.
    #[error("{resource}: the apply panicked: {message}")]
    Panicked { resource: String, message: String },
}

impl ApplyError {
    /// The step this error ends a pass in; `None` for a panic, whose step is known
    /// only to the pass.
    pub fn step(&self) -> Option<Step> {
        Some(match self {
            ApplyError::Render { .. } => Step::Render,
            ApplyError::Compare { .. } => Step::Compare,
            ApplyError::Stage { .. } => Step::Stage,
            ApplyError::Check { .. } => Step::Check,
            ApplyError::Swap { .. } => Step::Swap,
            ApplyError::Reload { .. } | ApplyError::RolledBack { .. } => Step::Reload,
            ApplyError::TooFewKeys { .. } | ApplyError::SameDest { .. } => Step::Render,
            ApplyError::Panicked { .. } => return None,
        })
    }
}

fn restored_text(restored: &Result<(), String>) -> String {
    match restored {
        Ok(()) => "the previous files were put back and reloaded".into(),
        Err(why) => format!("putting the previous files back failed too: {why}"),
    }
}

/// Why the stage file could not be made.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("directory {} does not exist (conflux never creates it)", .dir.display())]
    MissingDir { dir: PathBuf },
    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}
