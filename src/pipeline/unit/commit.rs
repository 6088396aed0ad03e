//! Putting a unit's changes in place: stage, check (each file's own check, then the
//! unit's check over the whole set in place), swap under the journal, one reload, and
//! a rollback when `on_reload_failure = "rollback"` and the service refuses the set.
//! Also the replay of a journal a stopped process left ([`recover`]).
//!
//! The order of the durable writes is the point: the stage files and the previous
//! copies are fsynced before the journal, the journal before the first rename, and
//! the new record before the journal goes.

use std::path::Path;

use tracing::{error, info, warn};

use super::overlay::{Overlay, Upper};
use super::plan::Planned;
use super::txn::{self, Staged};
use super::{Change, Pass, Pipeline};
use crate::outcome::{ApplyError, Done, Step};
use crate::pipeline::{InPlace, run_command, run_reload};
use crate::resource::{OnReloadFailure, Resource};
use crate::state::{Durability, Journal, Phase, Record, Stamp, StateDir};

impl Pipeline {
    /// Stage, check, swap and reload `changes`; `before` and `after` are the records of
    /// the set now live and of the new one.
    pub(super) fn commit(
        &self,
        pass: &mut Pass,
        plan: &[Planned],
        changes: &[Change],
        before: Record,
        after: Record,
    ) -> Result<Done, ApplyError> {
        let resource = pass.resource;
        let contents: Vec<&[u8]> = plan.iter().map(|p| p.content.as_bytes()).collect();
        let keep = self.options.keep_stage_file;
        let checks = !self.options.sync_only;
        let in_place = checks && resource.check.is_some();
        let durable = resource.on_reload_failure == OnReloadFailure::Rollback
            || (in_place && self.options.in_place != InPlace::Overlay);
        let mut staged = pass.step(Step::Stage, || {
            txn::stage(resource, &self.state, changes, &contents, keep, durable)
        })?;
        let mut journal = Journal {
            phase: Phase::Checked,
            entries: staged.entries.clone(),
            after,
            before,
        };
        if checks {
            pass.step(Step::Check, || check_each(resource, plan, changes, &staged))?;
        }
        let overlay = match (in_place, self.options.in_place) {
            (true, InPlace::Overlay) => match self.overlay(resource, plan, changes) {
                Ok(overlay) => Some(overlay),
                Err(e) => {
                    warn!(resource = %resource.name, cause = %e, "cannot check in an overlay: swap, check, restore instead");
                    None
                }
            },
            _ => None,
        };
        if in_place && overlay.is_none() {
            // Swap, check, restore: the new set is live (not reloaded) during the check.
            if !durable {
                pass.step(Step::Stage, || txn::make_durable(resource, &staged))?;
            }
            journal.phase = Phase::Trial;
            self.swap(pass, &journal, &mut staged)?;
            if let Err(e) = pass.step(Step::Check, || check_unit(resource, None)) {
                self.undo(resource, &journal);
                return Err(e);
            }
            journal.phase = Phase::Checked;
            self.write_journal(resource, &journal)?;
        } else {
            if let Some(overlay) = overlay {
                pass.step(Step::Check, || check_unit(resource, Some(overlay)))?;
            }
            self.swap(pass, &journal, &mut staged)?;
        }
        stamp(&mut journal.after, changes);
        self.finish(pass, journal)
    }

    /// The overlay layers of the whole new set, prepared in the state directory.
    fn overlay(
        &self,
        resource: &Resource,
        plan: &[Planned],
        changes: &[Change],
    ) -> Result<Overlay, String> {
        let root = self
            .state
            .fresh_overlay_dir(resource)
            .map_err(|e| e.to_string())?;
        let files: Vec<_> = changes
            .iter()
            .map(|c| {
                let upper = c.new.as_ref().map(|(i, wanted)| Upper {
                    content: plan[*i].content.as_bytes(),
                    mode: wanted.mode,
                    uid: wanted.uid,
                    gid: wanted.gid,
                });
                (c.target.clone(), upper)
            })
            .collect();
        Overlay::prepare(&root, &files).map_err(|e| e.to_string())
    }

