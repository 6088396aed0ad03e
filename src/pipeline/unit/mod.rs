//! A resource applied as a unit: every output rendered from one snapshot (`plan`),
//! compared with the disk (files to write, and fan-out files whose match is gone to
//! remove), staged with a copy of what they replace, checked together in place
//! (`overlay`, or swap-check-restore where no overlay can be mounted), swapped together
//! under a journal (`txn`), reloaded once, and rolled back when asked to and the
//! reload fails. The whole pass is one [`crate::outcome::Outcome`].
//!
//! Which pass to run and when is the scheduler's business; confd's one-file resources
//! go through the pipeline's own path, unchanged.

mod commit;
pub mod overlay;
mod plan;
mod txn;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

use tracing::{debug, info, warn};

use super::compare::{self, Current, Wanted, removal_diff};
use super::files::resolve_links;
use super::{Pass, Pipeline};
use crate::kv::Snapshot;
use crate::outcome::{ApplyError, Done, FileChange, Step};
use crate::resource::Resource;
use crate::state::{Applied, Record, Stamp, content_hash};
use crate::store::Store;

use plan::Planned;

/// Every output of `resource` rendered from `store` (the unit's render step, alone).
pub(super) fn render_plan(
    templates: &crate::template::Templates,
    resource: &Resource,
    store: &Store,
) -> Result<Vec<super::Rendered>, ApplyError> {
    Ok(plan::render(templates, resource, store)?
        .into_iter()
        .map(|p| super::Rendered {
            dest: p.dest,
            content: p.content,
            check: p.check,
        })
        .collect())
}

pub(super) use commit::recover;

/// One file the pass changes.
pub(super) struct Change {
    /// As written in the resource (or rendered by a fan-out).
    pub(super) dest: PathBuf,
    /// The real file (symlinks resolved): what is renamed over or removed.
    pub(super) target: PathBuf,
    /// Its new content (by index in the plan) and how it should end; `None` to remove.
    pub(super) new: Option<(usize, Wanted)>,
    /// The file as it is now; `None` when it does not exist.
    pub(super) current: Option<Current>,
    pub(super) change: FileChange,
}

impl Pipeline {
    /// One pass of a unit: render every output, compare, and when anything differs
    /// stage, check, swap and reload the whole set.
    pub(in crate::pipeline) fn apply_unit(
        &self,
        pass: &mut Pass,
        store: &Store,
        snapshot: &Snapshot,
    ) -> Result<Done, ApplyError> {
        let resource = pass.resource;
        let plan = pass.step(Step::Render, || {
            plan::render(&self.templates, resource, store)
        })?;
        let mut record = self.state.load(resource);
        let revision = snapshot.revision;
        let (changes, fresh) = pass.step(Step::Compare, || {
            changes(resource, &plan, &record, revision)
        })?;
        let owed = record.reload_owed || self.state.journal(resource).is_some();
        let restamped = !fresh.is_empty();
        record.files.extend(fresh);
        if changes.is_empty() {
            return self.in_sync(pass, &plan, record, owed, restamped);
        }
        pass.files = changes.iter().map(|c| c.change.clone()).collect();
        if self.options.noop {
            info!(dest = %resource.dest.display(), files = changes.len(), "out of sync; noop, not modified");
            pass.diff = Some(diff(&plan, &changes));
            return Ok(Done::WouldUpdate);
        }
        info!(dest = %resource.dest.display(), files = changes.len(), "out of sync");
        let after = record_after(&record, &plan, &changes, revision);
        self.commit(pass, &plan, &changes, record, after)
    }

    /// Nothing to write: the reload alone if one is owed; the manifest kept true when
    /// a fan-out file it lists was removed by hand.
    fn in_sync(
        &self,
        pass: &mut Pass,
        plan: &[Planned],
        mut record: Record,
        owed: bool,
        restamped: bool,
    ) -> Result<Done, ApplyError> {
        let resource = pass.resource;
        let owned = owned(plan);
        if (record.owned != owned || restamped) && !self.options.noop {
            record.owned = owned;
            self.save(resource, &record, crate::state::Durability::Synced);
        }
        if owed && self.options.runs_commands() && resource.reload.is_some() {
            warn!(dest = %resource.dest.display(), "in sync, but its last reload failed: reloading again");
            return self.reload_unit(pass);
        }
        debug!(dest = %resource.dest.display(), "in sync");
        Ok(Done::Unchanged)
    }
}

