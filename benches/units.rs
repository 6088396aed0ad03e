//! A unit of 1,000 fan-out files (one per key) in the daemon (`--watch --backend
//! etcdv3`) against a real etcd on loopback, where one key changes per put: the time
//! from the put to the reload having run, and how many files were written (issue #10's
//! goal: one file written, under 10 ms). Figures go to docs/benchmarks.md. Run with
//! `cargo bench --bench units`.
//!
//! Like the other benchmarks, the real binary timed from outside: the reload command
//! appends a line to a log, polled every 100 µs; files written are counted by their
//! inode, which a rename over a file changes and nothing else does. Default settings
//! except where a run says otherwise (its check command).

// Test code: a failed unwrap is a failed test (the lint is for the product).
#![allow(clippy::unwrap_used)]

#[path = "../tests/support/etcd.rs"]
mod etcd;
#[path = "support/measure.rs"]
mod measure;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd::EtcdServer;
use etcd_client::{Client, Txn, TxnOp};
use measure::percentiles;
use tokio::runtime::Runtime;

const FILES: usize = 1_000;
const PUTS: usize = 200;
const PATIENCE: Duration = Duration::from_secs(60);

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if std::env::var_os("UNITS_BENCH_IN_PROCESS_ONLY").is_some() {
        in_process();
        return;
    }
    println!("\n## Unit of {FILES} fan-out files, one key changes per put ({PUTS} puts)");
    println!("   reload log polled every 100 µs; timed from just before the put");
    // The default `wait` (100ms:1s) holds a change that comes within 100 ms of the
    // last apply's start; puts here follow each other as soon as the reload ran, so
    // the runs set `wait = "0"` (as the daemon benchmark's latency run does) to time
    // the pass itself.
    run(&rt, "wait = \"0\", no check_cmd", "wait = \"0\"\n");
    run(
        &rt,
        "wait = \"0\", check_cmd = \"true\" (in the overlay)",
        "wait = \"0\"\ncheck_cmd = \"true\"\n",
    );
    in_process();
}

