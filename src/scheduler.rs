//! When each resource is applied: coalescing with a trailing-edge guarantee, retries
//! with backoff, and never two applies of one resource at the same time.
//!
//! A change to a quiet resource is applied at once. Changes that arrive while it is
//! being applied, or within its [`Wait`] window after an apply started, collapse into
//! one more apply that reads the newest snapshot; the last change is always applied.
//! A failed apply is retried with capped exponential backoff until it succeeds or newer
//! data supersedes it; a reload that failed after the swap is retried on its own.
//!
//! What an apply does (render, compare, check, swap, reload) is the [`Applier`]'s
//! business; where changes come from and when the scheduler runs is
//! [`crate::daemon`]'s. The [`Scheduler`] is driven by the daemon's loop: it never
//! sleeps itself, it says when it is next due.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::{self, JoinSet};
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::kv::Snapshot;
use crate::mirror::{Interest, Mirror};
use crate::resource::Resource;
use crate::values::Wait;

/// The first retry of a failed apply or reload waits this long; each further failure
/// doubles the wait up to [`RETRY_MAX`].
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// What one pass of the pipeline came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyResult {
    /// The dest holds the render. `changed`: the dest was replaced in this pass, so
    /// its reload (if any) ran and succeeded.
    Ok { changed: bool },
    /// The pass failed. `reload_owed`: the new file is in place but its reload failed,
    /// so only the reload must be retried (comparing would find nothing to do).
    Failed { reload_owed: bool, message: String },
}

/// Applies one resource. Synchronous, because the real one renders, writes files and
/// runs commands: the scheduler calls it on the blocking pool.
pub trait Applier: Send + Sync + 'static {
    /// One pass of render → compare → stage → check → swap → reload against `snapshot`.
    fn apply(&self, resource: &Resource, snapshot: &Arc<Snapshot>) -> ApplyResult;
    /// Runs the resource's reload command alone.
    fn reload(&self, resource: &Resource) -> Result<(), String>;
}

/// What the daemon runs: the resources, their wait windows and the applier for them.
#[derive(Clone)]
pub struct ResourceSet {
    pub resources: Vec<Resource>,
    pub applier: Arc<dyn Applier>,
}

/// The two kinds of work the scheduler hands to the blocking pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    Apply,
    Reload,
}

/// The life of one resource between applies: pure bookkeeping over instants, so the
/// timing rules can be tested without a runtime.
#[derive(Debug, Clone)]
struct Slot {
    resource: Arc<Resource>,
    wait: Wait,
    /// When the oldest change not yet handed to an apply came; `None` when none waits.
    pending_since: Option<Instant>,
    last_change: Option<Instant>,
    last_start: Option<Instant>,
    running: Option<Work>,
    /// The dest holds a render whose reload has not succeeded yet.
    reload_owed: bool,
    retry: Option<(Instant, Work)>,
    backoff: Duration,
}

impl Slot {
    fn new(resource: Arc<Resource>, wait: Wait) -> Self {
        Slot {
            resource,
            wait,
            pending_since: None,
            last_change: None,
            last_start: None,
            running: None,
            reload_owed: false,
            retry: None,
            backoff: RETRY_FIRST,
        }
    }

    /// New data for this resource: it supersedes any retry and resets the backoff.
    fn change(&mut self, now: Instant) {
        self.pending_since.get_or_insert(now);
        self.last_change = Some(now);
        self.retry = None;
        self.backoff = RETRY_FIRST;
    }

    /// When the next work is due and which, or `None` while running or idle.
    fn due(&self) -> Option<(Instant, Work)> {
        if self.running.is_some() {
            return None;
        }
        let Some(since) = self.pending_since else {
            return self.retry;
        };
        let quiet = self
            .last_start
            .is_none_or(|start| since >= start + self.wait.min);
        if quiet {
            return Some((since, Work::Apply));
        }
        let settled = self.last_change.unwrap_or(since) + self.wait.min;
        Some((settled.min(since + self.wait.max), Work::Apply))
    }

    fn start(&mut self, work: Work, now: Instant) {
        self.running = Some(work);
        self.retry = None;
        if work == Work::Apply {
            self.pending_since = None;
            self.last_change = None;
            self.last_start = Some(now);
        }
    }

