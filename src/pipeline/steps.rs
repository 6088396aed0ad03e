//! The steps of a pass as free functions on one resource: the `min_keys` guard,
//! compare, stage, check, swap and reload, and running a command with its output
//! logged. [`super::Pipeline`] strings them together (and `unit` reuses them); the
//! file-system half of staging is [`super::files`]'s.

use std::path::Path;
use std::time::Duration;

use tracing::{debug, warn};

use super::compare::{self, Comparison, Wanted};
use super::files::{
    StageFile, copy_in_place, create_exclusive, resolve_links, set_owner_and_mode, sync_parent,
    write_synced,
};
use crate::command::{Command, CommandError};
use crate::outcome::{ApplyError, StageError};
use crate::resource::Resource;
use crate::store::Store;

/// `min_keys`: a wiped prefix or an ACL mistake must not render an empty config.
pub(super) fn min_keys(resource: &Resource, store: &Store) -> Result<(), ApplyError> {
    match resource.min_keys {
        Some(min) if store.len() < min => Err(ApplyError::TooFewKeys {
            resource: resource.name.clone(),
            seen: store.len(),
            min,
        }),
        _ => Ok(()),
    }
}

pub(super) fn compare(resource: &Resource, content: &[u8]) -> Result<Comparison, ApplyError> {
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
pub(super) fn stage(
    resource: &Resource,
    dest: &Path,
    wanted: &Wanted,
    content: &[u8],
    keep: bool,
) -> Result<StageFile, ApplyError> {
    let fail = |source| ApplyError::Stage {
        resource: resource.name.clone(),
        dest: dest.to_path_buf(),
        source,
    };
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| StageError::Io { what, path, source }
    };
    let target = resolve_links(dest)
        .map_err(io("cannot resolve", dest))
        .map_err(fail)?;
    let (file, path) = create_exclusive(&target).map_err(fail)?;
    let staged = StageFile {
        path,
        target,
        keep,
        renamed: false,
        file,
    };
    set_owner_and_mode(&staged.file, wanted)
        .map_err(io("cannot set owner and mode of", &staged.path))
        .map_err(fail)?;
    write_synced(&staged.file, content)
        .map_err(io("cannot write", &staged.path))
        .map_err(fail)?;
    Ok(staged)
}

/// Runs `cmd`, logging its output at debug when it succeeds: on failure the output
/// travels in the error, for the operator.
pub(super) fn run_command(cmd: &Command, src: &Path, dest: &Path, what: &str) -> CommandResult {
    let line = cmd.expand(src, dest);
    let result = cmd.run(src, dest);
    if let Ok(out) = &result {
        debug!(command = %line, output = %out.output, duration_ms = out.duration.as_millis() as u64, "{what} ran");
    }
    (line, result.map(|out| out.duration))
}

pub(super) type CommandResult = (String, Result<Duration, CommandError>);

/// Runs `check_cmd` with `{{.src}}` = the stage file and `{{.dest}}` = dest.
pub(super) fn check(resource: &Resource, staged: &Path) -> Result<(), ApplyError> {
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
pub(super) fn swap(
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
pub(super) fn run_reload(resource: &Resource) -> Result<(), ApplyError> {
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
