//! `conflux register` against a real etcd: the real binary holds a key under a lease
//! while its health check passes, and the tests look at etcd itself (the key, its
//! lease, the leases that exist) while they stop, kill, restart and provoke it.
//!
//! Deadlines here guard against hanging; none is a speed requirement (the time from
//! SIGTERM to the key's deletion is measured in `benches/register.rs`). Where the
//! issue says "at once" or "after the TTL", the tests tell the two apart by the lease:
//! a revoked lease is gone while its TTL still had long to run.
//!
//! In `connection`: the config file, TLS and credentials shared with the daemon; in
//! `etcd_away`: etcd outages; in `others`: other writers of the key.

mod connection;
mod etcd_away;
mod others;

use std::time::Duration;

use etcd_client::{Client, LeaseTimeToLiveOptions};
use nix::sys::signal::Signal;
use tokio::time::Instant;

use crate::harness::{Confdir, Daemon};
use crate::support::etcd::EtcdServer;

const KEY: &str = "/gateway/services/api/i1";
const VALUE: &str = r#"{"addr": "127.0.0.1:9001"}"#;

/// How long anything may take to show in etcd or the log.
const DEADLINE: Duration = Duration::from_secs(20);

/// `conflux register --node <etcd> --key KEY --value VALUE <extra>`, with the state
/// directory of `dir`.
fn register(dir: &Confdir, etcd: &EtcdServer, extra: &[&str]) -> Daemon {
    let endpoint = etcd.endpoint();
    let mut args = vec![
        "register", "--node", &endpoint, "--key", KEY, "--value", VALUE,
    ];
    args.extend_from_slice(extra);
    Daemon::start(dir, &args)
}

/// A fresh etcd, a client of it, a confdir for the state directory, and `conflux
/// register` with `extra` flags running on them.
async fn start(extra: &[&str]) -> (EtcdServer, Client, Confdir, Daemon) {
    let etcd = EtcdServer::start().await;
    let client = etcd.client().await;
    let dir = Confdir::new();
    let daemon = register(&dir, &etcd, extra);
    (etcd, client, dir, daemon)
}

/// The key as etcd holds it: value and lease.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    value: String,
    lease: i64,
}

async fn held(client: &mut Client, key: &str) -> Option<Held> {
    let resp = client.get(key, None).await.expect("etcd get");
    resp.kvs().first().map(|kv| Held {
        value: String::from_utf8_lossy(kv.value()).into_owned(),
        lease: kv.lease(),
    })
}

/// Seconds `lease` has left; -1 once it is gone (revoked or expired).
async fn ttl_left(client: &mut Client, lease: i64) -> i64 {
    client
        .lease_time_to_live(lease, Some(LeaseTimeToLiveOptions::new()))
        .await
        .expect("lease time-to-live")
        .ttl()
}

async fn leases(client: &mut Client) -> Vec<i64> {
    let resp = client.leases().await.expect("list leases");
    resp.leases().iter().map(|l| l.id()).collect()
}

