//! Operating conflux, with the real binary and a real etcd: the HTTP endpoint
//! (`/metrics` with exact counter values, `/health` following the loop, `/ready`,
//! `/status`), hot reload of the confdir, JSON logs, systemd notifications over a real
//! unix datagram socket, and `--noop --detailed-exitcode`.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use crate::harness::{Confdir, Daemon};
use crate::nginx::{free_addr, try_get};
use crate::support::etcd::EtcdServer;

const PATIENCE: Duration = Duration::from_secs(20);

/// Two resources under `/app`: `a` renders `/app/a` into `out/a.conf`, `b` renders
/// `/app/b` into `out/b.conf`.
fn two_resources() -> Confdir {
    let dir = Confdir::new();
    for name in ["a", "b"] {
        dir.template(
            &format!("{name}.tmpl"),
            &format!("{name}={{{{ getv(key=\"/{name}\") }}}}\n"),
        );
        dir.resource(
            &format!("{name}.toml"),
            &format!(
                "[template]\nsrc = \"{name}.tmpl\"\ndest = \"out/{name}.conf\"\nprefix = \"/app\"\n\
                 keys = [\"/{name}\"]\n"
            ),
        );
    }
    dir
}

fn watch(dir: &Confdir, etcd: &EtcdServer, extra: &[&str]) -> Daemon {
    let mut args = vec![
        "--watch".to_string(),
        "--backend".into(),
        "etcdv3".into(),
        "--node".into(),
        etcd.endpoint(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Daemon::start(dir, &args)
}

fn get(addr: &str, path: &str) -> (u16, String) {
    try_get(addr, path, None).unwrap_or((0, String::new()))
}

/// The value of the metric line that starts with `series` (name and labels).
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn wait_metric(daemon: &Daemon, addr: &str, series: &str, want: f64) {
    daemon
        .wait_for(&format!("{series} = {want}"), PATIENCE, || {
            metric(&get(addr, "/metrics").1, series) == Some(want)
        })
        .await;
}

#[tokio::test]
async fn metrics_ready_and_status_tell_the_truth_about_applies_and_failures() {
    let etcd = EtcdServer::start().await;
    etcd.put("/app/a", "1").await;
    let dir = two_resources();
    let addr = free_addr();
    let daemon = watch(&dir, &etcd, &["--metrics-addr", &addr]);
    // b's key is missing: its render fails, so the daemon is not ready.
    wait_metric(
        &daemon,
        &addr,
        "conflux_apply_total{resource=\"a.toml\",result=\"updated\"}",
        1.0,
    )
    .await;
    wait_metric(
        &daemon,
        &addr,
        "conflux_apply_failures_total{resource=\"b.toml\",step=\"render\"}",
        1.0,
    )
    .await;
    let (code, body) = get(&addr, "/ready");
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("resource b.toml") && body.contains("/b"),
        "{body}"
    );
    assert!(!body.contains("a.toml"), "{body}");

    etcd.put("/app/b", "2").await;
    daemon
        .wait_for("ready once b applied", PATIENCE, || {
            get(&addr, "/ready").0 == 200
        })
        .await;
    let text = get(&addr, "/metrics").1;
    let revision = etcd.revision().await;
    for (series, want) in [
        (
            "conflux_apply_total{resource=\"a.toml\",result=\"updated\"}",
            1.0,
        ),
        (
            "conflux_apply_total{resource=\"b.toml\",result=\"updated\"}",
            1.0,
        ),
        (
            "conflux_apply_total{resource=\"b.toml\",result=\"failed\"}",
            1.0,
        ),
        ("conflux_resource_degraded{resource=\"b.toml\"}", 0.0),
        (
            "conflux_resource_revision{resource=\"b.toml\"}",
            revision as f64,
        ),
        ("conflux_backend_revision", revision as f64),
        ("conflux_backend_connected", 1.0),
        ("conflux_watch_reconnects_total", 0.0),
    ] {
        assert_eq!(metric(&text, series), Some(want), "{series} in\n{text}");
    }
    assert!(text.contains("process_resident_memory_bytes"), "{text}");
    assert!(
        text.contains("conflux_apply_duration_seconds_bucket{resource=\"a.toml\""),
        "{text}"
    );

    let (code, status) = get(&addr, "/status");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&status).expect("JSON status");
    assert_eq!(status["backend"]["connected"], true);
    assert_eq!(status["backend"]["revision"], revision);
    let b = &status["resources"]["b.toml"];
    assert_eq!(b["degraded"], false);
    assert_eq!(b["revision_applied"], revision);
    assert_eq!(b["last"]["result"], "updated");
    assert_eq!(b["last"]["step"], "swap");
    assert!(
        b["files"][0].as_str().unwrap().ends_with("out/b.conf"),
        "{b}"
    );
}

