//! One resource, one pass: render → compare → stage → check → swap → reload, returning
//! one [`Outcome`].
//!
//! Each step is a function named for it. The pass stops after `compare` when dest is
//! already what it should be (content, mode and owner), so an unchanged file is never
//! checked, rewritten or reloaded. The new file is staged next to the real dest (a
//! symlinked dest keeps its link; the file it points to is replaced), given its mode and
//! owner before any content is written, checked with `check_cmd`, renamed over dest,
//! and only then is `reload_cmd` run. A reload that is owed is recorded in the state
//! directory before the swap and cleared once the reload succeeds, so that a later pass
//! (in this process or the next) that finds dest already right still runs it.
//!
//! When to run a pass and what to do with its outcome (logs, retries, exit codes) are
//! the scheduler's and the caller's business. Everything here is synchronous; the
//! scheduler calls it from `spawn_blocking`.

mod compare;
mod files;
#[cfg(test)]
mod tests;

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, info_span, warn};

use crate::command::{Command, CommandError};
use crate::kv::Snapshot;
use crate::outcome::{ApplyError, Done, FileChange, Outcome, StageError, Step, StepTime, Work};
use crate::resource::Resource;
use crate::scheduler::Applier;
use crate::state::{Applied, Durability, StateDir, content_hash};
use crate::store::Store;
use crate::template::Templates;

use compare::{Comparison, Wanted};
use files::{
    StageFile, copy_in_place, create_exclusive, resolve_links, set_owner_and_mode, sync_parent,
    write_synced,
};

/// confd's `-noop`, `-sync-only` and `-keep-stage-file`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Render and compare only: never write a file nor run a command.
    pub noop: bool,
    /// Write files, but run neither `check_cmd` nor `reload_cmd`.
    pub sync_only: bool,
    /// Leave the stage file behind when it was not renamed into place.
    pub keep_stage_file: bool,
}

impl Options {
    fn runs_commands(&self) -> bool {
        !self.noop && !self.sync_only
    }
}

/// What every pass needs besides the resource and the data: the templates, the state
/// directory and the run's options.
pub struct Pipeline {
    templates: Arc<Templates>,
    state: StateDir,
    options: Options,
}

impl Applier for Pipeline {
    fn apply(&self, resource: &Resource, snapshot: &Arc<Snapshot>, work: Work) -> Outcome {
        self.run(resource, snapshot, work)
    }
}

/// The bookkeeping of one pass: the step under way and what each step took.
struct Pass<'a> {
    resource: &'a Resource,
    current: Cell<Step>,
    steps: Vec<StepTime>,
    files: Vec<FileChange>,
    diff: Option<String>,
    reload_owed: bool,
}

impl Pass<'_> {
    /// Runs `step`, timing it.
    fn step<T>(&mut self, step: Step, f: impl FnOnce() -> T) -> T {
        self.current.set(step);
        let started = Instant::now();
        let out = f();
        self.steps.push(StepTime {
            step,
            took: started.elapsed(),
        });
        out
    }
}

impl Pipeline {
    pub fn new(templates: Arc<Templates>, state: StateDir, options: Options) -> Self {
        Pipeline {
            templates,
            state,
            options,
        }
    }

    /// One pass of `work` for `resource` against `snapshot`. A panic in any step (a
    /// bug) is caught here and becomes a failed outcome naming the step.
    pub fn run(&self, resource: &Resource, snapshot: &Arc<Snapshot>, work: Work) -> Outcome {
        let revision = match work {
            Work::Apply => snapshot.revision,
            Work::Reload => 0,
        };
        self.pass(resource, work, revision, |pass| match work {
            Work::Apply => {
                let content = pass.step(Step::Render, || self.render(resource, snapshot))?;
                self.install(pass, &content, revision)
            }
            Work::Reload => self.reload_owed(pass),
        })
    }

    /// Everything after `render`, for content rendered elsewhere (tests, lint).
    pub fn run_rendered(&self, resource: &Resource, content: &str, revision: i64) -> Outcome {
        self.pass(resource, Work::Apply, revision, |pass| {
            self.install(pass, content, revision)
        })
    }