    /// Journals the swap (durably), then swaps the staged set in.
    fn swap(
        &self,
        pass: &mut Pass,
        journal: &Journal,
        staged: &mut Staged,
    ) -> Result<(), ApplyError> {
        let resource = pass.resource;
        pass.step(Step::Swap, || {
            self.write_journal(resource, journal)?;
            let swapped = txn::swap(resource, staged);
            if swapped.is_err() {
                self.state.clear_journal(resource);
            }
            swapped
        })
    }

    fn write_journal(&self, resource: &Resource, journal: &Journal) -> Result<(), ApplyError> {
        self.state
            .write_journal(resource, journal)
            .map_err(|source| ApplyError::Swap {
                resource: resource.name.clone(),
                dest: self.state.resource_dir(resource).join("journal.json"),
                source,
            })
    }

    /// After the swap: one reload, then the new record and the journal's end.
    fn finish(&self, pass: &mut Pass, journal: Journal) -> Result<Done, ApplyError> {
        let resource = pass.resource;
        // The manifest must survive a crash once the journal is gone (or a file the
        // unit created would never be removed); hashes and stamps need not.
        let durability = if journal.after.owned != journal.before.owned {
            Durability::Synced
        } else {
            Durability::Atomic
        };
        if !(self.options.runs_commands() && resource.reload.is_some()) {
            self.save(resource, &journal.after, durability);
            self.state.clear_journal(resource);
            return Ok(Done::Updated);
        }
        pass.reload_owed = true;
        match pass.step(Step::Reload, || run_reload(resource)) {
            Ok(()) => {
                pass.reload_owed = false;
                self.save(resource, &journal.after, durability);
                self.state.clear_journal(resource);
                Ok(Done::Updated)
            }
            Err(e) => self.reload_failed(pass, journal, e),
        }
    }

    /// The service refused the new set: keep it and owe the reload (`retry`), or put
    /// the previous set back and reload that (`rollback`).
    fn reload_failed(
        &self,
        pass: &mut Pass,
        mut journal: Journal,
        failed: ApplyError,
    ) -> Result<Done, ApplyError> {
        let resource = pass.resource;
        if resource.on_reload_failure == OnReloadFailure::Retry {
            journal.after.reload_owed = true;
            self.save(resource, &journal.after, Durability::Synced);
            self.state.clear_journal(resource);
            return Err(failed);
        }
        let ApplyError::Reload {
            command, source, ..
        } = failed
        else {
            return Err(failed);
        };
        pass.degraded = true;
        let restored = self.roll_back(pass, journal);
        Err(ApplyError::RolledBack {
            resource: resource.name.clone(),
            command,
            source,
            restored,
        })
    }

    /// Puts the previous set back and reloads it. A reload that fails again stays
    /// owed; a restore that fails keeps the journal for the next start to finish.
    fn roll_back(&self, pass: &mut Pass, mut journal: Journal) -> Result<(), String> {
        let resource = pass.resource;
        journal.phase = Phase::RollingBack;
        self.write_journal(resource, &journal)
            .map_err(|e| e.to_string())?;
        txn::undo(&journal.entries)
            .map_err(|e| format!("cannot restore the previous files: {e}"))?;
        let mut before = journal.before.clone();
        before.reload_owed = true;
        self.save(resource, &before, Durability::Synced);
        self.state.clear_journal(resource);
        warn!(resource = %resource.name, files = journal.entries.len(), "previous files restored");
        run_reload(resource).map_err(|e| format!("the previous files are back, but {e}"))?;
        before.reload_owed = false;
        pass.reload_owed = false;
        self.save(resource, &before, Durability::Atomic);
        Ok(())
    }

    /// A failed trial check: the previous set goes back at once.
    fn undo(&self, resource: &Resource, journal: &Journal) {
        match txn::undo(&journal.entries) {
            Ok(()) => self.state.clear_journal(resource),
            Err(e) => {
                error!(resource = %resource.name, cause = %e, "cannot restore the previous files after a failed check; the next start retries")
            }
        }
    }

