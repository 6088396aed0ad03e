//! When each resource is applied, and the one executor that applies them, for the
//! daemon and for one-shot runs alike: coalescing with a trailing-edge guarantee,
//! retries with backoff, at most `concurrency` passes at once, and never two passes of
//! one resource at the same time.
//!
//! A change to a quiet resource is applied at once. Changes that arrive while it is
//! being applied, or within its [`Wait`] window after an apply started, collapse into
//! one more apply that reads the newest snapshot; the last change is always applied
//! (the timing rules are `slot`'s). A failed pass is retried until it succeeds or
//! newer data supersedes it; a reload that failed after the swap is retried on its own.
//!
//! What a pass does is the [`Applier`]'s business (the pipeline, or a fake in tests);
//! where changes come from and when to stop is the caller's ([`crate::daemon`]). The
//! [`Scheduler`] never sleeps itself: it says when it is next due.

mod slot;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::{self, JoinSet};
use tokio::time::Instant;
use tracing::info;

use crate::kv::Snapshot;
use crate::mirror::{Interest, Mirror};
use crate::outcome::{ApplyError, Outcome, Step, Work};
use crate::resource::Resource;
use crate::values::Wait;

use slot::Slot;

/// How many passes run at once unless told otherwise. Passes are mostly I/O (an fsync
/// of the stage file and of its directory, check and reload commands), which overlap
/// well even on two cores: measured on the one-shot benchmark (1,000 new files), 8 at a
/// time took a third of the time of one at a time.
pub const DEFAULT_CONCURRENCY: usize = 8;

/// Runs one pass of one resource. Synchronous, because the real one renders, writes
/// files and runs commands: the scheduler calls it on the blocking pool.
pub trait Applier: Send + Sync + 'static {
    /// `Work::Apply`: render → compare → stage → check → swap → reload against
    /// `snapshot`; `Work::Reload`: the reload command alone.
    fn apply(&self, resource: &Resource, snapshot: &Arc<Snapshot>, work: Work) -> Outcome;
}

/// What the scheduler runs: the resources and the applier for them.
#[derive(Clone)]
pub struct ResourceSet {
    pub resources: Vec<Resource>,
    pub applier: Arc<dyn Applier>,
}

/// How the scheduler behaves, the same for every resource.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// The coalescing window of resources that set none (`--wait`); `None`: each such
    /// resource gets [`Wait::default_for`] its reload.
    pub wait: Option<Wait>,
    /// How many passes may run at once (at least one).
    pub concurrency: usize,
    /// Whether failed passes are retried (the daemon) or final (a one-shot run).
    pub retries: bool,
}

/// Every resource's slot, the passes under way, and the limit on how many run at once.
pub struct Scheduler {
    slots: Vec<Slot>,
    by_name: HashMap<String, usize>,
    interest: Interest,
    applier: Arc<dyn Applier>,
    settings: Settings,
    running: JoinSet<Outcome>,
    running_names: HashMap<task::Id, String>,
    /// Removed resources whose pass is still under way: a set that brings one back
    /// takes its slot, so the old pass and a new one never overlap.
    retired: HashMap<String, Slot>,
}

impl Scheduler {
    pub fn new(set: ResourceSet, settings: Settings) -> Self {
        let mut scheduler = Scheduler {
            slots: Vec::new(),
            by_name: HashMap::new(),
            interest: Interest::default(),
            applier: Arc::clone(&set.applier),
            settings: Settings {
                concurrency: settings.concurrency.max(1),
                ..settings
            },
            running: JoinSet::new(),
            running_names: HashMap::new(),
            retired: HashMap::new(),
        };
        scheduler.replace(set);
        scheduler
    }

