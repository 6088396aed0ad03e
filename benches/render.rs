//! One pass over a large key space, in process and without etcd: what a render of a
//! template over 100,000 keys costs after one key changed (the mirror taking the
//! change, the snapshot and store a pass reads, the template's lookups and the render),
//! in time and in heap bytes. Run with `cargo bench --bench render`.
//!
//! The figures that a user sees (put → file through etcd, resident memory) come from
//! the real binary in `benches/scale.rs`; this one splits a pass into its parts, so a
//! change to one part can be measured on a loaded machine: heap bytes and allocation
//! counts (dhat) do not depend on load, unlike wall-clock time.

// Test code: a failed unwrap is a failed test (the lint is for the product).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use conflux::kv::{Change, Event, Snapshot};
use conflux::mirror::Mirror;
use conflux::store::Store;
use conflux::template::Templates;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const KEYS: usize = 100_000;
const RUNS: usize = 15;

/// Every pair through the engine and into the file: an upstream list.
const LIST: &str =
    "{% for kv in gets(pattern=\"/backends/*\") %}{{ kv.key | base }} {{ kv.value }}\n{% endfor %}";
/// Every pair through the engine, a small file.
const COUNT: &str = "backends = {{ gets(pattern=\"/backends/*\") | length }}\n";
/// One key: the cost of everything but the lookups.
const ONE: &str = "first = {{ getv(key=\"/backends/b000000\") }}\n";

fn main() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("list.tmpl", LIST),
        ("count.tmpl", COUNT),
        ("one.tmpl", ONE),
    ] {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let templates = Templates::load(dir.path()).unwrap();
    let (mirror, held, bytes) = {
        let _profiler = dhat::Profiler::builder().testing().build();
        let pairs = big::pairs(KEYS);
        let bytes: usize = pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
        let mirror = Mirror::new(Snapshot::new(1, pairs.into_iter().collect()));
        (mirror, dhat::HeapStats::get().curr_bytes, bytes)
    };
    println!(
        "# one pass over {KEYS} keys ({:.1} MB of keys and values), median of {RUNS}",
        bytes as f64 / 1e6
    );
    println!(
        "mirror: {:.1} MiB of heap for {:.1} MB of data",
        mib(held),
        bytes as f64 / 1e6
    );
    // `RENDER_DHAT=<file>`: a dhat heap profile (with backtraces) of one pass of the
    // count template, to see which code allocates (view it with dhat's viewer).
    if let Ok(file) = std::env::var("RENDER_DHAT") {
        let store = Store::cut(&mirror.snapshot(), "/big", &["/big".to_string()]);
        let _profiler = dhat::Profiler::builder().file_name(file).build();
        templates.render("count.tmpl", &store).unwrap();
        return;
    }
    // A name on the command line runs only that template (for callgrind).
    let picked: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    for name in ["list.tmpl", "count.tmpl", "one.tmpl"] {
        if picked.is_empty() || picked.iter().any(|p| name.starts_with(p.as_str())) {
            pass(&templates, name, mirror.clone());
        }
    }
}

/// Times one pass (a put applied to the mirror, the snapshot, the store, the render)
/// `RUNS` times, then counts the heap bytes of one more.
fn pass(templates: &Templates, name: &str, mut mirror: Mirror) {
    let mut held: Option<Arc<Snapshot>> = None;
    let mut times: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    let mut out_len = 0;
    for run in 0..=RUNS {
        // `RENDER_NO_DHAT`: time only (for callgrind, which dhat's backtraces swamp).
        let count_bytes = run == RUNS && std::env::var_os("RENDER_NO_DHAT").is_none();
        let profiler = count_bytes.then(|| dhat::Profiler::builder().testing().build());
        let before = profiler.as_ref().map(|_| dhat::HeapStats::get());
        let t = Instant::now();
        mirror.apply(put(run));
        let t_mirror = t.elapsed();
        let snapshot = mirror.snapshot();
        let t = Instant::now();
        let store = Store::cut(&snapshot, "/big", &["/big".to_string()]);
        let t_store = t.elapsed();
        let t = Instant::now();
        let out = templates.render(name, &store).unwrap();
        let t_render = t.elapsed();
        out_len = out.len();
        drop((out, store));
        // A render holds its snapshot while the next change arrives, as in the daemon.
        held = Some(snapshot);
        if let Some(before) = before {
            let after = dhat::HeapStats::get();
            println!(
                "{name}: one pass allocated {:.1} MiB in {} blocks (peak {:.1} MiB above the mirror)",
                mib(after.total_bytes - before.total_bytes),
                after.total_blocks - before.total_blocks,
                mib(after.max_bytes.saturating_sub(before.curr_bytes)),
            );
        } else {
            times.entry("mirror.apply").or_default().push(t_mirror);
            times.entry("Store::cut").or_default().push(t_store);
            times.entry("render").or_default().push(t_render);
        }
    }
    drop(held);
    let line: Vec<String> = times
        .iter_mut()
        .map(|(what, t)| {
            t.sort();
            format!("{what} {:.2} ms", t[t.len() / 2].as_secs_f64() * 1e3)
        })
        .collect();
    println!("{name} ({out_len} bytes out): {}", line.join(", "));
}

/// A new key each run, so every pass has a change to apply.
fn put(run: usize) -> Change {
    Change::Events {
        revision: 2 + run as i64,
        events: vec![Event::Put {
            key: format!("/big/backends/new{run:04}"),
            value: big::value(KEYS + run),
        }],
    }
}

fn mib(bytes: impl TryInto<u64>) -> f64 {
    bytes.try_into().unwrap_or(0) as f64 / (1024.0 * 1024.0)
}

#[path = "support/big.rs"]
mod big;
