//! How the loop keeps its mirror current: the one watch task (started after the first
//! snapshot, resumed after the last revision applied when it breaks, with backoff and
//! no busy loop while the backend is away, stopped and restarted when the selectors
//! change), the interval re-read, and the retried first snapshot.

use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Daemon, DaemonError, TaskEnd};
use crate::backend::{Backend, BackendError};
use crate::config::Mode;
use crate::kv::{Change, Snapshot};

impl Daemon {
    /// A change from the backend: into the mirror, and the resources it concerns marked.
    pub(super) fn on_change(&mut self, change: Change) {
        let reset = matches!(change, Change::Reset(_));
        if let Change::Progress { revision } = change {
            // The watch is live: the backend is reachable again. (The backoff starts
            // over only with a delivered change: a stream that opens and breaks at
            // once must keep backing off.)
            self.telemetry.connected(true);
            tracing::debug!(revision, "watch live");
            return;
        }
        let keys = self.mirror.apply(change);
        let resources = self.scheduler.changed(&keys, Instant::now());
        let revision = self.mirror.revision();
        self.telemetry.revision(revision);
        if reset {
            self.telemetry.resync();
            info!(
                revision,
                keys = keys.len(),
                resources,
                "backend reset the key space"
            );
        } else {
            // A delivered change shows the watch works: the next break starts over.
            self.reconnect.reset();
            self.telemetry.connected(true);
            tracing::debug!(revision, keys = keys.len(), resources, "change");
        }
    }

    pub(super) fn start_watch(&mut self) {
        if self.mode != Mode::Watch {
            return;
        }
        let backend = Arc::clone(&self.backend);
        let selectors = self.selectors.clone();
        let after = self.mirror.revision();
        let changes = self.changes_tx.clone();
        let stop = self.watch_stop.clone();
        info!(backend = backend.name(), after, "watching");
        self.tasks.spawn(async move {
            let result = backend.watch(&selectors, after, changes, stop).await;
            ("watch", result)
        });
    }

    pub(super) fn on_task_end(
        &mut self,
        ended: Result<TaskEnd, tokio::task::JoinError>,
    ) -> Result<(), DaemonError> {
        let cause = match ended {
            Ok((_, Ok(()))) => return Ok(()),
            Ok((_, Err(err))) if !err.is_transient() => return Err(err.into()),
            Ok((name, Err(err))) => format!("{name}: {err}"),
            Err(err) => format!("watch task failed: {err}"),
        };
        let delay = self.reconnect.next_delay();
        self.telemetry.watch_reconnect();
        warn!(cause = %cause, retry_in_ms = delay.as_millis() as u64, "watch broke; reconnecting");
        self.watch_restart = Some(Instant::now() + delay);
        Ok(())
    }

    /// Resumes the watch after the last revision applied. Changes the broken watch
    /// sent are applied first, so that none is skipped by resuming past it.
    pub(super) fn restart_watch(&mut self) {
        self.watch_restart = None;
        while let Ok(change) = self.changes_rx.try_recv() {
            self.on_change(change);
        }
        self.start_watch();
    }

    /// Ends the current watch and applies what it had sent.
    pub(super) async fn stop_watch(&mut self) {
        self.watch_stop.cancel();
        while let Some(ended) = self.tasks.join_next().await {
            if let Ok((name, Err(err))) = ended {
                info!(task = name, cause = %err, "watch ended while being replaced");
            }
        }
        while let Ok(change) = self.changes_rx.try_recv() {
            self.on_change(change);
        }
        self.watch_stop = self.shutdown.child_token();
        self.watch_restart = None;
    }

    /// Interval mode: one fresh read, then every resource. A failed read waits for
    /// the next tick, as confd does.
    pub(super) async fn refresh(&mut self) -> Result<(), DaemonError> {
        let read = tokio::select! {
            _ = self.shutdown.cancelled() => return Ok(()),
            read = self.backend.snapshot(&self.selectors) => read,
        };
        match read {
            Ok(snapshot) => {
                self.mirror.apply(Change::Reset(snapshot));
                self.telemetry.connected(true);
                self.telemetry.revision(self.mirror.revision());
                self.log_snapshot("snapshot read");
                self.scheduler.changed_all(Instant::now());
                Ok(())
            }
            Err(err) if err.is_transient() => {
                self.telemetry.connected(false);
                warn!(cause = %err, "snapshot failed; trying again at the next interval");
                Ok(())
            }
            Err(err) => Err(err.into()),
        }
    }
}

/// Reads every selected key, retrying a transient failure with backoff. `None` when
/// `shutdown` came first.
pub(super) async fn snapshot_with_retry(
    backend: &dyn Backend,
    selectors: &[String],
    shutdown: &CancellationToken,
) -> Result<Option<Snapshot>, BackendError> {
    crate::backend::retry_transient("snapshot", shutdown, || backend.snapshot(selectors)).await
}
