//! The gateway running for a `--watch` test: a real etcd behind a blocking face, the
//! real binary following it, nginx on what it rendered. The confdir is the repository's
//! (a [`Gateway`] copy) with one change: its check_cmd and reload_cmd are wrapped so that
//! each run appends a line to `commands.log` ("check ok", "check failed", "reload"),
//! the order in which conflux ran them, for the check-before-reload assertion.

use std::thread;
use std::time::{Duration, Instant};

use etcd_client::{Client, PutOptions};
use serde_json::json;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use super::Gateway;
use crate::harness::Daemon;
use crate::nginx::{Nginx, Upstream};
use crate::support::etcd::EtcdServer;

/// How long anything may take to show (a reload, a lease expiry, a log line).
pub(super) const DEADLINE: Duration = Duration::from_secs(10);

/// A real etcd with a blocking face: the tests are plain threads, as nginx and the
/// HTTP client are.
pub(super) struct Etcd {
    client: Client,
    server: EtcdServer,
    rt: Runtime,
}

impl Etcd {
    pub(super) fn start() -> Etcd {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let server = rt.block_on(EtcdServer::start());
        let client = rt.block_on(server.client());
        Etcd { client, server, rt }
    }

    /// The client URL, for another process to connect to.
    pub(super) fn endpoint(&self) -> String {
        self.server.endpoint()
    }

    /// Puts `key`; returns the revision of the put.
    pub(super) fn put(&self, key: &str, value: &str) -> i64 {
        self.put_with(key, value, None)
    }

    /// Puts `key` attached to `lease`: etcd deletes it when the lease expires.
    pub(super) fn put_leased(&self, key: &str, value: &str, lease: i64) -> i64 {
        self.put_with(key, value, Some(PutOptions::new().with_lease(lease)))
    }

    fn put_with(&self, key: &str, value: &str, options: Option<PutOptions>) -> i64 {
        let mut client = self.client.clone();
        let resp = self
            .rt
            .block_on(client.put(key, value, options))
            .expect("etcd put");
        resp.header().expect("header").revision()
    }

    /// Deletes `key`; returns the revision of the delete.
    pub(super) fn delete(&self, key: &str) -> i64 {
        let mut client = self.client.clone();
        let resp = self
            .rt
            .block_on(client.delete(key, None))
            .expect("etcd delete");
        resp.header().expect("header").revision()
    }

    pub(super) fn exists(&self, key: &str) -> bool {
        let mut client = self.client.clone();
        let resp = self.rt.block_on(client.get(key, None)).expect("etcd get");
        !resp.kvs().is_empty()
    }

    /// A new lease of `ttl` seconds, not kept alive.
    pub(super) fn grant(&self, ttl: i64) -> i64 {
        let mut client = self.client.clone();
        let resp = self
            .rt
            .block_on(client.lease_grant(ttl, None))
            .expect("lease grant");
        resp.id()
    }