    fn pass(
        &self,
        resource: &Resource,
        work: Work,
        revision: i64,
        body: impl FnOnce(&mut Pass) -> Result<Done, ApplyError>,
    ) -> Outcome {
        let span = info_span!("apply", resource = %resource.name, revision);
        let _entered = span.enter();
        let started = Instant::now();
        let mut pass = Pass {
            resource,
            current: Cell::new(Step::Render),
            steps: Vec::new(),
            files: Vec::new(),
            diff: None,
            reload_owed: false,
        };
        let result =
            panic::catch_unwind(AssertUnwindSafe(|| body(&mut pass))).unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                Err(ApplyError::Panicked {
                    resource: resource.name.clone(),
                    message,
                })
            });
        let step = match &result {
            Err(e) => e.step().unwrap_or(pass.current.get()),
            Ok(_) => pass.current.get(),
        };
        Outcome {
            resource: resource.name.clone(),
            revision,
            work,
            step,
            steps: pass.steps,
            files: pass.files,
            diff: pass.diff,
            result,
            reload_owed: pass.reload_owed,
            elapsed: started.elapsed(),
        }
    }

    /// The template's output for this snapshot, cut to the resource's keys.
    fn render(&self, resource: &Resource, snapshot: &Arc<Snapshot>) -> Result<String, ApplyError> {
        let store = Store::cut(snapshot, &resource.prefix, &resource.selectors);
        self.templates
            .render(&resource.src, &store)
            .map_err(|source| ApplyError::Render {
                resource: resource.name.clone(),
                dest: resource.dest.clone(),
                source,
            })
    }

    /// Compare, and when dest differs stage, check, swap and reload (or only the diff,
    /// for noop). An unchanged dest whose reload is owed gets the reload alone.
    fn install(&self, pass: &mut Pass, content: &str, revision: i64) -> Result<Done, ApplyError> {
        let resource = pass.resource;
        let comparison = pass.step(Step::Compare, || compare(resource, content.as_bytes()))?;
        let changes = comparison.changes.clone();
        if !changes.any() {
            if self.options.runs_commands()
                && resource.reload.is_some()
                && self.state.load(resource).reload_owed
            {
                warn!(dest = %resource.dest.display(), "in sync, but its last reload failed: reloading again");
                return self.reload_owed(pass);
            }
            debug!(dest = %resource.dest.display(), "in sync");
            return Ok(Done::Unchanged);
        }
        pass.files.push(changes.clone());
        if self.options.noop {
            info!(dest = %resource.dest.display(), %changes, "out of sync; noop, not modified");
            pass.diff = Some(comparison.diff(content));
            return Ok(Done::WouldUpdate);
        }
        info!(dest = %resource.dest.display(), %changes, "out of sync");
        let mut staged = pass.step(Step::Stage, || {
            stage(
                resource,
                &comparison.wanted,
                content.as_bytes(),
                &self.options,
            )
        })?;
        if !self.options.sync_only {
            pass.step(Step::Check, || check(resource, &staged.path))?;
        }
        let reloads = self.options.runs_commands() && resource.reload.is_some();
        let mut record = self.state.load(resource);
        let was_owed = record.reload_owed;
        pass.reload_owed = was_owed;
        if reloads && !was_owed {
            // Before the swap, durably: a crash between swap and reload must leave
            // the debt behind for the next process.
            record.reload_owed = true;
            self.save(resource, &record, Durability::Synced);
        }
        let swapped = pass.step(Step::Swap, || {
            swap(
                resource,
                &mut staged,
                &comparison.wanted,
                content.as_bytes(),
            )
        });
        if let Err(e) = swapped {
            if reloads && !was_owed {
                record.reload_owed = false;
                self.save(resource, &record, Durability::Atomic);
            }
            return Err(e);
        }
        pass.reload_owed |= reloads;
        drop(staged);
        record.files.insert(
            resource.dest.clone(),
            Applied {
                revision,
                sha256: content_hash(content.as_bytes()),
            },
        );
        if reloads {
            pass.step(Step::Reload, || run_reload(resource))?;
            record.reload_owed = false;
            pass.reload_owed = false;
        }
        self.save(resource, &record, Durability::Atomic);
        Ok(Done::Updated)
    }

    /// Runs the owed reload alone and clears the debt. `{{.src}}` and `{{.dest}}` both
    /// stand for dest, where the new content now is.
    fn reload_owed(&self, pass: &mut Pass) -> Result<Done, ApplyError> {
        let resource = pass.resource;
        pass.reload_owed = true;
        pass.step(Step::Reload, || run_reload(resource))?;
        pass.reload_owed = false;
        let mut record = self.state.load(resource);
        if record.reload_owed {
            record.reload_owed = false;
            self.save(resource, &record, Durability::Atomic);
        }
        Ok(Done::Reloaded)
    }

    /// Writes the state record. A record that cannot be written costs only the memory
    /// across restarts (the scheduler still retries in-process), so it warns.
    fn save(&self, resource: &Resource, record: &crate::state::Record, durability: Durability) {
        if let Err(e) = self.state.store(resource, record, durability) {
            warn!(resource = %resource.name, state_dir = %self.state.path().display(), cause = %e, "cannot record the resource's state");
        }
    }
}

