//! The `file` backend: key-value data from YAML, JSON and TOML files, as confd's
//! `-backend file -file PATH -filter GLOB` reads it.
//!
//! Each configured path is a file or a directory. A file named explicitly is always
//! read; a directory is walked recursively in lexical order, following symlinks, and
//! every file whose name matches the filter is read. The filter is a Go
//! `filepath.Match` glob as confd's is ([`Pattern`], the dialect of key lookups too):
//! `[^a]` negates a class, a backslash escapes, and `**` is only two `*`. How one
//! file's text becomes flat keys (`database: {host: x}` is `/database/host`, lists
//! `/0`, `/1`, scalars stringified as confd does, nulls left out) is the `flatten`
//! submodule's business, which parser reads a file the `format` submodule's.
//!
//! A watch follows the directories with a debounced notify watcher, re-reads
//! everything after any change, and sends a [`crate::kv::Change::Reset`] only when the
//! selected data differs from what it sent last. A file that cannot be read or parsed
//! then is logged and skipped, so the daemon keeps the last good data while someone
//! edits. When to read again and what to watch is the `watch` submodule's business.
//!
//! Where this reader deliberately differs from confd:
//! - Files are parsed by extension: `.json` as JSON, `.toml` as TOML, everything else
//!   (`.yaml`, `.yml`, no extension) as YAML, as confd parses every file. YAML is read
//!   with the YAML 1.2 core schema, so `yes`/`on` stay strings where yaml.v2 made them
//!   `true`. Map keys that are numbers or booleans are stringified instead of
//!   panicking, and YAML merge keys (`<<: *base`) are applied.
//! - Names starting with `.` inside a directory are skipped: editors' swap files, the
//!   temporary files of atomic writers and Kubernetes' `..data` directories would
//!   otherwise be read (or read twice). A path named explicitly is always read.
//! - Keys are kept when a selector selects them ([`keys::selects`]); confd keeps them
//!   by string prefix, so its `/app/db` also pulls `/app/dbx`.
//!
//! Later files override earlier ones key by key: paths in the order given, files of a
//! directory in lexical order. The revision counts reads that found different data: it
//! starts at 1 and grows only when the content of all files together changed.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

mod flatten;
mod format;
mod watch;

pub use self::format::{Format, ParseError};
pub use self::watch::WatchError;

use self::flatten::Kvs;
use super::{Action, Backend, BackendError, BoxFuture};
use crate::kv::Change;
use crate::kv::Snapshot;
use crate::kv::keys;
use crate::kv::pattern::{Pattern, PatternError};

const NAME: &str = "file";

/// Reads files or directories of YAML, JSON and TOML as flat keys.
pub struct FileBackend {
    sources: Arc<Sources>,
    last: Mutex<LastRead>,
}

/// What to read: cheap to share with blocking reader threads.
struct Sources {
    paths: Vec<PathBuf>,
    /// Parsed once; a bad filter is reported by every read rather than by `new`,
    /// whose signature callers rely on.
    filter: Result<Pattern, PatternError>,
}

/// The data of the latest successful read, to tell whether the next one changed.
#[derive(Default)]
struct LastRead {
    revision: i64,
    kvs: Arc<Kvs>,
}

/// Why reading the data files failed; shown to the operator as one line naming the
/// file. Each is fatal to a snapshot (a missing file, a broken one or a bad filter is
/// the operator's to fix); a watch logs it and keeps the last good data instead.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: invalid {}: {source}", path.display(), source.format())]
    Parse { path: PathBuf, source: ParseError },
    #[error("invalid file filter {:?}: {}", source.pattern, source.reason)]
    Filter { source: PatternError },
    /// The blocking reader thread panicked or was cancelled.
    #[error("the file reader failed: {0}")]
    Reader(#[source] tokio::task::JoinError),
}

impl FileBackend {
    /// `paths` are files or directories; `filter` is a glob on the names of the files
    /// found inside directories (confd's `-filter`, `*` for all).
    pub fn new(paths: Vec<PathBuf>, filter: String) -> Self {
        FileBackend {
            sources: Arc::new(Sources {
                paths,
                filter: Pattern::parse(&filter),
            }),
            last: Mutex::new(LastRead::default()),
        }
    }

    /// Reads every file on a blocking thread and records the result's revision.
    async fn read(&self) -> Result<(i64, Arc<Kvs>), ReadError> {
        let sources = Arc::clone(&self.sources);
        let kvs = tokio::task::spawn_blocking(move || sources.read())
            .await
            .map_err(ReadError::Reader)??;
        Ok(self.record(kvs))
    }

