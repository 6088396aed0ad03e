//! Resources as units with the real binary, a real etcd and a real nginx: the check in
//! place over the whole new set, one swap and one reload per change, fan-out files
//! created, updated, renamed and removed (and a hand-placed one kept), hostile key
//! names, rollback, `min_keys`, noop and sync-only; with nginx in [`nginx`], kill -9
//! during multi-file applies in [`crash`].
//!
//! Every wait is a poll with a generous deadline, never a speed requirement.

use std::time::Duration;

use etcd_client::{Client, Txn, TxnOp};

use crate::harness::{Confdir, Daemon};
use crate::support::etcd::EtcdServer;

mod crash;
mod nginx;

const PATIENCE: Duration = Duration::from_secs(20);

/// A reload that appends one line per run to `out/reload.log`: the fragment files
/// then present, so that each line says which set it reloaded.
const LOG_RELOAD: &str = "ls $(dirname {{.dest}})/frags | tr '\\n' ' ' >> $(dirname {{.dest}})/reload.log; echo >> $(dirname {{.dest}})/reload.log";

/// A unit under `/app`: `out/main.conf` listing the fragments, and one
/// `out/frags/<name>.conf` per key under `/app/frags`, holding its value.
fn unit_confdir(extra: &str) -> Confdir {
    let dir = Confdir::new();
    std::fs::create_dir_all(dir.path("out/frags")).expect("mkdir");
    dir.template(
        "main.tmpl",
        "{% for name in ls(path=\"/frags\") %}include frags/{{ name }}.conf;\n{% endfor %}",
    );
    // A directory match (`/frags/a` above `/frags/a/b`) has no value.
    dir.template(
        "frag.tmpl",
        "{% if item.value %}{{ item.value }}{% else %}(directory){% endif %}\n",
    );
    dir.resource(
        "unit.toml",
        &format!(
            r#"[template]
prefix = "/app"
keys = ["/frags"]
reload_cmd = "{LOG_RELOAD}"
{extra}

[[template.output]]
src = "main.tmpl"
dest = "out/main.conf"

[[template.output]]
src = "frag.tmpl"
dest = "out/frags/{{{{ item.name }}}}.conf"
for_each = "frags/*"
"#
        ),
    );
    dir
}

fn watch(dir: &Confdir, endpoint: &str) -> Daemon {
    Daemon::start(dir, &["--watch", "--backend", "etcdv3", "--node", endpoint])
}

fn reloads(dir: &Confdir) -> Vec<String> {
    dir.try_read("out/reload.log")
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().to_string())
        .collect()
}

/// The files in `out/frags`, sorted.
fn frags(dir: &Confdir) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.path("out/frags"))
        .expect("read out/frags")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Puts and deletes in one etcd transaction: one revision, one change.
async fn txn(etcd: &EtcdServer, ops: Vec<TxnOp>) {
    let mut client = Client::connect([etcd.endpoint()], None)
        .await
        .expect("connect");
    client.txn(Txn::new().and_then(ops)).await.expect("txn");
}

#[tokio::test]
async fn fan_out_creates_updates_renames_and_removes_files_with_one_reload_each() {
    let etcd = EtcdServer::start().await;
    etcd.put("/app/frags/a", "alpha").await;
    let dir = unit_confdir("");
    dir.write("out/frags/by-hand.conf", "mine\n");
    let daemon = watch(&dir, &etcd.endpoint());
    let wait_reloads = |n: usize| {
        let dir = &dir;
        let daemon = &daemon;
        async move {
            daemon
                .wait_for(&format!("{n} reloads"), PATIENCE, || {
                    reloads(dir).len() >= n
                })
                .await
        }
    };
    wait_reloads(1).await;
    assert_eq!(dir.read("out/frags/a.conf"), "alpha\n");

    etcd.put("/app/frags/b", "beta").await; // create
    wait_reloads(2).await;
    etcd.put("/app/frags/a", "ALPHA").await; // update
    wait_reloads(3).await;
    let rename = vec![
        TxnOp::delete("/app/frags/b", None),
        TxnOp::put("/app/frags/c", "beta", None),
    ];
    txn(&etcd, rename).await;
    wait_reloads(4).await;
    etcd.delete("/app/frags/a").await; // delete
    wait_reloads(5).await;

    assert_eq!(
        reloads(&dir),
        [
            "a.conf by-hand.conf",
            "a.conf b.conf by-hand.conf",
            "a.conf b.conf by-hand.conf",
            "a.conf by-hand.conf c.conf",
            "by-hand.conf c.conf",
        ],
        "one reload per change, each after its whole set was in place"
    );
    assert_eq!(dir.read("out/main.conf"), "include frags/c.conf;\n");
    assert_eq!(
        dir.read("out/frags/by-hand.conf"),
        "mine\n",
        "not conflux's"
    );
    assert_eq!(frags(&dir), ["by-hand.conf", "c.conf"]);
}