    /// Renews `lease` every 500 ms until the returned handle is dropped, as
    /// `etcdctl lease keep-alive` does until it is killed.
    pub(super) fn keep_alive(&self, lease: i64) -> KeepAlive {
        let mut client = self.client.clone();
        let task = self.rt.spawn(async move {
            let (mut keeper, mut answers) = client
                .lease_keep_alive(lease)
                .await
                .expect("lease keep-alive");
            loop {
                keeper.keep_alive().await.expect("renew the lease");
                answers.message().await.expect("renewal answer");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        KeepAlive(task)
    }
}

/// A lease being renewed; dropping it stops the renewals, as a crash would.
pub(super) struct KeepAlive(JoinHandle<()>);

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `conflux --watch --backend etcdv3` on the gateway's confdir: the harness's
/// [`Daemon`] (stopped with SIGTERM on drop), plus log polling.
pub(super) struct Watcher(Daemon);

impl Watcher {
    pub(super) fn start(gw: &Gateway, endpoint: &str) -> Watcher {
        Watcher(Daemon::start(
            &gw.dir,
            &["--watch", "--backend", "etcdv3", "--node", endpoint],
        ))
    }

    pub(super) fn log(&self) -> String {
        self.0.stderr()
    }

    #[track_caller]
    pub(super) fn assert_running(&mut self) {
        self.0.assert_running();
    }

    /// Polls the log until `done` holds for it; panics with the log after [`DEADLINE`].
    #[track_caller]
    pub(super) fn wait_for_log(&mut self, what: &str, done: impl Fn(&str) -> bool) {
        let end = Instant::now() + DEADLINE;
        while !done(&self.log()) {
            self.assert_running();
            assert!(
                Instant::now() < end,
                "conflux log: no {what} within {DEADLINE:?}:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The lines of a conflux log that contain `what` and carry a `revision=` at
/// `revision` or later.
pub(super) fn lines_since<'a>(log: &'a str, what: &str, revision: i64) -> Vec<&'a str> {
    log.lines()
        .filter(|l| l.contains(what))
        .filter(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("revision="))
                .and_then(|r| r.parse::<i64>().ok())
                .is_some_and(|r| r >= revision)
        })
        .collect()
}

/// The whole gateway running: etcd, conflux following it, nginx on what it rendered.
/// Fields drop in order: conflux stops before nginx, nginx before the confdir goes.
pub(super) struct Live {
    pub(super) conflux: Watcher,
    nginx: Nginx,
    pub(super) etcd: Etcd,
    pub(super) gw: Gateway,
}

impl Live {
    /// Starts etcd with `/gateway/listen` only, conflux on it, and nginx once the first
    /// render has been checked and its (skipped) reload has run.
    pub(super) fn start() -> Live {
        let gw = Gateway::new();
        log_commands(&gw);
        let etcd = Etcd::start();
        etcd.put("/gateway/listen", &gw.listen);
        let mut conflux = Watcher::start(&gw, &etcd.server.endpoint());
        let commands = gw.dir.path("commands.log");
        conflux.wait_for_log("first apply", |_| {
            std::fs::read_to_string(&commands).is_ok_and(|l| l.contains("reload"))
        });
        let nginx = gw.start_nginx();
        Live {
            conflux,
            nginx,
            etcd,
            gw,
        }
    }

    pub(super) fn addr(&self) -> &str {
        self.nginx.addr()
    }

    /// Waits until nginx's workers of older configurations are gone: after this, every
    /// new connection is served by the current configuration.
    pub(super) fn settle(&self) {
        self.nginx.wait_old_workers_gone();
    }

    /// The lines of `commands.log`.
    pub(super) fn commands(&self) -> Vec<String> {
        self.gw
            .dir
            .read("commands.log")
            .lines()
            .map(String::from)
            .collect()
    }

    pub(super) fn reloads(&self) -> usize {
        self.commands().iter().filter(|l| *l == "reload").count()
    }

    /// Asserts that every "reload" in `commands.log` directly follows a "check ok";
    /// returns how many reloads there were.
    #[track_caller]
    pub(super) fn assert_every_reload_was_checked(&self) -> usize {
        let lines = self.commands();
        for (i, line) in lines.iter().enumerate() {
            if line == "reload" {
                assert!(
                    i > 0 && lines[i - 1] == "check ok",
                    "reload #{i} not directly after a passing check:\n{}",
                    lines.join("\n")
                );
            }
        }
        self.reloads()
    }

    /// Registers an instance without a lease.
    pub(super) fn instance(&self, service: &str, name: &str, up: &Upstream, weight: u32) -> i64 {
        self.etcd
            .put(&instance_key(service, name), &instance_value(up, weight))
    }

    pub(super) fn route(&self, name: &str, path: &str, service: &str) -> i64 {
        let value = json!({"path": path, "service": service}).to_string();
        self.etcd.put(&route_key(name), &value)
    }
}

/// Wraps the shipped check_cmd and reload_cmd of the confdir's `gateway.toml` so that
/// each run appends its outcome to `commands.log`; the shipped commands still do the work.
pub(super) fn log_commands(gw: &Gateway) {
    let log = gw.dir.path("commands.log");
    let log = log.display();
    let toml = gw.dir.read("conf.d/gateway.toml");
    let shipped = |name: &str| {
        toml.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} = '")))
            .and_then(|rest| rest.strip_suffix('\''))
            .unwrap_or_else(|| panic!("no {name} = '...' in gateway.toml"))
            .to_string()
    };
    let (check, reload) = (shipped("check_cmd"), shipped("reload_cmd"));
    let wrapped_check = format!(
        r#"check_cmd = 'if {check}; then echo "check ok" >> {log}; else echo "check failed" >> {log}; exit 1; fi'"#
    );
    let wrapped_reload = format!("reload_cmd = 'echo reload >> {log}; {reload}'");
    let toml = toml
        .lines()
        .map(|l| {
            if l.starts_with("check_cmd = ") {
                wrapped_check.as_str()
            } else if l.starts_with("reload_cmd = ") {
                wrapped_reload.as_str()
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    gw.dir.write("conf.d/gateway.toml", &toml);
}

pub(super) fn instance_key(service: &str, name: &str) -> String {
    format!("/gateway/services/{service}/{name}")
}

pub(super) fn instance_value(up: &Upstream, weight: u32) -> String {
    json!({"addr": up.addr(), "weight": weight}).to_string()
}

pub(super) fn route_key(name: &str) -> String {
    format!("/gateway/routes/{name}")
}

/// Polls `done` until it holds; panics naming `what` after [`DEADLINE`].
#[track_caller]
pub(super) fn poll(what: &str, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < end, "{what}: not within {DEADLINE:?}");
        thread::sleep(Duration::from_millis(20));
    }
}
