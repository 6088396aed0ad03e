//! Walking a directory tree the way conflux reads `conf.d/` and data directories:
//! recursively, in name order, following symlinks (confd does not: confd#741), and
//! visiting each real directory once, so a symlink loop or two links to one directory
//! cannot load the same file twice. What to do with each file is the caller's.
//!
//! The template set walks on its own (`template::walk`): there, a directory reached by
//! two links must load under both names, since templates are named by their path.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};

/// Every file below `dir`, depth first in name order (as Go's `filepath.Walk`, which
/// confd uses). Dot-files and dot-directories are skipped
/// when `skip_hidden` (editor swap files, atomic-write temp files, Kubernetes'
/// `..data` links); dangling symlinks are skipped.
pub fn files(dir: &Path, skip_hidden: bool) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    walk(dir, skip_hidden, &mut HashSet::new(), &mut out)?;
    Ok(out)
}

fn walk(
    dir: &Path,
    skip_hidden: bool,
    seen: &mut HashSet<PathBuf>,
    out: &mut Vec<PathBuf>,
) -> io::Result<()> {
    if !seen.insert(dir.canonicalize()?) {
        return Ok(());
    }
    let mut entries = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<io::Result<Vec<_>>>()?;
    entries.sort();
    for path in entries {
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if skip_hidden && hidden {
            continue;
        }
        // metadata() follows symlinks, unlike DirEntry::file_type.
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => walk(&path, skip_hidden, seen, out)?,
            Ok(meta) if meta.is_file() => out.push(path),
            _ => {} // a dangling symlink, a socket, a fifo
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let rel = |v: Vec<PathBuf>| -> Vec<String> {
            v.iter()
                .map(|p| p.strip_prefix(root).expect("below").display().to_string())
                .collect()
        };
        assert_eq!(
            rel(files(root, true).expect("walk")),
            vec!["a.toml", "b/c/d.toml"]
        );
        assert_eq!(
            rel(files(root, false).expect("walk")),
            vec![".hidden.toml", "a.toml", "b/.swp", "b/c/d.toml"]
        );
    }
}
