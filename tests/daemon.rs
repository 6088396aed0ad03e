//! The daemon modes of the real binary (`--watch`, interval mode, `--onetime`) against a
//! real etcd (see `support::etcd`): puts, deletes, bursts, restarts, compaction, a
//! cluster with a dead member, auth, TLS, leases, SIGHUP, SIGTERM and exit codes.
//!
//! Every wait is a poll with a generous deadline: a guard against hanging, never a
//! speed requirement (speed goals live in the benchmarks).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions, PutOptions};
use nix::sys::signal::Signal;

use crate::harness::{Confdir, Daemon};
use crate::support::etcd::{EtcdCluster, EtcdServer, READER};

/// How long the daemon gets to show a change (normally milliseconds).
const PATIENCE: Duration = Duration::from_secs(20);

/// Appends the rendered file to `out/reload.log`, so the log shows every reload and
/// the data it reloaded.
const LOG_RELOAD: &str = "cat {{.dest}} >> $(dirname {{.dest}})/reload.log";

/// `x` and `y` under `/app`, missing keys shown as `none`.
const XY_TEMPLATE: &str =
    "x={{ getv(key=\"/x\", default=\"none\") }} y={{ getv(key=\"/y\", default=\"none\") }}\n";

/// A confdir with one resource `app`: `templates/app.tmpl` over every key under
/// `/app`, rendered to `out/app.conf`, with `reload` as its reload command.
fn app_confdir(template: &str, reload: &str) -> Confdir {
    let dir = Confdir::new();
    dir.template("app.tmpl", template);
    dir.resource(
        "app.toml",
        &format!(
            "[template]\nsrc = \"app.tmpl\"\ndest = \"out/app.conf\"\nprefix = \"/app\"\n\
             keys = [\"/\"]\nreload_cmd = '''{reload}'''\n"
        ),
    );
    dir
}

