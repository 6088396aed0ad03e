//! A new resource set, loaded and, when valid, swapped in without dropping the backend
//! connection: on SIGHUP (every resource applied again) and on an edit of the confdir
//! (only the resources the edit concerns; see `confwatch`). Loading and validating
//! the set is the [`Loader`]'s job (given by the caller); keeping or replacing the
//! running one is this module's.

use std::collections::BTreeSet;
use std::path::PathBuf;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::confwatch::{self, Affected, ConfdirWatcher, SETTLE, SETTLE_MAX};
use super::{Daemon, DaemonError, watch};
use crate::resource::Resource;
use crate::scheduler::ResourceSet;

/// Why a new resource set was refused (the old one stays).
pub type LoadError = Box<dyn std::error::Error + Send + Sync>;

/// Loads the resource set again (config file and conf.d); an `Err` says why the new
/// set is invalid, and the old one stays.
pub type Loader = Box<dyn Fn() -> Result<ResourceSet, LoadError> + Send + Sync>;

impl Daemon {
    /// SIGHUP: load the set again; a valid one replaces the current set and is applied
    /// in full.
    pub(super) async fn reload(&mut self, load: &Loader) -> Result<(), DaemonError> {
        self.swap_set(load, None).await
    }

    /// Starts watching the confdir for edits, when asked to.
    pub(super) fn watch_confdir(
        &self,
        tx: mpsc::UnboundedSender<Vec<PathBuf>>,
    ) -> Option<ConfdirWatcher> {
        let paths = self.confdir.as_ref()?;
        match confwatch::start(paths, tx) {
            Ok(watcher) => Some(watcher),
            Err(e) => {
                warn!(cause = %e, "cannot watch the confdir for edits; SIGHUP still reloads it");
                None
            }
        }
    }

    /// An edit of the confdir: wait until the edits settle, then reload.
    pub(super) fn confdir_edited(&mut self, paths: Vec<PathBuf>) {
        self.confdir_changed.extend(paths);
        let now = Instant::now();
        let first = self.confdir_due.map_or(now, |(_, first)| first);
        let at = (now + SETTLE).min(first + SETTLE_MAX);
        self.confdir_due = Some((at, first));
    }

    /// The settled edits: load the set; a valid one replaces the current set, and only
    /// the resources the edits concern are applied.
    pub(super) async fn reload_edited(&mut self, load: &Loader) -> Result<(), DaemonError> {
        self.confdir_due = None;
        let changed = std::mem::take(&mut self.confdir_changed);
        self.swap_set(load, Some(changed)).await
    }

    /// Loads and swaps in a new set; `edited`: the confdir paths that changed (`None`:
    /// SIGHUP, apply everything).
    async fn swap_set(
        &mut self,
        load: &Loader,
        edited: Option<BTreeSet<PathBuf>>,
    ) -> Result<(), DaemonError> {
        self.systemd.reloading();
        let result = self.try_swap(load, edited).await;
        let status = self.status_line();
        self.systemd.ready(&status);
        result
    }

    async fn try_swap(
        &mut self,
        load: &Loader,
        edited: Option<BTreeSet<PathBuf>>,
    ) -> Result<(), DaemonError> {
        let set = match load() {
            Ok(set) => set,
            Err(why) => {
                error!(cause = %why, "reload refused; keeping the current resources");
                self.telemetry.confdir_reload(Err(why.to_string()));
                return Ok(());
            }
        };
        let old: Vec<Resource> = self.scheduler.resources().cloned().collect();
        let affected = match (&edited, &self.confdir) {
            (Some(changed), Some(paths)) => {
                confwatch::affected(paths, changed, &old, &set.resources)
            }
            _ => Affected::All,
        };
        if affected == Affected::Nothing {
            return Ok(());
        }
        let count = set.resources.len();
        self.telemetry.resources(files_of(&set.resources));
        self.telemetry.confdir_reload(Ok(()));
        self.scheduler.replace(set);
        let selectors = self.scheduler.selectors();
        let mut affected = affected;
        if selectors != self.selectors {
            self.stop_watch().await;
            self.selectors = selectors;
            let read =
                watch::snapshot_with_retry(self.backend.as_ref(), &self.selectors, &self.shutdown)
                    .await?;
            let Some(snapshot) = read else {
                return Ok(());
            };
            self.mirror = crate::mirror::Mirror::new(snapshot);
            self.log_snapshot("snapshot for the new selectors");
            self.start_watch();
            // Every resource may see other data now.
            affected = Affected::All;
        }
        let now = Instant::now();
        match affected {
            Affected::Some(names) => {
                info!(resources = count, applied = ?names, "reloaded the resource set");
                self.scheduler.changed_names(&names, now);
            }
            _ => {
                info!(resources = count, "reloaded the resource set");
                self.scheduler.changed_all(now);
            }
        }
        Ok(())
    }
}

/// Each resource's name and files, for the telemetry.
pub(crate) fn files_of(resources: &[Resource]) -> Vec<(String, Vec<PathBuf>)> {
    resources
        .iter()
        .map(|r| {
            let files = r
                .outputs
                .iter()
                .map(|o| o.dest.path().to_path_buf())
                .collect();
            (r.name.clone(), files)
        })
        .collect()
}
