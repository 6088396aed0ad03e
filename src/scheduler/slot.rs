//! The timing rules of one resource between passes, as pure bookkeeping over instants
//! (so they can be tested without a runtime): when a change is due given its [`Wait`]
//! window, that two passes of one resource never overlap, and how a failed pass is
//! retried with [`crate::retry::APPLY`] backoff until it succeeds or newer data
//! supersedes it.
//!
//! Starting the passes and collecting their outcomes is the executor's job
//! ([`super::Scheduler`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::outcome::{Done, Outcome, Step, Work};
use crate::resource::Resource;
use crate::retry::{self, Backoff};
use crate::values::Wait;

/// The life of one resource between passes.
#[derive(Debug, Clone)]
pub(super) struct Slot {
    pub(super) resource: Arc<Resource>,
    pub(super) wait: Wait,
    /// When the oldest change not yet handed to a pass came; `None` when none waits.
    pub(super) pending_since: Option<Instant>,
    last_change: Option<Instant>,
    last_start: Option<Instant>,
    pub(super) running: Option<Work>,
    /// dest holds a render whose reload has not succeeded yet.
    pub(super) reload_owed: bool,
    /// A newer render failed before its swap: once the owed reload is paid, the apply
    /// is retried too.
    reapply: bool,
    retry: Option<(Instant, Work)>,
    backoff: Backoff,
}

impl Slot {
    pub(super) fn new(resource: Arc<Resource>, wait: Wait) -> Self {
        Slot {
            resource,
            wait,
            pending_since: None,
            last_change: None,
            last_start: None,
            running: None,
            reload_owed: false,
            reapply: false,
            retry: None,
            backoff: Backoff::new(retry::APPLY),
        }
    }

    /// New data for this resource: it supersedes any retry of an apply and resets the
    /// backoff (an owed reload is still owed: the next pass decides).
    pub(super) fn change(&mut self, now: Instant) {
        self.pending_since.get_or_insert(now);
        self.last_change = Some(now);
        self.retry = None;
        self.reapply = false;
        self.backoff.reset();
    }

