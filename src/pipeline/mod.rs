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
mod steps;
#[cfg(test)]
mod tests;
mod unit;

pub use unit::overlay;

/// A file a resource renders, in memory: for `conflux lint`, which renders every
/// output without writing one.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub dest: std::path::PathBuf,
    pub content: String,
    /// The file's own check (a unit output's `check_cmd`).
    pub check: Option<crate::command::Command>,
}

/// The render step alone: every output of `resource` (fan-outs expanded) from `store`.
pub fn render_outputs(
    templates: &Templates,
    resource: &Resource,
    store: &Store,
) -> Result<Vec<Rendered>, ApplyError> {
    unit::render_plan(templates, resource, store)
}

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, info, info_span, warn};

use crate::kv::Snapshot;
use crate::outcome::{ApplyError, Done, FileChange, Outcome, Step, StepTime, Work};
use crate::resource::Resource;
use crate::scheduler::Applier;
use crate::state::{Applied, Durability, Record, StateDir, content_hash};
use crate::store::Store;
use crate::template::Templates;

use steps::{check, compare, min_keys, run_command, run_reload, stage, swap};

/// confd's `-noop`, `-sync-only` and `-keep-stage-file`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Render and compare only: never write a file nor run a command.
    pub noop: bool,
    /// Write files, but run neither `check_cmd` nor `reload_cmd`.
    pub sync_only: bool,
    /// Leave the stage file behind when it was not renamed into place.
    pub keep_stage_file: bool,
    /// How a unit's `check_cmd` sees the new set at the real paths.
    pub in_place: InPlace,
}

/// How a unit is checked in place, decided once at start ([`overlay::probe`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum InPlace {
    /// In a private mount namespace over an overlay of the new set: the live files
    /// never change before the check passes.
    Overlay,
    /// Swap, check, restore on failure: without the privilege to mount, the new set is
    /// live (but not reloaded) while the check runs, under the journal.
    #[default]
    SwapFirst,
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
    degraded: bool,
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
                let store = Store::cut(snapshot, &resource.prefix, &resource.selectors);
                min_keys(resource, &store)?;
                if resource.is_unit() {
                    return self.apply_unit(pass, &store, snapshot);
                }
                let content = pass.step(Step::Render, || self.render(resource, &store))?;
                self.install(pass, &content, revision)
            }
            Work::Reload if resource.is_unit() => self.reload_unit(pass),
            Work::Reload => self.reload_owed(pass),
        })
    }

    /// Before anything else at start: the swaps that a stopped process left half done
    /// are completed or undone (see the `unit` module). A noop run writes nothing.
    pub fn recover(&self, resources: &[Resource]) {
        if self.options.noop {
            return;
        }
        unit::recover(&self.state, resources);
        // Then the stage files a killed process left beside dests (none is in use:
        // each live one is locked), unless the operator keeps them to look at.
        if !self.options.keep_stage_file {
            files::remove_stale_stages_of(resources);
        }
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
            degraded: false,
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
            degraded: pass.degraded,
            elapsed: started.elapsed(),
        }
    }

    /// The template's output for the resource's keys.
    fn render(&self, resource: &Resource, store: &Store) -> Result<String, ApplyError> {
        self.templates
            .render_as(resource.engine, &resource.src, store)
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
        let reloads = self.options.runs_commands() && resource.reload.is_some();
        // Read before anything can fail: an outcome must say whether a reload is owed
        // even when this pass stops early (the scheduler then pays it first).
        let mut record = if reloads {
            self.state.load(resource)
        } else {
            Record::default()
        };
        let was_owed = record.reload_owed;
        pass.reload_owed = was_owed;
        let comparison = pass.step(Step::Compare, || compare(resource, content.as_bytes()))?;
        let changes = comparison.changes.clone();
        if !changes.any() {
            if was_owed {
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
                &resource.dest,
                &comparison.wanted,
                content.as_bytes(),
                self.options.keep_stage_file,
            )
        })?;
        if !self.options.sync_only {
            pass.step(Step::Check, || check(resource, &staged.path))?;
        }
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
        drop(staged);
        // A file without a reload has nothing to owe, and its dest is all there is to
        // compare with: no record (1,000 of them made a first one-shot run 30 % slower,
        // each a file created in the state directory between the fsyncs of the dests).
        if !reloads {
            return Ok(Done::Updated);
        }
        pass.reload_owed = true;
        record.files.insert(
            resource.dest.clone(),
            Applied {
                revision,
                sha256: content_hash(content.as_bytes()),
                stamp: None,
            },
        );
        pass.step(Step::Reload, || run_reload(resource))?;
        record.reload_owed = false;
        pass.reload_owed = false;
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
    fn save(&self, resource: &Resource, record: &Record, durability: Durability) {
        if let Err(e) = self.state.store(resource, record, durability) {
            warn!(resource = %resource.name, state_dir = %self.state.path().display(), cause = %e, "cannot record the resource's state");
        }
    }
}