#[tokio::test]
async fn health_follows_the_loop_and_fails_while_it_is_blocked() {
    let etcd = EtcdServer::start().await;
    etcd.put("/app/a", "1").await;
    etcd.put("/app/b", "1").await;
    let dir = two_resources();
    let addr = free_addr();
    let stall = dir.path("stall");
    let daemon = Daemon::start_env(
        &dir,
        &[
            "--watch",
            "--backend",
            "etcdv3",
            "--node",
            &etcd.endpoint(),
            "--metrics-addr",
            &addr,
        ],
        &[("CONFLUX_TEST_STALL_FILE", stall.to_str().unwrap())],
    );
    daemon
        .wait_for("healthy", PATIENCE, || get(&addr, "/health").0 == 200)
        .await;
    dir.write("stall", "");
    daemon
        .wait_for("unhealthy while the loop is blocked", PATIENCE, || {
            get(&addr, "/health").0 == 503
        })
        .await;
    std::fs::remove_file(&stall).unwrap();
    daemon
        .wait_for("healthy again", PATIENCE, || get(&addr, "/health").0 == 200)
        .await;
}

#[tokio::test]
async fn ready_waits_for_the_backend() {
    let mut etcd = EtcdServer::start().await;
    etcd.put("/app/a", "1").await;
    etcd.put("/app/b", "1").await;
    etcd.kill();
    let dir = two_resources();
    let addr = free_addr();
    let daemon = watch(&dir, &etcd, &["--metrics-addr", &addr]);
    daemon
        .wait_for("the endpoint answers", PATIENCE, || {
            get(&addr, "/ready").0 == 503
        })
        .await;
    assert!(get(&addr, "/ready").1.contains("not connected"));
    etcd.restart().await;
    daemon
        .wait_for("ready once etcd is back", PATIENCE, || {
            get(&addr, "/ready").0 == 200
        })
        .await;
}

