//! The one directory walker: `conf.d/`, data directories and `templates/` are all read
//! through it. It walks recursively, depth first in name order (as Go's
//! `filepath.Walk`, which confd uses), follows symlinks (confd does not: confd#741) and
//! skips a link back to one of its own ancestors, so a loop cannot recurse forever.
//!
//! Its callers differ in how they name what they find, and that is an [`Options`]
//! field, not a second walker. conf.d and data directories read each real directory
//! once ([`Options::every_name`] off): two links to one directory must not load the
//! same resource or key twice. Templates are named by their path, so a directory
//! reached by two links loads under both names, and a name that is not a usable file
//! (a dangling link) is reported as an [`Entry::Unusable`] for the template set to
//! show when that template is rendered. What to do with each file is the caller's.
//!
//! Built on `walkdir`, which follows links with ancestor-loop detection; the
//! once-per-directory rule and the sorting out of unusable names are ours.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};

use walkdir::WalkDir;

/// How a walk treats hidden names and directories reached by several links.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Skip dot-files and dot-directories (editor swap files, atomic-write temp files,
    /// Kubernetes' `..data` links).
    pub skip_hidden: bool,
    /// Walk a directory again under every link that reaches it, instead of once.
    pub every_name: bool,
}

/// One name found below the walked directory, as a path that starts with it.
#[derive(Debug)]
pub enum Entry {
    /// A regular file, or a link to one.
    File(PathBuf),
    /// A name that is not a usable file: a dangling link, a link into a place that
    /// cannot be read, a socket or a fifo.
    Unusable { path: PathBuf, error: io::Error },
}

/// Every regular file below `dir`, in walk order, each real directory read once.
/// Dangling links, sockets and fifos are left out. Dot-files and dot-directories
/// are skipped when `skip_hidden`.
pub fn files(dir: &Path, skip_hidden: bool) -> io::Result<Vec<PathBuf>> {
    let options = Options {
        skip_hidden,
        every_name: false,
    };
    Ok(walk(dir, options)?
        .into_iter()
        .filter_map(|entry| match entry {
            Entry::File(path) => Some(path),
            Entry::Unusable { .. } => None,
        })
        .collect())
}

/// Every name below `dir` that is not a directory, in walk order. A directory that
/// cannot be read (`dir` itself or one below it) fails the whole walk: a partial list
/// would look like deleted files to the caller.
pub fn walk(dir: &Path, options: Options) -> io::Result<Vec<Entry>> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut walker = WalkDir::new(dir)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| !(options.skip_hidden && e.depth() > 0 && hidden(e.file_name())));
    while let Some(next) = walker.next() {
        let entry = match next {
            Ok(entry) => entry,
            Err(err) => {
                out.extend(unusable(err)?);
                continue;
            }
        };
        let kind = entry.file_type();
        if kind.is_dir() {
            // walkdir only stops at ancestors; a second link elsewhere is ours to skip.
            if !options.every_name && !seen.insert(entry.path().canonicalize()?) {
                walker.skip_current_dir();
            }
        } else if kind.is_file() {
            out.push(Entry::File(entry.into_path()));
        } else {
            out.push(Entry::Unusable {
                path: entry.into_path(),
                error: io::Error::other("not a regular file"),
            });
        }
    }
    Ok(out)
}

fn hidden(name: &OsStr) -> bool {
    name.as_encoded_bytes().starts_with(b".")
}

/// Sorts out a walkdir error: a link back to an ancestor is skipped, a name whose
/// target cannot be reached is an unusable entry, and anything else (a directory
/// that cannot be listed) is the walk's error.
fn unusable(err: walkdir::Error) -> io::Result<Option<Entry>> {
    if err.loop_ancestor().is_some() {
        return Ok(None);
    }
    let path = match err.path() {
        Some(path) if err.depth() > 0 => path.to_path_buf(),
        _ => return Err(err.into()),
    };
    // walkdir stats a followed link before it lists a directory: if the stat fails
    // the name itself is unusable; if it succeeds, the listing is what failed.
    match std::fs::metadata(&path) {
        Err(error) => Ok(Some(Entry::Unusable { path, error })),
        Ok(_) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(root: &Path, paths: impl IntoIterator<Item = PathBuf>) -> Vec<String> {
        paths
            .into_iter()
            .map(|p| p.strip_prefix(root).expect("below").display().to_string())
            .collect()
    }

    #[test]
    fn follows_symlinks_once_in_order_and_skips_hidden() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        std::fs::create_dir_all(root.join("b/c")).expect("mkdir");
        for f in ["a.toml", "b/c/d.toml", ".hidden.toml", "b/.swp"] {
            std::fs::write(root.join(f), "").expect("write");
        }
        std::os::unix::fs::symlink(root.join("b"), root.join("b/c/loop")).expect("loop");
        std::os::unix::fs::symlink(root.join("nowhere"), root.join("dangling")).expect("dangling");
        assert_eq!(
            rel(root, files(root, true).expect("walk")),
            vec!["a.toml", "b/c/d.toml"]
        );
        assert_eq!(
            rel(root, files(root, false).expect("walk")),
            vec![".hidden.toml", "a.toml", "b/.swp", "b/c/d.toml"]
        );
    }

    #[test]
    fn every_name_walks_a_directory_under_each_link_and_reports_dangling_ones() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        std::fs::create_dir_all(root.join("real")).expect("mkdir");
        std::fs::write(root.join("real/f"), "").expect("write");
        std::os::unix::fs::symlink(root.join("real"), root.join("alias")).expect("alias");
        std::os::unix::fs::symlink(root, root.join("real/up")).expect("loop");
        std::os::unix::fs::symlink(root.join("gone"), root.join("dangling")).expect("dangling");
        let once = files(root, false).expect("walk");
        assert_eq!(rel(root, once), vec!["alias/f"]);
        let every = Options {
            every_name: true,
            ..Options::default()
        };
        let mut found = Vec::new();
        let mut unusable = Vec::new();
        for entry in walk(root, every).expect("walk") {
            match entry {
                Entry::File(path) => found.push(path),
                Entry::Unusable { path, error } => {
                    assert_eq!(error.kind(), io::ErrorKind::NotFound);
                    unusable.push(path);
                }
            }
        }
        assert_eq!(rel(root, found), vec!["alias/f", "real/f"]);
        assert_eq!(rel(root, unusable), vec!["dangling"]);
    }

    #[test]
    fn an_unreadable_directory_fails_the_walk() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let missing = tmp.path().join("nope");
        let err = files(&missing, false).expect_err("missing root");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
