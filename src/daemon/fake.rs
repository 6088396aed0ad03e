//! Fakes for the loop's tests: a backend driven by the test, an applier that records
//! its calls and answers from a script, and a harness that runs the loop against them
//! under tokio's paused clock.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{DaemonError, Loader, Options, Report, run};
use crate::backend::{Backend, BackendError, BoxFuture};
use crate::config::Mode;
use crate::kv::{Change, Event, Snapshot};
use crate::outcome::{ApplyError, Done, Outcome, Step, Work};
use crate::resource::Resource;
use crate::scheduler::{Applier, ResourceSet, Settings};
use crate::systemd::Systemd;
use crate::telemetry::Telemetry;

pub(super) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn transient() -> BackendError {
    BackendError::Transient {
        backend: "fake",
        message: "away".into(),
    }
}

pub(super) enum Feed {
    Change(Change),
    Break,
}

/// A backend driven by the test: `snapshot` returns `data`, `watch` forwards what
/// the test feeds it, and both record how they were called.
pub(super) struct FakeBackend {
    pub(super) data: Mutex<Snapshot>,
    pub(super) snapshot_failures: AtomicUsize,
    pub(super) snapshots: Mutex<Vec<Vec<String>>>,
    pub(super) watches: Mutex<Vec<(Instant, Vec<String>, i64)>>,
    pub(super) down: AtomicBool,
    feed: tokio::sync::Mutex<mpsc::UnboundedReceiver<Feed>>,
}

impl Backend for FakeBackend {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn snapshot<'a>(
        &'a self,
        selectors: &'a [String],
    ) -> BoxFuture<'a, Result<Snapshot, BackendError>> {
        Box::pin(async move {
            self.snapshots.lock().unwrap().push(selectors.to_vec());
            let failing = self.snapshot_failures.load(Ordering::SeqCst);
            if failing > 0 {
                self.snapshot_failures.store(failing - 1, Ordering::SeqCst);
                return Err(transient());
            }
            Ok(self.data.lock().unwrap().clone())
        })
    }

    fn watch<'a>(
        &'a self,
        selectors: &'a [String],
        after: i64,
        changes: mpsc::Sender<Change>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            self.watches
                .lock()
                .unwrap()
                .push((Instant::now(), selectors.to_vec(), after));
            if self.down.load(Ordering::SeqCst) {
                return Err(transient());
            }
            let mut feed = self.feed.lock().await;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    item = feed.recv() => match item {
                        Some(Feed::Change(change)) => {
                            if changes.send(change).await.is_err() {
                                return Ok(());
                            }
                        }
                        Some(Feed::Break) => return Err(transient()),
                        None => {
                            shutdown.cancelled().await;
                            return Ok(());
                        }
                    },
                }
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Call {
    pub(super) name: String,
    pub(super) work: Work,
    pub(super) revision: i64,
    pub(super) at: Instant,
}

/// What a scripted pass comes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Script {
    /// Failed before the swap (a render or a check).
    Failed,
    /// Swapped, then the reload failed: the reload is owed.
    ReloadFailed,
}

/// An applier that records its calls, answers from a script (success by default),
/// can be held at a gate to play a slow apply, and notes any overlap of two calls
/// for one resource.
pub(super) struct FakeApplier {
    pub(super) calls: Mutex<Vec<Call>>,
    applies: Mutex<HashMap<String, VecDeque<Script>>>,
    reloads: Mutex<HashMap<String, VecDeque<bool>>>,
    in_flight: Mutex<HashSet<String>>,
    pub(super) overlapped: AtomicBool,
    pub(super) finished: AtomicUsize,
    gate_open: Mutex<bool>,
    gate: Condvar,
    notify: mpsc::UnboundedSender<Call>,
}

impl FakeApplier {
    fn record(&self, resource: &Resource, work: Work, revision: i64) {
        let call = Call {
            name: resource.name.clone(),
            work,
            revision,
            at: Instant::now(),
        };
        self.calls.lock().unwrap().push(call.clone());
        let _ = self.notify.send(call);
        if !self.in_flight.lock().unwrap().insert(resource.name.clone()) {
            self.overlapped.store(true, Ordering::SeqCst);
        }
        let mut open = self.gate_open.lock().unwrap();
        while !*open {
            open = self.gate.wait(open).unwrap();
        }
    }

