//! A unit's swap journal and the previous copies of its files, in the resource's
//! state directory: what the next start completes or undoes before anything else.
//!
//! The journal is written (fsynced, with its directory) after every stage file and
//! every previous copy is itself fsynced and before the first rename, so whatever a
//! kill leaves behind, the journal names each file's old and new content. It stays
//! until the unit's reload has succeeded: the previous copies are what a rollback
//! puts back. Replaying it (which files to rename, restore or remove) is the
//! pipeline's job; this module only keeps it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{Durability, Record, StateDir, write_atomically};
use crate::resource::Resource;

const JOURNAL: &str = "journal.json";
const PREVIOUS: &str = "previous";
const OVERLAY: &str = "overlay";

/// Where a unit's swap stood when the journal was last written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The new set passed its check (or has none): the swap may be under way. Replay
    /// completes it; the reload is then owed.
    Checked,
    /// No in-place check was possible: the new set is swapped in to be checked, and
    /// has not passed yet. Replay undoes it.
    Trial,
    /// The service refused the new set: the previous one is being put back. Replay
    /// finishes putting it back; the reload is then owed.
    RollingBack,
}

/// One file of the unit that the swap changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The real file (symlinks resolved).
    pub target: PathBuf,
    /// The stage file holding its new content; `None` when the swap removes it.
    pub stage: Option<PathBuf>,
    /// Its previous content; `None` when it did not exist.
    pub backup: Option<Backup>,
}

/// The previous content of a file, copied into the state directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    pub copy: PathBuf,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// A unit's swap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub phase: Phase,
    pub entries: Vec<Entry>,
    /// The record once the new set is in place (its hashes and its manifest).
    pub after: Record,
    /// The record of the previous set, for an undo.
    pub before: Record,
}

impl StateDir {
    /// Where the previous copies of a unit's files go, created (mode 0700) and empty.
    pub fn fresh_previous_dir(&self, resource: &Resource) -> io::Result<PathBuf> {
        fresh_dir(&self.resource_dir(resource).join(PREVIOUS))
    }

    /// Where the in-place check's overlay directories go, created (mode 0700) and empty.
    pub fn fresh_overlay_dir(&self, resource: &Resource) -> io::Result<PathBuf> {
        fresh_dir(&self.resource_dir(resource).join(OVERLAY))
    }

    /// The unit's journal, if a swap is under way or not yet reloaded. One that cannot
    /// be read is reported and treated as absent: nothing can be replayed from it.
    pub fn journal(&self, resource: &Resource) -> Option<Journal> {
        let path = self.resource_dir(resource).join(JOURNAL);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .inspect_err(|e| warn!(path = %path.display(), cause = %e, "unreadable swap journal; ignored"))
                .ok(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                warn!(path = %path.display(), cause = %e, "cannot read the swap journal");
                None
            }
        }
    }

    /// Writes the journal, fsynced with its directory before returning.
    pub fn write_journal(&self, resource: &Resource, journal: &Journal) -> io::Result<()> {
        let dir = self.resource_dir(resource);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let bytes = serde_json::to_vec_pretty(journal).map_err(io::Error::other)?;
        write_atomically(&dir.join(JOURNAL), &bytes, Durability::Synced)
    }

    /// Ends the unit's swap: the journal and the previous copies go.
    pub fn clear_journal(&self, resource: &Resource) {
        let dir = self.resource_dir(resource);
        match fs::remove_file(dir.join(JOURNAL)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => warn!(dir = %dir.display(), cause = %e, "cannot remove the swap journal"),
        }
        let _ = fs::remove_dir_all(dir.join(PREVIOUS));
    }
}

/// Copies `content` (the file as it was) to `copy`, fsynced when `durable`.
pub fn write_copy(copy: &Path, content: &[u8], durable: bool) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(copy)?;
    file.write_all(content)?;
    if durable {
        file.sync_all()?;
    }
    Ok(())
}

/// fsyncs copies written without it, and their directory.
pub fn sync_copies(copies: &[&Path]) -> io::Result<()> {
    for copy in copies {
        File::open(copy)?.sync_all()?;
    }
    if let Some(dir) = copies.first().and_then(|c| c.parent()) {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Makes the copies' directory entries durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn fresh_dir(dir: &Path) -> io::Result<PathBuf> {
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    Ok(dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_round_trips_and_clearing_removes_it_with_the_copies() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(tmp.path(), true).unwrap();
        let r = crate::resource::test_resource("u.toml", &[], tmp.path().join("a.conf"));
        assert_eq!(state.journal(&r), None);
        let previous = state.fresh_previous_dir(&r).unwrap();
        write_copy(&previous.join("0"), b"old", true).unwrap();
        let journal = Journal {
            phase: Phase::Checked,
            entries: vec![Entry {
                target: r.dest.clone(),
                stage: Some(tmp.path().join(".a.conf.1")),
                backup: Some(Backup {
                    copy: previous.join("0"),
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                }),
            }],
            after: Record::default(),
            before: Record::default(),
        };
        state.write_journal(&r, &journal).unwrap();
        assert_eq!(state.journal(&r), Some(journal));
        state.clear_journal(&r);
        assert_eq!(state.journal(&r), None);
        assert!(!previous.exists());
    }
}
