//! The daemon (`--watch --backend etcdv3`) against a real etcd on loopback, one figure
//! per goal of issue #3: put → dest latency, first full apply of 1,000 resources and the
//! etcd requests it took, a burst of 1,000 puts, resident memory with 100,000 keys
//! mirrored, and CPU while idle. Figures go to docs/benchmarks.md. Run with
//! `cargo bench --bench daemon` (a subset: `cargo bench --bench daemon -- latency memory`; names: latency, isolated, first, burst, memory, idle).
//!
//! Like `onetime`, a plain harness timing the real binary from outside, as an operator
//! would see it: each figure needs a running daemon, a seeded etcd and a file watched
//! on disk, which no statistics crate models. Files are polled (a read every 100 µs for
//! latency, a read or stat every millisecond elsewhere) rather than inotify: a
//! poll sees exactly what a reader of dest sees after the atomic rename, and its
//! resolution (the sleep plus timer slack, about 0.15 ms) is stated with the figures.
//! etcd is the tests' own harness (tests/support/etcd.rs), reused as it is.

// Test code: a failed unwrap is a failed test (the lint is for the product).
#![allow(clippy::unwrap_used)]

#[path = "../tests/support/etcd.rs"]
mod etcd;
#[path = "support/harness.rs"]
mod harness;
#[path = "support/measure.rs"]
mod measure;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use etcd::EtcdServer;
use etcd_client::Client;
use harness::*;
use tokio::runtime::Runtime;

fn main() {
    let wanted = wanted();
    let rt = runtime();
    machine();
    if wanted("latency") {
        latency(&rt);
    }
    if wanted("isolated") {
        isolated(&rt);
    }
    if wanted("first") {
        first_apply(&rt);
    }
    if wanted("burst") {
        burst(&rt);
    }
    if wanted("memory") {
        memory(&rt);
    }
    if wanted("idle") {
        idle_cpu(&rt);
    }
}

/// 1. One resource, default settings, no reload; 1,000 sequential puts, each followed by reads of
///    dest every 100 µs until it holds the new value. Timed from just before the put.
///    Three layouts: everything on disk (what a server sees); etcd's WAL on tmpfs,
///    which takes etcd's per-put fsync out of the figure; and dest on tmpfs as well,
///    which takes conflux's own two fsyncs (stage file, directory) out too.
fn latency(rt: &Runtime) {
    println!(
        "\n## 1. put → dest updated (one resource without reload_cmd, default settings, 1000 sequential puts)"
    );
    println!("   dest polled with a read every 100 µs; timed from just before the put");
    let shm = tempfile::tempdir_in("/dev/shm").expect("a tmpfs dir");
    let wal = format!("--wal-dir={}", shm.path().join("wal").display());
    latency_run(rt, "etcd and dest on disk (ext4)", &[], None);
    latency_run(rt, "etcd WAL on tmpfs, dest on disk", &[&wal], None);
    std::fs::remove_dir_all(shm.path().join("wal")).expect("clear the WAL dir");
    latency_run(rt, "etcd WAL and dest on tmpfs", &[&wal], Some(shm.path()));
}

fn latency_run(rt: &Runtime, layout: &str, etcd_flags: &[&str], dest_in: Option<&Path>) {
    const PUTS: usize = 1_000;
    let server = rt.block_on(EtcdServer::start_with(etcd_flags));
    let mut client = rt.block_on(server.client());
    rt.block_on(client.put("/lat/value", "v-init", None))
        .expect("put");
    let dir = match dest_in {
        Some(parent) => Confdir::new_in(parent),
        None => Confdir::new(),
    };
    dir.template("value.tmpl", "value = {{ getv(key=\"/value\") }}\n");
    // Default settings: no `wait`; with no reload_cmd that means no coalescing window.
    dir.resource("lat", "value.tmpl", "/lat", "");
    let dest = dir.dest("lat");
    let daemon = Daemon::start(&dir, &server);
    wait_for(|| read(&dest).as_deref() == Some("value = v-init\n"));

    let mut updated = Vec::with_capacity(PUTS);
    let mut acked = Vec::with_capacity(PUTS);
    let mut after_ack = Vec::with_capacity(PUTS);
    for i in 0..PUTS {
        let value = format!("v{i}");
        let want = format!("value = {value}\n");
        let start = Instant::now();
        rt.block_on(client.put("/lat/value", value, None))
            .expect("put");
        let ack = start.elapsed();
        acked.push(ack);
        wait_for_fast(|| read(&dest).as_deref() == Some(want.as_str()));
        updated.push(start.elapsed());
        after_ack.push(start.elapsed() - ack);
    }
    let log = daemon.stop();
    println!("   {layout} ({} applies logged):", log.applied());
    percentiles("  put → dest holds the value", &mut updated);
    percentiles("  put acknowledged by etcd  ", &mut acked);
    percentiles("  put ack → dest            ", &mut after_ack);
}