    /// Records how an apply ended; returns the delay of a retry it scheduled.
    fn finish_apply(&mut self, result: &ApplyResult, now: Instant) -> Option<Duration> {
        self.running = None;
        match result {
            ApplyResult::Ok { changed } => {
                // An unchanged file ran no reload: one owed from before is still owed.
                if *changed {
                    self.reload_owed = false;
                }
                self.backoff = RETRY_FIRST;
                self.retry = self.reload_owed.then_some((now, Work::Reload));
                None
            }
            ApplyResult::Failed { reload_owed, .. } => {
                self.reload_owed |= reload_owed;
                // Data that came during the apply is applied next; no retry of the old.
                // A render or check failure retries the whole apply even when an older
                // reload is owed: getting the new data in comes first.
                let work = if *reload_owed {
                    Work::Reload
                } else {
                    Work::Apply
                };
                self.schedule_retry(work, now)
            }
        }
    }

    fn finish_reload(&mut self, result: &Result<(), String>, now: Instant) -> Option<Duration> {
        self.running = None;
        match result {
            Ok(()) => {
                self.reload_owed = false;
                self.backoff = RETRY_FIRST;
                self.retry = None;
                None
            }
            Err(_) => self.schedule_retry(Work::Reload, now),
        }
    }

    fn schedule_retry(&mut self, work: Work, now: Instant) -> Option<Duration> {
        if self.pending_since.is_some() {
            return None;
        }
        let delay = self.backoff;
        self.retry = Some((now + delay, work));
        self.backoff = (self.backoff * 2).min(RETRY_MAX);
        Some(delay)
    }
}

/// How one piece of work ended, as the task that ran it reports it.
#[derive(Debug)]
pub struct Finished {
    pub name: String,
    pub work: Work,
    pub revision: i64,
    pub elapsed: Duration,
    outcome: Outcome,
}

#[derive(Debug)]
enum Outcome {
    Apply(ApplyResult),
    Reload(Result<(), String>),
}

/// Every resource's slot, the applies under way, and the limit on how many run at once.
pub struct Scheduler {
    slots: Vec<Slot>,
    by_name: HashMap<String, usize>,
    interest: Interest,
    applier: Arc<dyn Applier>,
    default_wait: Wait,
    limit: usize,
    running: JoinSet<Finished>,
    running_names: HashMap<task::Id, String>,
    /// Removed resources whose apply is still under way: a set that brings one back
    /// takes its slot, so the old apply and a new one never overlap.
    retired: HashMap<String, Slot>,
}

impl Scheduler {
    /// `limit`: how many resources may apply at once (at least one).
    pub fn new(set: ResourceSet, default_wait: Wait, limit: usize) -> Self {
        let mut scheduler = Scheduler {
            slots: Vec::new(),
            by_name: HashMap::new(),
            interest: Interest::default(),
            applier: Arc::clone(&set.applier),
            default_wait,
            limit: limit.max(1),
            running: JoinSet::new(),
            running_names: HashMap::new(),
            retired: HashMap::new(),
        };
        scheduler.replace(set);
        scheduler
    }

