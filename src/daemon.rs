//! The long-running daemon: one snapshot of every range the resources need, one watch
//! (or one re-read per interval) keeping the [`Mirror`] current, and the
//! [`Scheduler`] deciding what to apply. SIGHUP swaps the resource set; the
//! cancellation token stops the loop after the applies under way have finished.
//!
//! Signals stay in `main`: it sends `()` on `reload_requests` for SIGHUP and cancels
//! the token for SIGTERM/SIGINT. Reading a backend is [`crate::backend`]'s job,
//! applying one resource the [`crate::scheduler::Applier`]'s.

use std::future::pending;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, Interval, MissedTickBehavior, sleep, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::backend::{Backend, BackendError, Change};
use crate::mirror::{Mirror, Snapshot};
use crate::scheduler::{ResourceSet, Scheduler, Wait};

/// Reconnecting to a backend waits this long at first, doubling up to
/// [`RECONNECT_MAX`], each wait jittered so that many daemons do not reconnect in step.
pub const RECONNECT_FIRST: Duration = Duration::from_millis(100);
pub const RECONNECT_MAX: Duration = Duration::from_secs(10);

/// How the daemon learns about changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Apply everything at start, then follow the backend's watch.
    Watch,
    /// Re-read everything at one revision every period and apply every resource, as
    /// confd does: the pipeline's compare makes unchanged resources cheap, and a dest
    /// edited by hand is put back.
    Interval(Duration),
}

#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub mode: Mode,
    /// The coalescing window of resources that set none.
    pub wait: Wait,
    /// How many resources may apply at once.
    pub concurrency: usize,
}

impl Options {
    /// The default wait, and as many concurrent applies as CPUs.
    pub fn new(mode: Mode) -> Self {
        let concurrency = std::thread::available_parallelism().map_or(2, |n| n.get());
        Options {
            mode,
            wait: Wait::default(),
            concurrency,
        }
    }
}

/// Loads the resource set again (config file and conf.d) for SIGHUP; `Err` says why
/// the new set is invalid, and the old one stays.
pub type Loader = Box<dyn Fn() -> Result<ResourceSet, String> + Send + Sync>;

/// Why the daemon stopped other than by shutdown.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The backend refused in a way retrying will not fix (credentials, bad data).
    #[error("backend failed: {0}")]
    Backend(#[from] BackendError),
}

/// Runs the daemon until `shutdown` is cancelled (then `Ok`, after the applies under
/// way have finished) or the backend fails fatally.
pub async fn run(
    backend: Arc<dyn Backend>,
    set: ResourceSet,
    load: Loader,
    reload_requests: mpsc::Receiver<()>,
    options: Options,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    let scheduler = Scheduler::new(set, options.wait, options.concurrency);
    let selectors = scheduler.selectors();
    let Some(snapshot) = snapshot_with_retry(backend.as_ref(), &selectors, &shutdown).await? else {
        return Ok(());
    };
    let mut daemon = Daemon::new(
        backend,
        options.mode,
        scheduler,
        selectors,
        snapshot,
        shutdown,
    );
    let result = daemon.serve(load, reload_requests).await;
    daemon.stop().await;
    result
}

