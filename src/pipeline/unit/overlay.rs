//! The in-place check: the unit's `check_cmd` runs in a private mount namespace where
//! each directory the unit touches is overlaid (overlayfs) with the staged set: new
//! and changed files in the upper layer, removed ones as whiteouts. The check sees the
//! whole new set at the real paths (`nginx -t -c /etc/nginx/nginx.conf` validates new
//! fragments in context), the live files stay untouched, and whatever the check writes
//! stays in the upper layer, which is thrown away.
//!
//! The layers are prepared in the resource's state directory before the fork; the
//! child only calls `unshare`, `mount` and exec, on C strings built beforehand (no
//! allocation between fork and exec). It needs CAP_SYS_ADMIN (root, or a user
//! namespace that grants it): [`probe`] finds out once at start, and where it fails the
//! unit is checked by swap, check, restore instead (see the pipeline's `unit`).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::command::{Command, PreExec};

/// The environment variable that forbids the overlay (`off`): units are then checked
/// by swap, check, restore, as where the privilege is missing.
pub const DISABLE_ENV: &str = "CONFLUX_CHECK_OVERLAY";

/// A new file for the upper layer: its content, mode and owner.
pub(in crate::pipeline) struct Upper<'a> {
    pub(in crate::pipeline) content: &'a [u8],
    pub(in crate::pipeline) mode: u32,
    pub(in crate::pipeline) uid: Option<u32>,
    pub(in crate::pipeline) gid: Option<u32>,
}

/// The mounts to make in the child: (live directory, overlay options), parents first.
pub(in crate::pipeline) struct Overlay {
    mounts: Vec<(CString, CString)>,
}

/// Why the overlay could not be prepared or mounted.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("cannot prepare {}: {source}", .path.display())]
    Prepare {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} has a character overlayfs options cannot carry (`,` `:` `\\`)", .0.display())]
    Unsupported(PathBuf),
}

impl Overlay {
    /// Prepares, under `root` (an empty directory on one file system), an upper and a
    /// work directory for each directory holding one of `files`: the file's new
    /// content, or a whiteout where it is `None` (a removal).
    pub(in crate::pipeline) fn prepare(
        root: &Path,
        files: &[(PathBuf, Option<Upper>)],
    ) -> Result<Overlay, OverlayError> {
        let mut by_dir: BTreeMap<&Path, Vec<(&std::ffi::OsStr, &Option<Upper>)>> = BTreeMap::new();
        for (target, upper) in files {
            let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
                return Err(OverlayError::Unsupported(target.clone()));
            };
            by_dir.entry(dir).or_default().push((name, upper));
        }
        let mut dirs: Vec<_> = by_dir.into_iter().collect();
        // Parents first: a directory below another is mounted over the first overlay.
        dirs.sort_by_key(|(dir, _)| dir.components().count());
        let mut mounts = Vec::with_capacity(dirs.len());
        for (i, (dir, names)) in dirs.into_iter().enumerate() {
            let layer = root.join(i.to_string());
            let (upper, work) = (layer.join("upper"), layer.join("work"));
            for d in [&upper, &work] {
                fs::create_dir_all(d).map_err(prepare(d))?;
            }
            for (name, file) in names {
                let path = upper.join(name);
                match file {
                    Some(file) => write_upper(&path, file).map_err(prepare(&path))?,
                    None => whiteout(&path).map_err(prepare(&path))?,
                }
            }
            mounts.push((c_path(dir)?, options(dir, &upper, &work)?));
        }
        Ok(Overlay { mounts })
    }

    /// The child's set-up: a private mount namespace, then each overlay.
    pub(in crate::pipeline) fn pre_exec(self) -> PreExec {
        let mounts = self.mounts;
        Box::new(move || enter(&mounts))
    }
}

/// Runs in the child between fork and exec: system calls only, on prepared strings.
fn enter(mounts: &[(CString, CString)]) -> io::Result<()> {
    let fail = || Err(io::Error::last_os_error());
    // SAFETY: plain system calls on NUL-terminated strings that outlive them.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return fail();
        }
        // Without this, a shared `/` (systemd's default) would carry the overlays
        // back into the host's namespace.
        let none = std::ptr::null();
        let flags = libc::MS_REC | libc::MS_PRIVATE;
        if libc::mount(none, c"/".as_ptr(), none, flags, std::ptr::null()) != 0 {
            return fail();
        }
        for (target, options) in mounts {
            let fs = c"overlay".as_ptr();
            if libc::mount(fs, target.as_ptr(), fs, 0, options.as_ptr().cast()) != 0 {
                return fail();
            }
        }
    }
    Ok(())
}

