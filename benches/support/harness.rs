//! What the benchmarks that drive the real binary share: a temporary confdir, the
//! daemon as a child process with its log, seeding etcd, etcd's request counters,
//! polling a file; and, re-exported, what `measure` has (/proc figures, percentiles,
//! the machine line).

// Each benchmark uses some of these.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{Client, Txn, TxnOp};
use tempfile::TempDir;

use crate::etcd::EtcdServer;
pub use crate::measure::*;

/// etcd's default `--max-txn-ops`: puts per seeding transaction.
pub const SEED_BATCH: usize = 128;

/// The longest any single wait of this program lasts before it gives up with a panic.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A temporary confdir: conf.d/, templates/ and out/ where every dest goes.
pub struct Confdir {
    dir: TempDir,
}

impl Confdir {
    pub fn new() -> Confdir {
        Confdir::new_in(&std::env::temp_dir())
    }

    pub fn new_in(parent: &Path) -> Confdir {
        let dir = tempfile::tempdir_in(parent).expect("tempdir");
        for d in ["conf.d", "templates", "out"] {
            std::fs::create_dir(dir.path().join(d)).expect("mkdir");
        }
        Confdir { dir }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn template(&self, name: &str, text: &str) {
        std::fs::write(self.root().join("templates").join(name), text).expect("template");
    }

    /// `conf.d/<name>.toml` rendering `src` to `out/<name>.conf`; `extra` holds more
    /// `[template]` lines.
    pub fn resource(&self, name: &str, src: &str, prefix: &str, extra: &str) {
        let dest = self.dest(name);
        let text = format!(
            "[template]\nsrc = \"{src}\"\ndest = \"{}\"\nprefix = \"{prefix}\"\nkeys = [\"/\"]\nmode = \"0644\"\n{extra}",
            dest.to_str().expect("utf-8")
        );
        std::fs::write(self.root().join(format!("conf.d/{name}.toml")), text).expect("resource");
    }

    pub fn dest(&self, name: &str) -> PathBuf {
        self.root().join(format!("out/{name}.conf"))
    }

    pub fn clear_out(&self) {
        let out = self.root().join("out");
        std::fs::remove_dir_all(&out).expect("clear out");
        std::fs::create_dir(&out).expect("mkdir out");
    }
}

/// The real binary in watch mode, its log (stderr, level info) in a file.
pub struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    pub fn start(dir: &Confdir, server: &EtcdServer) -> Daemon {
        Daemon::spawn(dir, &server.endpoint(), &[])
    }

