//! The file backend's watch: a notify watcher on the directories that hold the data
//! files, and a loop that re-reads everything once a burst of changes has settled and
//! sends a [`Change::Reset`] only when the selected data differs from what it sent
//! last. The settling is this loop's, not a debouncer thread's: a debouncer wakes every
//! 50 ms even when nothing changes, and an idle daemon should not.
//!
//! Reading, merging and selecting are the parent module's; this one decides when to
//! read again and what to watch.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::flatten::Kvs;
use super::{FileBackend, NAME, ReadError, Sources, io_error, select};
use crate::backend::{Action, BackendError};
use crate::kv::{Change, Snapshot};

/// How long the watch waits for a burst of file events to settle before reading again,
/// and at most after the first event of a burst.
const DEBOUNCE: Duration = Duration::from_millis(200);
const DEBOUNCE_MAX: Duration = Duration::from_secs(2);

/// Why the watch of the data files could not start, or stopped. Always transient: a
/// directory missing now may be there at the next attempt.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// A configured path could not be resolved to the directory to watch.
    #[error("cannot watch the data files: {0}")]
    Roots(#[source] ReadError),
    /// notify could not start (no `dir`) or could not watch `dir`.
    #[error("cannot watch the data files: {}{source}", in_dir(.dir))]
    Notify {
        dir: Option<PathBuf>,
        source: notify::Error,
    },
    #[error("the file watcher stopped")]
    Stopped,
}

fn in_dir(dir: &Option<PathBuf>) -> String {
    dir.as_ref()
        .map(|dir| format!("{}: ", dir.display()))
        .unwrap_or_default()
}

impl FileBackend {
    /// The selected data at revision `after`, if that is the latest read.
    fn selected_at(&self, after: i64, selectors: &[String]) -> Option<Kvs> {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        (last.revision == after && after > 0).then(|| select(&last.kvs, selectors))
    }

    pub(super) async fn watch_files(
        &self,
        selectors: &[String],
        after: i64,
        changes: mpsc::Sender<Change>,
        shutdown: CancellationToken,
    ) -> Result<(), BackendError> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        // Held for the whole watch: dropping the watcher stops it.
        let _watcher = self
            .sources
            .watch(tx)
            .map_err(|err| BackendError::transient(NAME, Action::Watch, err))?;
        // What the caller holds; unknown when `after` is not the latest read, and
        // then the first read is sent whatever it finds.
        let mut sent = self.selected_at(after, selectors);
        // Read once before the first event: the files may have changed between the
        // caller's snapshot and the watcher's start.
        let mut dirty = true;
        loop {
            if dirty && let Some(snapshot) = self.reread(selectors, &mut sent).await {
                tokio::select! {
                    result = changes.send(Change::Reset(snapshot)) => if result.is_err() { return Ok(()) },
                    _ = shutdown.cancelled() => return Ok(()),
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = changes.closed() => return Ok(()),
                event = rx.recv() => dirty = match event {
                    Some(Ok(event)) => is_relevant(&event),
                    Some(Err(err)) => {
                        warn!(backend = NAME, cause = %err, "file watcher error");
                        // Events may have been lost with the error: read again.
                        true
                    }
                    None => return Err(BackendError::transient(NAME, Action::Watch, WatchError::Stopped)),
                },
            }
            if dirty && !settle(&mut rx, &shutdown).await {
                return Ok(());
            }
        }
    }

    /// Re-reads the files after a change: the new snapshot when the selected data
    /// differs from `sent`, nothing when it is the same or the files cannot be read.
    /// A broken file is logged and skipped so that the daemon keeps the last good data
    /// while someone is still editing.
    async fn reread(&self, selectors: &[String], sent: &mut Option<Kvs>) -> Option<Snapshot> {
        let (revision, kvs) = match self.read().await {
            Ok(read) => read,
            Err(err) => {
                warn!(backend = NAME, cause = %err, "cannot read data files; keeping the last good data");
                return None;
            }
        };
        let selected = select(&kvs, selectors);
        if sent.as_ref() == Some(&selected) {
            return None;
        }
        debug!(backend = NAME, revision, "data files changed");
        *sent = Some(selected.clone());
        Some(Snapshot::new(revision, selected))
    }
}

/// Any change but a read can alter the data. Events are not matched against the data
/// files' own paths: a rename in the same directory (an atomic replace, Kubernetes
/// swapping its `..data` link) can change what a path reads, and a spurious re-read
/// costs little because unchanged data is never sent.
fn is_relevant(event: &Event) -> bool {
    !matches!(event.kind, EventKind::Access(_))
}

/// Waits until no event has come for [`DEBOUNCE`] (at most [`DEBOUNCE_MAX`]): a burst
/// of writes, or an atomic replace's several events, is one read. False when shut down.
async fn settle(
    rx: &mut mpsc::UnboundedReceiver<notify::Result<Event>>,
    shutdown: &CancellationToken,
) -> bool {
    let until = tokio::time::Instant::now() + DEBOUNCE_MAX;
    loop {
        let quiet = (tokio::time::Instant::now() + DEBOUNCE).min(until);
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep_until(quiet) => return true,
            event = rx.recv() => match event {
                Some(Err(err)) => warn!(backend = NAME, cause = %err, "file watcher error"),
                Some(Ok(_)) => {}
                // The watcher stopped: the loop finds out at its next receive.
                None => return true,
            },
        }
    }
}

