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

use crate::backend::{Backend, BackendError};
use crate::kv::Change;
use crate::kv::Snapshot;
use crate::mirror::Mirror;
use crate::retry::{self, Backoff};
use crate::scheduler::{ResourceSet, Scheduler};
use crate::values::Wait;

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
            reconnect: Backoff::new(retry::BACKEND),
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
    let mut backoff = Backoff::new(retry::BACKEND);
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

/// The next interval tick, or never in watch mode.
async fn tick(ticks: &mut Option<Interval>) {
    match ticks {
        Some(ticks) => {
            ticks.tick().await;
        }
        None => pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Condvar, Mutex};

    use crate::backend::BoxFuture;
    use crate::kv::Event;
    use crate::resource::Resource;
    use crate::scheduler::{Applier, ApplyResult, Work};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn transient() -> BackendError {
        BackendError::Transient {
            backend: "fake",
            message: "away".into(),
        }
    }

    enum Feed {
        Change(Change),
        Break,
    }

    /// A backend driven by the test: `snapshot` returns `data`, `watch` forwards what
    /// the test feeds it, and both record how they were called.
    struct FakeBackend {
        data: Mutex<Snapshot>,
        snapshot_failures: AtomicUsize,
        snapshots: Mutex<Vec<Vec<String>>>,
        watches: Mutex<Vec<(Instant, Vec<String>, i64)>>,
        down: AtomicBool,
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
    struct Call {
        name: String,
        work: Work,
        revision: i64,
        at: Instant,
    }

    /// An applier that records its calls, answers from a script (success by default),
    /// can be held at a gate to play a slow apply, and notes any overlap of two calls
    /// for one resource.
    struct FakeApplier {
        calls: Mutex<Vec<Call>>,
        applies: Mutex<HashMap<String, VecDeque<ApplyResult>>>,
        reloads: Mutex<HashMap<String, VecDeque<Result<(), String>>>>,
        in_flight: Mutex<HashSet<String>>,
        overlapped: AtomicBool,
        finished: AtomicUsize,
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

        fn set_gate(&self, open: bool) {
            *self.gate_open.lock().unwrap() = open;
            self.gate.notify_all();
        }

        fn script_apply(&self, name: &str, results: Vec<ApplyResult>) {
            self.applies
                .lock()
                .unwrap()
                .insert(name.into(), results.into());
        }

        fn script_reload(&self, name: &str, results: Vec<Result<(), String>>) {
            self.reloads
                .lock()
                .unwrap()
                .insert(name.into(), results.into());
        }
    }

    impl Applier for FakeApplier {
        fn apply(&self, resource: &Resource, snapshot: &Arc<Snapshot>) -> ApplyResult {
            self.record(resource, Work::Apply, snapshot.revision);
            let scripted = self
                .applies
                .lock()
                .unwrap()
                .get_mut(&resource.name)
                .and_then(VecDeque::pop_front);
            self.done(resource);
            scripted.unwrap_or(ApplyResult::Ok { changed: true })
        }

        fn reload(&self, resource: &Resource) -> Result<(), String> {
            self.record(resource, Work::Reload, 0);
            let scripted = self
                .reloads
                .lock()
                .unwrap()
                .get_mut(&resource.name)
                .and_then(VecDeque::pop_front);
            self.done(resource);
            scripted.unwrap_or(Ok(()))
        }
    }

    fn resource(name: &str, selectors: &[&str]) -> Resource {
        crate::resource::test_resource(name, selectors, PathBuf::from(format!("/tmp/{name}.out")))
    }

    fn data(revision: i64, pairs: &[(&str, &str)]) -> Snapshot {
        let kvs: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Snapshot::new(revision, kvs)
    }

    struct Harness {
        backend: Arc<FakeBackend>,
        applier: Arc<FakeApplier>,
        feed: mpsc::UnboundedSender<Feed>,
        calls: mpsc::UnboundedReceiver<Call>,
        next_load: Arc<Mutex<Result<Vec<Resource>, String>>>,
        reload_tx: mpsc::Sender<()>,
        token: CancellationToken,
        daemon: tokio::task::JoinHandle<Result<(), DaemonError>>,
    }

    impl Harness {
        /// Starts the daemon against the fakes; `prepare` scripts them before it runs.
        fn start(
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
                wait: Wait::default(),
                concurrency: 4,
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

        fn put(&self, revision: i64, key: &str, value: &str) {
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

        async fn next_call(&mut self) -> Call {
            self.calls.recv().await.expect("the fake applier is alive")
        }

        /// Waits for `n` calls, in the order they were made.
        async fn calls(&mut self, n: usize) -> Vec<Call> {
            let mut out = Vec::new();
            for _ in 0..n {
                out.push(self.next_call().await);
            }
            out
        }

        fn all_calls(&self) -> Vec<Call> {
            self.applier.calls.lock().unwrap().clone()
        }

        /// Lets every ready task run without moving the clock: needed while a gated
        /// apply holds the blocking pool, which stops the paused clock from advancing.
        /// Waits (in real time) until every call announced so far has finished: a
        /// call is announced before it reaches the gate, so closing the gate right
        /// after `next_call` could otherwise catch that earlier call too.
        async fn idle(&self) {
            while self.applier.finished.load(Ordering::SeqCst)
                < self.applier.calls.lock().unwrap().len()
            {
                tokio::task::yield_now().await;
                std::thread::sleep(Duration::from_millis(1));
            }
        }

        async fn run_ready(&self) {
            for _ in 0..200 {
                tokio::task::yield_now().await;
            }
        }

        async fn stop(self) -> Result<(), DaemonError> {
            self.token.cancel();
            self.daemon.await.expect("the daemon task does not panic")
        }
    }

    fn set(resources: Vec<Resource>, applier: &Arc<FakeApplier>) -> ResourceSet {
        ResourceSet {
            resources,
            applier: Arc::clone(applier) as Arc<dyn Applier>,
        }
    }

    fn two_resources() -> (Vec<Resource>, Snapshot) {
        let resources = vec![
            resource("a.toml", &["/app/a"]),
            resource("b.toml", &["/app/b"]),
        ];
        let snapshot = data(10, &[("/app/a/x", "1"), ("/app/b/y", "1")]);
        (resources, snapshot)
    }

    #[tokio::test(start_paused = true)]
    async fn an_isolated_change_applies_at_once_and_only_to_the_resources_it_concerns() {
        let (resources, snapshot) = two_resources();
        let mut h = Harness::start(resources, snapshot, Mode::Watch, |_, _| {});
        let first = h.calls(2).await;
        assert!(
            first
                .iter()
                .all(|c| c.revision == 10 && c.work == Work::Apply)
        );
        sleep(Duration::from_secs(10)).await;

        let sent = Instant::now();
        h.put(11, "/app/a/x", "2");
        let call = h.next_call().await;
        assert_eq!(
            (call.name.as_str(), call.revision, call.at),
            ("a.toml", 11, sent)
        );
        sleep(Duration::from_secs(10)).await;
        assert_eq!(h.all_calls().len(), 3, "b.toml was not applied");
        h.stop().await.expect("clean shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_during_a_slow_apply_collapses_into_one_apply_of_the_newest_revision() {
        let resources = vec![resource("a.toml", &["/app/a"])];
        let mut h = Harness::start(resources, data(10, &[]), Mode::Watch, |_, _| {});
        h.next_call().await;
        sleep(Duration::from_secs(10)).await;

        h.idle().await;
        h.applier.set_gate(false);
        h.put(11, "/app/a/x", "0");
        assert_eq!(h.next_call().await.revision, 11);
        for revision in 12..=511 {
            h.put(revision, "/app/a/x", &revision.to_string());
        }
        h.run_ready().await;
        // The apply takes two seconds: the window has long passed when it ends.
        tokio::time::advance(ms(2_000)).await;
        h.run_ready().await;
        h.applier.set_gate(true);
        sleep(Duration::from_secs(10)).await;

        let later: Vec<i64> = h.all_calls()[2..].iter().map(|c| c.revision).collect();
        assert_eq!(later, vec![511]);
        assert!(!h.applier.overlapped.load(Ordering::SeqCst));
        h.stop().await.expect("clean shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_change_of_a_burst_is_always_applied() {
        // Two resources share the key, so they apply side by side, never each twice at once.
        let resources = vec![
            resource("a.toml", &["/app"]),
            resource("b.toml", &["/app/a"]),
        ];
        let mut h = Harness::start(resources, data(10, &[]), Mode::Watch, |_, _| {});
        h.calls(2).await;
        for revision in 11..=310 {
            h.put(revision, "/app/a/x", &revision.to_string());
            sleep(ms(3)).await;
        }
        sleep(Duration::from_secs(10)).await;

        for name in ["a.toml", "b.toml"] {
            let applies: Vec<i64> = h
                .all_calls()
                .iter()
                .filter(|c| c.name == name)
                .map(|c| c.revision)
                .collect();
            assert_eq!(applies.last(), Some(&310), "{name}");
            assert!(applies.len() <= 10, "{name}: {} applies", applies.len());
        }
        assert!(!h.applier.overlapped.load(Ordering::SeqCst));
        h.stop().await.expect("clean shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_apply_is_retried_with_backoff_until_it_succeeds() {
        let resources = vec![resource("a.toml", &["/app/a"])];
        let failed = ApplyResult::Failed {
            reload_owed: false,
            message: "check failed".into(),
        };
        let mut h = Harness::start(resources, data(10, &[]), Mode::Watch, |_, applier| {
            applier.script_apply("a.toml", vec![failed.clone(), failed.clone(), failed]);
        });
        let calls = h.calls(4).await;
        sleep(Duration::from_secs(120)).await;

        let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1].at - w[0].at).collect();
        assert_eq!(gaps, vec![ms(1_000), ms(2_000), ms(4_000)]);
        assert_eq!(h.all_calls().len(), 4, "no retry after the success");
        h.stop().await.expect("clean shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn an_owed_reload_is_retried_alone_until_it_succeeds() {
        let resources = vec![resource("a.toml", &["/app/a"])];
        let mut h = Harness::start(resources, data(10, &[]), Mode::Watch, |_, applier| {
            let owed = ApplyResult::Failed {
                reload_owed: true,
                message: "reload failed".into(),
            };
            applier.script_apply("a.toml", vec![owed]);
            applier.script_reload("a.toml", vec![Err("down".into()), Err("down".into())]);
        });
        h.calls(4).await;
        sleep(Duration::from_secs(120)).await;

        let works: Vec<Work> = h.all_calls().iter().map(|c| c.work).collect();
        assert_eq!(
            works,
            vec![Work::Apply, Work::Reload, Work::Reload, Work::Reload]
        );
        h.stop().await.expect("clean shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn newer_data_supersedes_a_failing_apply() {
        let resources = vec![resource("a.toml", &["/app/a"])];
        let failed = ApplyResult::Failed {
            reload_owed: false,
            message: "getv /x: key not found".into(),
        };
        let mut h = Harness::start(resources, data(10, &[]), Mode::Watch, |_, applier| {
            applier.script_apply("a.toml", vec![failed.clone(), failed]);
        });
        h.calls(2).await;
        sleep(ms(500)).await;
        let sent = Instant::now();
        h.put(11, "/app/a/x", "fixed");
        let call = h.next_call().await;
        assert_eq!((call.revision, call.at), (11, sent));
        sleep(Duration::from_secs(120)).await;
        assert_eq!(h.all_calls().len(), 3, "no retry of the superseded data");
        h.stop().await.expect("clean shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn a_broken_watch_resumes_after_the_last_applied_revision_without_busy_looping() {
        let resources = vec![resource("a.toml", &["/app/a"])];
        let mut h = Harness::start(resources, data(10, &[]), Mode::Watch, |_, _| {});
        h.next_call().await;
        h.put(11, "/app/a/x", "1");
        h.next_call().await;

        // The backend goes away for a minute: every watch fails at once.
        h.backend.down.store(true, Ordering::SeqCst);
        h.feed.send(Feed::Break).expect("listening");
        sleep(Duration::from_secs(60)).await;
        let attempts = h.backend.watches.lock().unwrap().len() - 1;
        assert!(
            (5..=25).contains(&attempts),
            "{attempts} watch attempts in 60 s"
        );

        h.backend.down.store(false, Ordering::SeqCst);
        sleep(Duration::from_secs(20)).await;
        let afters: Vec<i64> = h
            .backend
            .watches
            .lock()
            .unwrap()
            .iter()
            .map(|w| w.2)
            .collect();
        assert_eq!(afters[0], 10);
        assert!(afters[1..].iter().all(|&after| after == 11), "{afters:?}");
        h.put(12, "/app/a/x", "2");
        assert_eq!(h.next_call().await.revision, 12);
        h.stop().await.expect("clean shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn a_reset_reapplies_only_the_resources_whose_data_changed() {
        let (resources, snapshot) = two_resources();
        let mut h = Harness::start(resources, snapshot, Mode::Watch, |_, _| {});
        h.calls(2).await;
        let reset = data(40, &[("/app/a/x", "changed"), ("/app/b/y", "1")]);
        h.feed
            .send(Feed::Change(Change::Reset(reset)))
            .expect("listening");
        let call = h.next_call().await;
        assert_eq!((call.name.as_str(), call.revision), ("a.toml", 40));
        sleep(Duration::from_secs(10)).await;
        assert_eq!(h.all_calls().len(), 3);
        h.stop().await.expect("clean shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn sighup_with_a_valid_set_swaps_it_in_and_watches_its_keys() {
        let resources = vec![resource("a.toml", &["/app/a"])];
        let mut h = Harness::start(resources, data(10, &[]), Mode::Watch, |_, _| {});
        h.next_call().await;
        *h.next_load.lock().unwrap() = Ok(vec![resource("c.toml", &["/app/c"])]);
        *h.backend.data.lock().unwrap() = data(15, &[("/app/c/z", "1")]);
        h.reload_tx.send(()).await.expect("listening");

        let call = h.next_call().await;
        assert_eq!((call.name.as_str(), call.revision), ("c.toml", 15));
        sleep(Duration::from_secs(1)).await;
        let last_watch = h
            .backend
            .watches
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("watching");
        assert_eq!(
            (last_watch.1, last_watch.2),
            (vec!["/app/c".to_string()], 15)
        );
        h.put(16, "/app/a/x", "ignored");
        h.put(17, "/app/c/z", "2");
        let call = h.next_call().await;
        assert_eq!((call.name.as_str(), call.revision), ("c.toml", 17));
        sleep(Duration::from_secs(10)).await;
        assert_eq!(h.all_calls().len(), 3, "the removed a.toml is not applied");
        h.stop().await.expect("clean shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn sighup_with_an_invalid_set_keeps_the_old_one() {
        let resources = vec![resource("a.toml", &["/app/a"])];
        let mut h = Harness::start(resources, data(10, &[]), Mode::Watch, |_, _| {});
        h.next_call().await;
        *h.next_load.lock().unwrap() = Err("conf.d/c.toml: missing dest".into());
        h.reload_tx.send(()).await.expect("listening");
        sleep(Duration::from_secs(1)).await;
        h.put(11, "/app/a/x", "1");
        let call = h.next_call().await;
        assert_eq!((call.name.as_str(), call.revision), ("a.toml", 11));
        assert_eq!(
            h.backend.watches.lock().unwrap().len(),
            1,
            "the watch was kept"
        );
        h.stop().await.expect("clean shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_during_a_slow_apply_waits_for_it_to_finish() {
        let resources = vec![resource("a.toml", &["/app/a"])];
        let mut h = Harness::start(resources, data(10, &[]), Mode::Watch, |_, _| {});
        h.next_call().await;
        h.idle().await;
        h.applier.set_gate(false);
        h.put(11, "/app/a/x", "1");
        h.next_call().await;

        h.token.cancel();
        h.run_ready().await;
        assert!(
            !h.daemon.is_finished(),
            "returned while an apply was under way"
        );
        h.applier.set_gate(true);
        let applier = Arc::clone(&h.applier);
        h.daemon.await.expect("no panic").expect("clean shutdown");
        assert_eq!(applier.finished.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn interval_mode_reads_again_and_applies_every_resource() {
        let (resources, snapshot) = two_resources();
        let mut h = Harness::start(
            resources,
            snapshot,
            Mode::Interval(Duration::from_secs(60)),
            |_, _| {},
        );
        h.calls(2).await;
        *h.backend.data.lock().unwrap() = data(11, &[("/app/a/x", "2"), ("/app/b/y", "1")]);
        let again = h.calls(2).await;
        assert!(again.iter().all(|c| c.revision == 11));
        assert_eq!(again[0].at - h.all_calls()[0].at, Duration::from_secs(60));
        assert_eq!(h.backend.snapshots.lock().unwrap().len(), 2);
        assert!(h.backend.watches.lock().unwrap().is_empty());
        h.stop().await.expect("clean shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_snapshot_is_retried_while_the_backend_is_away() {
        let resources = vec![resource("a.toml", &["/app/a"])];
        let start = Instant::now();
        let mut h = Harness::start(resources, data(10, &[]), Mode::Watch, |backend, _| {
            backend.snapshot_failures.store(5, Ordering::SeqCst);
        });
        let call = h.next_call().await;
        assert_eq!(call.revision, 10);
        assert_eq!(h.backend.snapshots.lock().unwrap().len(), 6);
        // Five waits of at least half of 100, 200, 400, 800 and 1,600 ms.
        assert!(call.at - start >= ms(1_550));
        h.stop().await.expect("clean shutdown");
    }
}
