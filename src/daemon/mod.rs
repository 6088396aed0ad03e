//! The loop that feeds the scheduler, for every mode: one snapshot of every range the
//! resources need, kept current in the [`Mirror`] by one watch (`--watch`) or one
//! re-read per interval, or read once (`--onetime`); the [`Scheduler`] decides what to
//! apply, and every [`crate::outcome::Outcome`] is logged, counted, reported to the
//! telemetry and printed in one place (`record`). A one-shot run is this loop with
//! nothing after the first snapshot, no retries, and an end when the scheduler is idle.
//!
//! Signals stay in `main`: it sends `()` on `reload_requests` for SIGHUP and cancels
//! the token for SIGTERM/SIGINT. Reading a backend is [`crate::backend`]'s job,
//! applying one resource the [`crate::scheduler::Applier`]'s. The watch's life cycle is
//! in `watch`, outcomes in `record`, the SIGHUP and confdir swaps in `reconfigure`
//! and `confwatch`.

mod confwatch;
mod reconfigure;
mod record;
mod watch;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::future::pending;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, Interval, MissedTickBehavior, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, BackendError};
use crate::config::Mode;
use crate::kv::{Change, Snapshot};
use crate::mirror::Mirror;
use crate::retry::{self, Backoff};
use crate::scheduler::{ResourceSet, Scheduler, Settings};
use crate::systemd::Systemd;
use crate::telemetry::Telemetry;

pub use confwatch::ConfdirPaths;
pub use reconfigure::{LoadError, Loader};
pub use record::Report;

#[derive(Clone)]
pub struct Options {
    pub mode: Mode,
    /// Coalescing, concurrency and retries (retries are turned off for one-shot runs).
    pub settings: Settings,
    /// Metrics, health and status: fed by the loop, read by whoever serves them.
    pub telemetry: Arc<Telemetry>,
    pub systemd: Systemd,
    /// How often the loop beats (for `/health` and the systemd watchdog); `None`: it
    /// never wakes up for nothing.
    pub beat_every: Option<Duration>,
    /// The confdir to watch for edits (hot reload, `--watch` mode); `None`: only SIGHUP.
    pub confdir: Option<ConfdirPaths>,
    /// A test hook: while this file exists, each beat blocks the loop (to prove that
    /// `/health` and the watchdog follow the loop, not a timer of their own).
    pub stall_file: Option<PathBuf>,
}

/// Why the loop stopped other than by shutdown or the end of a one-shot run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The backend refused in a way retrying will not fix (credentials, bad data); in a
    /// one-shot run, any failed read.
    #[error("backend failed: {0}")]
    Backend(#[from] BackendError),
}

/// Runs until `shutdown` is cancelled (then `Ok`, after the passes under way have
/// finished), until a one-shot run has applied everything, or until the backend fails
/// for good.
pub async fn run(
    backend: Arc<dyn Backend>,
    set: ResourceSet,
    load: Loader,
    reload_requests: mpsc::Receiver<()>,
    options: Options,
    shutdown: CancellationToken,
) -> Result<Report, DaemonError> {
    let settings = Settings {
        retries: options.settings.retries && options.mode != Mode::Onetime,
        ..options.settings
    };
    let scheduler = Scheduler::new(set, settings);
    let selectors = scheduler.selectors();
    let first = if options.mode == Mode::Onetime {
        // A one-shot run does not wait for a backend that is away: it fails now (exit
        // 1) and the script decides.
        Some(backend.snapshot(&selectors).await?)
    } else {
        watch::snapshot_with_retry(backend.as_ref(), &selectors, &shutdown).await?
    };
    let Some(snapshot) = first else {
        return Ok(Report::default());
    };
    let mut daemon = Daemon::new(backend, options, scheduler, selectors, snapshot, shutdown);
    let result = daemon.serve(load, reload_requests).await;
    daemon.stop().await;
    result.map(|()| daemon.tally.report(&daemon.scheduler))
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
    /// When to give freed memory back, once no pass has run for a while.
    trim_at: Option<Instant>,
    reconnect: Backoff,
    shutdown: CancellationToken,
    tally: record::Tally,
    telemetry: Arc<Telemetry>,
    systemd: Systemd,
    beat_every: Option<Duration>,
    stall_file: Option<PathBuf>,
    confdir: Option<ConfdirPaths>,
    /// Confdir paths changed since the last reload, and when to reload for them.
    confdir_changed: BTreeSet<PathBuf>,
    confdir_due: Option<(Instant, Instant)>,
}

