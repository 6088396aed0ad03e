//! A unit's files as one transaction: stage every new file beside its dest and copy
//! every file it replaces or removes into the state directory (all fsynced), then
//! journal, then swap (renames and removals, directories fsynced); undo puts the
//! previous set back from the copies, complete finishes a swap a kill interrupted.
//!
//! Both undo and complete are idempotent, so a kill during either is repaired by
//! doing it again: the journal says which to do (see [`crate::state::Phase`]).

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use tracing::warn;

use super::Change;
use crate::outcome::{ApplyError, StageError};
use crate::pipeline::compare::Wanted;
use crate::pipeline::files::{StageFile, create_exclusive, set_owner_and_mode, write_synced};
use crate::resource::Resource;
use crate::state::{Backup, Entry, StateDir, sync_copies, sync_dir, write_copy};

/// The staged set: one journal entry per change, and the stage files (removed on drop
/// unless swapped in or kept).
pub(super) struct Staged {
    pub(super) entries: Vec<Entry>,
    pub(super) stage_files: Vec<StageFile>,
}

impl Staged {
    /// The stage files are in place (or gone): they are no longer ours to remove.
    fn swapped(&mut self) {
        for file in &mut self.stage_files {
            file.renamed = true;
        }
    }
}

/// Stages every change and copies the files it replaces into `<state>/previous/`.
///
/// The copies are fsynced only when `durable`: when a crash could leave them as the
/// only way back (a rollback, a trial swap before its check). Otherwise a crash is
/// repaired by completing the swap, which needs no copy, and the copies serve only to
/// put files back in this process after a failed rename: page cache is enough, and two
/// fsyncs per pass are saved.
pub(super) fn stage(
    resource: &Resource,
    state: &StateDir,
    changes: &[Change],
    contents: &[&[u8]],
    keep: bool,
    durable: bool,
) -> Result<Staged, ApplyError> {
    let previous = state
        .fresh_previous_dir(resource)
        .map_err(|e| state_error(resource, &state.resource_dir(resource), e))?;
    let mut staged = Staged {
        entries: Vec::with_capacity(changes.len()),
        stage_files: Vec::new(),
    };
    for (i, change) in changes.iter().enumerate() {
        let stage = match &change.new {
            Some((index, wanted)) => {
                let file =
                    crate::pipeline::stage(resource, &change.dest, wanted, contents[*index], keep)?;
                let path = file.path.clone();
                staged.stage_files.push(file);
                Some(path)
            }
            None => None,
        };
        let backup = match &change.current {
            Some(current) => {
                let copy = previous.join(i.to_string());
                write_copy(&copy, &current.content, durable)
                    .map_err(|e| state_error(resource, &copy, e))?;
                Some(Backup {
                    copy,
                    mode: current.mode,
                    uid: current.uid,
                    gid: current.gid,
                })
            }
            None => None,
        };
        staged.entries.push(Entry {
            target: change.target.clone(),
            stage,
            backup,
        });
    }
    if durable {
        sync_dir(&previous).map_err(|e| state_error(resource, &previous, e))?;
    }
    Ok(staged)
}

/// Makes copies written without fsync durable, for a trial swap decided after staging.
pub(super) fn make_durable(resource: &Resource, staged: &Staged) -> Result<(), ApplyError> {
    let copies: Vec<&Path> = staged
        .entries
        .iter()
        .filter_map(|e| e.backup.as_ref().map(|b| b.copy.as_path()))
        .collect();
    sync_copies(&copies).map_err(|e| {
        let dir = copies.first().map_or(PathBuf::new(), |c| c.to_path_buf());
        state_error(resource, &dir, e)
    })
}

fn state_error(resource: &Resource, path: &Path, source: io::Error) -> ApplyError {
    ApplyError::Stage {
        resource: resource.name.clone(),
        dest: resource.dest.clone(),
        source: StageError::Io {
            what: "cannot keep the previous copy in the state directory:",
            path: path.to_path_buf(),
            source,
        },
    }
}

/// Renames every stage file into place and removes every removed file, then fsyncs
/// each directory. On a failure the files already swapped are put back and the error
/// names the file that failed.
pub(super) fn swap(resource: &Resource, staged: &mut Staged) -> Result<(), ApplyError> {
    let failed = staged
        .entries
        .iter()
        .enumerate()
        .find_map(|(i, entry)| swap_one(entry).err().map(|e| (i, e)));
    if let Some((i, source)) = failed {
        let restored = undo(&staged.entries[..=i]);
        let dest = staged.entries[i].target.clone();
        staged.swapped();
        if let Err(e) = restored {
            warn!(resource = %resource.name, cause = %e, "cannot put back every file after a failed swap");
        }
        return Err(ApplyError::Swap {
            resource: resource.name.clone(),
            dest,
            source,
        });
    }
    staged.swapped();
    sync_dirs(&staged.entries);
    Ok(())
}

fn swap_one(entry: &Entry) -> io::Result<()> {
    match &entry.stage {
        Some(stage) => fs::rename(stage, &entry.target),
        None => remove(&entry.target),
    }
}

/// Finishes an interrupted swap: each stage file still there is renamed into place,
/// each removed file is removed.
pub(in crate::pipeline) fn complete(entries: &[Entry]) -> io::Result<()> {
    for entry in entries {
        match &entry.stage {
            Some(stage) => match fs::rename(stage, &entry.target) {
                Ok(()) => {}
                // Renamed before the interruption.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            },
            None => remove(&entry.target)?,
        }
    }
    sync_dirs(entries);
    Ok(())
}

/// Puts the previous set back: each file from its copy (content, mode, owner), each
/// created file removed, each stage file left over removed.
pub(in crate::pipeline) fn undo(entries: &[Entry]) -> io::Result<()> {
    for entry in entries {
        if let Some(stage) = &entry.stage {
            remove(stage)?;
        }
        match &entry.backup {
            Some(backup) => restore(backup, &entry.target)?,
            None => remove(&entry.target)?,
        }
    }
    sync_dirs(entries);
    Ok(())
}

/// Writes a previous copy back over `target` the way any file is written: staged
/// beside it with its old owner and mode, fsynced, renamed.
fn restore(backup: &Backup, target: &Path) -> io::Result<()> {
    let content = fs::read(&backup.copy)?;
    let (file, path) = create_exclusive(target).map_err(|e| match e {
        StageError::Io { source, .. } => source,
        StageError::MissingDir { .. } => io::Error::from(io::ErrorKind::NotFound),
    })?;
    let wanted = Wanted {
        mode: backup.mode,
        uid: Some(backup.uid),
        gid: Some(backup.gid),
        owner_required: false,
    };
    let written = set_owner_and_mode(&file, &wanted).and_then(|()| write_synced(&file, &content));
    let renamed = written.and_then(|()| fs::rename(&path, target));
    if renamed.is_err() {
        let _ = fs::remove_file(&path);
    }
    renamed
}

fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// fsyncs each directory the entries touch, once.
fn sync_dirs(entries: &[Entry]) {
    let dirs: BTreeSet<PathBuf> = entries
        .iter()
        .filter_map(|e| e.target.parent().map(Path::to_path_buf))
        .collect();
    for dir in dirs {
        crate::pipeline::files::sync_parent(&dir.join("x"));
    }
}