/// The files a fan-out wrote in this plan: the manifest after it is applied.
fn owned(plan: &[Planned]) -> BTreeSet<PathBuf> {
    plan.iter()
        .filter(|p| p.fanned)
        .map(|p| p.dest.clone())
        .collect()
}

/// Record entries to refresh after a compare.
type Fresh = Vec<(PathBuf, Applied)>;

/// Each planned file that differs from the disk, then each file the manifest lists
/// that no match renders any more and that is still there. Also the record entries to
/// refresh: files found unchanged by reading them, whose stamp was missing or stale.
fn changes(
    resource: &Resource,
    plan: &[Planned],
    record: &Record,
    revision: i64,
) -> Result<(Vec<Change>, Fresh), ApplyError> {
    let fail = |dest: &PathBuf| {
        let dest = dest.clone();
        move |source| ApplyError::Compare {
            resource: resource.name.clone(),
            dest,
            source,
        }
    };
    let mut changes = Vec::new();
    let mut fresh = Vec::new();
    for (index, p) in plan.iter().enumerate() {
        let sha256 = content_hash(p.content.as_bytes());
        if unchanged_as_recorded(p, &sha256, record.files.get(&p.dest)) {
            continue;
        }
        let c = compare::compare(&p.dest, p.mode, p.uid, p.gid, p.content.as_bytes())
            .map_err(fail(&p.dest))?;
        if c.changes.any() {
            changes.push(Change {
                target: resolve_links(&p.dest).map_err(fail(&p.dest))?,
                dest: p.dest.clone(),
                new: Some((index, c.wanted)),
                current: c.current,
                change: c.changes,
            });
        } else if let Ok(meta) = fs::metadata(&p.dest) {
            let stamp = Some(Stamp::of(&meta));
            fresh.push((
                p.dest.clone(),
                Applied {
                    revision,
                    sha256,
                    stamp,
                },
            ));
        }
    }
    let now = owned(plan);
    for gone in record.owned.difference(&now) {
        let Some(current) = compare::read_current(gone).map_err(fail(gone))? else {
            continue;
        };
        changes.push(Change {
            target: resolve_links(gone).map_err(fail(gone))?,
            dest: gone.clone(),
            new: None,
            current: Some(current),
            change: FileChange {
                path: gone.clone(),
                removed: true,
                ..FileChange::default()
            },
        });
    }
    Ok((changes, fresh))
}

/// Whether the file is still exactly what conflux last wrote and the render is the
/// same, without reading it: same content hash, and `stat` (inode, size, change time,
/// mode, owner) as just after the write. A unit of a thousand files then compares in
/// a thousand `stat`s. Anything else (no record, a file touched since, a mode or owner
/// the output now wants otherwise) is compared for real.
fn unchanged_as_recorded(p: &Planned, sha256: &str, applied: Option<&Applied>) -> bool {
    let Some(Applied {
        sha256: recorded,
        stamp: Some(stamp),
        ..
    }) = applied
    else {
        return false;
    };
    let Ok(meta) = fs::metadata(&p.dest) else {
        return false;
    };
    recorded == sha256
        && Stamp::of(&meta) == *stamp
        && p.mode.is_none_or(|m| m == stamp.mode)
        && p.uid.is_none_or(|u| u == stamp.uid)
        && p.gid.is_none_or(|g| g == stamp.gid)
}

/// noop: the diff of every file of the unit that would change, removals included.
fn diff(plan: &[Planned], changes: &[Change]) -> String {
    let mut out = String::new();
    for change in changes {
        match &change.new {
            Some((index, wanted)) => {
                let comparison = compare::Comparison {
                    current: change.current.clone(),
                    wanted: *wanted,
                    changes: change.change.clone(),
                };
                out.push_str(&comparison.diff(&plan[*index].content));
            }
            None => {
                let old = change.current.as_ref().map(|c| c.content.as_slice());
                out.push_str(&removal_diff(&change.dest, old.unwrap_or_default()));
            }
        }
    }
    out
}

/// The record once the pass's changes are in place: new hashes, removed files gone,
/// the new manifest.
fn record_after(before: &Record, plan: &[Planned], changes: &[Change], revision: i64) -> Record {
    let mut after = before.clone();
    for change in changes {
        match &change.new {
            Some((index, _)) => {
                // The stamp is taken after the swap (`commit::stamp`).
                after.files.insert(
                    change.dest.clone(),
                    Applied {
                        revision,
                        sha256: content_hash(plan[*index].content.as_bytes()),
                        stamp: None,
                    },
                );
            }
            None => {
                after.files.remove(&change.dest);
            }
        }
    }
    after.owned = owned(plan);
    after.reload_owed = false;
    after
}