    /// Swaps in a new resource set. A resource that keeps its name keeps its state:
    /// an apply under way, an owed reload and its backoff, so it never applies twice
    /// at once across the swap. Nothing is marked changed; the caller decides.
    pub fn replace(&mut self, set: ResourceSet) {
        let mut old: HashMap<String, Slot> = std::mem::take(&mut self.retired);
        old.extend(
            self.slots
                .drain(..)
                .map(|slot| (slot.resource.name.clone(), slot)),
        );
        self.applier = set.applier;
        for resource in set.resources {
            let wait = resource.wait.unwrap_or(self.default_wait);
            let resource = Arc::new(resource);
            let slot = match old.remove(&resource.name) {
                Some(kept) => Slot {
                    resource,
                    wait,
                    ..kept
                },
                None => Slot::new(resource, wait),
            };
            self.slots.push(slot);
        }
        self.retired = old
            .into_iter()
            .filter(|(_, slot)| slot.running.is_some())
            .collect();
        self.by_name = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, slot)| (slot.resource.name.clone(), i))
            .collect();
        self.interest = Interest::new(self.slots.iter().map(|s| s.resource.selectors.as_slice()));
    }

    pub fn resources(&self) -> impl Iterator<Item = &Resource> {
        self.slots.iter().map(|slot| slot.resource.as_ref())
    }

    /// The resources' selectors merged into the fewest ranges (see [`crate::kv::keys::merge`]).
    pub fn selectors(&self) -> Vec<String> {
        crate::kv::keys::merge(self.resources().flat_map(|r| r.selectors.iter().cloned()))
    }

    /// Marks the resources that select any of `keys` as changed; returns how many.
    pub fn changed(&mut self, keys: &[String], now: Instant) -> usize {
        let affected = self.interest.affected(keys.iter().map(String::as_str));
        for &i in &affected {
            self.slots[i].change(now);
        }
        affected.len()
    }

    /// Marks every resource as changed: at start, after a SIGHUP, on an interval tick.
    pub fn changed_all(&mut self, now: Instant) {
        for slot in &mut self.slots {
            slot.change(now);
        }
    }

    /// When [`Scheduler::dispatch`] next has something to start; `None` when nothing
    /// is due or every permit is taken (a finishing apply wakes the loop instead).
    pub fn next_due(&self) -> Option<Instant> {
        if self.running.len() >= self.limit {
            return None;
        }
        self.slots
            .iter()
            .filter_map(|s| s.due().map(|(at, _)| at))
            .min()
    }

    /// Starts the work that is due by `now`, oldest first, up to the concurrency limit.
    /// Every apply started together reads the same snapshot, taken here.
    pub fn dispatch(&mut self, now: Instant, mirror: &Mirror) {
        let free = self.limit.saturating_sub(self.running.len());
        let mut due: Vec<(Instant, usize, Work)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.due().map(|(at, work)| (at, i, work)))
            .filter(|&(at, _, _)| at <= now)
            .collect();
        if due.is_empty() || free == 0 {
            return;
        }
        due.sort_by_key(|&(at, i, _)| (at, i));
        let snapshot = mirror.snapshot();
        for (_, i, work) in due.into_iter().take(free) {
            self.start(i, work, &snapshot, now);
        }
    }

    fn start(&mut self, i: usize, work: Work, snapshot: &Arc<Snapshot>, now: Instant) {
        let slot = &mut self.slots[i];
        slot.start(work, now);
        let resource = Arc::clone(&slot.resource);
        let name = resource.name.clone();
        let applier = Arc::clone(&self.applier);
        let snapshot = Arc::clone(snapshot);
        let revision = snapshot.revision;
        let task_name = name.clone();
        let handle = self.running.spawn(async move {
            let started = Instant::now();
            let outcome = run_blocking(applier, resource, snapshot, work).await;
            Finished {
                name: task_name,
                work,
                revision,
                elapsed: started.elapsed(),
                outcome,
            }
        });
        self.running_names.insert(handle.id(), name);
    }

    /// Whether any apply or reload is under way.
    pub fn is_busy(&self) -> bool {
        !self.running.is_empty()
    }

    /// Waits for the next apply or reload to end; `None` when none is under way.
    /// Cancel safe: a result is never lost to a `select!` that took another branch.
    pub async fn join_next(&mut self) -> Option<Finished> {
        let joined = self.running.join_next_with_id().await?;
        Some(match joined {
            Ok((id, finished)) => {
                self.running_names.remove(&id);
                finished
            }
            Err(err) => {
                // Our task bodies do not panic (the applier's panics are caught by
                // `spawn_blocking`), so this is a runtime going down; free the slot.
                let name = self.running_names.remove(&err.id()).unwrap_or_default();
                Finished {
                    name,
                    work: Work::Apply,
                    revision: 0,
                    elapsed: Duration::ZERO,
                    outcome: Outcome::Apply(ApplyResult::Failed {
                        reload_owed: false,
                        message: format!("apply task failed: {err}"),
                    }),
                }
            }
        })
    }

    /// Records how a piece of work ended, logs it and schedules what follows.
    pub fn finish(&mut self, finished: Finished, now: Instant) {
        let Some(&i) = self.by_name.get(&finished.name) else {
            self.retired.remove(&finished.name);
            info!(resource = %finished.name, "apply of a removed resource finished");
            return;
        };
        let slot = &mut self.slots[i];
        let name = &finished.name;
        let revision = finished.revision;
        let elapsed_ms = finished.elapsed.as_millis() as u64;
        match &finished.outcome {
            Outcome::Apply(result) => {
                let retry = slot.finish_apply(result, now);
                log_apply(name, revision, elapsed_ms, result, retry);
            }
            Outcome::Reload(result) => {
                let retry = slot.finish_reload(result, now);
                match result {
                    Ok(()) => info!(resource = %name, elapsed_ms, "owed reload succeeded"),
                    Err(cause) => {
                        warn!(resource = %name, elapsed_ms, %cause, retry_in = ?retry, "owed reload failed")
                    }
                }
            }
        }
    }

    /// Waits for every apply and reload under way: none is abandoned between swap and
    /// reload. Nothing new starts.
    pub async fn drain(&mut self) {
        while let Some(finished) = self.join_next().await {
            self.finish(finished, Instant::now());
        }
    }
}

