//! The commit conflux is built from, for `conflux --version`: set as the compile-time
//! variable `CONFLUX_BUILD_COMMIT`, which `cli` reads with `env!`.
//!
//! Where it comes from, first that gives one:
//! 1. `CONFLUX_GIT_COMMIT` in the build's environment (a container build, whose
//!    context leaves `.git` out, passes it as a build argument; a distribution building
//!    from a release tarball may set it too);
//! 2. `git rev-parse` when the source tree has its own `.git` (a file in a worktree);
//! 3. `unknown`. A tarball has no `.git`, and git may be missing or refuse the
//!    repository: none of that fails the build. Without a `.git` of its own, git is not
//!    asked at all: a tarball unpacked inside some other repository would otherwise
//!    report that repository's commit.
//!
//! The script reruns only when HEAD moves (the files git keeps it in), not on every
//! source edit: a hand-rolled script rather than `vergen`, which needs the same
//! fallback written around it and a builder crate for one value.

use std::path::{Path, PathBuf};
use std::process::Command;

const UNKNOWN: &str = "unknown";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CONFLUX_GIT_COMMIT");
    let given = std::env::var("CONFLUX_GIT_COMMIT")
        .ok()
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty());
    let commit = match given {
        Some(commit) => commit,
        None => from_git().unwrap_or_else(|| UNKNOWN.to_string()),
    };
    println!("cargo:rustc-env=CONFLUX_BUILD_COMMIT={commit}");
}

/// The abbreviated commit of HEAD, when the source tree is a git checkout.
fn from_git() -> Option<String> {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?);
    if !root.join(".git").exists() {
        return None;
    }
    for file in head_files(&root) {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let commit = git(&root, &["rev-parse", "--short=12", "HEAD"]);
    if commit.is_none() {
        println!(
            "cargo:warning=git could not name HEAD: `conflux --version` says commit {UNKNOWN}"
        );
    }
    commit
}

/// The files whose change moves HEAD: HEAD itself, the branch it points to, and
/// packed-refs (where a branch lives after `git gc`). `--git-path` finds them in a
/// worktree too, whose HEAD is not under `<root>/.git/`. Only existing files are
/// named: cargo reruns the script on every build for a missing one.
fn head_files(root: &Path) -> Vec<PathBuf> {
    let mut names = vec!["HEAD".to_string(), "packed-refs".to_string()];
    names.extend(git(root, &["symbolic-ref", "-q", "HEAD"]));
    names
        .iter()
        .filter_map(|name| git(root, &["rev-parse", "--git-path", name]))
        .map(|path| root.join(path))
        .filter(|path| path.exists())
        .collect()
}

/// `git -C root <args>`'s first line, or `None` when git is missing or fails.
fn git(root: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let line = text.lines().next()?.trim();
    (!line.is_empty()).then(|| line.to_string())
}