fn prepare(path: &Path) -> impl FnOnce(io::Error) -> OverlayError + '_ {
    move |source| OverlayError::Prepare {
        path: path.to_path_buf(),
        source,
    }
}

fn write_upper(path: &Path, file: &Upper) -> io::Result<()> {
    fs::write(path, file.content)?;
    if file.uid.is_some() || file.gid.is_some() {
        std::os::unix::fs::chown(path, file.uid, file.gid)?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(file.mode))
}

/// overlayfs's whiteout: a character device 0:0 hides the lower file of its name.
fn whiteout(path: &Path) -> io::Result<()> {
    use nix::sys::stat::{Mode, SFlag, mknod};
    mknod(path, SFlag::S_IFCHR, Mode::empty(), 0).map_err(io::Error::from)
}

fn c_path(path: &Path) -> Result<CString, OverlayError> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| OverlayError::Unsupported(path.to_path_buf()))
}

fn options(lower: &Path, upper: &Path, work: &Path) -> Result<CString, OverlayError> {
    let mut text = Vec::new();
    for (key, path) in [
        ("lowerdir=", lower),
        ("upperdir=", upper),
        ("workdir=", work),
    ] {
        let bytes = path.as_os_str().as_bytes();
        if bytes.iter().any(|b| matches!(b, b',' | b':' | b'\\')) {
            return Err(OverlayError::Unsupported(path.to_path_buf()));
        }
        if !text.is_empty() {
            text.push(b',');
        }
        text.extend_from_slice(key.as_bytes());
        text.extend_from_slice(bytes);
    }
    CString::new(text).map_err(|_| OverlayError::Unsupported(lower.to_path_buf()))
}

/// Whether an overlay can be mounted here: one is tried under `dir` (in the state
/// directory, where the real ones go) around a command that must see its upper file.
pub fn probe(dir: &Path) -> Result<(), String> {
    let lower = dir.join("lower");
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(&lower).map_err(|e| format!("{}: {e}", lower.display()))?;
    let probe = lower.join("probe");
    let upper = Upper {
        content: b"",
        mode: 0o600,
        uid: None,
        gid: None,
    };
    let overlay = Overlay::prepare(&dir.join("layers"), &[(probe.clone(), Some(upper))])
        .map_err(|e| e.to_string())?;
    let check = Command::new("test -e {{.src}}", std::time::Duration::from_secs(10));
    let result = check.run_with(&probe, &probe, Some(overlay.pre_exec()));
    let _ = fs::remove_dir_all(dir);
    result.map(|_| ()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tests run as root here: the overlay is real.
    #[test]
    fn the_check_sees_new_changed_and_removed_files_and_the_live_ones_stay() {
        let tmp = tempfile::tempdir().unwrap();
        let live = tmp.path().join("live");
        fs::create_dir_all(live.join("sub")).unwrap();
        fs::write(live.join("main.conf"), "old").unwrap();
        fs::write(live.join("gone.conf"), "gone").unwrap();
        let upper = |content: &'static [u8]| {
            Some(Upper {
                content,
                mode: 0o640,
                uid: None,
                gid: None,
            })
        };
        let files = vec![
            (live.join("main.conf"), upper(b"new")),
            (live.join("sub/added.conf"), upper(b"added")),
            (live.join("gone.conf"), None),
        ];
        let overlay = Overlay::prepare(&tmp.path().join("state"), &files).unwrap();
        let line = "test \"$(cat {{.src}})\" = new && test \"$(cat {{.dest}}/sub/added.conf)\" = added \
                    && ! test -e {{.dest}}/gone.conf && echo scratch > {{.dest}}/written-by-check";
        let check = Command::new(line, std::time::Duration::from_secs(10));
        check
            .run_with(&live.join("main.conf"), &live, Some(overlay.pre_exec()))
            .unwrap();
        assert_eq!(fs::read_to_string(live.join("main.conf")).unwrap(), "old");
        assert_eq!(fs::read_to_string(live.join("gone.conf")).unwrap(), "gone");
        assert!(!live.join("sub/added.conf").exists());
        assert!(!live.join("written-by-check").exists());
    }

    #[test]
    fn the_probe_succeeds_as_root() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(probe(&tmp.path().join("probe")), Ok(()));
    }

    #[test]
    fn a_path_overlayfs_cannot_carry_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let odd = tmp.path().join("a,b");
        fs::create_dir_all(&odd).unwrap();
        let files = vec![(odd.join("x"), None)];
        let err = Overlay::prepare(&tmp.path().join("state"), &files)
            .err()
            .unwrap();
        assert!(matches!(err, OverlayError::Unsupported(_)), "{err}");
    }
}
