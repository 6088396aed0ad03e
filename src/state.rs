//! conflux's own files, kept in the state directory (`--state-dir`, default
//! `/var/lib/conflux`) and never beside dest: per resource, what was last applied to
//! each of its files (revision and content hash) and whether a reload is owed.
//!
//! ```text
//! <state dir>/              mode 0700
//!   resources/
//!     <name>-<hash of the resource file's path>/
//!       state.json          the Record below (with the manifest of fan-out files)
//!       journal.json        a unit's swap under way or not yet reloaded (`journal`)
//!       previous/           the files that swap replaces, for an undo or a rollback
//!       overlay/            upper and work directories of the in-place check
//! ```
//!
//! One directory per resource, keyed by its resource file's absolute path (two confdirs
//! can share a state directory), so that a resource's other state (the last good copy
//! of its files for a rollback, the files a fan-out owns, a swap journal) has its place
//! beside the record. Records are written like dest: a temporary file, renamed over the
//! old one. A record that says a reload is owed is fsynced, with its directory, before
//! the swap it protects; the others are not (losing one in a crash costs a compare, not
//! a missed reload).
//!
//! Deciding when to write is the pipeline's business; this only reads and writes.

mod journal;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::warn;

use crate::resource::Resource;

pub use journal::{Backup, Entry, Journal, Phase, sync_copies, sync_dir, write_copy};

/// The default state directory.
pub const DEFAULT_DIR: &str = "/var/lib/conflux";

/// The state directory, opened (and created) at start.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
    /// The records read or written through this directory (and its clones), by path:
    /// a unit of a thousand files has a record of a thousand entries, and parsing it on
    /// every pass cost more than comparing the files. Every write goes to disk as well;
    /// conflux is the only writer of its state directory.
    cache: Arc<Mutex<HashMap<PathBuf, Record>>>,
}

/// A state directory that cannot be used: a configuration error (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot use the state directory {}: {what}: {source}; choose another with --state-dir, \
     state_dir in conflux.toml or CONFLUX_STATE_DIR",
    .path.display()
)]
pub struct StateError {
    pub path: PathBuf,
    pub what: &'static str,
    #[source]
    pub source: io::Error,
}

/// What conflux knows of one resource's files.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// dest holds a render whose reload has not succeeded yet.
    #[serde(default)]
    pub reload_owed: bool,
    /// What was last written to each file, by its path.
    #[serde(default)]
    pub files: BTreeMap<PathBuf, Applied>,
    /// The manifest of a unit's fan-outs: every file they wrote that is still there.
    /// Only these are ever removed when their match goes; a file placed by hand in
    /// the same directory is not conflux's.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub owned: BTreeSet<PathBuf>,
}

/// One file as conflux last wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The backend revision its content was rendered from.
    pub revision: i64,
    /// SHA-256 of its content, in hex.
    pub sha256: String,
    /// How the file looked on disk just after it was written (units only): a file that
    /// still looks so and whose render hashes the same is unchanged without being read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stamp: Option<Stamp>,
}

/// What `stat` says of a file: inode, size, change time, mode and owner. A rename over
/// the file, a write to it and a chmod or chown all change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub ino: u64,
    pub size: u64,
    pub ctime: i64,
    pub ctime_nsec: i64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Stamp {
    pub fn of(meta: &fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            ino: meta.ino(),
            size: meta.size(),
            ctime: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
        }
    }
}

/// How hard a write tries to survive a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Atomic (rename), not fsynced: a crash may bring back the previous record.
    Atomic,
    /// Atomic and fsynced with its directory before returning.
    Synced,
}

