//! `conflux register` against a real etcd on loopback, measured from outside as an
//! operator would see it (issue #13): CPU over 10 idle seconds without a check and
//! with `--check-cmd true` at the default interval, CPU over the first 10 s of an etcd
//! outage, the time from SIGTERM to the key's deletion, and resident memory. Figures
//! go to docs/benchmarks.md. Run with `cargo bench --bench register` (a subset:
//! `cargo bench --bench register -- idle down sigterm`).
//!
//! Defaults throughout (`--ttl 10s`, `--check-interval 2s`), except where a line says.
//! CPU is read twice: utime + stime in clock ticks from `/proc/<pid>/stat` (every
//! thread, 10 ms resolution) and the nanoseconds of `/proc/<pid>/task/*/schedstat`.

// Test code: a failed unwrap is a failed test (the lint is for the product).
#![allow(clippy::unwrap_used)]

#[path = "../tests/support/etcd.rs"]
mod etcd;
#[path = "support/measure.rs"]
mod measure;

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd::EtcdServer;
use etcd_client::{Client, EventType, WatchOptions};
use measure::{
    children_ticks, cpu_ns, cpu_ticks, machine, ms, percentiles, proc_status, runtime, tick_ms,
    wanted,
};
use tempfile::TempDir;
use tokio::runtime::Runtime;

const KEY: &str = "/gateway/services/api/bench";
const WINDOW: Duration = Duration::from_secs(10);
const PATIENCE: Duration = Duration::from_secs(60);

fn main() {
    let wanted = wanted();
    let rt = runtime();
    machine();
    if wanted("idle") {
        idle(&rt, "no check", &[]);
        idle(&rt, "--check-cmd true, every 2 s", &["--check-cmd", "true"]);
    }
    if wanted("down") {
        etcd_down(&rt);
    }
    if wanted("sigterm") {
        sigterm(&rt);
    }
}

/// 1. Registered, nothing happening: the lease renewed every 3.3 s, the key watched.
fn idle(rt: &Runtime, what: &str, extra: &[&str]) {
    let server = rt.block_on(EtcdServer::start());
    let mut client = rt.block_on(server.client());
    let register = Register::start(&server, extra);
    wait_until(|| rt.block_on(present(&mut client)));
    std::thread::sleep(Duration::from_secs(1));
    let before = Cpu::of(register.pid());
    let etcd_before = cpu_ticks(server.pid());
    std::thread::sleep(WINDOW);
    let used = Cpu::of(register.pid()).since(&before);
    let etcd_used = cpu_ticks(server.pid()) - etcd_before;
    let memory = proc_status(register.pid());
    register.stop();
    println!(
        "\n## idle registration over {} s ({what})",
        WINDOW.as_secs()
    );
    used.print();
    println!(
        "   (etcd over the same window: {:.0} ms; conflux register VmRSS {:.1} MiB)",
        etcd_used as f64 * tick_ms(),
        memory.rss_mb
    );
}

/// 2. Registered, then etcd killed: the first 10 s of the outage (the backoff's
///    quick first retries included); etcd restarted 12 s after the kill (longer than
///    the TTL), and the time until the key is held under a new lease.
fn etcd_down(rt: &Runtime) {
    let mut server = rt.block_on(EtcdServer::start());
    let register = Register::start(&server, &[]);
    let old = {
        let mut client = rt.block_on(server.client());
        wait_until(|| rt.block_on(lease_of(&mut client)).is_some());
        rt.block_on(lease_of(&mut client))
    };
    server.kill();
    let killed = Instant::now();
    let before = Cpu::of(register.pid());
    std::thread::sleep(WINDOW);
    let used = Cpu::of(register.pid()).since(&before);
    let retries_logged = register.log().matches("retrying").count();
    std::thread::sleep(Duration::from_secs(2));
    let down_for = killed.elapsed();
    rt.block_on(server.restart());
    let back = Instant::now();
    let mut client = rt.block_on(server.client());
    wait_until(|| {
        let now = rt.block_on(lease_of(&mut client));
        now.is_some() && now != old
    });
    let registered_after = back.elapsed();
    register.stop();
    println!(
        "\n## etcd down: the first {} s after it was killed (no check)",
        WINDOW.as_secs()
    );
    used.print();
    println!(
        "   retries logged in those 10 s: {retries_logged}; etcd restarted after {:.1} s down (TTL 10 s)",
        down_for.as_secs_f64()
    );
    println!(
        "   etcd answering again → key under a new lease: {:.0} ms (mostly the backoff wait left)",
        ms(registered_after)
    );
}