impl Sources {
    /// Starts a watcher whose events go to `tx`. Directories are watched rather than
    /// files, so that a file replaced by a rename is still seen.
    fn watch(
        &self,
        tx: mpsc::UnboundedSender<notify::Result<Event>>,
    ) -> Result<RecommendedWatcher, WatchError> {
        let mut watcher = notify::recommended_watcher(move |event| {
            // The receiver is gone only when the watch has ended.
            let _ = tx.send(event);
        })
        .map_err(|source| WatchError::Notify { dir: None, source })?;
        for (dir, mode) in watch_roots(&self.paths).map_err(WatchError::Roots)? {
            if let Err(source) = watcher.watch(&dir, mode) {
                return Err(WatchError::Notify {
                    dir: Some(dir),
                    source,
                });
            }
        }
        Ok(watcher)
    }
}

/// The directories to watch for `paths`: a directory recursively; for a file its
/// directory (and, for a symlink, also its target's directory) alone. Roots inside a
/// recursive root are left out, since the recursive watch already covers them.
fn watch_roots(paths: &[PathBuf]) -> Result<Vec<(PathBuf, RecursiveMode)>, ReadError> {
    let mut recursive = Vec::new();
    let mut single = Vec::new();
    for path in paths {
        if fs::metadata(path).map_err(io_error(path))?.is_dir() {
            recursive.push(fs::canonicalize(path).map_err(io_error(path))?);
            continue;
        }
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        single.push(fs::canonicalize(parent).map_err(io_error(parent))?);
        let target = fs::canonicalize(path).map_err(io_error(path))?;
        if let Some(dir) = target.parent() {
            single.push(dir.to_path_buf());
        }
    }
    // Sorted, a directory comes before the directories inside it.
    recursive.sort();
    let mut roots: Vec<(PathBuf, RecursiveMode)> = Vec::new();
    for (dir, mode) in recursive
        .into_iter()
        .map(|d| (d, RecursiveMode::Recursive))
        .chain(single.into_iter().map(|d| (d, RecursiveMode::NonRecursive)))
    {
        let covered = roots
            .iter()
            .any(|(r, m)| *r == dir || (*m == RecursiveMode::Recursive && dir.starts_with(r)));
        if !covered {
            roots.push((dir, mode));
        }
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;

    use super::*;
    use crate::backend::Backend;
    use crate::backend::file::tests::{all, backend, kvs, snapshot, write};

    /// Replaces `name` the way careful writers do: a temporary file, then a rename.
    fn replace(dir: &Path, name: &str, text: &str) {
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut file = fs::File::create(&tmp).unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file.sync_all().unwrap();
        fs::rename(&tmp, dir.join(name)).unwrap();
    }

    async fn next_reset(rx: &mut mpsc::Receiver<Change>) -> Snapshot {
        let change = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("no change within 10 s")
            .expect("watch ended");
        match change {
            Change::Reset(snapshot) => snapshot,
            other => panic!("expected a reset, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn watch_reports_replaced_files_and_skips_broken_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "app.yaml", "app: {value: one}\nother: x\n");
        let backend = Arc::new(backend(&[&path]));
        let selectors = vec!["/app".to_string()];
        let first = backend.snapshot(&selectors).await.unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let (backend, selectors, shutdown) =
                (backend.clone(), selectors.clone(), shutdown.clone());
            async move {
                backend
                    .watch(&selectors, first.revision, tx, shutdown)
                    .await
            }
        });

        replace(dir.path(), "app.yaml", "app: {value: two}\nother: x\n");
        let second = next_reset(&mut rx).await;
        assert_eq!(second.kvs, kvs(&[("/app/value", "two")]));
        assert!(second.revision > first.revision);

        // Neither a broken file nor a change to unselected keys is sent: the next
        // reset must carry the fixed value.
        replace(dir.path(), "app.yaml", "app: {value: [broken\n");
        tokio::time::sleep(Duration::from_secs(1)).await;
        replace(dir.path(), "app.yaml", "app: {value: two}\nother: y\n");
        tokio::time::sleep(Duration::from_secs(1)).await;
        replace(dir.path(), "app.yaml", "app: {value: three}\nother: y\n");
        let third = next_reset(&mut rx).await;
        assert_eq!(third.kvs, kvs(&[("/app/value", "three")]));

        shutdown.cancel();
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn watch_sees_new_files_in_a_directory_and_ends_when_the_receiver_closes() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.yaml", "a: 1\n");
        let backend = backend(&[dir.path()]);
        let first = snapshot(&backend, &["/"]).await.unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let selectors = all();
        let watch = backend.watch(&selectors, first.revision, tx, CancellationToken::new());
        let check = async {
            write(dir.path(), "sub/b.yaml", "b: 2\n");
            let next = next_reset(&mut rx).await;
            assert_eq!(next.kvs, kvs(&[("/a", "1"), ("/b", "2")]));
            drop(rx);
        };
        let (result, ()) = tokio::join!(watch, check);
        result.unwrap();
    }

    #[test]
    fn watch_roots_use_directories_and_skip_covered_ones() {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        let file = write(&root, "sub/a.yaml", "a: 1\n");
        let roots = watch_roots(&[file, root.clone()]).unwrap();
        assert_eq!(roots, vec![(root, RecursiveMode::Recursive)]);
    }
}