    fn done(&self, resource: &Resource) {
        self.in_flight.lock().unwrap().remove(&resource.name);
        self.finished.fetch_add(1, Ordering::SeqCst);
    }

    pub(super) fn set_gate(&self, open: bool) {
        *self.gate_open.lock().unwrap() = open;
        self.gate.notify_all();
    }

    pub(super) fn script_apply(&self, name: &str, results: Vec<Script>) {
        self.applies
            .lock()
            .unwrap()
            .insert(name.into(), results.into());
    }

    /// Whether each reload of `name` succeeds, in turn.
    pub(super) fn script_reload(&self, name: &str, results: Vec<bool>) {
        self.reloads
            .lock()
            .unwrap()
            .insert(name.into(), results.into());
    }
}

impl Applier for FakeApplier {
    fn apply(&self, resource: &Resource, snapshot: &Arc<Snapshot>, work: Work) -> Outcome {
        let revision = match work {
            Work::Apply => snapshot.revision,
            Work::Reload => 0,
        };
        self.record(resource, work, revision);
        let (step, result, owed) = match work {
            Work::Apply => {
                let scripted = self
                    .applies
                    .lock()
                    .unwrap()
                    .get_mut(&resource.name)
                    .and_then(VecDeque::pop_front);
                match scripted {
                    None => (Step::Swap, Ok(Done::Updated), false),
                    Some(Script::Failed) => (Step::Check, Err(failure(resource)), false),
                    Some(Script::ReloadFailed) => (Step::Reload, Err(failure(resource)), true),
                }
            }
            Work::Reload => {
                let ok = self
                    .reloads
                    .lock()
                    .unwrap()
                    .get_mut(&resource.name)
                    .and_then(VecDeque::pop_front)
                    .unwrap_or(true);
                match ok {
                    true => (Step::Reload, Ok(Done::Reloaded), false),
                    false => (Step::Reload, Err(failure(resource)), true),
                }
            }
        };
        self.done(resource);
        Outcome::bare(resource.name.clone(), revision, work, step, result, owed)
    }
}

fn failure(resource: &Resource) -> ApplyError {
    ApplyError::Panicked {
        resource: resource.name.clone(),
        message: "scripted failure".into(),
    }
}

pub(super) fn resource(name: &str, selectors: &[&str]) -> Resource {
    crate::resource::test_resource(name, selectors, PathBuf::from(format!("/tmp/{name}.out")))
}

/// A resource with a `reload_cmd`, so the default coalescing window applies to it.
pub(super) fn reloaded(name: &str, selectors: &[&str]) -> Resource {
    let mut r = resource(name, selectors);
    r.reload = Some(crate::command::Command::new("true", Duration::from_secs(1)));
    r
}

pub(super) fn data(revision: i64, pairs: &[(&str, &str)]) -> Snapshot {
    let kvs: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Snapshot::new(revision, kvs)
}

pub(super) struct Harness {
    pub(super) backend: Arc<FakeBackend>,
    pub(super) applier: Arc<FakeApplier>,
    pub(super) feed: mpsc::UnboundedSender<Feed>,
    calls: mpsc::UnboundedReceiver<Call>,
    pub(super) next_load: Arc<Mutex<Result<Vec<Resource>, String>>>,
    pub(super) reload_tx: mpsc::Sender<()>,
    pub(super) token: CancellationToken,
    pub(super) daemon: tokio::task::JoinHandle<Result<Report, DaemonError>>,
}

