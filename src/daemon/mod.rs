//! The loop that feeds the scheduler, for every mode: one snapshot of every range the
//! resources need, kept current in the [`Mirror`] by one watch (`--watch`) or one
//! re-read per interval, or read once (`--onetime`); the [`Scheduler`] decides what to
//! apply, and every [`Outcome`] is logged, counted and printed here, in one place.
//! A one-shot run is this loop with nothing after the first snapshot, no retries, and
//! an end when the scheduler is idle.
//!
//! Signals stay in `main`: it sends `()` on `reload_requests` for SIGHUP and cancels
//! the token for SIGTERM/SIGINT. Reading a backend is [`crate::backend`]'s job,
//! applying one resource the [`crate::scheduler::Applier`]'s. The watch's life cycle is
//! in `watch`, the SIGHUP swap in `reconfigure`.

mod reconfigure;
mod watch;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::future::pending;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, Interval, MissedTickBehavior, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::backend::{Backend, BackendError};
use crate::config::Mode;
use crate::kv::{Change, Snapshot};
use crate::mirror::Mirror;
use crate::outcome::Outcome;
use crate::retry::{self, Backoff};
use crate::scheduler::{ResourceSet, Scheduler, Settings};

pub use reconfigure::Loader;

#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub mode: Mode,
    /// Coalescing, concurrency and retries (retries are turned off for one-shot runs).
    pub settings: Settings,
}

/// Why the loop stopped other than by shutdown or the end of a one-shot run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The backend refused in a way retrying will not fix (credentials, bad data); in a
    /// one-shot run, any failed read.
    #[error("backend failed: {0}")]
    Backend(#[from] BackendError),
}

/// What a run applied: each resource counted once, by its last outcome.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Resources whose last pass succeeded (updated or already up to date).
    pub applied: usize,
    /// Resources whose last pass failed, or that never ran (a one-shot run stopped by
    /// a signal).
    pub failed: usize,
    /// noop: resources whose dest would change.
    pub pending: usize,
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
    tally: Tally,
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
            trim_at: None,
            reconnect: Backoff::new(retry::BACKEND),
            shutdown,
            tally: Tally {
                ordered: mode == Mode::Onetime,
                ..Tally::default()
            },
        };
        daemon.log_snapshot("snapshot read");
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
        let mut reloads_open = self.mode != Mode::Onetime;
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
                request = reload_requests.recv(), if reloads_open => match request {
                    Some(()) => self.reload(&load).await?,
                    None => reloads_open = false,
                },
                _ = at(self.trim_at) => self.trim(),
            }
        }
    }

    /// A pass ended: schedule what follows, then log, count and print its outcome.
    fn finished(&mut self, outcome: Outcome) {
        let retry = self.scheduler.finish(&outcome, Instant::now());
        self.record(outcome, retry);
        if !self.scheduler.is_busy() {
            self.trim_at = Some(Instant::now() + TRIM_AFTER);
        }
    }

    /// Idle for [`TRIM_AFTER`]: memory freed by the passes goes back to the system.
    fn trim(&mut self) {
        self.trim_at = None;
        if !self.scheduler.is_busy() {
            release_memory();
        }
    }

    fn record(&mut self, outcome: Outcome, retry: Option<Duration>) {
        outcome.log(retry);
        let position = self.scheduler.position(&outcome.resource);
        self.tally.add(outcome, position);
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

    fn log_snapshot(&self, what: &'static str) {
        let snapshot = self.mirror.snapshot();
        info!(
            backend = self.backend.name(),
            revision = snapshot.revision,
            keys = snapshot.kvs.len(),
            "{what}"
        );
    }

    /// Stops taking changes and waits for the passes under way and the watch.
    async fn stop(&mut self) {
        self.watch_stop.cancel();
        for (outcome, retry) in self.scheduler.drain().await {
            self.record(outcome, retry);
        }
        while self.tasks.join_next().await.is_some() {}
        if self.mode != Mode::Onetime {
            info!(revision = self.mirror.revision(), "daemon stopped");
        }
    }
}

/// Each resource's last outcome, for the report; noop diffs, printed on stdout as they
/// come, or in resource order at the end of a one-shot run (where passes run side by
/// side and would otherwise print in whatever order they finish).
#[derive(Default)]
struct Tally {
    ordered: bool,
    last_ok: HashMap<String, bool>,
    pending: HashMap<String, bool>,
    diffs: BTreeMap<usize, String>,
}

impl Tally {
    fn add(&mut self, outcome: Outcome, position: Option<usize>) {
        if let Some(diff) = &outcome.diff {
            match (self.ordered, position) {
                (true, Some(position)) => {
                    self.diffs.insert(position, diff.clone());
                }
                _ => print_diff(diff),
            }
        }
        self.pending
            .insert(outcome.resource.clone(), outcome.diff.is_some());
        self.last_ok
            .insert(outcome.resource, outcome.result.is_ok());
    }

    /// Prints the held diffs and counts every resource of the current set.
    fn report(&mut self, scheduler: &Scheduler) -> Report {
        for diff in std::mem::take(&mut self.diffs).into_values() {
            print_diff(&diff);
        }
        let mut report = Report::default();
        for resource in scheduler.resources() {
            match self.last_ok.get(&resource.name) {
                Some(true) => report.applied += 1,
                _ => report.failed += 1,
            }
            if self.pending.get(&resource.name) == Some(&true) {
                report.pending += 1;
            }
        }
        report
    }
}

fn print_diff(diff: &str) {
    let _ = std::io::stdout().lock().write_all(diff.as_bytes());
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

/// The next interval tick, or never in the other modes.
async fn tick(ticks: &mut Option<Interval>) {
    match ticks {
        Some(ticks) => {
            ticks.tick().await;
        }
        None => pending().await,
    }
}