fn etcd_args(mode: &[&str], endpoints: &[String], extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = mode.iter().map(|s| s.to_string()).collect();
    args.extend(["--backend".to_string(), "etcdv3".to_string()]);
    args.extend(["--node".to_string(), endpoints.join(",")]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// A loopback port nobody listens on.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `conflux --watch --backend etcdv3 --node <endpoint> <extra>` on `dir`.
fn watch(dir: &Confdir, endpoint: &str, extra: &[&str]) -> Daemon {
    Daemon::start(
        dir,
        &etcd_args(&["--watch"], &[endpoint.to_string()], extra),
    )
}

/// The lines of `out/reload.log`: one per reload, the file it reloaded.
fn reloads(dir: &Confdir) -> Vec<String> {
    dir.try_read("out/reload.log")
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

/// Waits until `out/app.conf` reads `expected`.
async fn wait_app(daemon: &Daemon, dir: &Confdir, expected: &str) {
    daemon
        .wait_for(
            &format!("out/app.conf reads {expected:?}"),
            PATIENCE,
            || dir.try_read("out/app.conf").as_deref() == Some(expected),
        )
        .await;
}

#[tokio::test]
async fn a_put_and_a_delete_each_rewrite_the_file_and_reload_once() {
    let etcd = EtcdServer::start().await;
    let dir = app_confdir(XY_TEMPLATE, LOG_RELOAD);
    let daemon = watch(&dir, &etcd.endpoint(), &[]);
    daemon
        .wait_for("the first apply reloads", PATIENCE, || {
            reloads(&dir) == ["x=none y=none"]
        })
        .await;

    etcd.put("/app/x", "1").await;
    daemon
        .wait_for("the put is applied and reloaded", PATIENCE, || {
            reloads(&dir).len() == 2
        })
        .await;
    etcd.delete("/app/x").await;
    daemon
        .wait_for("the delete is applied and reloaded", PATIENCE, || {
            reloads(&dir).len() == 3
        })
        .await;

    assert_eq!(
        reloads(&dir),
        ["x=none y=none", "x=1 y=none", "x=none y=none"]
    );
    assert_eq!(dir.read("out/app.conf"), "x=none y=none\n");
}

#[tokio::test]
async fn a_daemon_started_while_etcd_is_down_applies_once_it_is_up() {
    let mut etcd = EtcdServer::start().await;
    etcd.put("/app/x", "1").await;
    etcd.kill();
    let dir = app_confdir(XY_TEMPLATE, "true");
    let daemon = watch(&dir, &etcd.endpoint(), &[]);
    daemon
        .wait_for("a failed first read", PATIENCE, || {
            daemon.stderr().contains("snapshot failed; retrying")
        })
        .await;
    assert!(!dir.exists("out/app.conf"));

    etcd.restart().await;
    wait_app(&daemon, &dir, "x=1 y=none\n").await;
    etcd.put("/app/x", "2").await;
    wait_app(&daemon, &dir, "x=2 y=none\n").await;
}

#[tokio::test]
async fn sigterm_while_etcd_is_down_exits_0() {
    let dir = app_confdir(XY_TEMPLATE, "true");
    let mut daemon = watch(&dir, &format!("http://127.0.0.1:{}", free_port()), &[]);
    daemon
        .wait_for("a failed first read", PATIENCE, || {
            daemon.stderr().contains("snapshot failed; retrying")
        })
        .await;
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.exit_code(PATIENCE).await, 0, "{}", daemon.stderr());
}

#[tokio::test]
async fn a_deleted_key_keeps_the_last_good_file_while_other_resources_go_on() {
    let etcd = EtcdServer::start().await;
    etcd.put("/app/x", "1").await;
    etcd.put("/other/z", "1").await;
    let dir = app_confdir(XY_TEMPLATE, "true");
    dir.template("other.tmpl", "z={{ getv(key=\"/z\") }}\n");
    dir.resource(
        "other.toml",
        "[template]\nsrc = \"other.tmpl\"\ndest = \"out/other.conf\"\nprefix = \"/other\"\nkeys = [\"/z\"]\n",
    );
    let daemon = watch(&dir, &etcd.endpoint(), &[]);
    daemon
        .wait_for("out/other.conf reads z=1", PATIENCE, || {
            dir.try_read("out/other.conf").as_deref() == Some("z=1\n")
        })
        .await;

    etcd.delete("/other/z").await;
    daemon
        .wait_for("the failed render is reported", PATIENCE, || {
            daemon.stderr().contains("getv: key not found: /z")
        })
        .await;
    etcd.put("/app/x", "2").await;
    wait_app(&daemon, &dir, "x=2 y=none\n").await;
    assert_eq!(
        dir.read("out/other.conf"),
        "z=1\n",
        "the last good file stays"
    );

    etcd.put("/other/z", "back").await;
    daemon
        .wait_for("the key's return is applied", PATIENCE, || {
            dir.try_read("out/other.conf").as_deref() == Some("z=back\n")
        })
        .await;
}

#[tokio::test]
async fn a_reload_that_failed_after_the_swap_is_run_again() {
    let etcd = EtcdServer::start().await;
    let dir = app_confdir(
        XY_TEMPLATE,
        &format!("test -f $(dirname {{{{.dest}}}})/reload-ok && {LOG_RELOAD}"),
    );
    // Already up to date: the first apply runs no reload.
    dir.write("out/app.conf", "x=none y=none\n");
    let daemon = watch(&dir, &etcd.endpoint(), &[]);
    etcd.put("/app/x", "1").await;
    wait_app(&daemon, &dir, "x=1 y=none\n").await;
    daemon
        .wait_for("the failed reload is reported", PATIENCE, || {
            daemon
                .stderr()
                .contains("IS in place, but its reload failed")
        })
        .await;
    assert!(reloads(&dir).is_empty());

    // The file already matches the render: only a retry of the reload itself runs it.
    dir.write("out/reload-ok", "");
    daemon
        .wait_for("the owed reload runs", PATIENCE, || {
            reloads(&dir) == ["x=1 y=none"]
        })
        .await;
}

/// The reload owed by a daemon that stopped is run by the next one, although the file
/// it finds is already right (confd and its peers forget it: nothing compares changed).
#[tokio::test]
async fn a_reload_owed_by_a_stopped_daemon_is_run_by_the_next_one() {
    let etcd = EtcdServer::start().await;
    let dir = app_confdir(
        XY_TEMPLATE,
        &format!("test -f $(dirname {{{{.dest}}}})/reload-ok && {LOG_RELOAD}"),
    );
    etcd.put("/app/x", "1").await;
    let mut first = watch(&dir, &etcd.endpoint(), &[]);
    wait_app(&first, &dir, "x=1 y=none\n").await;
    first
        .wait_for("the failed reload is reported", PATIENCE, || {
            first
                .stderr()
                .contains("IS in place, but its reload failed")
        })
        .await;
    first.signal(Signal::SIGTERM);
    assert_eq!(first.exit_code(PATIENCE).await, 0);
    assert!(reloads(&dir).is_empty());

    dir.write("out/reload-ok", "");
    let second = watch(&dir, &etcd.endpoint(), &[]);
    second
        .wait_for("the owed reload runs after the restart", PATIENCE, || {
            reloads(&dir) == ["x=1 y=none"]
        })
        .await;
}

#[tokio::test]
async fn a_burst_of_500_puts_ends_with_the_last_value_after_few_reloads() {
    const PUTS: usize = 500;
    let etcd = EtcdServer::start().await;
    let dir = app_confdir(XY_TEMPLATE, LOG_RELOAD);
    let daemon = watch(&dir, &etcd.endpoint(), &[]);
    daemon
        .wait_for("the first apply", PATIENCE, || reloads(&dir).len() == 1)
        .await;
    // Past the first apply's coalescing window: the burst starts on a quiet resource.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let mut client = etcd.client().await;
    for i in 1..=PUTS {
        client
            .put("/app/x", i.to_string(), None)
            .await
            .expect("put");
    }
    let last = format!("x={PUTS} y=none");
    daemon
        .wait_for("the last put is reloaded", PATIENCE, || {
            reloads(&dir).last() == Some(&last)
        })
        .await;

    let seen: Vec<usize> = reloads(&dir)[1..]
        .iter()
        .map(|line| {
            line["x=".len()..line.len() - " y=none".len()]
                .parse()
                .expect("a number")
        })
        .collect();
    eprintln!("{PUTS} puts, {} reloads: {seen:?}", seen.len());
    assert!(seen.len() < 100, "{} reloads for {PUTS} puts", seen.len());
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "every reload saw newer data than the one before: {seen:?}"
    );
    assert_eq!(dir.read("out/app.conf"), format!("{last}\n"));
}

/// What [`put_until`] did: the puts etcd acknowledged and those that failed, by number.
struct Writer {
    acked: Vec<usize>,
    failed: Vec<usize>,
}

/// Puts a new key `/app/k/<n>` (n = 1, 2, ...) every 10 ms until `stop`, with its own
/// client, reconnecting after failures: etcd may be down for a while.
async fn put_until(endpoint: String, stop: Arc<AtomicBool>) -> Writer {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(Duration::from_secs(1));
    let mut writer = Writer {
        acked: Vec::new(),
        failed: Vec::new(),
    };
    let mut client: Option<Client> = None;
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        if client.is_none() {
            client = Client::connect([&endpoint], Some(options.clone()))
                .await
                .ok();
        }
        let put = match client.as_mut() {
            Some(c) => c
                .put(format!("/app/k/{n:05}"), n.to_string(), None)
                .await
                .is_ok(),
            None => false,
        };
        if put {
            writer.acked.push(n);
        } else {
            writer.failed.push(n);
            client = None;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    writer
}

#[tokio::test]
async fn etcd_killed_and_restarted_during_puts_loses_no_update() {
    let mut etcd = EtcdServer::start().await;
    let dir = app_confdir(
        "{% for kv in gets(pattern=\"/k/*\") %}{{ kv.key }}={{ kv.value }}\n{% endfor %}",
        "true",
    );
    let daemon = watch(&dir, &etcd.endpoint(), &[]);
    daemon
        .wait_for("the first apply", PATIENCE, || dir.exists("out/app.conf"))
        .await;

    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(put_until(etcd.endpoint(), Arc::clone(&stop)));
    tokio::time::sleep(Duration::from_secs(1)).await;
    etcd.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    etcd.restart().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    let writer = writer.await.expect("the writer does not panic");

    // etcd holds every acknowledged put, and possibly a failed one that was committed
    // before its answer was lost: the file must list exactly what etcd holds.
    let stored = etcd
        .client()
        .await
        .get("/app/k/", Some(GetOptions::new().with_prefix()))
        .await
        .expect("get");
    let expected: String = stored
        .kvs()
        .iter()
        .map(|kv| {
            let key = kv.key_str().expect("utf-8 key");
            format!(
                "{}={}\n",
                &key["/app".len()..],
                kv.value_str().expect("utf-8")
            )
        })
        .collect();
    let (Some(first_failed), Some(last_failed)) = (writer.failed.first(), writer.failed.last())
    else {
        panic!("no put failed: the outage did not happen");
    };
    assert!(
        writer.acked.first() < Some(first_failed) && writer.acked.last() > Some(last_failed),
        "puts were acknowledged before and after the outage"
    );
    for n in &writer.acked {
        assert!(
            expected.contains(&format!("/k/{n:05}={n}\n")),
            "put {n} acked"
        );
    }
    wait_app(&daemon, &dir, &expected).await;
}

#[tokio::test]
async fn compaction_past_the_daemons_revision_converges_to_the_latest_data() {
    let mut etcd = EtcdServer::start().await;
    etcd.put("/app/y", "old").await;
    let dir = app_confdir(XY_TEMPLATE, "true");
    let daemon = watch(&dir, &etcd.endpoint(), &[]);
    wait_app(&daemon, &dir, "x=none y=old\n").await;

    // A stopped daemon reads nothing; the restart breaks its watch for good, so it must
    // watch again from its last revision, which by then is compacted.
    daemon.signal(Signal::SIGSTOP);
    etcd.kill();
    etcd.restart().await;
    for i in 1..=5 {
        etcd.put("/app/x", &i.to_string()).await;
    }
    let latest = etcd.delete("/app/y").await;
    etcd.compact(latest).await;
    daemon.signal(Signal::SIGCONT);

    wait_app(&daemon, &dir, "x=5 y=none\n").await;
    let stderr = daemon.stderr();
    assert!(
        stderr.contains("watch start revision compacted")
            && stderr.contains("backend reset the key space"),
        "the daemon went through the reset path:\n{stderr}"
    );
}

/// Puts through any running member, retrying while the cluster elects a new leader.
async fn cluster_put(cluster: &EtcdCluster, key: &str, value: &str) {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let mut client = cluster.client().await;
        if client.put(key, value, None).await.is_ok() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no put within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many watchers `endpoint`'s member serves, from its `/metrics` (served on the
/// client URL too). The tests' own clients never watch, so only the daemon's counts.
async fn watchers(endpoint: &str) -> Option<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = endpoint.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
    let request = format!("GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await.ok()?;
    body.lines()
        .find_map(|line| line.strip_prefix("etcd_debugging_mvcc_watcher_total "))
        .and_then(|n| n.trim().parse().ok())
}

#[tokio::test]
async fn a_cluster_keeps_being_applied_when_the_member_serving_the_watch_is_killed() {
    let mut cluster = EtcdCluster::start(3).await;
    let endpoints = cluster.endpoints();
    let dir = app_confdir(XY_TEMPLATE, "true");
    let daemon = Daemon::start(&dir, &etcd_args(&["--watch"], &endpoints, &[]));
    cluster_put(&cluster, "/app/x", "1").await;
    wait_app(&daemon, &dir, "x=1 y=none\n").await;

    let mut serving = None;
    let deadline = std::time::Instant::now() + PATIENCE;
    while serving.is_none() {
        for (i, endpoint) in endpoints.iter().enumerate() {
            if watchers(endpoint).await.unwrap_or(0) > 0 {
                serving = Some(i);
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no member serves a watch"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.kill_member(serving.expect("found"));
    for i in 2..=4 {
        cluster_put(&cluster, "/app/x", &i.to_string()).await;
        wait_app(&daemon, &dir, &format!("x={i} y=none\n")).await;
    }
    assert!(
        daemon.stderr().contains("watch broke"),
        "the daemon lost its watch and resumed on another member:\n{}",
        daemon.stderr()
    );
}

#[tokio::test]
async fn a_read_only_user_renders_and_follows_changes() {
    let mut etcd = EtcdServer::start().await;
    etcd.enable_auth("/app").await;
    etcd.put("/app/x", "1").await;
    let dir = app_confdir(XY_TEMPLATE, "true");
    let (user, password) = READER;
    let daemon = watch(
        &dir,
        &etcd.endpoint(),
        &["--username", user, "--password", password],
    );
    wait_app(&daemon, &dir, "x=1 y=none\n").await;

    etcd.put("/app/y", "2").await;
    wait_app(&daemon, &dir, "x=1 y=2\n").await;
}

#[tokio::test]
async fn tls_with_client_certificates_works_and_with_an_http_endpoint_is_refused() {
    let etcd = EtcdServer::start_tls().await;
    let tls = etcd.tls_files().expect("a TLS server").clone();
    let files = [
        "--client-ca-keys",
        tls.ca.to_str().expect("utf-8"),
        "--client-cert",
        tls.cert.to_str().expect("utf-8"),
        "--client-key",
        tls.key.to_str().expect("utf-8"),
    ];
    etcd.put("/app/x", "1").await;
    let dir = app_confdir(XY_TEMPLATE, "true");
    let daemon = watch(&dir, &etcd.endpoint(), &files);
    wait_app(&daemon, &dir, "x=1 y=none\n").await;
    etcd.put("/app/x", "2").await;
    wait_app(&daemon, &dir, "x=2 y=none\n").await;

    let plaintext = etcd.endpoint().replace("https://", "http://");
    let other = app_confdir(XY_TEMPLATE, "true");
    let mut refused = watch(&other, &plaintext, &files);
    assert_eq!(refused.exit_code(PATIENCE).await, 2, "{}", refused.stderr());
    let stderr = refused.stderr();
    assert!(
        stderr.contains(&format!(
            "TLS files given but endpoint {plaintext} is plaintext"
        )),
        "{stderr}"
    );
    assert!(!other.exists("out/app.conf"));
}

#[tokio::test]
async fn a_key_disappears_from_the_output_when_its_lease_expires() {
    let etcd = EtcdServer::start().await;
    let dir = app_confdir(XY_TEMPLATE, "true");
    let daemon = watch(&dir, &etcd.endpoint(), &[]);
    wait_app(&daemon, &dir, "x=none y=none\n").await;

    let mut client = etcd.client().await;
    let lease = client.lease_grant(2, None).await.expect("lease").id();
    let with_lease = PutOptions::new().with_lease(lease);
    client
        .put("/app/x", "leased", Some(with_lease))
        .await
        .expect("put");
    wait_app(&daemon, &dir, "x=leased y=none\n").await;
    wait_app(&daemon, &dir, "x=none y=none\n").await;
}

#[tokio::test]
async fn sighup_applies_a_valid_new_resource_and_keeps_the_old_set_for_a_broken_one() {
    let etcd = EtcdServer::start().await;
    let dir = app_confdir(XY_TEMPLATE, "true");
    let daemon = watch(&dir, &etcd.endpoint(), &[]);
    wait_app(&daemon, &dir, "x=none y=none\n").await;

    etcd.put("/other/z", "1").await;
    dir.template("other.tmpl", "z={{ getv(key=\"/z\") }}\n");
    dir.resource(
        "other.toml",
        "[template]\nsrc = \"other.tmpl\"\ndest = \"out/other.conf\"\nprefix = \"/other\"\nkeys = [\"/z\"]\n",
    );
    daemon.signal(Signal::SIGHUP);
    let other = |expected: &'static str| {
        let dir = &dir;
        move || dir.try_read("out/other.conf").as_deref() == Some(expected)
    };
    daemon
        .wait_for("the new resource is applied", PATIENCE, other("z=1\n"))
        .await;
    etcd.put("/other/z", "2").await;
    daemon
        .wait_for(
            "the new resource's keys are watched",
            PATIENCE,
            other("z=2\n"),
        )
        .await;

    dir.resource("broken.toml", "[template\nsrc = ");
    daemon.signal(Signal::SIGHUP);
    daemon
        .wait_for("the broken set is refused", PATIENCE, || {
            daemon.stderr().contains("reload refused")
        })
        .await;
    assert!(
        daemon.stderr().contains("broken.toml"),
        "{}",
        daemon.stderr()
    );
    etcd.put("/app/x", "after").await;
    etcd.put("/other/z", "3").await;
    wait_app(&daemon, &dir, "x=after y=none\n").await;
    daemon
        .wait_for("the old set keeps working", PATIENCE, other("z=3\n"))
        .await;
}

#[tokio::test]
async fn sigterm_during_a_slow_reload_waits_for_it_and_exits_0() {
    let etcd = EtcdServer::start().await;
    let log = "$(dirname {{.dest}})/reload.log";
    let dir = app_confdir(
        XY_TEMPLATE,
        &format!("echo start >> {log}; sleep 2; echo done >> {log}"),
    );
    // Already up to date: the first apply runs no reload.
    dir.write("out/app.conf", "x=none y=none\n");
    let mut daemon = watch(&dir, &etcd.endpoint(), &[]);
    etcd.put("/app/x", "1").await;
    daemon
        .wait_for("the slow reload started", PATIENCE, || {
            reloads(&dir) == ["start"]
        })
        .await;

    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.exit_code(PATIENCE).await, 0, "{}", daemon.stderr());
    assert_eq!(reloads(&dir), ["start", "done"]);
    assert_eq!(dir.read("out/app.conf"), "x=1 y=none\n");
}

#[tokio::test]
async fn interval_mode_applies_a_put_at_the_next_interval() {
    let etcd = EtcdServer::start().await;
    let dir = app_confdir(XY_TEMPLATE, "true");
    let args = etcd_args(&["--interval", "1"], &[etcd.endpoint()], &[]);
    let daemon = Daemon::start(&dir, &args);
    wait_app(&daemon, &dir, "x=none y=none\n").await;
    etcd.put("/app/x", "1").await;
    wait_app(&daemon, &dir, "x=1 y=none\n").await;
}

#[tokio::test]
async fn onetime_renders_every_resource_at_one_revision() {
    let etcd = EtcdServer::start().await;
    etcd.put("/app/x", "1").await;
    etcd.put("/other/z", "2").await;
    let dir = app_confdir("rev={{ revision }} x={{ getv(key=\"/x\") }}\n", "true");
    dir.template(
        "other.tmpl",
        "rev={{ revision }} z={{ getv(key=\"/z\") }}\n",
    );
    dir.resource(
        "other.toml",
        "[template]\nsrc = \"other.tmpl\"\ndest = \"out/other.conf\"\nprefix = \"/other\"\nkeys = [\"/z\"]\n",
    );
    let revision = etcd.revision().await;

    let mut run = Daemon::start(&dir, &etcd_args(&["--onetime"], &[etcd.endpoint()], &[]));
    assert_eq!(run.exit_code(PATIENCE).await, 0, "{}", run.stderr());
    assert_eq!(dir.read("out/app.conf"), format!("rev={revision} x=1\n"));
    assert_eq!(dir.read("out/other.conf"), format!("rev={revision} z=2\n"));
}

#[tokio::test]
async fn onetime_with_etcd_down_exits_1_without_retrying() {
    let port = free_port();
    let dir = app_confdir(XY_TEMPLATE, "true");
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut run = Daemon::start(&dir, &etcd_args(&["--onetime"], &[endpoint], &[]));
    assert_eq!(run.exit_code(PATIENCE).await, 1, "{}", run.stderr());
    let stderr = run.stderr();
    assert!(
        stderr.contains("cannot read keys") && stderr.contains("Connection refused"),
        "{stderr}"
    );
    assert!(!dir.exists("out/app.conf"));
}
