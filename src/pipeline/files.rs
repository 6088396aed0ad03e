//! The file-system half of staging and swapping: symlink resolution, the stage file
//! (created exclusively, owned and moded before it holds content, removed unless kept),
//! fsyncs, and the in-place copy for a dest that cannot be renamed over.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use tracing::{info, warn};

use super::compare::Wanted;
use crate::outcome::StageError;

/// How many symlinks `resolve_links` follows before giving up, as Linux does.
const MAX_LINKS: usize = 40;

/// A symlink conflux will not follow: it could send a write (run as root) into any
/// file, or print a secret's content in a noop diff.
#[derive(Debug, thiserror::Error)]
#[error("{} is a symlink owned by uid {owner}, {why}: not followed", .link.display())]
pub struct UnsafeLink {
    pub link: PathBuf,
    pub owner: u32,
    pub why: &'static str,
}

/// A dest that is there but is not a regular file: conflux replaces only files.
#[derive(Debug, thiserror::Error)]
#[error("{} is {kind}, not a regular file: conflux only replaces regular files", .path.display())]
pub struct NotRegular {
    pub path: PathBuf,
    pub kind: &'static str,
}

/// The file a (possibly symlinked) dest really is: links are followed one by one, so
/// that a dangling link still names the file to create. A link is followed only when
/// nobody else could have planted it: owned by root or by conflux's own user, and in a
/// directory other users cannot write, unless that directory is sticky and the link
/// belongs to its owner or to us (the kernel's `fs.protected_symlinks` rule, which a
/// resolution done here would otherwise bypass).
pub(super) fn resolve_links(dest: &Path) -> io::Result<PathBuf> {
    let me = nix::unistd::geteuid().as_raw();
    let mut path = dest.to_path_buf();
    for _ in 0..MAX_LINKS {
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                check_link(&path, &meta, me)?;
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

fn check_link(link: &Path, meta: &fs::Metadata, me: u32) -> io::Result<()> {
    let owner = meta.uid();
    let refuse = |why| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            UnsafeLink {
                link: link.to_path_buf(),
                owner,
                why,
            },
        )
    };
    if owner != 0 && owner != me {
        return Err(refuse("neither root nor conflux's own user"));
    }
    let dir = link.parent().unwrap_or(Path::new("/"));
    let dir_meta = fs::metadata(dir)?;
    let others_write = dir_meta.mode() & 0o022 != 0;
    let sticky = dir_meta.mode() & 0o1000 != 0;
    match (others_write, sticky) {
        (false, _) => Ok(()),
        (true, true) if owner == dir_meta.uid() || owner == me => Ok(()),
        (true, true) => Err(refuse("in a sticky directory it does not own")),
        (true, false) => Err(refuse("in a directory other users can write")),
    }
}

/// Opens the real dest (links already resolved) for reading, never following a link
/// and never blocking (a FIFO would): `None` when it does not exist, an error naming
/// it when it is not a regular file. Nothing that is not a regular file is opened.
pub(super) fn open_regular(target: &Path) -> io::Result<Option<File>> {
    match fs::symlink_metadata(target) {
        Ok(meta) if !meta.is_file() => return Err(not_regular(target, &meta)),
        Ok(_) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(target)?;
    // Swapped for something else between the look and the open: check what was opened.
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(not_regular(target, &meta));
    }
    Ok(Some(file))
}

fn not_regular(path: &Path, meta: &fs::Metadata) -> io::Error {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    let kind = if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_symlink() {
        "a symlink"
    } else {
        "not a file"
    };
    io::Error::new(
        io::ErrorKind::InvalidInput,
        NotRegular {
            path: path.to_path_buf(),
            kind,
        },
    )
}

/// A stage file, removed when dropped unless it was renamed into place or is kept.
/// It holds an exclusive `flock` on the file for its whole life: a process starting
/// meanwhile (a one-shot run beside the daemon) knows it is in use and leaves it.
#[derive(Debug)]
pub(super) struct StageFile {
    pub(super) path: PathBuf,
    /// The real dest (symlinks resolved) that `swap` replaces.
    pub(super) target: PathBuf,
    pub(super) keep: bool,
    pub(super) renamed: bool,
    pub(super) file: Flock<File>,
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

/// A new file with a random name next to `target` (`.<name>.<16 hex digits>`), mode
/// 0600, opened O_EXCL so that nothing else's file is ever reused, and locked (see
/// [`StageFile`]).
pub(super) fn create_exclusive(target: &Path) -> Result<(Flock<File>, PathBuf), StageError> {
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
            Ok(file) => {
                // A new file nobody else has opened: the lock cannot be taken already.
                let locked =
                    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
                        StageError::Io {
                            what: "cannot lock",
                            path: path.clone(),
                            source: io::Error::from(errno),
                        }
                    })?;
                return Ok((locked, path));
            }
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