impl Harness {
    /// Starts the daemon against the fakes; `prepare` scripts them before it runs.
    pub(super) fn start(
        resources: Vec<Resource>,
        snapshot: Snapshot,
        mode: Mode,
        prepare: impl FnOnce(&FakeBackend, &FakeApplier),
    ) -> Harness {
        let (feed, feed_rx) = mpsc::unbounded_channel();
        let (notify, calls) = mpsc::unbounded_channel();
        let backend = Arc::new(FakeBackend {
            data: Mutex::new(snapshot),
            snapshot_failures: AtomicUsize::new(0),
            snapshots: Mutex::new(Vec::new()),
            watches: Mutex::new(Vec::new()),
            down: AtomicBool::new(false),
            feed: tokio::sync::Mutex::new(feed_rx),
        });
        let applier = Arc::new(FakeApplier {
            calls: Mutex::new(Vec::new()),
            applies: Mutex::new(HashMap::new()),
            reloads: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashSet::new()),
            overlapped: AtomicBool::new(false),
            finished: AtomicUsize::new(0),
            gate_open: Mutex::new(true),
            gate: Condvar::new(),
            notify,
        });
        prepare(&backend, &applier);
        let next_load = Arc::new(Mutex::new(Err("no reload scripted".to_string())));
        let load: Loader = {
            let next_load = Arc::clone(&next_load);
            let applier = Arc::clone(&applier);
            Box::new(move || {
                let resources = next_load.lock().unwrap().clone()?;
                Ok(set(resources, &applier))
            })
        };
        let (reload_tx, reload_rx) = mpsc::channel(1);
        let token = CancellationToken::new();
        let options = Options {
            mode,
            settings: Settings {
                wait: None,
                concurrency: 4,
                retries: true,
            },
            telemetry: Arc::new(Telemetry::new(None)),
            systemd: Systemd::from_env(),
            beat_every: None,
            confdir: None,
            stall_file: None,
        };
        let daemon = tokio::spawn(run(
            backend.clone() as Arc<dyn Backend>,
            set(resources, &applier),
            load,
            reload_rx,
            options,
            token.clone(),
        ));
        Harness {
            backend,
            applier,
            feed,
            calls,
            next_load,
            reload_tx,
            token,
            daemon,
        }
    }

    pub(super) fn put(&self, revision: i64, key: &str, value: &str) {
        let event = Event::Put {
            key: key.into(),
            value: value.into(),
        };
        let change = Change::Events {
            revision,
            events: vec![event],
        };
        self.feed
            .send(Feed::Change(change))
            .expect("the fake backend listens");
    }

    pub(super) async fn next_call(&mut self) -> Call {
        self.calls.recv().await.expect("the fake applier is alive")
    }

    /// Waits for `n` calls, in the order they were made.
    pub(super) async fn calls(&mut self, n: usize) -> Vec<Call> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(self.next_call().await);
        }
        out
    }

    pub(super) fn all_calls(&self) -> Vec<Call> {
        self.applier.calls.lock().unwrap().clone()
    }

    /// Lets every ready task run without moving the clock: needed while a gated
    /// apply holds the blocking pool, which stops the paused clock from advancing.
    /// Waits (in real time) until every call announced so far has finished: a
    /// call is announced before it reaches the gate, so closing the gate right
    /// after `next_call` could otherwise catch that earlier call too.
    pub(super) async fn idle(&self) {
        while self.applier.finished.load(Ordering::SeqCst)
            < self.applier.calls.lock().unwrap().len()
        {
            tokio::task::yield_now().await;
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub(super) async fn run_ready(&self) {
        for _ in 0..200 {
            tokio::task::yield_now().await;
        }
    }

    pub(super) async fn stop(self) -> Result<Report, DaemonError> {
        self.token.cancel();
        self.daemon.await.expect("the daemon task does not panic")
    }
}

pub(super) fn set(resources: Vec<Resource>, applier: &Arc<FakeApplier>) -> ResourceSet {
    ResourceSet {
        resources,
        applier: Arc::clone(applier) as Arc<dyn Applier>,
    }
}

pub(super) fn two_resources() -> (Vec<Resource>, Snapshot) {
    let resources = vec![
        resource("a.toml", &["/app/a"]),
        resource("b.toml", &["/app/b"]),
    ];
    let snapshot = data(10, &[("/app/a/x", "1"), ("/app/b/y", "1")]);
    (resources, snapshot)
}