/// Polls the key until `want` holds for it; panics with the register's log.
async fn wait_key(
    client: &mut Client,
    daemon: &Daemon,
    what: &str,
    want: impl Fn(&Option<Held>) -> bool,
) -> Option<Held> {
    let end = Instant::now() + DEADLINE;
    loop {
        let now = held(client, KEY).await;
        if want(&now) {
            return now;
        }
        assert!(
            Instant::now() < end,
            "{what}: not within {DEADLINE:?}; the key is {now:?}\n--- conflux register's stderr\n{}",
            daemon.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for `line` in the register's log. A line logged after an etcd request is
/// written once its answer is in, a moment after the test may have seen its effect in
/// etcd: reading the log once at that point would race with it.
async fn wait_log(daemon: &Daemon, line: &str) {
    daemon
        .wait_for(&format!("{line:?} in the log"), DEADLINE, || {
            daemon.stderr().contains(line)
        })
        .await;
}

/// Waits until the key holds VALUE under some lease; returns that lease.
async fn registered(client: &mut Client, daemon: &Daemon) -> i64 {
    let held = wait_key(client, daemon, "registered", |h| {
        h.as_ref().is_some_and(|h| h.value == VALUE && h.lease != 0)
    })
    .await;
    held.expect("registered").lease
}

#[tokio::test]
async fn the_key_is_put_under_a_lease_of_the_ttl() {
    let (_etcd, mut client, _dir, daemon) = start(&["--ttl", "7s"]).await;
    let lease = registered(&mut client, &daemon).await;
    let granted = client
        .lease_time_to_live(lease, None)
        .await
        .expect("lease time-to-live")
        .granted_ttl();
    assert_eq!(granted, 7);
    wait_log(&daemon, " registered ").await;
}

#[tokio::test]
async fn keep_alive_holds_the_key_past_several_ttls() {
    let (_etcd, mut client, _dir, mut daemon) = start(&["--ttl", "2s"]).await;
    let lease = registered(&mut client, &daemon).await;
    // Four TTLs: without renewals the key would have gone after the first.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = held(&mut client, KEY).await;
        assert_eq!(now.map(|h| h.lease), Some(lease), "{}", daemon.stderr());
    }
    daemon.assert_running();
}

#[tokio::test]
async fn sigterm_revokes_the_lease_and_exits_0() {
    let (_etcd, mut client, _dir, mut daemon) = start(&["--ttl", "60s"]).await;
    let lease = registered(&mut client, &daemon).await;
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.exit_code(DEADLINE).await, 0, "{}", daemon.stderr());
    // Gone by the time the process has exited, and by revocation: the lease had
    // nearly a minute left.
    assert_eq!(held(&mut client, KEY).await, None);
    assert_eq!(ttl_left(&mut client, lease).await, -1);
    assert!(
        daemon
            .stderr()
            .contains("deregistered: lease revoked, key deleted"),
        "{}",
        daemon.stderr()
    );
}

#[tokio::test]
async fn sigint_does_the_same() {
    let (_etcd, mut client, _dir, mut daemon) = start(&["--ttl", "60s"]).await;
    registered(&mut client, &daemon).await;
    daemon.signal(Signal::SIGINT);
    assert_eq!(daemon.exit_code(DEADLINE).await, 0, "{}", daemon.stderr());
    assert_eq!(held(&mut client, KEY).await, None);
}

#[tokio::test]
async fn kill_9_leaves_the_key_until_the_ttl_and_no_longer() {
    let (_etcd, mut client, _dir, mut daemon) = start(&["--ttl", "3s"]).await;
    let lease = registered(&mut client, &daemon).await;
    daemon.signal(Signal::SIGKILL);
    assert_eq!(daemon.exit_code(DEADLINE).await, -1);
    // Still there, under a lease nobody renews: it has at most the TTL left.
    assert_eq!(held(&mut client, KEY).await.map(|h| h.lease), Some(lease));
    let left = ttl_left(&mut client, lease).await;
    assert!((1..=3).contains(&left), "{left} s left");
    wait_key(
        &mut client,
        &daemon,
        "expired with the lease",
        Option::is_none,
    )
    .await;
    assert_eq!(ttl_left(&mut client, lease).await, -1);
}

/// systemd's `Restart=always` after a crash: the new process finds its
/// predecessor's lease on the key. It must take it back as its own (revoking the old
/// lease), not call the key another instance's and exit 1 until the TTL ran out.
#[tokio::test]
async fn a_restart_after_kill_9_replaces_its_own_previous_lease() {
    let etcd = EtcdServer::start().await;
    let mut client = etcd.client().await;
    let dir = Confdir::new();
    let mut first = register(&dir, &etcd, &["--ttl", "60s"]);
    let old = registered(&mut client, &first).await;
    first.signal(Signal::SIGKILL);
    first.exit_code(DEADLINE).await;
    let mut second = register(&dir, &etcd, &["--ttl", "60s"]);
    let new = wait_key(&mut client, &second, "registered anew", |h| {
        h.as_ref().is_some_and(|h| h.lease != 0 && h.lease != old)
    })
    .await;
    assert_eq!(new.map(|h| h.value).as_deref(), Some(VALUE));
    assert_eq!(
        ttl_left(&mut client, old).await,
        -1,
        "the old lease revoked"
    );
    assert_eq!(leases(&mut client).await.len(), 1);
    second.assert_running();
}

#[tokio::test]
async fn a_failing_check_deregisters_after_fall_checks_and_registers_after_rise() {
    let etcd = EtcdServer::start().await;
    let mut client = etcd.client().await;
    let dir = Confdir::new();
    let marker = dir.write("healthy", "");
    let checks = dir.path("checks.log");
    // Each check appends its result, so the test can count them.
    let check = format!(
        "if test -e {m}; then echo pass >> {c}; else echo fail >> {c}; exit 1; fi",
        m = marker.display(),
        c = checks.display()
    );
    let daemon = register(
        &dir,
        &etcd,
        &[
            "--check-cmd",
            &check,
            "--check-interval",
            "500ms",
            "--rise",
            "2",
            "--fall",
            "3",
        ],
    );
    let count = |word: &str| {
        std::fs::read_to_string(&checks)
            .unwrap_or_default()
            .lines()
            .filter(|l| *l == word)
            .count()
    };
    registered(&mut client, &daemon).await;
    assert!(count("pass") >= 2, "registered before two passing checks");

    std::fs::remove_file(&marker).unwrap();
    wait_key(&mut client, &daemon, "deregistered", Option::is_none).await;
    assert!(
        count("fail") >= 3,
        "deregistered after {} failures",
        count("fail")
    );
    let log = daemon.stderr();
    assert!(
        log.contains("unhealthy: the check failed 3 time(s) in a row"),
        "{log}"
    );
    wait_log(&daemon, "reason=unhealthy").await;

    let passes_before = count("pass");
    std::fs::write(&marker, "").unwrap();
    registered(&mut client, &daemon).await;
    assert!(
        count("pass") >= passes_before + 2,
        "registered again after {} passing checks",
        count("pass") - passes_before
    );
    assert!(
        daemon
            .stderr()
            .contains("healthy: the check passed 2 time(s) in a row")
    );
}

#[tokio::test]
async fn a_daemon_flag_is_a_usage_error_and_a_missing_value_file_a_configuration_one() {
    let etcd = EtcdServer::start().await;
    let dir = Confdir::new();
    let endpoint = etcd.endpoint();
    let mut watch = Daemon::start(&dir, &["--watch", "register", "--key", KEY, "--value", "v"]);
    assert_eq!(watch.exit_code(DEADLINE).await, 2);
    assert!(watch.stderr().contains("--watch is a flag of the daemon"));
    let mut missing = Daemon::start(
        &dir,
        &[
            "register",
            "--node",
            &endpoint,
            "--key",
            KEY,
            "--value-file",
            "/nonexistent/value",
        ],
    );
    assert_eq!(missing.exit_code(DEADLINE).await, 2);
    assert!(
        missing.stderr().contains("--value-file /nonexistent/value"),
        "{}",
        missing.stderr()
    );
}