#[tokio::test]
async fn hostile_key_names_never_write_outside_the_fan_out_directory() {
    let etcd = EtcdServer::start().await;
    for (key, value) in [
        ("/app/frags/..", "dots"),
        ("/app/frags/.hidden", "hidden"),
        ("/app/frags//empty", "empty segment"),
        ("/app/frags/a/b", "below a directory"),
        ("/app/frags/ok", "fine"),
        // A second unit names its files by value: none of these may escape or hide.
        ("/named/k1", "../escape"),
        ("/named/k2", "a/b"),
        ("/named/k3", ""),
        ("/named/k4", ".hidden"),
        ("/named/k5", ".."),
        ("/named/k6", "fine.conf"),
    ] {
        etcd.put(key, value).await;
    }
    let dir = unit_confdir("");
    dir.template("named.tmpl", "{{ item.key }}\n");
    dir.resource(
        "named.toml",
        "[template]\nprefix = \"/named\"\nkeys = [\"/\"]\n\n[[template.output]]\n\
         src = \"named.tmpl\"\ndest = \"out/frags/{{ item.value }}\"\nfor_each = \"*\"\n",
    );
    let run = dir.run(&[
        "--onetime",
        "--backend",
        "etcdv3",
        "--node",
        &etcd.endpoint(),
    ]);
    run.assert_code(0);

    assert_eq!(
        frags(&dir),
        ["a.conf", "empty.conf", "fine.conf", "ok.conf"],
        "{}",
        run.stderr
    );
    let mut out: Vec<String> = std::fs::read_dir(dir.path("out"))
        .expect("read out")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    assert_eq!(out, ["frags", "main.conf", "reload.log"]);
    let mut root: Vec<String> = std::fs::read_dir(dir.root())
        .expect("read the confdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    root.sort();
    assert_eq!(root, ["conf.d", "out", "state", "templates"]);
    for key in [
        "/frags/..",
        "/frags/.hidden",
        "/k1",
        "/k2",
        "/k3",
        "/k4",
        "/k5",
    ] {
        assert!(
            run.stderr.contains(&format!("key={key} ")),
            "no warning naming {key}:\n{}",
            run.stderr
        );
    }
}

#[tokio::test]
async fn rollback_restores_and_reloads_the_previous_set_then_applies_the_new_one_on_retry() {
    let etcd = EtcdServer::start().await;
    etcd.put("/app/frags/a", "alpha").await;
    let dir = unit_confdir("on_reload_failure = \"rollback\"");
    // The reload refuses once: when a file `refuse` exists, it removes it and fails. It
    // looks for the file before it logs, so a `refuse` written once the first reload
    // has logged cannot fail that first reload (a regression: it once did, in the test).
    let toml = dir.read("conf.d/unit.toml").replace(
        &format!("reload_cmd = \"{LOG_RELOAD}\""),
        &format!(
            "reload_cmd = \"if [ -e {0} ]; then rm {0}; {LOG_RELOAD}; exit 1; fi; {LOG_RELOAD}\"",
            dir.path("refuse").display()
        ),
    );
    dir.resource("unit.toml", &toml);
    let daemon = watch(&dir, &etcd.endpoint());
    daemon
        .wait_for("the first reload", PATIENCE, || reloads(&dir).len() == 1)
        .await;

    dir.write("refuse", "");
    etcd.put("/app/frags/b", "beta").await;
    daemon
        .wait_for("refused, rolled back, then applied", PATIENCE, || {
            reloads(&dir).len() == 4
        })
        .await;

    assert_eq!(
        reloads(&dir),
        ["a.conf", "a.conf b.conf", "a.conf", "a.conf b.conf"],
        "the refused set, the previous set reloaded, the new set on retry"
    );
    let stderr = daemon.stderr();
    assert!(
        stderr.contains("rolled back to the previous files"),
        "{stderr}"
    );
    assert!(stderr.contains("degraded=true"), "{stderr}");
    assert_eq!(dir.read("out/frags/b.conf"), "beta\n");
}

#[tokio::test]
async fn min_keys_keeps_the_files_when_the_prefix_is_deleted_and_applies_when_keys_return() {
    let etcd = EtcdServer::start().await;
    etcd.put("/app/frags/a", "alpha").await;
    etcd.put("/app/frags/b", "beta").await;
    let dir = unit_confdir("min_keys = 2");
    let daemon = watch(&dir, &etcd.endpoint());
    daemon
        .wait_for("the first reload", PATIENCE, || reloads(&dir).len() == 1)
        .await;

    let wipe = vec![TxnOp::delete(
        "/app/frags",
        Some(etcd_client::DeleteOptions::new().with_prefix()),
    )];
    txn(&etcd, wipe).await;
    daemon
        .wait_for("the guard stops the apply", PATIENCE, || {
            daemon.stderr().contains("fewer than min_keys = 2")
        })
        .await;
    assert_eq!(frags(&dir), ["a.conf", "b.conf"]);
    assert_eq!(
        dir.read("out/main.conf"),
        "include frags/a.conf;\ninclude frags/b.conf;\n"
    );
    assert_eq!(reloads(&dir).len(), 1, "no reload");
    assert!(daemon.stderr().contains("only 0 key(s)"));

    etcd.put("/app/frags/c", "gamma").await;
    etcd.put("/app/frags/d", "delta").await;
    daemon
        .wait_for("applied again", PATIENCE, || {
            reloads(&dir).last().map(String::as_str) == Some("c.conf d.conf")
        })
        .await;
    assert_eq!(frags(&dir), ["c.conf", "d.conf"]);
}

#[test]
fn min_keys_fails_a_one_shot_run() {
    let dir = unit_confdir("min_keys = 1");
    let data = dir.write("data.json", r#"{"other": "x"}"#);
    dir.run(&[
        "--onetime",
        "--backend",
        "file",
        "--file",
        data.to_str().expect("utf-8"),
    ])
    .assert_code(1)
    .assert_stderr_contains("only 0 key(s) selected, fewer than min_keys = 1");
    assert!(!dir.exists("out/main.conf"));
}

#[test]
fn noop_prints_the_diff_of_every_file_and_sync_only_writes_the_unit_without_commands() {
    let dir = unit_confdir("check_cmd = \"exit 1\"");
    let data = |frags: &str| {
        let file = dir.write("data.json", &format!(r#"{{"app": {{"frags": {frags}}}}}"#));
        file.to_str().expect("utf-8").to_string()
    };
    let both = data(r#"{"a": "alpha", "b": "beta"}"#);
    // sync-only: written without the (failing) check and without the reload.
    dir.run(&[
        "--onetime",
        "--sync-only",
        "--backend",
        "file",
        "--file",
        &both,
    ])
    .assert_code(0);
    assert_eq!(frags(&dir), ["a.conf", "b.conf"]);
    assert!(reloads(&dir).is_empty(), "no reload with --sync-only");

    let only_a = data(r#"{"a": "ALPHA"}"#);
    let run = dir.run(&[
        "--onetime",
        "--noop",
        "--backend",
        "file",
        "--file",
        &only_a,
    ]);
    run.assert_code(0);
    for line in [
        "-include frags/b.conf;",
        "-alpha",
        "+ALPHA",
        "-beta",
        "+++ /dev/null",
    ] {
        assert!(run.stdout.contains(line), "no {line:?} in:\n{}", run.stdout);
    }
    assert_eq!(frags(&dir), ["a.conf", "b.conf"], "noop writes nothing");
}
