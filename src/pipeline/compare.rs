//! The compare step: dest as it is and as it should be (content, mode and owner), the
//! differences between them, and the diff noop prints. Reading only; writing is
//! [`super::files`]'s.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use similar::TextDiff;

use crate::outcome::FileChange;

/// dest as it is now (through a symlink).
#[derive(Debug, Clone)]
pub(super) struct Current {
    pub(super) content: Vec<u8>,
    pub(super) mode: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
}

/// The mode and owner dest should end with. An owner of `None` is left to the kernel:
/// only a new file with no owner set in the resource has one, and it is ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Wanted {
    pub(super) mode: u32,
    pub(super) uid: Option<u32>,
    pub(super) gid: Option<u32>,
    /// The owner comes from the resource, so failing to set it is an error; inherited
    /// from the old dest, it is a warning (confd ignores chown errors altogether).
    pub(super) owner_required: bool,
}

pub(super) struct Comparison {
    pub(super) current: Option<Current>,
    pub(super) wanted: Wanted,
    pub(super) changes: FileChange,
}

impl Comparison {
    /// A unified diff of the content, headed `a/<dest>` and `b/<dest>` (`/dev/null` for
    /// a new file), followed by a note for a mode or owner change.
    pub(super) fn diff(&self, content: &str) -> String {
        let name = self.changes.path.to_string_lossy();
        let name = name.trim_start_matches('/');
        let old = self
            .current
            .as_ref()
            .map(|c| String::from_utf8_lossy(&c.content).into_owned());
        let mut out = String::new();
        if self.changes.created || self.changes.content {
            let from = match old {
                Some(_) => format!("a/{name}"),
                None => "/dev/null".to_string(),
            };
            let old = old.unwrap_or_default();
            let diff = TextDiff::from_lines(old.as_str(), content);
            out.push_str(
                &diff
                    .unified_diff()
                    .header(&from, &format!("b/{name}"))
                    .to_string(),
            );
        }
        if let Some((from, to)) = self.changes.mode {
            out.push_str(&format!("mode of /{name}: {from:04o} -> {to:04o}\n"));
        }
        if let Some(((fu, fg), (tu, tg))) = self.changes.owner {
            out.push_str(&format!("owner of /{name}: {fu}:{fg} -> {tu}:{tg}\n"));
        }
        out
    }
}

/// The diff of a file a unit removes: all of it, to `/dev/null`.
pub(super) fn removal_diff(path: &Path, old: &[u8]) -> String {
    let name = path.to_string_lossy();
    let name = name.trim_start_matches('/');
    let old = String::from_utf8_lossy(old);
    TextDiff::from_lines(old.as_ref(), "")
        .unified_diff()
        .header(&format!("a/{name}"), "/dev/null")
        .to_string()
}

/// The mode of a new dest when the resource sets none.
const DEFAULT_MODE: u32 = 0o644;

/// Reads dest (following a symlink) and works out the mode and owner it should have:
/// the resource's, else dest's own, else 0644 and ours for a new file.
pub(super) fn compare(
    dest: &Path,
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    content: &[u8],
) -> io::Result<Comparison> {
    let current = read_current(dest)?;
    let wanted = Wanted {
        mode: mode
            .or(current.as_ref().map(|c| c.mode))
            .unwrap_or(DEFAULT_MODE),
        uid: uid.or(current.as_ref().map(|c| c.uid)),
        gid: gid.or(current.as_ref().map(|c| c.gid)),
        owner_required: uid.is_some() || gid.is_some(),
    };
    let changes = match &current {
        None => FileChange {
            path: dest.to_path_buf(),
            created: true,
            ..FileChange::default()
        },
        Some(cur) => {
            let owner = (wanted.uid.unwrap_or(cur.uid), wanted.gid.unwrap_or(cur.gid));
            FileChange {
                path: dest.to_path_buf(),
                created: false,
                removed: false,
                content: cur.content != content,
                mode: (cur.mode != wanted.mode).then_some((cur.mode, wanted.mode)),
                owner: ((cur.uid, cur.gid) != owner).then_some(((cur.uid, cur.gid), owner)),
            }
        }
    };
    Ok(Comparison {
        current,
        wanted,
        changes,
    })
}

/// dest's content, permission bits and owner; `None` when it does not exist (a
/// dangling symlink included). Only links nobody else could have planted are
/// followed, and only a regular file is read (see [`super::files`]): a refused link's
/// target is never read, so never printed in a noop diff.
pub(super) fn read_current(dest: &Path) -> io::Result<Option<Current>> {
    let target = super::files::resolve_links(dest)?;
    let Some(mut file) = super::files::open_regular(&target)? else {
        return Ok(None);
    };
    let meta = file.metadata()?;
    let mut content = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    std::io::Read::read_to_end(&mut file, &mut content)?;
    Ok(Some(Current {
        content,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    }))
}