    /// Keeps `kvs` as the latest data and returns its revision: one more than the
    /// previous read's when the content differs, the same otherwise.
    fn record(&self, kvs: Kvs) -> (i64, Arc<Kvs>) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.revision == 0 || *last.kvs != kvs {
            last.revision += 1;
            last.kvs = Arc::new(kvs);
        }
        (last.revision, Arc::clone(&last.kvs))
    }
}

impl Backend for FileBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn snapshot<'a>(
        &'a self,
        selectors: &'a [String],
    ) -> BoxFuture<'a, Result<Snapshot, BackendError>> {
        Box::pin(async move {
            let (revision, kvs) = self
                .read()
                .await
                .map_err(|err| BackendError::fatal(NAME, Action::Snapshot, err))?;
            Ok(Snapshot::new(revision, select(&kvs, selectors)))
        })
    }

    fn watch<'a>(
        &'a self,
        selectors: &'a [String],
        after: i64,
        changes: mpsc::Sender<Change>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(self.watch_files(selectors, after, changes, shutdown))
    }
}

/// The keys that any of `selectors` selects.
fn select(kvs: &Kvs, selectors: &[String]) -> Kvs {
    // A set, not a scan of the selectors per key: 1,000 resources over 10,000 keys
    // were 10 million comparisons on every read.
    let selection = keys::Selection::new(selectors);
    kvs.iter()
        .filter(|(key, _)| selection.selects(key))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

impl Sources {
    /// Every file, flattened and merged; later files win.
    fn read(&self) -> Result<Kvs, ReadError> {
        let filter = self.filter.as_ref().map_err(|err| ReadError::Filter {
            source: err.clone(),
        })?;
        let mut kvs = Kvs::new();
        for path in &self.paths {
            for file in files(path, filter)? {
                kvs.extend(read_file(&file)?);
            }
        }
        Ok(kvs)
    }
}
/// The files `path` names: itself, or the matching files below it in lexical order.
fn files(path: &Path, filter: &Pattern) -> Result<Vec<PathBuf>, ReadError> {
    let meta = fs::metadata(path).map_err(io_error(path))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let all = crate::fswalk::files(path, true).map_err(io_error(path))?;
    Ok(all
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| filter.matches(n))
        })
        .collect())
}

/// Wraps an I/O error with the path it concerns.
fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ReadError + '_ {
    move |source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One file's keys.