/// 1b. One resource with a reload (default settings: the 100ms:1s window), puts spaced
///     250 ms apart so that each is isolated: each should apply at once.
fn isolated(rt: &Runtime) {
    const PUTS: usize = 40;
    let server = rt.block_on(EtcdServer::start());
    let mut client = rt.block_on(server.client());
    rt.block_on(client.put("/iso/value", "v-init", None))
        .expect("put");
    let dir = Confdir::new();
    let reloads = dir.root().join("reloads.log");
    dir.template("value.tmpl", "value = {{ getv(key=\"/value\") }}\n");
    let reload = format!("reload_cmd = \"echo reload >> {}\"\n", reloads.display());
    dir.resource("iso", "value.tmpl", "/iso", &reload);
    let dest = dir.dest("iso");
    let daemon = Daemon::start(&dir, &server);
    wait_for(|| read(&dest).as_deref() == Some("value = v-init\n"));
    let mut after_ack = Vec::with_capacity(PUTS);
    for i in 0..PUTS {
        std::thread::sleep(Duration::from_millis(250));
        let want = format!("value = iso{i}\n");
        let start = Instant::now();
        rt.block_on(client.put("/iso/value", format!("iso{i}"), None))
            .expect("put");
        let ack = start.elapsed();
        wait_for_fast(|| read(&dest).as_deref() == Some(want.as_str()));
        after_ack.push(start.elapsed() - ack);
    }
    let log = daemon.stop();
    println!(
        "\n## 1b. isolated puts to a resource with reload_cmd (default settings), {PUTS} puts 250 ms apart"
    );
    println!(
        "   {} applies logged, {} reloads run",
        log.applied(),
        count_lines(&reloads)
    );
    percentiles("  put ack → dest", &mut after_ack);
}

/// 2. `n` resources × 10 keys: time from spawning the daemon to every file written, and
///    the etcd requests counted by etcd itself, at 100 and 1,000 resources.
fn first_apply(rt: &Runtime) {
    println!("\n## 2. first full apply, N resources × 10 keys (watch mode)");
    for resources in [100, 1_000] {
        first_apply_at(rt, resources);
    }
}