    /// When the next work is due and which, or `None` while running or idle.
    pub(super) fn due(&self) -> Option<(Instant, Work)> {
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

    pub(super) fn start(&mut self, work: Work, now: Instant) {
        self.running = Some(work);
        self.retry = None;
        if work == Work::Apply {
            self.pending_since = None;
            self.last_change = None;
            self.last_start = Some(now);
        }
    }

    /// Records how a pass ended; returns the delay of the retry it scheduled, if any
    /// (none when `retries` is off, as in a one-shot run).
    pub(super) fn finish(
        &mut self,
        outcome: &Outcome,
        now: Instant,
        retries: bool,
    ) -> Option<Duration> {
        self.running = None;
        match (&outcome.result, outcome.work) {
            (Ok(_), Work::Reload) => {
                self.reload_owed = false;
                // The debt is paid; a newer render that failed still wants its retry.
                if std::mem::take(&mut self.reapply) {
                    return retries
                        .then(|| self.schedule_retry(Work::Apply, now))
                        .flatten();
                }
                self.backoff.reset();
                self.retry = None;
                None
            }
            (Ok(done), Work::Apply) => {
                // A pass that replaced dest or ran the reload paid any reload owed; an
                // unchanged dest ran none, so one owed from before is still owed.
                if matches!(done, Done::Updated | Done::Reloaded) {
                    self.reload_owed = false;
                }
                self.reload_owed |= outcome.reload_owed;
                self.reapply = false;
                self.backoff.reset();
                self.retry = (self.reload_owed && retries).then_some((now, Work::Reload));
                None
            }
            (Err(_), work) => {
                self.reload_owed |= outcome.reload_owed;
                // A render or check that failed leaves the file in place as it was; if
                // its reload is owed, that reload is retried first (the service must
                // not stay on older config than dest says), then the apply. A rollback
                // (degraded) put the previous set back and reloaded it: the newest
                // data is what to retry. Data that came during the pass is applied
                // next; no retry of the old.
                let next = if outcome.degraded {
                    Work::Apply
                } else if outcome.step == Step::Reload || self.reload_owed {
                    if work == Work::Apply && outcome.step != Step::Reload {
                        self.reapply = true;
                    }
                    Work::Reload
                } else {
                    Work::Apply
                };
                retries.then(|| self.schedule_retry(next, now)).flatten()
            }
        }
    }

    fn schedule_retry(&mut self, work: Work, now: Instant) -> Option<Duration> {
        if self.pending_since.is_some() {
            return None;
        }
        let delay = self.backoff.next_delay();
        self.retry = Some((now + delay, work));
        Some(delay)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::outcome::ApplyError;
    use std::path::PathBuf;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn slot(wait: &str) -> Slot {
        let resource = crate::resource::test_resource("r.toml", &["/r"], PathBuf::from("/tmp/r"));
        Slot::new(Arc::new(resource), wait.parse().expect("valid wait"))
    }

    /// An outcome of `work` that ended at `step` with `result`.
    pub(crate) fn outcome(
        work: Work,
        step: Step,
        result: Result<Done, ApplyError>,
        reload_owed: bool,
    ) -> Outcome {
        Outcome::bare("r.toml".into(), 1, work, step, result, reload_owed)
    }

    fn boom(step: Step) -> ApplyError {
        ApplyError::Panicked {
            resource: format!("r.toml at {step}"),
            message: "boom".into(),
        }
    }

    /// An apply that replaced dest (`changed`) or found it right, with a reload owed or not.
    pub(crate) fn ok(changed: bool, owed: bool) -> Outcome {
        let done = if changed {
            Done::Updated
        } else {
            Done::Unchanged
        };
        outcome(Work::Apply, Step::Compare, Ok(done), owed)
    }

    /// An apply that failed; `reload_owed`: it failed at the reload, after the swap.
    pub(crate) fn failed(reload_owed: bool) -> Outcome {
        let step = if reload_owed {
            Step::Reload
        } else {
            Step::Check
        };
        outcome(Work::Apply, step, Err(boom(step)), reload_owed)
    }

    fn reload_result(ok: bool) -> Outcome {
        let result = if ok {
            Ok(Done::Reloaded)
        } else {
            Err(boom(Step::Reload))
        };
        outcome(Work::Reload, Step::Reload, result, !ok)
    }

    #[test]
    fn a_change_to_a_quiet_resource_is_due_at_once() {
        let mut s = slot("100ms:1s");
        let t0 = Instant::now();
        s.change(t0);
        assert_eq!(s.due(), Some((t0, Work::Apply)));
        s.start(Work::Apply, t0);
        s.finish(&ok(true, false), t0 + ms(5), true);
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
        s.finish(&ok(true, false), t0 + ms(5), true);
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
        s.finish(&ok(true, false), t0 + ms(2_000), true);
        // It came more than `min` after the start: applied as soon as the apply ended.
        assert_eq!(s.due(), Some((t0 + ms(500), Work::Apply)));
    }

    /// The reload window against the burst benchmark's shape: 1,000 changes 1 ms
    /// apart, each apply taking 2 ms. The last change is applied and few applies run.
    #[test]
    fn a_burst_of_1000_changes_over_a_second_takes_few_applies_and_ends_applied() {
        let mut s = slot(&Wait::RELOAD.to_string());
        let t0 = Instant::now();
        let mut applies = Vec::new();
        let mut now = t0;
        let end = t0 + ms(5_000);
        let mut next_change = 0u64;
        let mut finish_at: Option<Instant> = None;
        while now < end {
            if finish_at == Some(now) {
                s.finish(&ok(true, false), now, true);
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
            s.finish(&failed(false), now, true);
        }
        let secs: Vec<u64> = delays.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, vec![0, 1, 2, 4, 8, 16, 30]);
        let (at, _) = s.due().expect("still retrying");
        s.start(Work::Apply, at);
        s.finish(&ok(true, false), at, true);
        assert_eq!(s.due(), None);
    }

    #[test]
    fn without_retries_a_failure_is_final() {
        let mut s = slot("0");
        let t0 = Instant::now();
        s.change(t0);
        s.start(Work::Apply, t0);
        assert_eq!(s.finish(&failed(true), t0, false), None);
        assert_eq!(s.due(), None);
    }

    #[test]
    fn newer_data_supersedes_a_retry_and_resets_the_backoff() {
        let mut s = slot("0");
        let t0 = Instant::now();
        s.change(t0);
        s.start(Work::Apply, t0);
        s.finish(&failed(false), t0, true);
        s.start(Work::Apply, t0 + ms(1_000));
        s.finish(&failed(false), t0 + ms(1_000), true);
        assert_eq!(s.due(), Some((t0 + ms(3_000), Work::Apply)));
        s.change(t0 + ms(1_500));
        assert_eq!(s.due(), Some((t0 + ms(1_500), Work::Apply)));
        s.start(Work::Apply, t0 + ms(1_500));
        s.finish(&failed(false), t0 + ms(1_500), true);
        assert_eq!(s.due(), Some((t0 + ms(2_500), Work::Apply)));
    }

    #[test]
    fn an_owed_reload_is_retried_alone_and_survives_an_unchanged_apply() {
        let mut s = slot("0");
        let t0 = Instant::now();
        s.change(t0);
        s.start(Work::Apply, t0);
        s.finish(&failed(true), t0, true);
        assert_eq!(s.due(), Some((t0 + ms(1_000), Work::Reload)));
        s.start(Work::Reload, t0 + ms(1_000));
        s.finish(&reload_result(false), t0 + ms(1_000), true);
        assert_eq!(s.due(), Some((t0 + ms(3_000), Work::Reload)));
        // Newer data renders to the same file: no reload ran, so it is still owed.
        s.change(t0 + ms(2_000));
        s.start(Work::Apply, t0 + ms(2_000));
        s.finish(&ok(false, false), t0 + ms(2_000), true);
        assert_eq!(s.due(), Some((t0 + ms(2_000), Work::Reload)));
        s.start(Work::Reload, t0 + ms(2_000));
        s.finish(&reload_result(true), t0 + ms(2_000), true);
        assert_eq!(s.due(), None);
        assert!(!s.reload_owed);
    }

    /// Regression: a newer render that failed its check dropped the owed reload of the
    /// file in place, so the service ran older config than dest said.
    #[test]
    fn an_owed_reload_is_retried_before_a_newer_render_that_failed_its_check() {
        let mut s = slot("0");
        let t0 = Instant::now();
        s.change(t0);
        s.start(Work::Apply, t0);
        s.finish(&failed(true), t0, true);
        s.change(t0 + ms(100));
        s.start(Work::Apply, t0 + ms(100));
        s.finish(&failed(false), t0 + ms(100), true);
        assert_eq!(s.due(), Some((t0 + ms(1_100), Work::Reload)));
        s.start(Work::Reload, t0 + ms(1_100));
        s.finish(&reload_result(true), t0 + ms(1_100), true);
        assert!(!s.reload_owed);
        assert_eq!(
            s.due(),
            Some((t0 + ms(3_100), Work::Apply)),
            "then the apply"
        );
    }

    #[test]
    fn a_changed_apply_pays_an_owed_reload() {
        let mut s = slot("0");
        let t0 = Instant::now();
        s.change(t0);
        s.start(Work::Apply, t0);
        s.finish(&failed(true), t0, true);
        s.change(t0 + ms(10));
        s.start(Work::Apply, t0 + ms(10));
        s.finish(&ok(true, false), t0 + ms(10), true);
        assert_eq!(s.due(), None);
        assert!(!s.reload_owed);
    }
}
