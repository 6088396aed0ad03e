//! Where every outcome goes, in one place: the scheduler is told (it decides on a
//! retry), the log, the telemetry, systemd (ready after the first full pass, a status
//! line) and the run's report (each resource's last outcome; noop diffs on stdout).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::time::Duration;

use tokio::time::Instant;
use tracing::info;

use super::Daemon;
use crate::outcome::Outcome;
use crate::resource::Resource;
use crate::scheduler::Scheduler;

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

impl Daemon {
    /// A pass ended: schedule what follows, then record its outcome.
    pub(super) fn finished(&mut self, outcome: Outcome) {
        let retry = self.scheduler.finish(&outcome, Instant::now());
        self.record(outcome, retry);
        if !self.scheduler.is_busy() {
            self.trim_at = Some(Instant::now() + super::TRIM_AFTER);
        }
    }

    pub(super) fn record(&mut self, outcome: Outcome, retry: Option<Duration>) {
        outcome.log(retry);
        let owed = self.scheduler.reload_owed(&outcome.resource);
        self.telemetry.outcome(&outcome, retry, owed);
        let position = self.scheduler.position(&outcome.resource);
        let first_pass_done = self.tally.add(outcome, position);
        if self.mode == crate::config::Mode::Onetime {
            return;
        }
        let status = self.status_line();
        if first_pass_done {
            info!(
                resources = self.scheduler.resources().count(),
                "every resource had its first pass: ready"
            );
            self.systemd.ready(&status);
        } else {
            self.systemd.status(&status);
        }
    }

    /// systemd's one-line status: resources, revision, degraded.
    pub(super) fn status_line(&self) -> String {
        format!(
            "{} resources at revision {}, {} degraded",
            self.scheduler.resources().count(),
            self.mirror.revision(),
            self.telemetry.degraded()
        )
    }
}

/// Each resource's last outcome, for the report; noop diffs, printed on stdout as they
/// come, or in resource order at the end of a one-shot run (where passes run side by
/// side and would otherwise print in whatever order they finish).
pub(super) struct Tally {
    ordered: bool,
    last_ok: HashMap<String, bool>,
    pending: HashMap<String, bool>,
    diffs: BTreeMap<usize, String>,
    /// Resources still waiting for their first pass; `None` once all have had it.
    first_pass: Option<HashSet<String>>,
}

impl Tally {
    pub(super) fn new(ordered: bool) -> Tally {
        Tally {
            ordered,
            last_ok: HashMap::new(),
            pending: HashMap::new(),
            diffs: BTreeMap::new(),
            first_pass: None,
        }
    }

    /// The resources whose first pass makes the run ready.
    pub(super) fn expect<'a>(&mut self, resources: impl Iterator<Item = &'a Resource>) {
        self.first_pass = Some(resources.map(|r| r.name.clone()).collect());
    }

    /// Counts an outcome; true when it completes the first pass of every resource.
    pub(super) fn add(&mut self, outcome: Outcome, position: Option<usize>) -> bool {
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
        let done = match &mut self.first_pass {
            Some(waiting) => {
                waiting.remove(&outcome.resource);
                waiting.is_empty()
            }
            None => false,
        };
        if done {
            self.first_pass = None;
        }
        self.last_ok
            .insert(outcome.resource, outcome.result.is_ok());
        done
    }

    /// Prints the held diffs and counts every resource of the current set.
    pub(super) fn report(&mut self, scheduler: &Scheduler) -> Report {
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