fn first_apply_at(rt: &Runtime, resources: usize) {
    const KEYS: usize = 10;
    const SAMPLES: usize = 3;
    let server = rt.block_on(EtcdServer::start());
    let mut client = rt.block_on(server.client());
    let kvs = (0..resources).flat_map(|r| {
        (0..KEYS).map(move |k| (format!("/bench/r{r:04}/k{k}"), format!("value-{r}-{k}")))
    });
    rt.block_on(seed(&mut client, kvs));
    let dir = Confdir::new();
    dir.template(
        "service.tmpl",
        "{% for kv in gets(pattern=\"/*\") %}{{ kv.key | base }} = {{ kv.value }}\n{% endfor %}",
    );
    let names: Vec<String> = (0..resources).map(|r| format!("r{r:04}")).collect();
    for name in &names {
        dir.resource(name, "service.tmpl", &format!("/bench/{name}"), "");
    }
    let dests: Vec<PathBuf> = names.iter().map(|n| dir.dest(n)).collect();

    let mut times = Vec::with_capacity(SAMPLES);
    let mut requests = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        dir.clear_out();
        let before = grpc_started(&server);
        let start = Instant::now();
        let daemon = Daemon::start(&dir, &server);
        let mut missing = dests.clone();
        wait_for(|| {
            missing.retain(|p| !p.exists());
            missing.is_empty()
        });
        times.push(start.elapsed());
        // The watch is created right after the snapshot; let it reach etcd's counters.
        std::thread::sleep(Duration::from_millis(500));
        let after = grpc_started(&server);
        let log = daemon.stop();
        assert_eq!(log.applied(), resources, "one apply per resource");
        requests.push(difference(&before, &after));
    }
    let sample = format!("r{:04}", resources - 1);
    assert_eq!(
        read(&dir.dest(&sample)).expect("last file"),
        (0..KEYS)
            .map(|k| format!("k{k} = value-{}-{k}\n", resources - 1))
            .collect::<String>()
    );
    times.sort();
    println!(
        "   {resources} resources ({} keys): spawn → all files written: median {:.0} ms, min {:.0} ms, max {:.0} ms over {SAMPLES} runs",
        resources * KEYS,
        ms(times[SAMPLES / 2]),
        ms(times[0]),
        ms(times[SAMPLES - 1]),
    );
    for (i, r) in requests.iter().enumerate() {
        println!("     run {}: etcd requests started: {}", i + 1, show(r));
    }
}

/// 3. One resource on one key (default wait) with a reload that appends to a log;
///    1,000 puts paced one a millisecond.
fn burst(rt: &Runtime) {
    const PUTS: usize = 1_000;
    let server = rt.block_on(EtcdServer::start());
    let client = rt.block_on(server.client());
    rt.block_on(client.clone().put("/burst/value", "start", None))
        .expect("put");
    let dir = Confdir::new();
    let reloads = dir.root().join("reloads.log");
    dir.template("value.tmpl", "value = {{ getv(key=\"/value\") }}\n");
    dir.resource(
        "burst",
        "value.tmpl",
        "/burst",
        &format!(
            "reload_cmd = \"echo reload >> {}\"\n",
            reloads.to_str().expect("utf-8")
        ),
    );
    let dest = dir.dest("burst");
    let daemon = Daemon::start(&dir, &server);
    wait_for(|| read(&dest).as_deref() == Some("value = start\n"));
    std::thread::sleep(Duration::from_millis(300));
    let applies_before = daemon.log().applied();
    let reloads_before = count_lines(&reloads);

    let start = Instant::now();
    rt.block_on(paced_puts(client.clone(), "/burst/value", PUTS));
    let sent = start.elapsed();
    let last = rt
        .block_on(client.clone().get("/burst/value", None))
        .expect("get");
    let last = String::from_utf8_lossy(last.kvs()[0].value()).into_owned();
    let want = format!("value = {last}\n");
    wait_for(|| read(&dest).as_deref() == Some(want.as_str()));
    let converged = start.elapsed();
    // Longer than the 1 s maximum wait: any apply still owed has run by now.
    std::thread::sleep(Duration::from_secs(2));
    let log = daemon.stop();
    let final_ok = read(&dest).as_deref() == Some(want.as_str());
    println!("\n## 3. burst of {PUTS} puts to one key (default wait 100ms:1s)");
    println!(
        "   puts sent in {:.0} ms; dest held the last value ({last}) {:.0} ms after the first put",
        ms(sent),
        ms(converged)
    );
    println!(
        "   applies during the burst: {} ({} changed dest); reloads run: {}; final file correct: {final_ok}",
        log.applied() - applies_before,
        log.applied_changed() - log.changed_before(applies_before),
        count_lines(&reloads) - reloads_before,
    );
}

/// Puts `count` values to `key`, one started every millisecond, several in flight at a
/// time (a sequential put waits for etcd's fsync and could not keep the pace).
async fn paced_puts(client: Client, key: &str, count: usize) {
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        tick.tick().await;
        let mut client = client.clone();
        let key = key.to_string();
        tasks.spawn(async move { client.put(key, format!("burst-{i}"), None).await });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("put task").expect("put");
    }
}