    /// The reload a unit owes (its files already in place), with the rollback a
    /// refusal calls for when the set it owes is still journaled.
    pub(in crate::pipeline) fn reload_unit(&self, pass: &mut Pass) -> Result<Done, ApplyError> {
        let resource = pass.resource;
        pass.reload_owed = true;
        let reloaded = pass.step(Step::Reload, || run_reload(resource));
        let journal = self.state.journal(resource);
        match (reloaded, journal) {
            (Ok(()), journal) => {
                pass.reload_owed = false;
                let mut record = journal
                    .map(|j| j.after)
                    .unwrap_or_else(|| self.state.load(resource));
                record.reload_owed = false;
                self.save(resource, &record, Durability::Synced);
                self.state.clear_journal(resource);
                Ok(Done::Reloaded)
            }
            (Err(e), Some(journal)) => self.reload_failed(pass, journal, e),
            (Err(e), None) => Err(e),
        }
    }
}

/// Records how each file just written looks on disk, so that the next compare can
/// trust it without reading it.
fn stamp(after: &mut Record, changes: &[Change]) {
    for change in changes.iter().filter(|c| c.new.is_some()) {
        if let (Some(applied), Ok(meta)) = (
            after.files.get_mut(&change.dest),
            std::fs::metadata(&change.dest),
        ) {
            applied.stamp = Some(Stamp::of(&meta));
        }
    }
}

/// Each output's own `check_cmd` on each of its new or changed files, confd style:
/// `{{.src}}` is the stage file.
fn check_each(
    resource: &Resource,
    plan: &[Planned],
    changes: &[Change],
    staged: &Staged,
) -> Result<(), ApplyError> {
    for (change, entry) in changes.iter().zip(&staged.entries) {
        let (Some((index, _)), Some(stage)) = (&change.new, &entry.stage) else {
            continue;
        };
        let Some(cmd) = &plan[*index].check else {
            continue;
        };
        let (command, result) = run_command(cmd, stage, &change.dest, "check");
        result.map_err(|source| ApplyError::Check {
            resource: resource.name.clone(),
            dest: change.dest.clone(),
            command,
            source,
        })?;
    }
    Ok(())
}

/// The unit's `check_cmd` over the whole new set at the real paths: in the overlay,
/// or (without one) on the swapped-in set. `{{.src}}` and `{{.dest}}` are the first
/// output's path.
fn check_unit(resource: &Resource, overlay: Option<Overlay>) -> Result<(), ApplyError> {
    let Some(cmd) = &resource.check else {
        return Ok(());
    };
    let dest: &Path = &resource.dest;
    let line = cmd.expand(dest, dest);
    let result = cmd.run_with(dest, dest, overlay.map(Overlay::pre_exec));
    result.map(|_| ()).map_err(|source| ApplyError::Check {
        resource: resource.name.clone(),
        dest: resource.dest.clone(),
        command: line,
        source,
    })
}

/// Before anything else at start: each unit's journal completed or undone, as its
/// phase says, and the reload it then owes recorded.
pub(in crate::pipeline) fn recover(state: &StateDir, resources: &[Resource]) {
    for resource in resources {
        let Some(journal) = state.journal(resource) else {
            continue;
        };
        let name = &resource.name;
        let (replayed, mut record, keep) = match journal.phase {
            Phase::Checked => {
                let keep = resource.on_reload_failure == OnReloadFailure::Rollback;
                (txn::complete(&journal.entries), journal.after.clone(), keep)
            }
            Phase::Trial => (txn::undo(&journal.entries), journal.before.clone(), false),
            Phase::RollingBack => (txn::undo(&journal.entries), journal.before.clone(), false),
        };
        if let Err(e) = replayed {
            error!(resource = %name, phase = ?journal.phase, cause = %e, "cannot replay the swap journal; its files are left as they are");
            continue;
        }
        // A trial never reached the service; the others leave a set it has not loaded.
        record.reload_owed = journal.phase != Phase::Trial && resource.reload.is_some();
        if let Err(e) = state.store(resource, &record, Durability::Synced) {
            warn!(resource = %name, cause = %e, "cannot record the replayed swap");
        }
        if !keep {
            state.clear_journal(resource);
        }
        let done = match journal.phase {
            Phase::Checked => "completed",
            _ => "undone",
        };
        info!(resource = %name, files = journal.entries.len(), reload_owed = record.reload_owed, "an interrupted swap was {done}");
    }
}
