//! What a running conflux knows about itself, for operators: metrics, health,
//! readiness and status, all fed by the loop ([`crate::daemon`]) from the same
//! [`Outcome`]s it logs, and from its own events (backend connected, revision, watch
//! reconnects, resyncs, confdir reloads, and the loop's own heartbeat).
//!
//! Serving it over HTTP is [`crate::http`]'s job, telling systemd [`crate::systemd`]'s;
//! this module only keeps the truth, shared between the loop and those readers.

mod metrics;
pub mod status;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::outcome::{Outcome, Step, Work};

pub use metrics::Metrics;
use status::{LastPass, Refused, Status, result_label};

/// How long the loop may go without a heartbeat before `/health` says it is stuck,
/// in heartbeats.
const MISSED_BEATS: u32 = 3;

/// The shared truth about a run.
pub struct Telemetry {
    pub metrics: Metrics,
    status: Mutex<Status>,
    started: Instant,
    /// Milliseconds after `started` of the loop's last heartbeat.
    last_beat_ms: AtomicU64,
    /// How often the loop beats; `None` when nothing listens (no endpoint, no watchdog).
    beat_every: Option<Duration>,
    /// Whether anyone can read the metrics (`--metrics-addr`): when nobody can, a
    /// pass's outcome updates only the status, not six labelled series per resource.
    metrics_served: bool,
}

impl Telemetry {
    /// `beat_every`: how often the loop will call [`Telemetry::beat`].
    pub fn new(beat_every: Option<Duration>) -> Telemetry {
        let metrics = Metrics::new();
        metrics.start_time.set(unix_now());
        Telemetry {
            metrics,
            status: Mutex::new(Status::default()),
            started: Instant::now(),
            last_beat_ms: AtomicU64::new(0),
            beat_every,
            metrics_served: true,
        }
    }

    /// Telemetry whose metrics nobody serves (no `--metrics-addr`, a one-shot run): the
    /// outcomes of passes are kept in the status alone.
    pub fn without_metrics(beat_every: Option<Duration>) -> Telemetry {
        Telemetry {
            metrics_served: false,
            ..Telemetry::new(beat_every)
        }
    }

    fn status(&self) -> MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The backend conflux reads.
    pub fn backend(&self, name: &str, endpoints: Vec<String>) {
        let mut status = self.status();
        status.backend.name = name.to_string();
        status.backend.endpoints = endpoints;
    }

    pub fn connected(&self, connected: bool) {
        self.metrics.backend_connected.set(i64::from(connected));
        self.status().backend.connected = connected;
    }

    pub fn revision(&self, revision: i64) {
        self.metrics.backend_revision.set(revision);
        self.status().backend.revision = revision;
    }

    pub fn watch_reconnect(&self) {
        self.metrics.watch_reconnects.inc();
        self.connected(false);
    }

    pub fn resync(&self) {
        self.metrics.resyncs.inc();
    }

    /// The confdir conflux runs.
    pub fn confdir(&self, path: PathBuf) {
        self.status().confdir.path = path;
    }

    /// A resource set was loaded (at start, SIGHUP, a confdir change): `resources` are
    /// its names with their files. Resources that left the set are forgotten.
    pub fn resources(&self, resources: Vec<(String, Vec<PathBuf>)>) {
        let mut status = self.status();
        status.confdir.loaded_at = now_rfc3339();
        status.confdir.resources = resources.len();
        status.confdir.last_refused = None;
        let mut kept = std::collections::BTreeMap::new();
        for (name, files) in resources {
            let mut entry = status.resources.remove(&name).unwrap_or_default();
            entry.files = files;
            kept.insert(name, entry);
        }
        for gone in status.resources.keys() {
            self.metrics.forget(gone);
        }
        status.resources = kept;
    }

    /// The result of a confdir reload: `Err` says why the new set was refused.
    pub fn confdir_reload(&self, result: Result<(), String>) {
        let label = if result.is_ok() { "ok" } else { "refused" };
        self.metrics
            .confdir_reloads
            .with_label_values(&[label])
            .inc();
        if let Err(error) = result {
            self.status().confdir.last_refused = Some(Refused {
                at: now_rfc3339(),
                error,
            });
        }
    }

    /// A pass ended; `retry_in`: when the scheduler tries again; `reload_owed`: the
    /// resource's debt after it.
    pub fn outcome(&self, outcome: &Outcome, retry_in: Option<Duration>, reload_owed: bool) {
        let name = outcome.resource.as_str();
        let degraded = outcome.result.is_err() || reload_owed;
        if self.metrics_served {
            self.count(outcome, degraded);
        }
        let mut status = self.status();
        let Some(entry) = status.resources.get_mut(name) else {
            return;
        };
        if outcome.is_ok() {
            entry.applied_since_start = true;
            if outcome.work == Work::Apply {
                entry.revision_applied = Some(outcome.revision);
            }
        }
        entry.degraded = degraded;
        entry.reload_owed = reload_owed;
        entry.next_retry = retry_in.map(|d| rfc3339(SystemTime::now() + d));
        entry.last = Some(LastPass::of(outcome, now_rfc3339()));
    }