/// 4. One resource selecting a prefix of 100,000 keys; VmRSS and VmHWM (peak) after
///    the first apply. Two templates: one that counts the keys
///    (`gets(pattern="/backends/*") | length`: every pair goes through the template
///    engine, the file stays small), and one that looks up a single key, which leaves
///    the mirror's own cost.
fn memory(rt: &Runtime) {
    const KEYS: usize = 100_000;
    let server = rt.block_on(EtcdServer::start());
    let mut client = rt.block_on(server.client());
    let kvs = (0..KEYS).map(|i| {
        (
            format!("/big/backends/b{i:06}"),
            format!("10.{}.{}.{}:8080", i / 65536, (i / 256) % 256, i % 256),
        )
    });
    let bytes: usize = kvs.clone().map(|(k, v)| k.len() + v.len()).sum();
    rt.block_on(seed(&mut client, kvs));
    println!(
        "\n## 4. resident memory, {KEYS} keys mirrored ({:.1} MB of keys and values)",
        bytes as f64 / 1e6
    );
    let count = (
        "backends = {{ gets(pattern=\"/backends/*\") | length }}\n",
        format!("backends = {KEYS}\n"),
    );
    let one = (
        "first = {{ getv(key=\"/backends/b000000\") }}\n",
        "first = 10.0.0.0:8080\n".to_string(),
    );
    for (template, want) in [count, one] {
        memory_with(&server, template, &want);
    }
}

fn memory_with(server: &EtcdServer, template: &str, want: &str) {
    let dir = Confdir::new();
    dir.template("big.tmpl", template);
    dir.resource("big", "big.tmpl", "/big", "");
    let dest = dir.dest("big");
    let start = Instant::now();
    let daemon = Daemon::start(&dir, server);
    wait_for(|| read(&dest).as_deref() == Some(want));
    let applied = start.elapsed();
    let first = proc_status(daemon.pid());
    std::thread::sleep(Duration::from_secs(2));
    let settled = proc_status(daemon.pid());
    daemon.stop();
    println!(
        "   template `{}`: first apply {:.0} ms after spawn",
        template.trim_end(),
        ms(applied)
    );
    println!(
        "     right after the first apply: VmRSS {:.1} MiB, VmHWM (peak) {:.1} MiB; 2 s later: VmRSS {:.1} MiB",
        first.rss_mb, first.hwm_mb, settled.rss_mb
    );
}

/// 5. One resource in watch mode, nothing changing: utime + stime over 10 s.
fn idle_cpu(rt: &Runtime) {
    const IDLE: Duration = Duration::from_secs(10);
    let server = rt.block_on(EtcdServer::start());
    rt.block_on(server.put("/idle/value", "x"));
    let dir = Confdir::new();
    dir.template("value.tmpl", "value = {{ getv(key=\"/value\") }}\n");
    dir.resource("idle", "value.tmpl", "/idle", "");
    let dest = dir.dest("idle");
    let daemon = Daemon::start(&dir, &server);
    wait_for(|| read(&dest).is_some());
    std::thread::sleep(Duration::from_secs(1));
    let (daemon_before, etcd_before) = (cpu_ticks(daemon.pid()), cpu_ticks(server.pid()));
    std::thread::sleep(IDLE);
    let (daemon_after, etcd_after) = (cpu_ticks(daemon.pid()), cpu_ticks(server.pid()));
    let memory = proc_status(daemon.pid());
    let log = daemon.stop();
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu_ms = |ticks: u64| ticks as f64 * 1000.0 / hz;
    println!(
        "\n## 5. CPU over {} idle seconds (one resource, watch mode)",
        IDLE.as_secs()
    );
    let daemon_used = daemon_after - daemon_before;
    println!(
        "   conflux: {daemon_used} ticks = {:.0} ms utime+stime ({:.3} % of one core); applies logged: {}",
        cpu_ms(daemon_used),
        cpu_ms(daemon_used) / IDLE.as_millis() as f64 * 100.0,
        log.applied()
    );
    println!(
        "   (etcd over the same window: {:.0} ms; clock tick {:.0} ms)",
        cpu_ms(etcd_after - etcd_before),
        1000.0 / hz
    );
    println!(
        "   (conflux VmRSS with this one resource: {:.1} MiB, for comparison with 4.)",
        memory.rss_mb
    );
}
