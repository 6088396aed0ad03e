//! One registration's file in the state directory, `register/<hash of the key>.json`:
//!
//! - **a lock**: the process holds an exclusive `flock` on it while it runs, so a
//!   second `conflux register` for the same key (on the same state directory) stops
//!   with a clear error instead of fighting the first over the key;
//! - **the lease last granted** (`{"key": …, "lease": …}`), written before the key is
//!   put under it and cleared once it is revoked. After a crash or a `kill -9`, the
//!   next run (systemd's `Restart=always`) finds its predecessor's lease still holding
//!   the key for up to a TTL: without the memo it would call that key another
//!   instance's and exit 1, over and over until the TTL ran out (and systemd's start
//!   limit stopped restarting it). With it, the lease is known as ours and revoked.
//!
//! The lease is rewritten in place on the locked file (a rename would replace the
//! inode the lock is on). A torn write reads as no memo: the lease it named expires by
//! itself within its TTL.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::warn;

use super::RegisterError;
use crate::state::{StateDir, StateError};

pub struct Memo {
    file: File,
    path: PathBuf,
    key: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Content {
    key: String,
    lease: Option<i64>,
}

impl Memo {
    /// Opens (creating) and locks the file of `key`.
    pub fn open(state: &StateDir, key: &str) -> Result<Memo, RegisterError> {
        let dir = state.path().join("register");
        let fail = |path: &Path, what, source| StateError {
            path: path.to_path_buf(),
            what,
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| fail(&dir, "cannot create its register directory", e))?;
        let path = dir.join(format!("{}.json", file_name(key)));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| fail(&path, "cannot open a registration's file", e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(RegisterError::Running {
                    key: key.to_string(),
                    lock: path,
                });
            }
            Err(TryLockError::Error(e)) => {
                return Err(fail(&path, "cannot lock a registration's file", e).into());
            }
        }
        Ok(Memo {
            file,
            path,
            key: key.to_string(),
        })
    }

    /// The lease the last run of this registration left, if it did not revoke it.
    pub fn previous(&mut self) -> Option<i64> {
        let mut text = String::new();
        let read = self
            .file
            .rewind()
            .and_then(|()| self.file.read_to_string(&mut text));
        if let Err(e) = read {
            warn!(path = %self.path.display(), cause = %e, "cannot read the registration's file");
            return None;
        }
        match serde_json::from_str::<Content>(&text) {
            Ok(content) if content.key == self.key => content.lease,
            Ok(_) => None,
            Err(_) if text.is_empty() => None,
            Err(e) => {
                warn!(path = %self.path.display(), cause = %e, "ignoring an unreadable registration file");
                None
            }
        }
    }

    /// Records the lease now held (`None`: none). Durable before the key is put under
    /// it; a failure is only logged: it costs, after a crash, one exit 1 at the next
    /// start, not a wrong registration.
    pub fn save(&mut self, lease: Option<i64>) {
        if let Err(e) = self.write(lease) {
            warn!(path = %self.path.display(), cause = %e, "cannot record the lease in the registration's file");
        }
    }

    fn write(&mut self, lease: Option<i64>) -> io::Result<()> {
        let content = Content {
            key: self.key.clone(),
            lease,
        };
        let text = serde_json::to_string(&content).map_err(io::Error::other)?;
        self.file.set_len(0)?;
        self.file.rewind()?;
        self.file.write_all(text.as_bytes())?;
        self.file.sync_data()
    }
}

/// 32 hex digits of the key's SHA-256: any key, even `/` or one longer than a file
/// name may be, gets a plain file name.
fn file_name(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> (tempfile::TempDir, StateDir) {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(&dir.path().join("state"), true).unwrap();
        (dir, state)
    }

    #[test]
    fn the_lease_survives_the_process_and_is_cleared_when_revoked() {
        let (_dir, state) = state();
        let mut memo = Memo::open(&state, "/svc/a").unwrap();
        assert_eq!(memo.previous(), None);
        memo.save(Some(0x694d_7b8b));
        drop(memo);
        let mut memo = Memo::open(&state, "/svc/a").unwrap();
        assert_eq!(memo.previous(), Some(0x694d_7b8b));
        memo.save(None);
        assert_eq!(memo.previous(), None);
    }

    #[test]
    fn a_second_process_for_the_same_key_is_refused() {
        let (_dir, state) = state();
        let _first = Memo::open(&state, "/svc/a").unwrap();
        let err = Memo::open(&state, "/svc/a").err().expect("refused");
        assert!(matches!(err, RegisterError::Running { .. }), "{err}");
        assert_eq!(err.exit_code(), 1);
        Memo::open(&state, "/svc/b").expect("another key is another file");
    }

    #[test]
    fn a_torn_file_reads_as_no_lease() {
        let (_dir, state) = state();
        let mut memo = Memo::open(&state, "/svc/a").unwrap();
        std::fs::write(&memo.path, "{\"key\": \"/svc/a\", \"lea").unwrap();
        assert_eq!(memo.previous(), None);
    }
}