    /// The daemon in watch mode against `endpoint`, with `extra` arguments.
    pub fn spawn(dir: &Confdir, endpoint: &str, extra: &[&str]) -> Daemon {
        let log = dir.root().join(format!("daemon-{}.log", unique()));
        let stderr = File::create(&log).expect("log file");
        let child = conflux(dir, endpoint)
            .args(["--watch", "--log-level", "info"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("run conflux");
        Daemon { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> Log {
        Log(std::fs::read_to_string(&self.log).expect("daemon log"))
    }

    /// SIGTERM, wait for the exit, return the whole log.
    pub fn stop(mut self) -> Log {
        // SAFETY: kill(2) on our own child's pid, which it still is: not yet waited for.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let status = self.child.wait().expect("wait for conflux");
        let log = self.log();
        assert!(status.success(), "conflux exited with {status}:\n{}", log.0);
        log
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary on `dir` and etcd at `endpoint`, its state in `dir`. `CONFLUX_BENCH_BIN`
/// replaces the binary (one built with `--features dhat-heap`, to profile a scenario;
/// its dhat-heap.json lands in `dir`).
pub fn conflux(dir: &Confdir, endpoint: &str) -> Command {
    let bin = std::env::var("CONFLUX_BENCH_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_conflux").to_string());
    let mut command = Command::new(bin);
    command
        .args(["--backend", "etcdv3", "--node", endpoint])
        .args(["--confdir", dir.root().to_str().expect("utf-8")])
        .env("CONFLUX_STATE_DIR", dir.root().join("state"))
        .current_dir(dir.root());
    command
}

/// A one-shot run to its end: wall time from spawn to exit, and the process's peak
/// resident memory (`ru_maxrss` from wait4), in MiB.
pub fn onetime(dir: &Confdir, endpoint: &str) -> (Duration, f64) {
    let start = Instant::now();
    // Reaped by wait4 below, which std's Child cannot do while reading rusage.
    #[allow(clippy::zombie_processes)]
    let child = conflux(dir, endpoint)
        .args(["--onetime", "--log-level", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("run conflux");
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child, which has not been waited for.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    assert_eq!(pid, child.id() as libc::pid_t, "wait4");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "conflux --onetime failed"
    );
    (wall, usage.ru_maxrss as f64 / 1024.0)
}

/// The daemon's log text.
pub struct Log(pub String);

impl Log {
    pub fn applied_lines(&self) -> impl Iterator<Item = &str> {
        self.0
            .lines()
            .filter(|l| l.split_whitespace().any(|w| w == "applied"))
    }

    /// Applies that ended (the scheduler's "applied" lines).
    pub fn applied(&self) -> usize {
        self.applied_lines().count()
    }

    /// Applies that changed dest.
    pub fn applied_changed(&self) -> usize {
        self.changed_before(usize::MAX)
    }

    /// Applies among the first `n` that changed dest.
    pub fn changed_before(&self, n: usize) -> usize {
        self.applied_lines()
            .take(n)
            .filter(|l| l.contains("changed=true"))
            .count()
    }
}

/// Puts every pair, `SEED_BATCH` to a transaction.
pub async fn seed(client: &mut Client, kvs: impl Iterator<Item = (String, String)>) {
    let all: Vec<(String, String)> = kvs.collect();
    for batch in all.chunks(SEED_BATCH) {
        let puts: Vec<TxnOp> = batch
            .iter()
            .map(|(k, v)| TxnOp::put(k.as_str(), v.as_str(), None))
            .collect();
        client.txn(Txn::new().and_then(puts)).await.expect("seed");
    }
}

/// etcd's (or its proxy's) /metrics page at `endpoint` (`http://HOST:PORT`).
pub fn metrics_page(endpoint: &str) -> String {
    let addr = endpoint.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .expect("request metrics");
    let mut page = String::new();
    stream.read_to_string(&mut page).expect("read metrics");
    page
}

/// The sum of every sample of metric `name` (all label sets) on a metrics page.
pub fn metric_sum(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// etcd's own count of gRPC requests started, by method, from its /metrics page on the
/// client port. Only the daemon talks to etcd while two of these are compared.
pub fn grpc_started(server: &EtcdServer) -> BTreeMap<String, u64> {
    let page = metrics_page(&server.endpoint());
    let mut counts = BTreeMap::new();
    for line in page.lines() {
        let Some(rest) = line.strip_prefix("grpc_server_started_total{") else {
            continue;
        };
        let method = rest
            .split("grpc_method=\"")
            .nth(1)
            .and_then(|m| m.split('"').next())
            .expect("a grpc_method label");
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .expect("a counter value");
        *counts.entry(method.to_string()).or_insert(0) += value as u64;
    }
    counts
}

pub fn difference(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> Vec<(String, u64)> {
    after
        .iter()
        .map(|(m, n)| (m.clone(), n - before.get(m).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

pub fn show(requests: &[(String, u64)]) -> String {
    let total: u64 = requests.iter().map(|(_, n)| n).sum();
    let each: Vec<String> = requests.iter().map(|(m, n)| format!("{m} {n}")).collect();
    format!("{total} ({})", each.join(", "))
}

pub fn count_lines(path: &Path) -> usize {
    read(path).map_or(0, |t| t.lines().count())
}

/// Polls `done` every millisecond.
pub fn wait_for(done: impl FnMut() -> bool) {
    poll(done, Duration::from_millis(1));
}

/// Polls `done` every 100 µs.
pub fn wait_for_fast(done: impl FnMut() -> bool) {
    poll(done, Duration::from_micros(100));
}

pub fn poll(mut done: impl FnMut() -> bool, every: Duration) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "gave up after {PATIENCE:?}");
        std::thread::sleep(every);
    }
}

pub fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos()
}
