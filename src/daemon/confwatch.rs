//! Hot reload of the confdir: a notify watcher on `conf.d/`, `templates/` and the
//! config file, whose changed paths the loop collects until they settle (an editor's
//! write-and-rename, or a `git checkout` of many files, is one reload), and the rule
//! for which resources a change concerns.
//!
//! The watcher is notify's own, not a debouncer: the loop's settle window already
//! coalesces, and a debouncer's thread wakes every 25 ms even when nothing changes
//! (6 to 14 ms of CPU every 10 idle seconds, the whole of an idle daemon's use).
//!
//! Loading and validating the new set is the same path as SIGHUP (`reconfigure`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::resource::Resource;

/// How long the loop waits after the last batch before reloading, and at most after
/// the first: a `git checkout` writes files for longer than one debounce.
pub(super) const SETTLE: Duration = Duration::from_millis(300);
pub(super) const SETTLE_MAX: Duration = Duration::from_secs(3);

/// What to watch.
#[derive(Debug, Clone)]
pub struct ConfdirPaths {
    pub conf_d: PathBuf,
    pub templates: PathBuf,
    /// The config file (watched through its directory, which may be the confdir).
    pub config_file: Option<PathBuf>,
}

/// The running watcher; dropping it stops the watch.
pub(super) struct ConfdirWatcher {
    _watcher: RecommendedWatcher,
}

/// Starts watching; each batch of changed paths goes to `tx`.
pub(super) fn start(
    paths: &ConfdirPaths,
    tx: mpsc::UnboundedSender<Vec<PathBuf>>,
) -> Result<ConfdirWatcher, notify::Error> {
    let watched = paths.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        // The config file's directory may hold other things (dests, even): keep only
        // what conflux reads.
        let changed: Vec<PathBuf> = event
            .paths
            .into_iter()
            .filter(|p| {
                p.starts_with(&watched.conf_d)
                    || p.starts_with(&watched.templates)
                    || watched.config_file.as_deref() == Some(p.as_path())
            })
            .collect();
        if !changed.is_empty() {
            // The receiver is gone only when the loop has stopped.
            let _ = tx.send(changed);
        }
    })?;
    watcher.watch(&paths.conf_d, RecursiveMode::Recursive)?;
    watcher.watch(&paths.templates, RecursiveMode::Recursive)?;
    if let Some(dir) = paths.config_file.as_deref().and_then(Path::parent)
        && dir.is_dir()
    {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    Ok(ConfdirWatcher { _watcher: watcher })
}

/// Which resources of a new set a change to `changed` concerns.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Affected {
    /// Nothing conflux reads changed (an editor's swap file, a README elsewhere).
    Nothing,
    /// The config file, or a template no resource renders directly (an included
    /// partial, a parent): every resource.
    All,
    /// These resources (by name): new, edited, or rendering a changed template.
    Some(BTreeSet<String>),
}

/// Decides what a batch of changed paths means for the new set, against the old one.
pub(super) fn affected(
    paths: &ConfdirPaths,
    changed: &BTreeSet<PathBuf>,
    old: &[Resource],
    new: &[Resource],
) -> Affected {
    let mut names = BTreeSet::new();
    let mut relevant = false;
    for path in changed {
        if paths.config_file.as_deref() == Some(path.as_path()) {
            return Affected::All;
        }
        if let Ok(rel) = path.strip_prefix(&paths.templates) {
            if ignored(rel) {
                continue;
            }
            relevant = true;
            let name = rel.to_string_lossy();
            let users: Vec<&Resource> = new.iter().filter(|r| renders(r, &name)).collect();
            if users.is_empty() {
                return Affected::All;
            }
            names.extend(users.iter().map(|r| r.name.clone()));
        } else if let Ok(rel) = path.strip_prefix(&paths.conf_d) {
            relevant |= !ignored(rel);
        }
    }
    for resource in new {
        if old.iter().find(|o| o.name == resource.name) != Some(resource) {
            names.insert(resource.name.clone());
        }
    }
    let removed = old.iter().any(|o| !new.iter().any(|n| n.name == o.name));
    match (relevant || removed, names.is_empty()) {
        (false, true) => Affected::Nothing,
        _ => Affected::Some(names),
    }
}

/// Whether `resource` renders the template `name` directly (any of its outputs).
fn renders(resource: &Resource, name: &str) -> bool {
    resource.src == name || resource.outputs.iter().any(|o| o.src == name)
}

/// Editors' and tools' own files, by their path inside `conf.d` or `templates`: hidden
/// ones (swap files, atomic-write temporaries, `.git`) and backups (`name~`).
fn ignored(path: &Path) -> bool {
    path.components().any(|c| {
        let c = c.as_os_str().to_string_lossy();
        c.starts_with('.') && c != "." && c != ".."
    }) || path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().ends_with('~'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inside a hidden directory, as `tempfile`'s are: only the part below `conf.d`
    /// and `templates` decides what is ignored.
    fn paths() -> ConfdirPaths {
        ConfdirPaths {
            conf_d: "/tmp/.c/conf.d".into(),
            templates: "/tmp/.c/templates".into(),
            config_file: Some("/tmp/.c/conflux.toml".into()),
        }
    }

    fn resource(name: &str, src: &str) -> Resource {
        let mut r = crate::resource::test_resource(name, &["/x"], PathBuf::from("/out"));
        r.src = src.into();
        r
    }

    fn changed(items: &[&str]) -> BTreeSet<PathBuf> {
        items.iter().map(PathBuf::from).collect()
    }

    fn names(items: &[&str]) -> Affected {
        Affected::Some(items.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn a_template_concerns_the_resources_that_render_it() {
        let set = vec![resource("a.toml", "a.tmpl"), resource("b.toml", "b.tmpl")];
        let got = affected(
            &paths(),
            &changed(&["/tmp/.c/templates/a.tmpl"]),
            &set,
            &set,
        );
        assert_eq!(got, names(&["a.toml"]));
    }

    #[test]
    fn a_partial_or_the_config_file_concerns_every_resource() {
        let set = vec![resource("a.toml", "a.tmpl")];
        let partial = changed(&["/tmp/.c/templates/partials/head.tmpl"]);
        assert_eq!(affected(&paths(), &partial, &set, &set), Affected::All);
        let config = changed(&["/tmp/.c/conflux.toml"]);
        assert_eq!(affected(&paths(), &config, &set, &set), Affected::All);
    }

    #[test]
    fn edited_and_new_resources_are_concerned_and_swap_files_are_not() {
        let old = vec![resource("a.toml", "a.tmpl"), resource("b.toml", "b.tmpl")];
        let mut edited = resource("a.toml", "a.tmpl");
        edited.dest = "/elsewhere".into();
        let new = vec![edited, old[1].clone(), resource("c.toml", "b.tmpl")];
        let batch = changed(&["/tmp/.c/conf.d/a.toml", "/tmp/.c/conf.d/c.toml"]);
        assert_eq!(
            affected(&paths(), &batch, &old, &new),
            names(&["a.toml", "c.toml"])
        );
        let swap = changed(&["/tmp/.c/templates/.a.tmpl.swp", "/tmp/.c/templates/a.tmpl~"]);
        assert_eq!(affected(&paths(), &swap, &old, &old), Affected::Nothing);
    }
}