/// How a named long-lived task ended.
type TaskEnd = (&'static str, Result<(), BackendError>);

struct Daemon {
    backend: Arc<dyn Backend>,
    mode: Mode,
    mirror: Mirror,
    scheduler: Scheduler,
    selectors: Vec<String>,
    /// The long-lived tasks, each named: today only "watch".
    tasks: JoinSet<TaskEnd>,
    changes_tx: mpsc::Sender<Change>,
    changes_rx: mpsc::Receiver<Change>,
    watch_stop: CancellationToken,
    watch_restart: Option<Instant>,
    reconnect: Backoff,
    shutdown: CancellationToken,
}

impl Daemon {
    fn new(
        backend: Arc<dyn Backend>,
        mode: Mode,
        scheduler: Scheduler,
        selectors: Vec<String>,
        snapshot: Snapshot,
        shutdown: CancellationToken,
    ) -> Self {
        // Bounded, so a backend faster than the mirror waits instead of piling up.
        let (changes_tx, changes_rx) = mpsc::channel(1024);
        let mut daemon = Daemon {
            backend,
            mode,
            mirror: Mirror::new(snapshot),
            scheduler,
            selectors,
            tasks: JoinSet::new(),
            changes_tx,
            changes_rx,
            watch_stop: shutdown.child_token(),
            watch_restart: None,
            reconnect: Backoff::new(RECONNECT_FIRST, RECONNECT_MAX),
            shutdown,
        };
        daemon.log_snapshot("snapshot");
        daemon.start_watch();
        daemon.scheduler.changed_all(Instant::now());
        daemon
    }

    /// The loop: every event source in one `select!`, one branch each.
    async fn serve(
        &mut self,
        load: Loader,
        mut reload_requests: mpsc::Receiver<()>,
    ) -> Result<(), DaemonError> {
        let mut ticks = self.ticks();
        let mut reloads_open = true;
        loop {
            let due = self.scheduler.next_due();
            // Biased: shutdown first, then finishing and starting applies, so that a
            // flood of changes can delay but never starve them.
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return Ok(()),
                Some(finished) = self.scheduler.join_next() => {
                    self.scheduler.finish(finished, Instant::now());
                }
                _ = at(due) => self.scheduler.dispatch(Instant::now(), &self.mirror),
                Some(change) = self.changes_rx.recv() => self.on_change(change),
                Some(ended) = self.tasks.join_next() => self.on_task_end(ended)?,
                _ = at(self.watch_restart) => self.restart_watch(),
                _ = tick(&mut ticks) => self.refresh().await?,
                request = reload_requests.recv(), if reloads_open => match request {
                    Some(()) => self.reload(&load).await?,
                    None => reloads_open = false,
                },
            }
        }
    }

    fn ticks(&self) -> Option<Interval> {
        let Mode::Interval(period) = self.mode else {
            return None;
        };
        let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Some(ticks)
    }

    fn on_change(&mut self, change: Change) {
        let reset = matches!(change, Change::Reset(_));
        let keys = self.mirror.apply(change);
        let resources = self.scheduler.changed(&keys, Instant::now());
        let revision = self.mirror.revision();
        if reset {
            info!(
                revision,
                keys = keys.len(),
                resources,
                "backend reset the key space"
            );
        } else {
            // A delivered change shows the watch works: the next break starts over.
            self.reconnect.reset();
            tracing::debug!(revision, keys = keys.len(), resources, "change");
        }
    }

    fn start_watch(&mut self) {
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

    fn on_task_end(
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
        warn!(cause = %cause, retry_in_ms = delay.as_millis() as u64, "watch broke; reconnecting");
        self.watch_restart = Some(Instant::now() + delay);
        Ok(())
    }

    /// Resumes the watch after the last revision applied. Changes the broken watch
    /// sent are applied first, so that none is skipped by resuming past it.
    fn restart_watch(&mut self) {
        self.watch_restart = None;
        while let Ok(change) = self.changes_rx.try_recv() {
            self.on_change(change);
        }
        self.start_watch();
    }

    /// Ends the current watch and applies what it had sent.
    async fn stop_watch(&mut self) {
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
    async fn refresh(&mut self) -> Result<(), DaemonError> {
        let read = tokio::select! {
            _ = self.shutdown.cancelled() => return Ok(()),
            read = self.backend.snapshot(&self.selectors) => read,
        };
        match read {
            Ok(snapshot) => {
                self.mirror.apply(Change::Reset(snapshot));
                self.log_snapshot("snapshot");
                self.scheduler.changed_all(Instant::now());
                Ok(())
            }
            Err(err) if err.is_transient() => {
                warn!(cause = %err, "snapshot failed; trying again at the next interval");
                Ok(())
            }
            Err(err) => Err(err.into()),
        }
    }

    /// SIGHUP: load the set again; a valid one replaces the current set and is applied
    /// in full. The backend connection stays; the key space is read again and the
    /// watch restarted only when the merged selectors changed.
    async fn reload(&mut self, load: &Loader) -> Result<(), DaemonError> {
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
                snapshot_with_retry(self.backend.as_ref(), &self.selectors, &self.shutdown).await?;
            let Some(snapshot) = read else {
                return Ok(());
            };
            self.mirror = Mirror::new(snapshot);
            self.log_snapshot("snapshot for the new selectors");
            self.start_watch();
        }
        info!(resources = count, "reloaded the resource set");
        self.scheduler.changed_all(Instant::now());
        Ok(())
    }

    fn log_snapshot(&self, what: &'static str) {
        let snapshot = self.mirror.snapshot();
        info!(
            backend = self.backend.name(),
            revision = snapshot.revision,
            keys = snapshot.kvs.len(),
            "{what}"
        );
    }

    /// Stops taking changes and waits for the applies under way and the watch.
    async fn stop(&mut self) {
        self.watch_stop.cancel();
        self.scheduler.drain().await;
        while self.tasks.join_next().await.is_some() {}
        info!(revision = self.mirror.revision(), "daemon stopped");
    }
}

/// Reads every selected key, retrying a transient failure with backoff. `None` when
/// `shutdown` came first.
async fn snapshot_with_retry(
    backend: &dyn Backend,
    selectors: &[String],
    shutdown: &CancellationToken,
) -> Result<Option<Snapshot>, BackendError> {
    let mut backoff = Backoff::new(RECONNECT_FIRST, RECONNECT_MAX);
    loop {
        let read = tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            read = backend.snapshot(selectors) => read,
        };
        match read {
            Ok(snapshot) => return Ok(Some(snapshot)),
            Err(err) if err.is_transient() => {
                let delay = backoff.next_delay();
                warn!(cause = %err, retry_in_ms = delay.as_millis() as u64, "snapshot failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = sleep(delay) => {}
                }
            }
            Err(err) => return Err(err),
        }
    }
}

/// Capped exponential backoff with equal jitter: each wait is between half and all
/// of the current step, so a fleet of daemons spreads out and none busy-loops.
#[derive(Debug, Clone)]
struct Backoff {
    first: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max,
            step: first,
        }
    }

    fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.max);
        let half = step / 2;
        half + half.mul_f64(rand::random_range(0.0..=1.0))
    }

    fn reset(&mut self) {
        self.step = self.first;
    }
}

/// Sleeps until `deadline`, or forever when there is none.
async fn at(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => pending().await,
    }
}

/// The next interval tick, or never in watch mode.
async fn tick(ticks: &mut Option<Interval>) {
    match ticks {
        Some(ticks) => {
            ticks.tick().await;
        }
        None => pending().await,
    }
}