fn read_file(path: &Path) -> Result<Kvs, ReadError> {
    let text = fs::read_to_string(path).map_err(io_error(path))?;
    flatten::parse(&text, Format::of(path)).map_err(|source| ReadError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&path, text).unwrap();
        path
    }

    pub(super) fn kvs(pairs: &[(&str, &str)]) -> Kvs {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    pub(super) fn all() -> Vec<String> {
        vec!["/".to_string()]
    }

    pub(super) async fn snapshot(
        backend: &FileBackend,
        selectors: &[&str],
    ) -> Result<Snapshot, BackendError> {
        let selectors: Vec<String> = selectors.iter().map(|s| s.to_string()).collect();
        backend.snapshot(&selectors).await
    }

    pub(super) fn backend(paths: &[&Path]) -> FileBackend {
        FileBackend::new(paths.iter().map(|p| p.to_path_buf()).collect(), "*".into())
    }

    #[test]
    fn unknown_extensions_and_empty_files_read_as_yaml() {
        let dir = tempfile::tempdir().unwrap();
        let conf = write(dir.path(), "app.conf", "a: {b: c}\n");
        let empty = write(dir.path(), "empty.yaml", "");
        assert_eq!(read_file(&conf).unwrap(), kvs(&[("/a/b", "c")]));
        assert_eq!(read_file(&empty).unwrap(), Kvs::new());
    }

    #[tokio::test]
    async fn a_directory_is_read_in_order_through_the_filter() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "1.yaml", "a: first\nb: first\n");
        write(dir.path(), "2/x.yaml", "b: second\nc: second\n");
        write(dir.path(), "3.yml", "c: ignored by the filter\n");
        write(dir.path(), "notes.txt", "not: yaml: at all: [\n");
        write(dir.path(), ".hidden.yaml", "a: hidden\n");
        let backend = FileBackend::new(vec![dir.path().to_path_buf()], "*.yaml".into());
        let snap = snapshot(&backend, &["/"]).await.unwrap();
        assert_eq!(
            snap.kvs,
            kvs(&[("/a", "first"), ("/b", "second"), ("/c", "second")])
        );
    }

    /// The filter is confd's Go `filepath.Match`, not the `glob` crate's dialect it
    /// once was: `[^a]` negates (the glob crate read `^` as a literal), and `**` is
    /// two stars, not a recursive wildcard.
    #[tokio::test]
    async fn the_filter_is_a_go_glob() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.yaml", "a: 1\n");
        write(dir.path(), "b.yaml", "b: 2\n");
        write(dir.path(), "sub/c.yaml", "c: 3\n");
        let read = |filter: &str| {
            let backend = FileBackend::new(vec![dir.path().to_path_buf()], filter.into());
            async move { snapshot(&backend, &["/"]).await.map(|s| s.kvs) }
        };
        assert_eq!(
            read("[^a].yaml").await.unwrap(),
            kvs(&[("/b", "2"), ("/c", "3")])
        );
        assert_eq!(read("**.yaml").await.unwrap().len(), 3);
        assert_eq!(read("\\a.yaml").await.unwrap(), kvs(&[("/a", "1")]));
    }

    #[tokio::test]
    async fn a_bad_filter_is_fatal_and_named() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.yaml", "a: 1\n");
        let backend = FileBackend::new(vec![dir.path().to_path_buf()], "[a-".into());
        let err = snapshot(&backend, &["/"]).await.unwrap_err();
        assert!(!err.is_transient());
        assert!(
            err.to_string().contains(r#"invalid file filter "[a-""#),
            "{err}"
        );
    }

    #[tokio::test]
    async fn later_files_override_earlier_ones() {
        let dir = tempfile::tempdir().unwrap();
        let one = write(dir.path(), "one.yaml", "db: {host: a, port: 1}\n");
        let two = write(dir.path(), "two.json", r#"{"db": {"host": "b"}}"#);
        let snap = snapshot(&backend(&[&one, &two]), &["/"]).await.unwrap();
        assert_eq!(snap.kvs, kvs(&[("/db/host", "b"), ("/db/port", "1")]));
        let snap = snapshot(&backend(&[&two, &one]), &["/"]).await.unwrap();
        assert_eq!(snap.kvs, kvs(&[("/db/host", "a"), ("/db/port", "1")]));
    }

    #[tokio::test]
    async fn selectors_keep_only_what_they_select() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "a.yaml",
            "app:\n  db: {host: h}\n  dbx: sibling\n  db-x: sibling\n  web: {port: 80}\nother: o\n",
        );
        let backend = backend(&[&path]);
        let snap = snapshot(&backend, &["/app/db", "/other"]).await.unwrap();
        assert_eq!(snap.kvs, kvs(&[("/app/db/host", "h"), ("/other", "o")]));
    }

    #[tokio::test]
    async fn parse_errors_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("bad.yaml", "a: b\nc: [unclosed\n", "line"),
            ("bad.json", "{\n  \"a\": 1,\n}", "line 3"),
            ("bad.toml", "a = 1\nb = \n", "line 2"),
        ];
        for (name, text, at) in cases {
            let path = write(dir.path(), name, text);
            let err = snapshot(&backend(&[&path]), &["/"]).await.unwrap_err();
            assert!(!err.is_transient());
            let msg = err.to_string();
            assert!(msg.contains(name) && msg.contains(at), "{msg}");
        }
    }

    #[tokio::test]
    async fn a_missing_file_is_fatal_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.yaml");
        let err = snapshot(&backend(&[&missing]), &["/"]).await.unwrap_err();
        assert!(!err.is_transient());
        assert!(err.to_string().contains("missing.yaml"), "{err}");
    }

    #[tokio::test]
    async fn the_revision_grows_only_when_the_data_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "a.yaml", "a: 1\n");
        let backend = backend(&[&path]);
        assert_eq!(snapshot(&backend, &["/"]).await.unwrap().revision, 1);
        assert_eq!(snapshot(&backend, &["/"]).await.unwrap().revision, 1);
        write(dir.path(), "a.yaml", "a: 1 # same data, new comment\n");
        assert_eq!(snapshot(&backend, &["/"]).await.unwrap().revision, 1);
        write(dir.path(), "a.yaml", "a: 2\n");
        assert_eq!(snapshot(&backend, &["/a"]).await.unwrap().revision, 2);
    }

    /// confd's `integration/file/backends1/1.yaml`, whose keys its integration
    /// templates read.
    #[tokio::test]
    async fn confd_integration_data_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "backends1/1.yaml",
            "key: foobar\ndatabase:\n  host: 127.0.0.1\n  password: p@sSw0rd\n  port: \"3306\"\n  username: confd\n",
        );
        let snap = snapshot(&backend(&[path.parent().unwrap()]), &["/key", "/database"])
            .await
            .unwrap();
        assert_eq!(
            snap.kvs,
            kvs(&[
                ("/database/host", "127.0.0.1"),
                ("/database/password", "p@sSw0rd"),
                ("/database/port", "3306"),
                ("/database/username", "confd"),
                ("/key", "foobar"),
            ])
        );
    }
}
