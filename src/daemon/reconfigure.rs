//! SIGHUP: the resource set loaded again and, when valid, swapped in without dropping
//! the backend connection. Loading and validating the set is the [`Loader`]'s job
//! (given by the caller); keeping or replacing the running one is this module's.

use tokio::time::Instant;
use tracing::{error, info};

use super::{Daemon, DaemonError, watch};
use crate::scheduler::ResourceSet;

/// Why a new resource set was refused (the old one stays).
pub type LoadError = Box<dyn std::error::Error + Send + Sync>;

/// Loads the resource set again (config file and conf.d) for SIGHUP; an `Err` says why
/// the new set is invalid, and the old one stays.
pub type Loader = Box<dyn Fn() -> Result<ResourceSet, LoadError> + Send + Sync>;

impl Daemon {
    /// SIGHUP: load the set again; a valid one replaces the current set and is applied
    /// in full. The backend connection stays; the key space is read again and the
    /// watch restarted only when the merged selectors changed.
    pub(super) async fn reload(&mut self, load: &Loader) -> Result<(), DaemonError> {
        let set = match load() {
            Ok(set) => set,
            Err(why) => {
                error!(cause = %why, "reload refused; keeping the current resources");
                return Ok(());
            }
        };
        let count = set.resources.len();
        self.scheduler.replace(set);
        let selectors = self.scheduler.selectors();
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
        }
        info!(resources = count, "reloaded the resource set");
        self.scheduler.changed_all(Instant::now());
        Ok(())
    }
}