/// The file whose stage file `file` is, when it is one of conflux's stage files:
/// `.<name>.<16 hex digits>`.
fn stage_owner(file: &str) -> Option<&str> {
    let (middle, suffix) = file.strip_prefix('.')?.rsplit_once('.')?;
    (suffix.len() == 16 && suffix.bytes().all(|b| b.is_ascii_hexdigit()) && !middle.is_empty())
        .then_some(middle)
}

/// Removes the stage files a stopped process left in `dir` (for the files `names`, or
/// any when `None`): those nobody holds locked. Returns how many. One read of the
/// directory whatever the number of names: 1,000 resources writing into one directory
/// must not read it 1,000 times.
pub(super) fn remove_stale_stages(dir: &Path, names: Option<&HashSet<String>>) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.filter_map(Result::ok) {
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        let Some(owner) = stage_owner(&file_name) else {
            continue;
        };
        if names.is_some_and(|names| !names.contains(owner)) {
            continue;
        }
        let path = entry.path();
        let opened = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path);
        let Ok(file) = opened else { continue };
        // Locked: a live process is staging it. Ours now: nobody is.
        if let Ok(_held) = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            && fs::remove_file(&path).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// Removes the stale stage files beside each file of `resources`, saying so: each
/// directory read once, for every file the resources write there (any file, in a
/// fan-out's directory).
pub(super) fn remove_stale_stages_of(resources: &[crate::resource::Resource]) {
    use crate::resource::OutputDest;
    let mut dirs: BTreeMap<PathBuf, Option<HashSet<String>>> = BTreeMap::new();
    for output in resources.iter().flat_map(|r| &r.outputs) {
        match &output.dest {
            OutputDest::File(dest) => {
                let Ok(target) = resolve_links(dest) else {
                    continue;
                };
                if let (Some(dir), Some(name)) = (target.parent(), target.file_name()) {
                    let names = dirs
                        .entry(dir.to_path_buf())
                        .or_insert_with(|| Some(HashSet::new()));
                    if let Some(names) = names {
                        names.insert(name.to_string_lossy().into_owned());
                    }
                }
            }
            OutputDest::FanOut { dir, .. } => {
                dirs.insert(dir.clone(), None);
            }
        }
    }
    for (dir, names) in dirs {
        let removed = remove_stale_stages(&dir, names.as_ref());
        if removed > 0 {
            info!(dir = %dir.display(), removed, "removed stage files left by an interrupted apply");
        }
    }
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
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(dest)?;
    set_owner_and_mode(&file, wanted)?;
    (&file).write_all(content)?;
    file.set_len(content.len() as u64)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_stage_files_go_and_live_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let target = d.join("app.conf");
        let (live, live_path) = create_exclusive(&target).unwrap();
        fs::write(d.join(".app.conf.0123456789abcdef"), "left by a kill -9").unwrap();
        fs::write(d.join(".app.conf.notours"), "someone's").unwrap();
        fs::write(d.join(".other.conf.0123456789abcdef"), "another file's").unwrap();

        let app = HashSet::from(["app.conf".to_string()]);
        assert_eq!(remove_stale_stages(d, Some(&app)), 1);

        assert!(live_path.exists(), "a stage file in use stays");
        assert!(!d.join(".app.conf.0123456789abcdef").exists());
        assert!(d.join(".app.conf.notours").exists());
        assert!(d.join(".other.conf.0123456789abcdef").exists());
        drop(live);
        assert_eq!(remove_stale_stages(d, None), 2);
    }

    /// 1,000 resources writing into one directory read it 1,000 times at every start
    /// (a one-shot rerun took 438 ms instead of 49): the directory is read once now,
    /// for the stage files of every resource's dest in it.
    #[test]
    fn stage_files_of_many_resources_in_one_directory_go_in_one_pass() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let a = crate::resource::test_resource("a.toml", &[], d.join("a.conf"));
        let b = crate::resource::test_resource("b.toml", &[], d.join("b.conf"));
        fs::write(d.join(".a.conf.0123456789abcdef"), "left by a kill -9").unwrap();
        fs::write(d.join(".b.conf.fedcba9876543210"), "left by a kill -9").unwrap();
        fs::write(d.join(".c.conf.0123456789abcdef"), "no resource's").unwrap();

        remove_stale_stages_of(&[a, b]);

        assert!(!d.join(".a.conf.0123456789abcdef").exists());
        assert!(!d.join(".b.conf.fedcba9876543210").exists());
        assert!(
            d.join(".c.conf.0123456789abcdef").exists(),
            "a file no resource writes keeps its stage files"
        );
    }

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