    /// Swaps in a new resource set. A resource that keeps its name keeps its state:
    /// a pass under way, an owed reload and its backoff, so it never applies twice
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
            let wait = resource
                .wait
                .or(self.settings.wait)
                .unwrap_or_else(|| Wait::default_for(resource.reload.is_some()));
            let resource = Arc::new(resource);
            let slot = match old.remove(&resource.name) {
                Some(mut kept) => {
                    kept.resource = resource;
                    kept.wait = wait;
                    kept
                }
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

    /// Marks the resources named in `names` as changed (a confdir edit concerned them).
    pub fn changed_names(&mut self, names: &std::collections::BTreeSet<String>, now: Instant) {
        for slot in &mut self.slots {
            if names.contains(&slot.resource.name) {
                slot.change(now);
            }
        }
    }

    /// Whether a resource owes a reload (its last swap's reload has not succeeded).
    pub fn reload_owed(&self, name: &str) -> bool {
        self.by_name
            .get(name)
            .is_some_and(|&i| self.slots[i].reload_owed)
    }

    /// Marks every resource as changed: at start, after a SIGHUP, on an interval tick.
    pub fn changed_all(&mut self, now: Instant) {
        for slot in &mut self.slots {
            slot.change(now);
        }
    }

    /// When [`Scheduler::dispatch`] next has something to start; `None` when nothing
    /// is due or every permit is taken (a finishing pass wakes the loop instead).
    pub fn next_due(&self) -> Option<Instant> {
        if self.running.len() >= self.settings.concurrency {
            return None;
        }
        self.slots
            .iter()
            .filter_map(|s| s.due().map(|(at, _)| at))
            .min()
    }

    /// Nothing runs and nothing is waiting to run (a one-shot run is done).
    pub fn is_idle(&self) -> bool {
        self.running.is_empty() && self.slots.iter().all(|s| s.due().is_none())
    }

    /// Starts the work that is due by `now`, oldest first, up to the concurrency limit.
    /// Every pass started together reads the same snapshot, taken here.
    pub fn dispatch(&mut self, now: Instant, mirror: &Mirror) {
        let free = self.settings.concurrency.saturating_sub(self.running.len());
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
        let handle = self.running.spawn(async move {
            task::spawn_blocking(move || applier.apply(&resource, &snapshot, work))
                .await
                .unwrap_or_else(|err| aborted(&err.to_string(), work))
        });
        self.running_names.insert(handle.id(), name);
    }

    /// Whether any pass is under way.
    pub fn is_busy(&self) -> bool {
        !self.running.is_empty()
    }

    /// Waits for the next pass to end; `None` when none is under way.
    /// Cancel safe: an outcome is never lost to a `select!` that took another branch.
    pub async fn join_next(&mut self) -> Option<Outcome> {
        let joined = self.running.join_next_with_id().await?;
        Some(match joined {
            Ok((id, outcome)) => {
                self.running_names.remove(&id);
                outcome
            }
            Err(err) => {
                // The pass catches its own panics, so this is the runtime going down;
                // free the slot.
                let name = self.running_names.remove(&err.id()).unwrap_or_default();
                let mut outcome = aborted(&err.to_string(), Work::Apply);
                outcome.resource = name;
                outcome
            }
        })
    }

    /// Records how a pass ended and schedules what follows; returns the delay of a
    /// retry it scheduled. `None` also for a resource removed meanwhile.
    pub fn finish(&mut self, outcome: &Outcome, now: Instant) -> Option<Duration> {
        let Some(&i) = self.by_name.get(&outcome.resource) else {
            self.retired.remove(&outcome.resource);
            info!(resource = %outcome.resource, "a pass of a removed resource finished");
            return None;
        };
        self.slots[i].finish(outcome, now, self.settings.retries)
    }

    /// The position of a resource in the set (for output in resource order).
    pub fn position(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Waits for every pass under way: none is abandoned between swap and reload.
    /// Nothing new starts. Returns their outcomes, each already recorded.
    pub async fn drain(&mut self) -> Vec<(Outcome, Option<Duration>)> {
        let mut ended = Vec::new();
        while let Some(outcome) = self.join_next().await {
            let retry = self.finish(&outcome, Instant::now());
            ended.push((outcome, retry));
        }
        ended
    }
}

/// The outcome of a pass whose task ended without one (the runtime going down).
fn aborted(cause: &str, work: Work) -> Outcome {
    let error = ApplyError::Panicked {
        resource: String::new(),
        message: format!("the apply task failed: {cause}"),
    };
    Outcome::bare(String::new(), 0, work, Step::Render, Err(error), false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    struct Nothing;

    impl Applier for Nothing {
        fn apply(&self, _: &Resource, _: &Arc<Snapshot>, _: Work) -> Outcome {
            slot::tests::ok(false, false)
        }
    }

    fn set_of(resources: &[Resource]) -> ResourceSet {
        ResourceSet {
            resources: resources.to_vec(),
            applier: Arc::new(Nothing),
        }
    }

    fn settings() -> Settings {
        Settings {
            wait: None,
            concurrency: 2,
            retries: true,
        }
    }

    #[test]
    fn only_a_resource_with_a_reload_gets_a_window_unless_one_is_set() {
        let plain = crate::resource::test_resource("a.toml", &["/a"], PathBuf::from("/tmp/a"));
        let mut reloaded =
            crate::resource::test_resource("b.toml", &["/b"], PathBuf::from("/tmp/b"));
        reloaded.reload = Some(crate::command::Command::new("true", Duration::from_secs(1)));
        let mut own = plain.clone();
        own.name = "c.toml".into();
        own.wait = Some("5s".parse().expect("valid"));
        let set = set_of(&[plain, reloaded, own]);
        let waits = |s: &Scheduler| s.slots.iter().map(|s| s.wait).collect::<Vec<_>>();
        let five: Wait = "5s".parse().expect("valid");
        let scheduler = Scheduler::new(set.clone(), settings());
        assert_eq!(waits(&scheduler), vec![Wait::NONE, Wait::RELOAD, five]);
        let global: Wait = "2s".parse().expect("valid");
        let explicit = Settings {
            wait: Some(global),
            ..settings()
        };
        let scheduler = Scheduler::new(set, explicit);
        assert_eq!(waits(&scheduler), vec![global, global, five]);
    }

    #[test]
    fn a_resource_removed_and_brought_back_mid_apply_is_still_running() {
        let a = crate::resource::test_resource("r.toml", &["/r"], PathBuf::from("/tmp/r"));
        let mut scheduler = Scheduler::new(set_of(std::slice::from_ref(&a)), settings());
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