/// The daemon's JSON log lines, parsed.
fn json_lines(daemon: &Daemon) -> Vec<serde_json::Value> {
    daemon
        .stderr()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// How many "applied" lines the log has for `resource`.
fn applies(daemon: &Daemon, resource: &str) -> usize {
    json_lines(daemon)
        .iter()
        .filter(|l| l["message"] == "applied" && l["resource"] == resource)
        .count()
}

#[tokio::test]
async fn json_logs_carry_timestamp_level_message_and_fields() {
    let etcd = EtcdServer::start().await;
    etcd.put("/app/a", "1").await;
    let dir = two_resources();
    let daemon = watch(&dir, &etcd, &["--log-format", "json"]);
    daemon
        .wait_for("a applied", PATIENCE, || applies(&daemon, "a.toml") == 1)
        .await;
    let lines = json_lines(&daemon);
    let applied = lines
        .iter()
        .find(|l| l["message"] == "applied")
        .expect("an applied line");
    assert!(applied["timestamp"].is_string(), "{applied}");
    assert_eq!(applied["level"], "INFO");
    assert_eq!(applied["changed"], true);
    assert!(applied["revision"].is_number(), "{applied}");
    assert!(applied["elapsed_ms"].is_number(), "{applied}");
    let failed = lines
        .iter()
        .find(|l| l["message"] == "apply failed")
        .expect("b's render failed");
    assert_eq!(failed["level"], "ERROR");
    assert_eq!(failed["resource"], "b.toml");
    assert_eq!(failed["step"], "render");
    assert!(failed["cause"].as_str().unwrap().contains("/b"), "{failed}");
}

#[tokio::test]
async fn an_edited_template_reapplies_only_its_resource_and_a_broken_edit_is_refused() {
    let etcd = EtcdServer::start().await;
    etcd.put("/app/a", "1").await;
    etcd.put("/app/b", "1").await;
    let dir = two_resources();
    let addr = free_addr();
    let daemon = watch(
        &dir,
        &etcd,
        &["--log-format", "json", "--metrics-addr", &addr],
    );
    // The log line comes after the file appears: wait for the lines.
    daemon
        .wait_for("both applied", PATIENCE, || {
            applies(&daemon, "a.toml") == 1 && applies(&daemon, "b.toml") == 1
        })
        .await;
    let b_before = applies(&daemon, "b.toml");

    dir.template("a.tmpl", "a is {{ getv(key=\"/a\") }}\n");
    daemon
        .wait_for("the edit applied", PATIENCE, || {
            dir.try_read("out/a.conf").as_deref() == Some("a is 1\n")
        })
        .await;
    assert_eq!(
        applies(&daemon, "b.toml"),
        b_before,
        "b was not applied again"
    );

    // A broken edit is refused; the old set keeps following etcd.
    dir.template("a.tmpl", "a is {{ getv(key=\"/a\" }}\n");
    wait_metric(
        &daemon,
        &addr,
        "conflux_confdir_reloads_total{result=\"refused\"}",
        1.0,
    )
    .await;
    let status: serde_json::Value = serde_json::from_str(&get(&addr, "/status").1).unwrap();
    let refused = status["confdir"]["last_refused"]["error"].as_str().unwrap();
    assert!(refused.contains("template"), "{refused}");
    etcd.put("/app/a", "2").await;
    daemon
        .wait_for("etcd changes still applied", PATIENCE, || {
            dir.try_read("out/a.conf").as_deref() == Some("a is 2\n")
        })
        .await;

    dir.template("a.tmpl", "fixed {{ getv(key=\"/a\") }}\n");
    daemon
        .wait_for("the fix applied", PATIENCE, || {
            dir.try_read("out/a.conf").as_deref() == Some("fixed 2\n")
        })
        .await;
    let status: serde_json::Value = serde_json::from_str(&get(&addr, "/status").1).unwrap();
    assert!(status["confdir"]["last_refused"].is_null(), "{status}");
}

#[tokio::test]
async fn a_burst_of_50_confdir_writes_is_one_reload() {
    let etcd = EtcdServer::start().await;
    etcd.put("/app/a", "1").await;
    etcd.put("/app/b", "1").await;
    let dir = two_resources();
    let addr = free_addr();
    let daemon = watch(&dir, &etcd, &["--metrics-addr", &addr]);
    daemon
        .wait_for("ready", PATIENCE, || get(&addr, "/ready").0 == 200)
        .await;
    for n in 0..50 {
        dir.resource(
            &format!("extra/r{n}.toml"),
            &format!(
                "[template]\nsrc = \"a.tmpl\"\ndest = \"out/r{n}.conf\"\nprefix = \"/app\"\nkeys = [\"/a\"]\n"
            ),
        );
    }
    daemon
        .wait_for("the 50 new resources applied", PATIENCE, || {
            (0..50).all(|n| dir.exists(&format!("out/r{n}.conf")))
        })
        .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let text = get(&addr, "/metrics").1;
    assert_eq!(
        metric(&text, "conflux_confdir_reloads_total{result=\"ok\"}"),
        Some(1.0),
        "{text}"
    );
}

/// A unix datagram socket standing in for systemd's notify socket.
struct NotifySocket {
    socket: UnixDatagram,
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        NotifySocket {
            socket,
            _dir: dir,
            path,
        }
    }

    /// The messages received so far, and those that come in the next half second at
    /// most. Bounded: the watchdog's pings come more often than the read timeout, so
    /// reading until a silence could last for minutes (the test once took 390 s).
    fn drain(&self, into: &mut Vec<String>) {
        let until = std::time::Instant::now() + Duration::from_millis(500);
        let mut buf = [0u8; 4096];
        while std::time::Instant::now() < until {
            let Ok(n) = self.socket.recv(&mut buf) else {
                return;
            };
            into.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
}

#[tokio::test]
async fn systemd_hears_ready_status_reloading_stopping_and_the_watchdog() {
    let etcd = EtcdServer::start().await;
    etcd.put("/app/a", "1").await;
    etcd.put("/app/b", "1").await;
    let dir = two_resources();
    let notify = NotifySocket::bind();
    let mut daemon = Daemon::start_env(
        &dir,
        &["--watch", "--backend", "etcdv3", "--node", &etcd.endpoint()],
        &[
            ("NOTIFY_SOCKET", notify.path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let mut heard = Vec::new();
    let deadline = std::time::Instant::now() + PATIENCE;
    while !heard.iter().any(|m: &String| m.contains("READY=1")) {
        assert!(std::time::Instant::now() < deadline, "no READY: {heard:?}");
        notify.drain(&mut heard);
    }
    let ready = heard.iter().find(|m| m.contains("READY=1")).unwrap();
    assert!(ready.contains("STATUS=2 resources at revision"), "{ready}");
    // The watchdog is pinged by the loop, at least every 200 ms.
    heard.clear();
    tokio::time::sleep(Duration::from_secs(1)).await;
    notify.drain(&mut heard);
    let pings = heard.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    assert!(pings >= 3, "{pings} watchdog pings in a second: {heard:?}");

    heard.clear();
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    let deadline = std::time::Instant::now() + PATIENCE;
    while !heard.iter().any(|m| m.contains("READY=1")) {
        assert!(std::time::Instant::now() < deadline, "no reload: {heard:?}");
        notify.drain(&mut heard);
    }
    let reloading = heard.iter().position(|m| m.contains("RELOADING=1"));
    let ready = heard.iter().position(|m| m.contains("READY=1"));
    assert!(reloading.is_some() && reloading < ready, "{heard:?}");

    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(daemon.exit_code(PATIENCE).await, 0);
    heard.clear();
    notify.drain(&mut heard);
    assert!(heard.iter().any(|m| m.contains("STOPPING=1")), "{heard:?}");
}

fn noop(dir: &Confdir) -> crate::harness::Run {
    let data = dir.path("data.yaml");
    dir.run(&[
        "--onetime",
        "--noop",
        "--detailed-exitcode",
        "--backend",
        "file",
        "--file",
        data.to_str().unwrap(),
    ])
}

#[test]
fn detailed_exitcode_says_0_nothing_to_do_3_pending_1_failed() {
    let dir = Confdir::new();
    dir.template("a.tmpl", "a={{ getv(key=\"/a\") }}\n");
    dir.resource(
        "a.toml",
        "[template]\nsrc = \"a.tmpl\"\ndest = \"out/a.conf\"\nkeys = [\"/a\"]\n",
    );
    dir.write("data.yaml", "a: 1\n");
    let pending = noop(&dir);
    pending.assert_code(3);
    assert!(pending.stdout.contains("+a=1"), "{}", pending.stdout);
    assert!(!dir.exists("out/a.conf"));
    dir.write("out/a.conf", "a=1\n");
    noop(&dir).assert_code(0);
    dir.write("data.yaml", "b: 1\n");
    noop(&dir).assert_code(1);
    dir.run(&["--onetime", "--detailed-exitcode", "--backend", "env"])
        .assert_code(2)
        .assert_stderr_contains("--noop");
}