    /// A pass's outcome in the metrics.
    fn count(&self, outcome: &Outcome, degraded: bool) {
        let name = outcome.resource.as_str();
        let m = &self.metrics;
        if outcome.work == Work::Apply {
            m.apply_total
                .with_label_values(&[name, result_label(outcome)])
                .inc();
            m.apply_duration
                .with_label_values(&[name])
                .observe(outcome.elapsed.as_secs_f64());
        }
        if let Some(step) = outcome.failed_step() {
            m.apply_failures
                .with_label_values(&[name, step.as_str()])
                .inc();
        }
        if outcome.took(Step::Reload).is_some() {
            let result = if outcome.failed_step() == Some(Step::Reload) {
                "failed"
            } else {
                "ok"
            };
            m.reloads_total.with_label_values(&[name, result]).inc();
        }
        m.resource_degraded
            .with_label_values(&[name])
            .set(i64::from(degraded));
        if outcome.is_ok() {
            m.resource_last_success
                .with_label_values(&[name])
                .set(unix_now());
            if outcome.work == Work::Apply {
                m.resource_revision
                    .with_label_values(&[name])
                    .set(outcome.revision);
            }
        }
    }

    /// The loop turned.
    pub fn beat(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_beat_ms.store(ms, Ordering::Relaxed);
    }

    /// Whether the loop has beaten recently (always false when it does not beat).
    pub fn alive(&self) -> bool {
        let Some(every) = self.beat_every else {
            return false;
        };
        let last = Duration::from_millis(self.last_beat_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last) <= every * MISSED_BEATS
    }

    /// `Ok` once the backend is connected and every resource has been applied since
    /// start; else what is missing, one item per line.
    pub fn ready(&self) -> Result<(), Vec<String>> {
        let status = self.status();
        let mut missing = Vec::new();
        if !status.backend.connected {
            missing.push(format!("backend {} is not connected", status.backend.name));
        }
        for (name, resource) in &status.resources {
            if !resource.applied_since_start {
                let why = resource
                    .last
                    .as_ref()
                    .and_then(|l| l.error.clone())
                    .unwrap_or_else(|| "not applied yet".into());
                missing.push(format!("resource {name}: {why}"));
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing)
        }
    }

    /// Resources whose last pass failed or that owe a reload.
    pub fn degraded(&self) -> usize {
        self.status()
            .resources
            .values()
            .filter(|r| r.degraded)
            .count()
    }

    /// The whole status, as `/status` shows it.
    pub fn snapshot(&self) -> Status {
        self.status().clone()
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

fn rfc3339(at: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(at).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{ApplyError, Done};

    fn outcome(result: Result<Done, ApplyError>, step: Step) -> Outcome {
        Outcome::bare("a.toml".into(), 7, Work::Apply, step, result, false)
    }

    fn failed(step: Step) -> Outcome {
        let error = ApplyError::Panicked {
            resource: "a.toml".into(),
            message: "x".into(),
        };
        outcome(Err(error), step)
    }

    #[test]
    fn readiness_needs_the_backend_and_every_resource_applied_since_start() {
        let t = Telemetry::new(None);
        t.backend("etcdv3", vec![]);
        t.resources(vec![("a.toml".into(), vec!["/x".into()])]);
        let missing = t.ready().unwrap_err();
        assert_eq!(missing.len(), 2, "{missing:?}");
        t.connected(true);
        t.outcome(&failed(Step::Check), Some(Duration::from_secs(1)), false);
        let missing = t.ready().unwrap_err();
        assert!(missing[0].contains("a.toml"), "{missing:?}");
        assert_eq!(t.degraded(), 1);
        t.outcome(&outcome(Ok(Done::Updated), Step::Swap), None, false);
        assert_eq!(t.ready(), Ok(()));
        assert_eq!(t.degraded(), 0);
        assert_eq!(t.snapshot().resources["a.toml"].revision_applied, Some(7));
    }

    #[test]
    fn metrics_count_results_steps_and_reloads() {
        let t = Telemetry::new(None);
        t.resources(vec![("a.toml".into(), vec![])]);
        t.outcome(&outcome(Ok(Done::Unchanged), Step::Compare), None, false);
        t.outcome(&failed(Step::Render), None, false);
        let text = t.metrics.render();
        for line in [
            "conflux_apply_total{resource=\"a.toml\",result=\"unchanged\"} 1",
            "conflux_apply_total{resource=\"a.toml\",result=\"failed\"} 1",
            "conflux_apply_failures_total{resource=\"a.toml\",step=\"render\"} 1",
            "conflux_resource_degraded{resource=\"a.toml\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    /// Six labelled series per resource were kept by one-shot runs that nobody could
    /// scrape (about 5 of the 70 ms of a 1,000-resource rerun): without an endpoint,
    /// only the status.
    #[test]
    fn without_an_endpoint_outcomes_reach_the_status_but_no_series() {
        let t = Telemetry::without_metrics(None);
        t.resources(vec![("a.toml".into(), vec![])]);
        t.outcome(&failed(Step::Render), None, false);
        assert_eq!(t.degraded(), 1);
        t.outcome(&outcome(Ok(Done::Updated), Step::Swap), None, false);
        assert_eq!(t.degraded(), 0);
        assert_eq!(t.snapshot().resources["a.toml"].revision_applied, Some(7));
        let text = t.metrics.render();
        assert!(!text.contains("a.toml"), "{text}");
    }

    #[test]
    fn liveness_follows_the_heartbeat() {
        assert!(!Telemetry::new(None).alive());
        let t = Telemetry::new(Some(Duration::from_millis(100)));
        t.beat();
        assert!(t.alive());
        std::thread::sleep(Duration::from_millis(400));
        assert!(!t.alive());
        t.beat();
        assert!(t.alive());
    }
}
