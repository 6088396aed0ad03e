//! kill -9 of the daemon at 50 random moments while it applies a unit of many files
//! that every change rewrites: after each restart, before it has read anything, the
//! files are one render's set (never a mix of two), and the reload that set owes runs
//! once the daemon is back on etcd.

use std::time::{Duration, Instant};

use etcd_client::{Client, Txn, TxnOp};
use nix::sys::signal::Signal;
use rand::Rng;

use super::PATIENCE;
use crate::harness::{Confdir, Daemon};
use crate::support::etcd::EtcdServer;

/// Fragments per set: enough that a swap takes a while and a kill lands inside one.
const FILES: usize = 12;
const KILLS: usize = 50;

/// A unit of `main.conf` and one `frags/<n>.conf` per key: every file holds the
/// generation written to all keys at once. The reload logs the generation of main.conf.
fn confdir() -> Confdir {
    let dir = Confdir::new();
    std::fs::create_dir_all(dir.path("out/frags")).expect("mkdir");
    dir.template(
        "main.tmpl",
        "{% for kv in gets(pattern=\"/frags/*\") %}{% if loop.first %}{{ kv.value }}{% endif %}{% endfor %}\n",
    );
    dir.template("frag.tmpl", "{{ item.value }}\n");
    dir.resource(
        "unit.toml",
        "[template]\nprefix = \"/crash\"\nkeys = [\"/frags\"]\n\
         check_cmd = \"test -s {{.src}}\"\n\
         reload_cmd = \"cat {{.dest}} >> $(dirname {{.dest}})/../reload.log\"\n\
         wait = \"0ms\"\n\n\
         [[template.output]]\nsrc = \"main.tmpl\"\ndest = \"out/main.conf\"\n\n\
         [[template.output]]\nsrc = \"frag.tmpl\"\ndest = \"out/frags/{{ item.name }}.conf\"\n\
         for_each = \"frags/*\"\n",
    );
    dir
}

/// Every file's generation: one value when the set is whole.
fn generations(dir: &Confdir) -> Vec<String> {
    let mut all = vec![dir.try_read("out/main.conf").unwrap_or_default()];
    for n in 0..FILES {
        all.push(
            dir.try_read(&format!("out/frags/{n:02}.conf"))
                .unwrap_or_default(),
        );
    }
    all.sort();
    all.dedup();
    all
}

fn reloads(dir: &Confdir) -> usize {
    dir.try_read("reload.log")
        .unwrap_or_default()
        .lines()
        .count()
}

async fn put_generation(client: &mut Client, generation: usize) {
    let ops = (0..FILES)
        .map(|n| TxnOp::put(format!("/crash/frags/{n:02}"), generation.to_string(), None))
        .collect::<Vec<_>>();
    client.txn(Txn::new().and_then(ops)).await.expect("txn");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_multi_file_applies_leaves_one_whole_set_and_the_owed_reload_runs() {
    let etcd = EtcdServer::start().await;
    let mut client = Client::connect([etcd.endpoint()], None)
        .await
        .expect("connect");
    let dir = confdir();
    let mut generation = 1;
    put_generation(&mut client, generation).await;
    let args = |node: &str| {
        vec!["--watch", "--backend", "etcdv3", "--node"]
            .into_iter()
            .map(String::from)
            .chain([node.to_string()])
            .collect::<Vec<_>>()
    };
    let dead = format!("http://127.0.0.1:{}", free_port());
    let mut rng = rand::rng();
    let mut interrupted = 0;
    for round in 0..KILLS {
        let daemon = Daemon::start(&dir, &args(&etcd.endpoint()));
        let start = Instant::now();
        // Changes every few milliseconds, the kill at a random moment among them.
        let kill_at = Duration::from_millis(rng.random_range(20..300));
        while start.elapsed() < kill_at {
            generation += 1;
            put_generation(&mut client, generation).await;
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..8))).await;
        }
        daemon.signal(Signal::SIGKILL);
        drop(daemon);
        interrupted += usize::from(dir.path("state").exists() && journal_left(&dir));

        // Restarted against an etcd that is not there: it replays the journal first,
        // then waits for the backend. The set must be whole now.
        let stranded = Daemon::start(&dir, &args(&dead));
        stranded
            .wait_for("the restart reached the backend", PATIENCE, || {
                let stderr = stranded.stderr();
                stderr.contains("snapshot failed; retrying")
                    || stderr.contains("cannot connect to the backend")
            })
            .await;
        let set = generations(&dir);
        assert!(
            set.len() == 1,
            "round {round}: a mix of sets: {set:?}\n{}",
            stranded.stderr()
        );
        assert!(!journal_left(&dir), "round {round}: journal not replayed");
        let owed = reload_owed(&dir);
        drop(stranded);

        // Back on etcd: the owed reload runs (or the newest set is applied and reloaded).
        let before = reloads(&dir);
        let daemon = Daemon::start(&dir, &args(&etcd.endpoint()));
        let newest = format!("{generation}\n");
        daemon
            .wait_for("the newest set, reloaded", PATIENCE, || {
                generations(&dir) == [newest.clone()] && !reload_owed(&dir)
            })
            .await;
        if owed {
            assert!(
                reloads(&dir) > before,
                "round {round}: the owed reload did not run"
            );
        }
        drop(daemon);
    }
    eprintln!("kill -9: {KILLS} kills, {interrupted} left a swap journal to replay");
}

fn journal_left(dir: &Confdir) -> bool {
    state_files(dir, "journal.json")
}

fn reload_owed(dir: &Confdir) -> bool {
    let Some(path) = find(dir, "state.json") else {
        return false;
    };
    std::fs::read_to_string(path).is_ok_and(|s| s.contains("\"reload_owed\": true"))
}

fn state_files(dir: &Confdir, name: &str) -> bool {
    find(dir, name).is_some()
}

/// `<state>/resources/<unit>/<name>`, if it exists.
fn find(dir: &Confdir, name: &str) -> Option<std::path::PathBuf> {
    let resources = dir.state_dir().join("resources");
    std::fs::read_dir(resources)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join(name))
        .find(|p| p.exists())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}
