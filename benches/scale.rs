//! A large key space through the real binary with default settings: 100,000 keys of
//! about 126 bytes (key and value; 12.6 MB), one resource selecting all of them, a
//! real etcd on loopback. For each of three templates (one that lists every pair, one
//! that counts them, one that reads a single key): start → first render, resident
//! memory in watch mode, one new key → file, and a one-shot run's wall time and peak
//! memory. Run with `cargo bench --bench scale` (one template: `-- list`, `-- count` or
//! `-- one`).
//!
//! Set `CONFLUX_BENCH_BIN` to a binary built with `--features dhat-heap` to write a heap
//! profile of each run into its temporary confdir (the bench prints where).

// Test code: a failed unwrap is a failed test (the lint is for the product).
#![allow(clippy::unwrap_used)]

#[path = "support/big.rs"]
mod big;
#[path = "../tests/support/etcd.rs"]
mod etcd;
#[path = "support/harness.rs"]
mod harness;
#[path = "support/measure.rs"]
mod measure;

use std::time::{Duration, Instant};

use etcd::EtcdServer;
use harness::*;

const KEYS: usize = 100_000;
/// New keys put one at a time after the first render, each waited for.
const NEW_KEYS: usize = 20;

/// Every pair into the file (about 11 MB).
const LIST: &str =
    "{% for kv in gets(pattern=\"/backends/*\") %}{{ kv.key | base }} {{ kv.value }}\n{% endfor %}";
/// Every pair through the engine, one line out.
const COUNT: &str = "backends = {{ gets(pattern=\"/backends/*\") | length }}\n";
/// One key: what the key space costs without the template engine's values.
const ONE: &str = "first = {{ getv(key=\"/backends/b000000\") }}\n";

fn main() {
    let wanted = wanted();
    let rt = runtime();
    machine();
    let server = rt.block_on(EtcdServer::start());
    let mut client = rt.block_on(server.client());
    let pairs = big::pairs(KEYS);
    let bytes: usize = pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
    rt.block_on(seed(&mut client, pairs.into_iter()));
    println!(
        "\n## {KEYS} keys ({:.1} MB of keys and values), one resource over all of them, default settings",
        bytes as f64 / 1e6
    );
    for (name, template) in [("list", LIST), ("count", COUNT), ("one", ONE)] {
        if wanted(name) {
            scenario(&rt, &server, name, template);
        }
    }
}

fn scenario(rt: &tokio::runtime::Runtime, server: &EtcdServer, name: &str, template: &str) {
    println!("\n### template `{name}`: {}", template.trim_end());
    let dir = Confdir::new();
    dir.template("big.tmpl", template);
    dir.resource("big", "big.tmpl", "/big", "");
    let dest = dir.dest("big");

    let (wall, peak) = onetime(&dir, &server.endpoint());
    let size = std::fs::metadata(&dest).map_or(0, |m| m.len());
    println!(
        "   one-shot run: wall {:.0} ms, peak RSS (ru_maxrss) {peak:.1} MiB; file {size} bytes",
        ms(wall)
    );

    dir.clear_out();
    let start = Instant::now();
    let daemon = Daemon::start(&dir, server);
    wait_for(|| dest.exists());
    let first = start.elapsed();
    let after_first = proc_status(daemon.pid());
    std::thread::sleep(Duration::from_secs(2));
    let settled = proc_status(daemon.pid());
    println!(
        "   watch mode: start → first render {:.0} ms; VmRSS {:.1} MiB right after, {:.1} MiB 2 s later; VmHWM {:.1} MiB",
        ms(first),
        after_first.rss_mb,
        settled.rss_mb,
        settled.hwm_mb
    );

    let mut client = rt.block_on(server.client());
    let mut from_put = Vec::new();
    let mut from_ack = Vec::new();
    for i in 0..NEW_KEYS {
        // The one-key template sees only its key: change that one instead.
        let key = if name == "one" {
            big::key(0)
        } else {
            format!("/big/backends/n{name}{i:04}")
        };
        let value = format!("new-{name}-{i}");
        let before = std::fs::metadata(&dest).and_then(|m| m.modified()).ok();
        let t = Instant::now();
        rt.block_on(client.put(key, value.clone(), None))
            .expect("put");
        let acked = t.elapsed();
        // The file is replaced by rename: a new modification time means a new file.
        wait_for(|| std::fs::metadata(&dest).and_then(|m| m.modified()).ok() != before);
        let done = t.elapsed();
        from_put.push(done);
        from_ack.push(done - acked);
        std::thread::sleep(Duration::from_millis(200));
    }
    let rss = proc_status(daemon.pid());
    let log = daemon.stop();
    let what = if name == "one" {
        "its key changed"
    } else {
        "one new key"
    };
    println!(
        "   {what} → file, {NEW_KEYS} changes one at a time ({} applies logged; VmRSS after {:.1} MiB, VmHWM {:.1} MiB):",
        log.applied(),
        rss.rss_mb,
        rss.hwm_mb
    );
    percentiles("  put → file replaced ", &mut from_put);
    percentiles("  put ack → file      ", &mut from_ack);
    if std::env::var_os("CONFLUX_BENCH_BIN").is_some() {
        println!("   heap profiles in {}", dir.root().display());
        std::mem::forget(dir);
    }
}