impl Daemon {
    fn new(
        backend: Arc<dyn Backend>,
        options: Options,
        scheduler: Scheduler,
        selectors: Vec<String>,
        snapshot: Snapshot,
        shutdown: CancellationToken,
    ) -> Self {
        // Bounded, so a backend faster than the mirror waits instead of piling up.
        let (changes_tx, changes_rx) = mpsc::channel(1024);
        let mode = options.mode;
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
            trim_at: None,
            reconnect: Backoff::new(retry::BACKEND),
            shutdown,
            tally: record::Tally::new(mode == Mode::Onetime),
            telemetry: options.telemetry,
            systemd: options.systemd,
            beat_every: options.beat_every,
            stall_file: options.stall_file,
            confdir: options.confdir.filter(|_| mode == Mode::Watch),
            confdir_changed: BTreeSet::new(),
            confdir_due: None,
        };
        daemon.log_snapshot("snapshot read");
        daemon.telemetry.connected(true);
        daemon.telemetry.revision(daemon.mirror.revision());
        daemon.tally.expect(daemon.scheduler.resources());
        let resources: Vec<_> = daemon.scheduler.resources().cloned().collect();
        daemon
            .telemetry
            .resources(reconfigure::files_of(&resources));
        if resources.is_empty() && mode != Mode::Onetime {
            let status = daemon.status_line();
            daemon.systemd.ready(&status);
        }
        release_memory();
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
        let mut beats = self.beat_every.map(every);
        let mut reloads_open = self.mode != Mode::Onetime;
        let (confdir_tx, mut confdir_rx) = mpsc::unbounded_channel();
        let _confdir_watch = self.watch_confdir(confdir_tx);
        loop {
            if self.mode == Mode::Onetime && self.scheduler.is_idle() {
                return Ok(());
            }
            let due = self.scheduler.next_due();
            // Biased: shutdown first, then finishing and starting passes, so that a
            // flood of changes can delay but never starve them.
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return Ok(()),
                Some(outcome) = self.scheduler.join_next() => self.finished(outcome),
                _ = at(due) => self.scheduler.dispatch(Instant::now(), &self.mirror),
                Some(change) = self.changes_rx.recv() => self.on_change(change),
                Some(ended) = self.tasks.join_next() => self.on_task_end(ended)?,
                _ = at(self.watch_restart) => self.restart_watch(),
                _ = tick(&mut ticks) => self.refresh().await?,
                _ = tick(&mut beats) => self.beat(),
                Some(paths) = confdir_rx.recv() => self.confdir_edited(paths),
                _ = at(self.confdir_due.map(|(at, _)| at)) => self.reload_edited(&load).await?,
                request = reload_requests.recv(), if reloads_open => match request {
                    Some(()) => self.reload(&load).await?,
                    None => reloads_open = false,
                },
                _ = at(self.trim_at) => self.trim(),
            }
        }
    }

    /// Idle for [`TRIM_AFTER`]: memory freed by the passes goes back to the system.
    fn trim(&mut self) {
        self.trim_at = None;
        if !self.scheduler.is_busy() {
            release_memory();
        }
    }

    fn ticks(&self) -> Option<Interval> {
        match self.mode {
            Mode::Interval(period) => {
                let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
                ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
                Some(ticks)
            }
            _ => None,
        }
    }

    /// The loop's heartbeat: proof for `/health` and the systemd watchdog that the
    /// loop itself turns.
    fn beat(&self) {
        if let Some(file) = &self.stall_file {
            while file.exists() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.telemetry.beat();
        self.systemd.watchdog();
    }

    fn log_snapshot(&self, what: &'static str) {
        let snapshot = self.mirror.snapshot();
        tracing::info!(
            backend = self.backend.name(),
            revision = snapshot.revision,
            keys = snapshot.kvs.len(),
            "{what}"
        );
    }

    /// Stops taking changes and waits for the passes under way and the watch.
    async fn stop(&mut self) {
        if self.mode != Mode::Onetime {
            self.systemd.stopping();
        }
        self.watch_stop.cancel();
        for (outcome, retry) in self.scheduler.drain().await {
            self.record(outcome, retry);
        }
        while self.tasks.join_next().await.is_some() {}
        if self.mode != Mode::Onetime {
            tracing::info!(revision = self.mirror.revision(), "daemon stopped");
        }
    }
}

/// A heartbeat interval that never bursts to catch up.
fn every(period: Duration) -> Interval {
    let mut beats = tokio::time::interval(period);
    beats.set_missed_tick_behavior(MissedTickBehavior::Delay);
    beats
}

/// How long the daemon must have had no pass running before it trims: long enough
/// that a stream of changes keeps its pages (trimming after every pass made each pass
/// of a render over 100,000 keys fault its ~50 MiB back in, 54 → 66 ms a change), short
/// enough that the resident size falls soon after the work.
const TRIM_AFTER: Duration = Duration::from_secs(1);

/// Gives the pages that freed memory left behind back to the system, once the work
/// that needed them is over (the daemon idle; the first snapshot read).
///
/// A render over 100,000 keys builds some 50 MiB of template values on a blocking
/// thread and frees them at its end, and reading the first snapshot decodes pages that
/// are freed as the map is built; glibc keeps such memory in the thread's arena, so the
/// daemon's resident size stayed at its peak (83 MiB where 35 MiB were in use,
/// benches/scale.rs). `malloc_trim` returns the free pages of every arena; it costs
/// a walk of the free lists, paid when the daemon has nothing else to do. Another
/// allocator (mimalloc, measured) kept more, not less; capping glibc's arenas would
/// leave the pages in the one arena.
fn release_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Sleeps until `deadline`, or forever when there is none.
async fn at(deadline: Option<Instant>) {
    match deadline {
        // tokio's timer rounds every deadline up to its next 1 ms tick, so sleeping
        // until a deadline that is already due costs about a millisecond: on the path
        // from a put to a reload, that was half the latency.
        Some(deadline) if deadline <= Instant::now() => {}
        Some(deadline) => sleep_until(deadline).await,
        None => pending().await,
    }
}

/// The next tick, or never without an interval.
async fn tick(ticks: &mut Option<Interval>) {
    match ticks {
        Some(ticks) => {
            ticks.tick().await;
        }
        None => pending().await,
    }
}