async fn run_blocking(
    applier: Arc<dyn Applier>,
    resource: Arc<Resource>,
    snapshot: Arc<Snapshot>,
    work: Work,
) -> Outcome {
    match work {
        Work::Apply => {
            let joined = task::spawn_blocking(move || applier.apply(&resource, &snapshot)).await;
            Outcome::Apply(joined.unwrap_or_else(|err| ApplyResult::Failed {
                reload_owed: false,
                message: format!("apply panicked: {err}"),
            }))
        }
        Work::Reload => {
            let joined = task::spawn_blocking(move || applier.reload(&resource)).await;
            Outcome::Reload(joined.unwrap_or_else(|err| Err(format!("reload panicked: {err}"))))
        }
    }
}

fn log_apply(
    name: &str,
    revision: i64,
    elapsed_ms: u64,
    result: &ApplyResult,
    retry: Option<Duration>,
) {
    match result {
        ApplyResult::Ok { changed } => {
            info!(resource = %name, revision, changed, elapsed_ms, "applied")
        }
        ApplyResult::Failed {
            reload_owed: true,
            message,
        } => {
            error!(resource = %name, revision, elapsed_ms, cause = %message, retry_in = ?retry, "reload failed after swap")
        }
        ApplyResult::Failed { message, .. } => {
            error!(resource = %name, revision, elapsed_ms, cause = %message, retry_in = ?retry, "apply failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn slot(wait: &str) -> Slot {
        let resource = crate::resource::test_resource("r.toml", &["/r"], PathBuf::from("/tmp/r"));
        Slot::new(Arc::new(resource), wait.parse().expect("valid wait"))
    }

    fn failed(reload_owed: bool) -> ApplyResult {
        ApplyResult::Failed {
            reload_owed,
            message: "boom".into(),
        }
    }

    #[test]
    fn a_change_to_a_quiet_resource_is_due_at_once() {
        let mut s = slot("100ms:1s");
        let t0 = Instant::now();
        s.change(t0);
        assert_eq!(s.due(), Some((t0, Work::Apply)));
        s.start(Work::Apply, t0);
        s.finish_apply(&ApplyResult::Ok { changed: true }, t0 + ms(5));
        assert_eq!(s.due(), None);
        // Past the window, the next change is quiet again.
        s.change(t0 + ms(100));
        assert_eq!(s.due(), Some((t0 + ms(100), Work::Apply)));
    }

    #[test]
    fn changes_within_the_window_wait_until_settled_but_at_most_max() {
        let mut s = slot("100ms:1s");
        let t0 = Instant::now();
        s.change(t0);
        s.start(Work::Apply, t0);
        s.finish_apply(&ApplyResult::Ok { changed: true }, t0 + ms(5));
        s.change(t0 + ms(10));
        s.change(t0 + ms(40));
        assert_eq!(s.due(), Some((t0 + ms(140), Work::Apply)));
        // A steady stream never settles; `max` after the first waiting change bounds it.
        for n in 5..100 {
            s.change(t0 + ms(n * 10));
        }
        assert_eq!(s.due(), Some((t0 + ms(1_010), Work::Apply)));
    }

    #[test]
    fn nothing_is_due_while_running_and_changes_then_follow() {
        let mut s = slot("100ms:1s");
        let t0 = Instant::now();
        s.change(t0);
        s.start(Work::Apply, t0);
        s.change(t0 + ms(500));
        assert_eq!(s.due(), None);
        s.finish_apply(&ApplyResult::Ok { changed: true }, t0 + ms(2_000));
        // It came more than `min` after the start: applied as soon as the apply ended.
        assert_eq!(s.due(), Some((t0 + ms(500), Work::Apply)));
    }

    /// The default window against the burst benchmark's shape: 1,000 changes 1 ms
    /// apart, each apply taking 2 ms. The last change is applied and few applies run.
    #[test]
    fn a_burst_of_1000_changes_over_a_second_takes_few_applies_and_ends_applied() {
        let mut s = slot(&Wait::default().to_string());
        let t0 = Instant::now();
        let mut applies = Vec::new();
        let mut now = t0;
        let end = t0 + ms(5_000);
        let mut next_change = 0u64;
        let mut finish_at: Option<Instant> = None;
        while now < end {
            if finish_at == Some(now) {
                s.finish_apply(&ApplyResult::Ok { changed: true }, now);
                finish_at = None;
            }
            if next_change < 1_000 && now == t0 + ms(next_change) {
                s.change(now);
                next_change += 1;
            }
            if let Some((at, Work::Apply)) = s.due()
                && at <= now
            {
                s.start(Work::Apply, now);
                applies.push(now);
                finish_at = Some(now + ms(2));
            }
            now += ms(1);
        }
        assert!(applies.len() <= 10, "{} applies", applies.len());
        let last_change = t0 + ms(999);
        assert!(applies.last().is_some_and(|&at| at > last_change));
        assert!(s.pending_since.is_none());
    }

    #[test]
    fn failures_retry_with_doubling_capped_backoff_until_success() {
        let mut s = slot("0");
        let t0 = Instant::now();
        s.change(t0);
        let mut now = t0;
        let mut delays = Vec::new();
        for _ in 0..7 {
            let (at, work) = s.due().expect("a retry is due");
            assert_eq!(work, Work::Apply);
            delays.push(at - now);
            now = at;
            s.start(Work::Apply, now);
            s.finish_apply(&failed(false), now);
        }
        let secs: Vec<u64> = delays.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, vec![0, 1, 2, 4, 8, 16, 30]);
        let (at, _) = s.due().expect("still retrying");
        s.start(Work::Apply, at);
        s.finish_apply(&ApplyResult::Ok { changed: true }, at);
        assert_eq!(s.due(), None);
    }

    #[test]
    fn newer_data_supersedes_a_retry_and_resets_the_backoff() {
        let mut s = slot("0");
        let t0 = Instant::now();
        s.change(t0);
        s.start(Work::Apply, t0);
        s.finish_apply(&failed(false), t0);
        s.start(Work::Apply, t0 + ms(1_000));
        s.finish_apply(&failed(false), t0 + ms(1_000));
        assert_eq!(s.due(), Some((t0 + ms(3_000), Work::Apply)));
        s.change(t0 + ms(1_500));
        assert_eq!(s.due(), Some((t0 + ms(1_500), Work::Apply)));
        s.start(Work::Apply, t0 + ms(1_500));
        s.finish_apply(&failed(false), t0 + ms(1_500));
        assert_eq!(s.due(), Some((t0 + ms(2_500), Work::Apply)));
    }

    #[test]
    fn an_owed_reload_is_retried_alone_and_survives_an_unchanged_apply() {
        let mut s = slot("0");
        let t0 = Instant::now();
        s.change(t0);
        s.start(Work::Apply, t0);
        s.finish_apply(&failed(true), t0);
        assert_eq!(s.due(), Some((t0 + ms(1_000), Work::Reload)));
        s.start(Work::Reload, t0 + ms(1_000));
        s.finish_reload(&Err("still down".into()), t0 + ms(1_000));
        assert_eq!(s.due(), Some((t0 + ms(3_000), Work::Reload)));
        // Newer data renders to the same file: no reload ran, so it is still owed.
        s.change(t0 + ms(2_000));
        s.start(Work::Apply, t0 + ms(2_000));
        s.finish_apply(&ApplyResult::Ok { changed: false }, t0 + ms(2_000));
        assert_eq!(s.due(), Some((t0 + ms(2_000), Work::Reload)));
        s.start(Work::Reload, t0 + ms(2_000));
        s.finish_reload(&Ok(()), t0 + ms(2_000));
        assert_eq!(s.due(), None);
        assert!(!s.reload_owed);
    }

    #[test]
    fn a_changed_apply_pays_an_owed_reload() {
        let mut s = slot("0");
        let t0 = Instant::now();
        s.change(t0);
        s.start(Work::Apply, t0);
        s.finish_apply(&failed(true), t0);
        s.change(t0 + ms(10));
        s.start(Work::Apply, t0 + ms(10));
        s.finish_apply(&ApplyResult::Ok { changed: true }, t0 + ms(10));
        assert_eq!(s.due(), None);
        assert!(!s.reload_owed);
    }

    struct Nothing;

    impl Applier for Nothing {
        fn apply(&self, _: &Resource, _: &Arc<Snapshot>) -> ApplyResult {
            ApplyResult::Ok { changed: false }
        }

        fn reload(&self, _: &Resource) -> Result<(), String> {
            Ok(())
        }
    }

    fn set_of(slots: &[Slot]) -> ResourceSet {
        ResourceSet {
            resources: slots.iter().map(|s| s.resource.as_ref().clone()).collect(),
            applier: Arc::new(Nothing),
        }
    }

    #[test]
    fn a_resource_removed_and_brought_back_mid_apply_is_still_running() {
        let a = slot("0");
        let mut scheduler = Scheduler::new(set_of(std::slice::from_ref(&a)), Wait::default(), 2);
        scheduler.slots[0].start(Work::Apply, Instant::now());
        scheduler.replace(set_of(&[]));
        scheduler.replace(set_of(&[a]));
        scheduler.changed_all(Instant::now());
        assert_eq!(
            scheduler.next_due(),
            None,
            "no second apply while the first runs"
        );
    }
}
