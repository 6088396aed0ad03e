//! One-shot runs of the real binary with 1,000 resources over 10,000 keys from the file
//! backend: a first run that writes every file, and a rerun where nothing changed,
//! with the Tera engine (the default) and then with the Go engine
//! (`--template-engine go`, the same template in confd's syntax). Goals on a 2-core
//! machine: under 1 s and under 0.3 s. Figures go to docs/benchmarks.md. Run with
//! `cargo bench --bench onetime`.
//!
//! Whole-process timings (start, read, render, write, fsync, exit), as a user's script
//! sees them; a plain harness rather than a statistics crate, since each sample is a
//! process run and the median of a few runs is the figure we quote.

// Test code: a failed unwrap is a failed test (the lint is for the product).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const RESOURCES: usize = 1_000;
const KEYS_PER_RESOURCE: usize = 10;
const SAMPLES: usize = 7;

/// The benchmark's template in each engine: every key of the resource as
/// `name = value`. Tera's also prints the revision, which Go templates do not see.
const ENGINES: [(&str, &str); 2] = [
    (
        "tera",
        "# revision {{ revision }}\n{% for kv in gets(pattern=\"/*\") %}{{ kv.key | base }} = {{ kv.value }}\n{% endfor %}",
    ),
    (
        "go",
        "# generated\n{{range gets \"/*\"}}{{base .Key}} = {{.Value}}\n{{end}}",
    ),
];

fn main() {
    for (engine, template) in ENGINES {
        bench_engine(engine, template);
    }
}

fn bench_engine(engine: &str, template: &str) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    build_confdir(root, template);
    let data = root.join("data.yaml");
    let args = [
        "--onetime",
        "--log-level",
        "warn",
        "--backend",
        "file",
        "--file",
        data.to_str().expect("utf-8"),
        "--confdir",
        root.to_str().expect("utf-8"),
        "--template-engine",
        engine,
    ];

    let first = sample(
        || {
            std::fs::remove_dir_all(root.join("out")).expect("clear out");
            std::fs::create_dir(root.join("out")).expect("mkdir out");
        },
        &args,
    );
    let rerun = sample(|| {}, &args);
    assert_eq!(
        std::fs::read_dir(root.join("out")).expect("out").count(),
        RESOURCES,
        "every resource wrote its file"
    );
    report(engine, "first run (writes 1,000 files)", &first);
    report(engine, "rerun (nothing changed)", &rerun);
}

fn build_confdir(root: &Path, template: &str) {
    for d in ["conf.d", "templates", "out"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    std::fs::write(root.join("templates/service.conf.tmpl"), template).expect("template");
    let mut yaml = String::from("bench:\n");
    for r in 0..RESOURCES {
        yaml.push_str(&format!("  r{r:04}:\n"));
        for k in 0..KEYS_PER_RESOURCE {
            yaml.push_str(&format!("    k{k}: value-{r}-{k}\n"));
        }
        std::fs::write(
            root.join(format!("conf.d/r{r:04}.toml")),
            format!(
                "[template]\nsrc = \"service.conf.tmpl\"\ndest = \"out/r{r:04}.conf\"\nprefix = \"/bench/r{r:04}\"\nkeys = [\"/\"]\nmode = \"0644\"\n"
            ),
        )
        .expect("resource");
    }
    std::fs::write(root.join("data.yaml"), yaml).expect("data");
}

fn sample(mut before: impl FnMut(), args: &[&str]) -> Vec<Duration> {
    let mut times = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        before();
        let start = Instant::now();
        let state = tempfile::tempdir().expect("state dir");
        let out = Command::new(env!("CARGO_BIN_EXE_conflux"))
            .env("CONFLUX_STATE_DIR", state.path())
            .args(args)
            .output()
            .expect("run conflux");
        times.push(start.elapsed());
        assert!(
            out.status.success(),
            "conflux failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    times.sort();
    times
}

fn report(engine: &str, what: &str, times: &[Duration]) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{engine} engine, {what}: median {:.0} ms, min {:.0} ms, max {:.0} ms over {} runs",
        ms(times[times.len() / 2]),
        ms(times[0]),
        ms(times[times.len() - 1]),
        times.len()
    );
}
