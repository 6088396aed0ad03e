//! The file-system half of staging and swapping: symlink resolution, the stage file
//! (created exclusively, owned and moded before it holds content, removed unless kept),
//! fsyncs, and the in-place copy for a dest that cannot be renamed over.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use super::compare::Wanted;
use crate::outcome::StageError;

/// How many symlinks `resolve_links` follows before giving up, as Linux does.
const MAX_LINKS: usize = 40;

/// The file a (possibly symlinked) dest really is: links are followed one by one, so
/// that a dangling link still names the file to create.
pub(super) fn resolve_links(dest: &Path) -> io::Result<PathBuf> {
    let mut path = dest.to_path_buf();
    for _ in 0..MAX_LINKS {
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = fs::read_link(&path)?;
                // `join` with an absolute target yields the target itself.
                path = match path.parent() {
                    Some(dir) => dir.join(target),
                    None => target,
                };
            }
            Ok(_) => return Ok(path),
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(path),
            Err(err) => return Err(err),
        }
    }
    Err(io::Error::from_raw_os_error(libc::ELOOP))
}

/// A stage file, removed when dropped unless it was renamed into place or is kept.
#[derive(Debug)]
pub(super) struct StageFile {
    pub(super) path: PathBuf,
    /// The real dest (symlinks resolved) that `swap` replaces.
    pub(super) target: PathBuf,
    pub(super) keep: bool,
    pub(super) renamed: bool,
}

impl Drop for StageFile {
    fn drop(&mut self) {
        if self.renamed {
            return;
        }
        if self.keep {
            info!(path = %self.path.display(), "keeping stage file");
        } else if let Err(err) = fs::remove_file(&self.path) {
            warn!(path = %self.path.display(), %err, "cannot remove stage file");
        }
    }
}

/// A new file with a random name next to `target`, mode 0600, opened O_EXCL so that
/// nothing else's file is ever reused.
pub(super) fn create_exclusive(target: &Path) -> Result<(File, PathBuf), StageError> {
    let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
        return Err(StageError::Io {
            what: "not a file path:",
            path: target.to_path_buf(),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        });
    };
    let mut last = io::Error::from(io::ErrorKind::AlreadyExists);
    for _ in 0..16 {
        let mut file_name = std::ffi::OsString::from(".");
        file_name.push(name);
        file_name.push(format!(".{:016x}", rand::random::<u64>()));
        let path = dir.join(file_name);
        let opened = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path);
        match opened {
            Ok(file) => return Ok((file, path)),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => last = err,
            // ENOENT also comes from directories that exist but take no new files
            // (`/proc`, `/sys`): only a directory that is really missing is named so.
            Err(err) if err.kind() == io::ErrorKind::NotFound && !dir.is_dir() => {
                return Err(StageError::MissingDir {
                    dir: dir.to_path_buf(),
                });
            }
            Err(source) => {
                return Err(StageError::Io {
                    what: "cannot create a file in",
                    path: dir.to_path_buf(),
                    source,
                });
            }
        }
    }
    Err(StageError::Io {
        what: "cannot create a file in",
        path: dir.to_path_buf(),
        source: last,
    })
}

/// fchown, then fchmod: chown clears set-id bits, so the mode must come second.
pub(super) fn set_owner_and_mode(file: &File, wanted: &Wanted) -> io::Result<()> {
    let meta = file.metadata()?;
    let differs =
        wanted.uid.is_some_and(|u| u != meta.uid()) || wanted.gid.is_some_and(|g| g != meta.gid());
    if differs && let Err(err) = std::os::unix::fs::fchown(file, wanted.uid, wanted.gid) {
        if wanted.owner_required {
            return Err(err);
        }
        warn!(%err, uid = wanted.uid, gid = wanted.gid, "cannot keep the old owner");
    }
    file.set_permissions(Permissions::from_mode(wanted.mode))
}

pub(super) fn write_synced(mut file: &File, content: &[u8]) -> io::Result<()> {
    file.write_all(content)?;
    file.sync_all()
}

/// The directory entry is what a rename changes; without this fsync a crash could
/// bring the old file back. Failing here leaves the new file in place, so it only warns.
pub(super) fn sync_parent(path: &Path) {
    let Some(dir) = path.parent() else { return };
    if let Err(err) = File::open(dir).and_then(|d| d.sync_all()) {
        warn!(dir = %dir.display(), %err, "cannot fsync the directory");
    }
}

/// Overwrites `dest` in place. The content is written first and the file cut to length
/// after, rather than truncated first: a reader may see a mix for a moment, but never
/// an empty file (an empty config that a service would happily load).
pub(super) fn copy_in_place(dest: &Path, wanted: &Wanted, content: &[u8]) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(dest)?;
    set_owner_and_mode(&file, wanted)?;
    (&file).write_all(content)?;
    file.set_len(content.len() as u64)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_in_place_overwrites_and_cuts_to_length() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("mounted.conf");
        fs::write(&dest, "a much longer old content").unwrap();
        let wanted = Wanted {
            mode: 0o600,
            uid: None,
            gid: None,
            owner_required: false,
        };

        copy_in_place(&dest, &wanted, b"short").unwrap();

        assert_eq!(fs::read_to_string(&dest).unwrap(), "short");
        assert_eq!(fs::metadata(&dest).unwrap().mode() & 0o7777, 0o600);
    }
}