fn compare(resource: &Resource, content: &[u8]) -> Result<Comparison, ApplyError> {
    compare::compare(
        &resource.dest,
        resource.mode,
        resource.uid,
        resource.gid,
        content,
    )
    .map_err(|source| ApplyError::Compare {
        resource: resource.name.clone(),
        dest: resource.dest.clone(),
        source,
    })
}

/// Writes the new content to `.<destname>.<random>` in the real dest's directory:
/// created with O_EXCL and mode 0600, then given its owner and mode before any content
/// is written (so it is never readable by more than its final readers), then fsynced.
fn stage(
    resource: &Resource,
    wanted: &Wanted,
    content: &[u8],
    opts: &Options,
) -> Result<StageFile, ApplyError> {
    let fail = |source| ApplyError::Stage {
        resource: resource.name.clone(),
        dest: resource.dest.clone(),
        source,
    };
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| StageError::Io { what, path, source }
    };
    let target = resolve_links(&resource.dest)
        .map_err(io("cannot resolve", &resource.dest))
        .map_err(fail)?;
    let (file, path) = create_exclusive(&target).map_err(fail)?;
    let staged = StageFile {
        path,
        target,
        keep: opts.keep_stage_file,
        renamed: false,
    };
    set_owner_and_mode(&file, wanted)
        .map_err(io("cannot set owner and mode of", &staged.path))
        .map_err(fail)?;
    write_synced(&file, content)
        .map_err(io("cannot write", &staged.path))
        .map_err(fail)?;
    Ok(staged)
}

/// Runs `cmd`, logging its output at debug when it succeeds: on failure the output
/// travels in the error, for the operator.
fn run_command(cmd: &Command, src: &Path, dest: &Path, what: &str) -> CommandResult {
    let line = cmd.expand(src, dest);
    let result = cmd.run(src, dest);
    if let Ok(out) = &result {
        debug!(command = %line, output = %out.output, duration_ms = out.duration.as_millis() as u64, "{what} ran");
    }
    (line, result.map(|out| out.duration))
}

type CommandResult = (String, Result<Duration, CommandError>);

/// Runs `check_cmd` with `{{.src}}` = the stage file and `{{.dest}}` = dest.
fn check(resource: &Resource, staged: &Path) -> Result<(), ApplyError> {
    let Some(cmd) = &resource.check else {
        return Ok(());
    };
    let (command, result) = run_command(cmd, staged, &resource.dest, "check");
    result.map(|_| ()).map_err(|source| ApplyError::Check {
        resource: resource.name.clone(),
        dest: resource.dest.clone(),
        command,
        source,
    })
}

/// Renames the stage file over the real dest and fsyncs the directory so the rename
/// survives a crash. A bind-mounted dest cannot be renamed over (EBUSY): its content is
/// then overwritten in place, which is not atomic, with a warning.
fn swap(
    resource: &Resource,
    staged: &mut StageFile,
    wanted: &Wanted,
    content: &[u8],
) -> Result<(), ApplyError> {
    let fail = |source| ApplyError::Swap {
        resource: resource.name.clone(),
        dest: resource.dest.clone(),
        source,
    };
    match std::fs::rename(&staged.path, &staged.target) {
        Ok(()) => {
            staged.renamed = true;
            sync_parent(&staged.target);
            Ok(())
        }
        Err(err) if err.kind() == std::io::ErrorKind::ResourceBusy => {
            warn!(
                dest = %staged.target.display(),
                "dest cannot be renamed over (a bind mount?): overwriting it in place, not atomically"
            );
            copy_in_place(&staged.target, wanted, content).map_err(fail)
        }
        Err(err) => Err(fail(err)),
    }
}

/// Runs `reload_cmd`, if any, with `{{.src}}` and `{{.dest}}` both dest.
fn run_reload(resource: &Resource) -> Result<(), ApplyError> {
    let Some(cmd) = &resource.reload else {
        return Ok(());
    };
    let (command, result) = run_command(cmd, &resource.dest, &resource.dest, "reload");
    result.map(|_| ()).map_err(|source| ApplyError::Reload {
        resource: resource.name.clone(),
        dest: resource.dest.clone(),
        command,
        source,
    })
}