impl StateDir {
    /// Opens the state directory, creating it (mode 0700) when missing, and proves it
    /// writable. With `create` false (noop runs, which write nothing) a missing
    /// directory is fine: every record reads as empty.
    pub fn open(path: &Path, create: bool) -> Result<StateDir, StateError> {
        let fail = |what, source| StateError {
            path: path.to_path_buf(),
            what,
            source,
        };
        let dir = StateDir {
            root: path.to_path_buf(),
            cache: Arc::default(),
        };
        if !create {
            return Ok(dir);
        }
        match fs::metadata(path) {
            Ok(meta) if !meta.is_dir() => {
                return Err(fail(
                    "not a directory",
                    io::Error::from(io::ErrorKind::NotADirectory),
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(|e| fail("cannot create it", e))?,
            Err(e) => return Err(fail("cannot read it", e)),
        }
        let probe = path.join(format!(".probe.{}", std::process::id()));
        File::create(&probe)
            .and_then(|f| f.sync_all())
            .and_then(|()| fs::remove_file(&probe))
            .map_err(|e| fail("cannot write in it", e))?;
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The directory of one resource's state.
    pub fn resource_dir(&self, resource: &Resource) -> PathBuf {
        self.root
            .join("resources")
            .join(resource_key(&resource.file, &resource.name))
    }

    /// The resource's record; empty when there is none. A record that cannot be read
    /// or parsed is reported and read as empty: losing it costs at worst a reload that
    /// is not run again, and refusing to apply would cost more.
    pub fn load(&self, resource: &Resource) -> Record {
        let path = self.resource_dir(resource).join("state.json");
        if let Some(record) = self.cached().get(&path) {
            return record.clone();
        }
        let record = match fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(record) => record,
                Err(e) => {
                    warn!(path = %path.display(), cause = %e, "unreadable state record; starting afresh");
                    return Record::default();
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Record::default(),
            Err(e) => {
                warn!(path = %path.display(), cause = %e, "cannot read the state record");
                return Record::default();
            }
        };
        self.cached().insert(path, record.clone());
        record
    }

    fn cached(&self) -> MutexGuard<'_, HashMap<PathBuf, Record>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the resource's record.
    pub fn store(
        &self,
        resource: &Resource,
        record: &Record,
        durability: Durability,
    ) -> io::Result<()> {
        let dir = self.resource_dir(resource);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let path = dir.join("state.json");
        let bytes = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
        let written = write_atomically(&path, &bytes, durability);
        match &written {
            Ok(()) => self.cached().insert(path, record.clone()),
            // What is on disk now is unknown: read it again next time.
            Err(_) => self.cached().remove(&path),
        };
        written
    }
}

/// `<name with / as _>-<16 hex digits of SHA-256 of the file's path>`: readable, and
/// unique per resource file even when two confdirs share the state directory.
fn resource_key(file: &Path, name: &str) -> String {
    let digest = Sha256::digest(file.as_os_str().as_encoded_bytes());
    let readable: String = name
        .chars()
        .map(|c| if c == '/' || c.is_control() { '_' } else { c })
        .take(64)
        .collect();
    format!("{readable}-{}", hex(&digest[..8]))
}

/// SHA-256 of `content`, in hex.
pub fn content_hash(content: &[u8]) -> String {
    hex(&Sha256::digest(content))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

fn write_atomically(path: &Path, bytes: &[u8], durability: Durability) -> io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    if durability == Durability::Synced {
        file.sync_all()?;
    }
    drop(file);
    fs::rename(&tmp, path)?;
    if durability == Durability::Synced
        && let Some(dir) = path.parent()
    {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The marker the previous release left beside dest for an owed reload
/// (`.<name>.conflux-reload-owed`).
fn legacy_marker(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.conflux-reload-owed"))
}

/// Honours, once, the owed-reload markers that the previous release left beside dest:
/// the reload becomes owed in the state directory (durably) and the marker is removed.
/// A marker whose resource has no reload command is only removed.
pub fn migrate_markers(state: &StateDir, resources: &[Resource]) {
    for resource in resources {
        let marker = legacy_marker(&resource.dest);
        if !marker.exists() {
            continue;
        }
        if resource.reload.is_some() {
            let mut record = state.load(resource);
            record.reload_owed = true;
            if let Err(e) = state.store(resource, &record, Durability::Synced) {
                warn!(resource = %resource.name, cause = %e, "cannot record the owed reload of an old marker; keeping the marker");
                continue;
            }
            warn!(resource = %resource.name, marker = %marker.display(), "a reload owed by an earlier release: it will run again");
        }
        if let Err(e) = fs::remove_file(&marker) {
            warn!(marker = %marker.display(), cause = %e, "cannot remove an old owed-reload marker");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, DEFAULT_TIMEOUT};
    use std::os::unix::fs::PermissionsExt;

    fn mode_of(path: &Path) -> io::Result<u32> {
        Ok(fs::metadata(path)?.permissions().mode() & 0o7777)
    }

    fn resource(dir: &Path) -> Resource {
        let mut r = crate::resource::test_resource("app/a.toml", &[], dir.join("a.conf"));
        r.file = dir.join("conf.d/app/a.toml");
        r
    }

    #[test]
    fn a_new_state_dir_is_created_0700_and_records_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("var/lib/conflux");
        let state = StateDir::open(&root, true).unwrap();
        assert_eq!(mode_of(&root).unwrap(), 0o700);
        let r = resource(tmp.path());
        assert_eq!(state.load(&r), Record::default());
        let mut record = Record {
            reload_owed: true,
            ..Record::default()
        };
        record.files.insert(
            r.dest.clone(),
            Applied {
                revision: 7,
                sha256: content_hash(b"x"),
                stamp: None,
            },
        );
        state.store(&r, &record, Durability::Synced).unwrap();
        assert_eq!(state.load(&r), record);
        let dir = state.resource_dir(&r);
        assert!(dir.starts_with(root.join("resources")));
        assert!(
            dir.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("app_a.toml-")
        );
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary file left"
        );
    }

    #[test]
    fn resources_of_two_confdirs_with_one_name_do_not_share_a_record() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(tmp.path(), true).unwrap();
        let a = resource(&tmp.path().join("one"));
        let b = resource(&tmp.path().join("two"));
        state
            .store(
                &a,
                &Record {
                    reload_owed: true,
                    ..Record::default()
                },
                Durability::Atomic,
            )
            .unwrap();
        assert!(!state.load(&b).reload_owed);
    }

    #[test]
    fn a_state_dir_that_is_a_file_is_refused_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        fs::write(&file, "").unwrap();
        for path in [file.clone(), file.join("below")] {
            let err = StateDir::open(&path, true).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains("--state-dir"), "{text}");
        }
    }

    #[test]
    fn a_corrupt_record_reads_as_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(tmp.path(), true).unwrap();
        let r = resource(tmp.path());
        fs::create_dir_all(state.resource_dir(&r)).unwrap();
        fs::write(state.resource_dir(&r).join("state.json"), "{not json").unwrap();
        assert_eq!(state.load(&r), Record::default());
    }

    #[test]
    fn an_old_marker_becomes_an_owed_reload_once_and_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(&tmp.path().join("state"), true).unwrap();
        let mut with_reload = resource(tmp.path());
        with_reload.reload = Some(Command::new("true", DEFAULT_TIMEOUT));
        let mut without = resource(tmp.path());
        without.name = "b.toml".into();
        without.file = tmp.path().join("conf.d/b.toml");
        without.dest = tmp.path().join("b.conf");
        for r in [&with_reload, &without] {
            fs::write(legacy_marker(&r.dest), "").unwrap();
        }
        migrate_markers(&state, &[with_reload.clone(), without.clone()]);
        assert!(state.load(&with_reload).reload_owed);
        assert!(!state.load(&without).reload_owed);
        assert!(!legacy_marker(&with_reload.dest).exists());
        assert!(!legacy_marker(&without.dest).exists());
    }
}