/// The pass alone, through the library: the same unit, the same one-key change, no
/// etcd and no daemon loop; each step's share, and what the pass spends outside them
/// (the state record read and written, the journal's end).
fn in_process() {
    use conflux::kv::Snapshot;
    use conflux::outcome::{Step, Work};
    use conflux::pipeline::{InPlace, Options, Pipeline};
    use conflux::resource::{self, Layout};
    use conflux::state::StateDir;
    use conflux::template::Templates;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    println!("\n## The same pass in-process ({PUTS} passes, one key changed each, reload `true`)");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for d in ["conf.d", "templates", "out/routes"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(
        root.join("templates/route.tmpl"),
        "route {{ item.name }} -> {{ item.value }};\n",
    )
    .unwrap();
    let file = root.join("conf.d/routes.toml");
    std::fs::write(
        &file,
        "[template]\nprefix = \"/bench\"\nkeys = [\"/routes\"]\nreload_cmd = \"true\"\n\n\
         [[template.output]]\nsrc = \"route.tmpl\"\ndest = \"out/routes/{{ item.name }}.conf\"\n\
         for_each = \"routes/*\"\n",
    )
    .unwrap();
    let layout = Layout {
        confdir: root,
        prefix: "/",
        engine: conflux::template::Engine::Tera,
    };
    let resource = resource::load(&layout, "routes.toml".into(), &file).unwrap();
    let templates = Arc::new(Templates::load(&root.join("templates")).unwrap());
    let state = StateDir::open(&root.join("state"), true).unwrap();
    let options = Options {
        in_place: InPlace::Overlay,
        ..Options::default()
    };
    let pipeline = Pipeline::new(templates, state, options);
    let mut kvs: BTreeMap<String, String> = (0..FILES)
        .map(|n| {
            (
                format!("/bench/routes/r{n:04}"),
                format!("10.0.{}.{}:80", n / 250, n % 250),
            )
        })
        .collect();
    let first = pipeline.run(
        &resource,
        &Arc::new(Snapshot::new(1, kvs.clone())),
        Work::Apply,
    );
    assert!(first.is_ok(), "{first:?}");
    let mut totals = Vec::new();
    let mut by_step: BTreeMap<Step, Vec<Duration>> = BTreeMap::new();
    let mut outside = Vec::new();
    for i in 0..PUTS {
        kvs.insert(
            format!("/bench/routes/r{:04}", (i * 37) % FILES),
            format!("v{i}"),
        );
        let outcome = pipeline.run(
            &resource,
            &Arc::new(Snapshot::new(i as i64 + 2, kvs.clone())),
            Work::Apply,
        );
        assert!(outcome.is_ok() && outcome.files.len() == 1, "{outcome:?}");
        let mut steps = Duration::ZERO;
        for step in Step::ALL {
            if let Some(took) = outcome.took(step) {
                by_step.entry(step).or_default().push(took);
                steps += took;
            }
        }
        outside.push(outcome.elapsed.saturating_sub(steps));
        totals.push(outcome.elapsed);
    }
    percentiles("  whole pass     ", &mut totals);
    for (step, mut times) in by_step {
        percentiles(&format!("  {:<15}", step.as_str()), &mut times);
    }
    percentiles("  outside steps  ", &mut outside);
}

fn run(rt: &Runtime, what: &str, extra: &str) {
    let server = rt.block_on(EtcdServer::start());
    let mut client = rt.block_on(server.client());
    rt.block_on(seed(&mut client));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for d in ["conf.d", "templates", "out/routes", "state"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(
        root.join("templates/route.tmpl"),
        "route {{ item.name }} -> {{ item.value }};\n",
    )
    .unwrap();
    std::fs::write(
        root.join("conf.d/routes.toml"),
        format!(
            "[template]\nprefix = \"/bench\"\nkeys = [\"/routes\"]\n{extra}\
             reload_cmd = \"echo r >> {}\"\n\n[[template.output]]\nsrc = \"route.tmpl\"\n\
             dest = \"out/routes/{{{{ item.name }}}}.conf\"\nfor_each = \"routes/*\"\n",
            root.join("reload.log").display()
        ),
    )
    .unwrap();
    let log = root.join("reload.log");
    let mut daemon = start(root, &server);
    poll(|| lines(&log) == 1, Duration::from_millis(1));
    let routes = root.join("out/routes");
    assert_eq!(std::fs::read_dir(&routes).unwrap().count(), FILES);

    let mut times = Vec::with_capacity(PUTS);
    let mut written = Vec::with_capacity(PUTS);
    for i in 0..PUTS {
        let before = inodes(&routes);
        let reloads = lines(&log);
        let key = format!("/bench/routes/r{:04}", (i * 37) % FILES);
        let start = Instant::now();
        rt.block_on(client.put(key, format!("v{i}"), None)).unwrap();
        poll(|| lines(&log) > reloads, Duration::from_micros(100));
        times.push(start.elapsed());
        let after = inodes(&routes);
        written.push(before.iter().zip(&after).filter(|(a, b)| a != b).count());
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    let stderr = std::fs::read_to_string(root.join("daemon.stderr")).unwrap_or_default();
    let overlay = stderr.contains("checked in place over an overlay");
    if std::env::var_os("UNITS_BENCH_LOG").is_some() {
        let tail: Vec<&str> = stderr.lines().rev().take(12).collect();
        println!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
    }
    println!("   {what} (overlay probe ok: {overlay}):");
    percentiles("  put → reloaded", &mut times);
    written.sort();
    println!(
        "     files written per put: min {}, max {}",
        written[0],
        written[written.len() - 1]
    );
}

async fn seed(client: &mut Client) {
    let keys: Vec<TxnOp> = (0..FILES)
        .map(|n| {
            TxnOp::put(
                format!("/bench/routes/r{n:04}"),
                format!("10.0.{}.{}:80", n / 250, n % 250),
                None,
            )
        })
        .collect();
    for batch in keys.chunks(128) {
        client
            .txn(Txn::new().and_then(batch.to_vec()))
            .await
            .unwrap();
    }
}

fn start(root: &Path, server: &EtcdServer) -> Child {
    let stderr = std::fs::File::create(root.join("daemon.stderr")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_conflux"))
        .args([
            "--watch",
            "--backend",
            "etcdv3",
            "--node",
            &server.endpoint(),
        ])
        .arg("--confdir")
        .arg(root)
        .env("CONFLUX_STATE_DIR", root.join("state"))
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// The inode of every file in `dir`, by name.
fn inodes(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut all: Vec<(PathBuf, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.path(), e.metadata().unwrap().ino())
        })
        .collect();
    all.sort();
    all
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

fn poll(mut done: impl FnMut() -> bool, every: Duration) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "gave up after {PATIENCE:?}");
        std::thread::sleep(every);
    }
}