/// 3. SIGTERM to a registered instance (TTL 60 s) → the delete event of its key, seen
///    by a watch opened before the signal; and → the process's exit.
fn sigterm(rt: &Runtime) {
    const SAMPLES: usize = 20;
    let server = rt.block_on(EtcdServer::start());
    let mut client = rt.block_on(server.client());
    let mut deleted = Vec::with_capacity(SAMPLES);
    let mut exited = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let mut register = Register::start(&server, &["--ttl", "60s"]);
        wait_until(|| rt.block_on(present(&mut client)));
        let (gone, exit) = rt.block_on(async {
            let mut watch = client
                .watch(KEY, Some(WatchOptions::new()))
                .await
                .expect("watch");
            watch.message().await.expect("created");
            let start = Instant::now();
            register.signal_term();
            loop {
                let resp = watch.message().await.expect("watch").expect("open");
                if resp
                    .events()
                    .iter()
                    .any(|e| e.event_type() == EventType::Delete)
                {
                    break;
                }
            }
            let gone = start.elapsed();
            register.wait();
            (gone, start.elapsed())
        });
        deleted.push(gone);
        exited.push(exit);
    }
    println!("\n## SIGTERM → key deleted ({SAMPLES} runs, --ttl 60s, no check)");
    percentiles("SIGTERM → delete event seen by a watch", &mut deleted);
    percentiles("SIGTERM → process exited              ", &mut exited);
}

/// CPU used by the process itself and by the check commands it waited for.
struct Cpu {
    ticks: u64,
    ns: u64,
    children: u64,
}

impl Cpu {
    fn of(pid: u32) -> Cpu {
        Cpu {
            ticks: cpu_ticks(pid),
            ns: cpu_ns(pid),
            children: children_ticks(pid),
        }
    }

    fn since(&self, before: &Cpu) -> Cpu {
        Cpu {
            ticks: self.ticks - before.ticks,
            ns: self.ns.saturating_sub(before.ns),
            children: self.children - before.children,
        }
    }

    fn print(&self) {
        let window_ms = WINDOW.as_millis() as f64;
        let ns_ms = self.ns as f64 / 1e6;
        println!(
            "   conflux register: {} ticks ({:.0} ms utime+stime); {:.2} ms on CPU by schedstat ({:.3} % of one core)",
            self.ticks,
            self.ticks as f64 * tick_ms(),
            ns_ms,
            ns_ms / window_ms * 100.0
        );
        println!(
            "   its check commands (children waited for): {} ticks ({:.0} ms)",
            self.children,
            self.children as f64 * tick_ms()
        );
    }
}

/// `conflux register` on `server`, its log (stderr, level info) in a file.
struct Register {
    child: Child,
    log: PathBuf,
    _dir: TempDir,
}

impl Register {
    fn start(server: &EtcdServer, extra: &[&str]) -> Register {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("register.log");
        let child = Command::new(env!("CARGO_BIN_EXE_conflux"))
            .args(["register", "--node", &server.endpoint(), "--key", KEY])
            .args(["--value", r#"{"addr": "127.0.0.1:9001"}"#])
            .args(extra)
            .env("CONFLUX_STATE_DIR", dir.path().join("state"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("log file"))
            .spawn()
            .expect("run conflux register");
        Register {
            child,
            log,
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal_term(&self) {
        // SAFETY: kill(2) on our own child's pid, which it still is: not yet waited for.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
    }

    fn wait(&mut self) {
        let status = self.child.wait().expect("wait for conflux register");
        assert!(status.success(), "exited with {status}:\n{}", self.log());
    }

    fn stop(mut self) {
        self.signal_term();
        self.wait();
    }
}

impl Drop for Register {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn present(client: &mut Client) -> bool {
    lease_of(client).await.is_some()
}

/// The lease the key is held under, if the key exists.
async fn lease_of(client: &mut Client) -> Option<i64> {
    let resp = client.get(KEY, None).await.expect("etcd get");
    resp.kvs().first().map(|kv| kv.lease())
}

fn wait_until(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "gave up after {PATIENCE:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
