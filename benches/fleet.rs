//! Many daemons on one etcd: 200 `conflux --watch` processes, each rendering the
//! repository's gateway template (`templates/nginx.conf.tmpl`, keys `/listen`,
//! `/services`, `/routes` under `/gateway`) into its own directory, default settings,
//! (a) connected to etcd directly and (b) through `etcd grpc-proxy`. Run with
//! `cargo bench --bench fleet` (one layout: `-- direct` or `-- proxy`; fewer daemons:
//! `CONFLUX_FLEET=50`).
//!
//! The resource has no `check_cmd` or `reload_cmd`: 200 `nginx -t` on two cores would
//! measure nginx, not etcd's fan-out. Measured from outside: etcd's watcher and stream
//! gauges and request counters from its /metrics, etcd's CPU (utime + stime in clock
//! ticks from /proc) over changes, put → file for every daemon, the daemons' total
//! VmRSS, and what a simultaneous restart of all of them costs etcd.

// Test code: a failed unwrap is a failed test (the lint is for the product).
#![allow(clippy::unwrap_used)]

#[path = "../tests/support/etcd.rs"]
mod etcd;
#[path = "support/harness.rs"]
mod harness;
#[path = "support/measure.rs"]
mod measure;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use etcd::EtcdServer;
use harness::*;
use tokio::runtime::Runtime;

/// Changes put one at a time, each waited for in every daemon's file.
const CHANGES: usize = 10;

fn main() {
    let wanted = wanted();
    let rt = runtime();
    let daemons: usize = std::env::var("CONFLUX_FLEET")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    machine();
    if wanted("direct") {
        fleet(&rt, daemons, false);
    }
    if wanted("proxy") {
        fleet(&rt, daemons, true);
    }
}

fn fleet(rt: &Runtime, n: usize, via_proxy: bool) {
    let server = rt.block_on(EtcdServer::start());
    rt.block_on(seed_gateway(&server));
    let proxy = via_proxy.then(|| GrpcProxy::start(&server.endpoint()));
    let endpoint = proxy
        .as_ref()
        .map_or_else(|| server.endpoint(), |p| p.endpoint.clone());
    let layout = if via_proxy {
        "through etcd grpc-proxy"
    } else {
        "directly"
    };
    println!("\n## {n} daemons, each rendering the gateway resource, connected {layout}");

    let dirs: Vec<Confdir> = (0..n).map(|_| gateway_confdir()).collect();
    let dests: Vec<PathBuf> = dirs.iter().map(|d| d.dest("gateway")).collect();
    let before = etcd_counters(&server);
    let start = Instant::now();
    let mut daemons: Vec<Daemon> = dirs
        .iter()
        .map(|d| Daemon::spawn(d, &endpoint, &[]))
        .collect();
    wait_for(|| dests.iter().all(|d| d.exists()));
    let started = start.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let after = etcd_counters(&server);
    let page = metrics_page(&server.endpoint());
    println!(
        "   start: all {n} files written {:.0} ms after the first spawn; etcd saw {}",
        ms(started),
        after.since(&before)
    );
    println!(
        "   etcd watchers {} (etcd_debugging_mvcc_watcher_total), watch streams {} (etcd_debugging_mvcc_watch_stream_total)",
        metric_sum(&page, "etcd_debugging_mvcc_watcher_total"),
        metric_sum(&page, "etcd_debugging_mvcc_watch_stream_total")
    );
    let rss: f64 = daemons.iter().map(|d| proc_status(d.pid()).rss_mb).sum();
    println!(
        "   daemons' total VmRSS {rss:.0} MiB ({:.1} MiB each on average)",
        rss / n as f64
    );

    changes(rt, &server, proxy.as_ref(), &dests);

    // A simultaneous restart: every daemon stopped, out/ cleared so that every one
    // writes its file again, all spawned at once.
    for d in daemons.drain(..) {
        d.stop();
    }
    for d in &dirs {
        d.clear_out();
    }
    let before = etcd_counters(&server);
    let ticks = cpu_ticks(server.pid());
    let start = Instant::now();
    daemons = dirs
        .iter()
        .map(|d| Daemon::spawn(d, &endpoint, &[]))
        .collect();
    wait_for(|| dests.iter().all(|d| d.exists()));
    let restarted = start.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let after = etcd_counters(&server);
    println!(
        "   simultaneous restart of all {n}: every file written again {:.0} ms after the first spawn; etcd saw {}; etcd CPU {:.0} ms",
        ms(restarted),
        after.since(&before),
        tick_ms(cpu_ticks(server.pid()) - ticks)
    );
    for d in daemons {
        d.stop();
    }
}

/// `CHANGES` puts of a new route, one at a time: for each, the time until every
/// daemon's file was replaced, and etcd's CPU over all of them.
fn changes(rt: &Runtime, server: &EtcdServer, proxy: Option<&GrpcProxy>, dests: &[PathBuf]) {
    let mut client = rt.block_on(server.client());
    let mut every_file = Vec::new();
    let mut all_files = Vec::new();
    let ticks_before = cpu_ticks(server.pid());
    let proxy_before = proxy.map(|p| cpu_ticks(p.pid()));
    let mut busy = Duration::ZERO;
    for i in 0..CHANGES {
        std::thread::sleep(Duration::from_millis(500));
        let before: Vec<Option<SystemTime>> = dests.iter().map(|d| modified(d)).collect();
        let route = format!(r#"{{"path": "/r{i}/", "service": "api"}}"#);
        let t = Instant::now();
        rt.block_on(client.put(format!("/gateway/routes/r{i}"), route, None))
            .expect("put");
        let mut done: Vec<Option<Duration>> = vec![None; dests.len()];
        wait_for(|| {
            for (j, dest) in dests.iter().enumerate() {
                if done[j].is_none() && modified(dest) != before[j] {
                    done[j] = Some(t.elapsed());
                }
            }
            done.iter().all(Option::is_some)
        });
        busy += t.elapsed();
        let done: Vec<Duration> = done.into_iter().flatten().collect();
        all_files.push(*done.iter().max().expect("some daemons"));
        every_file.extend(done);
    }
    let etcd_ms = tick_ms(cpu_ticks(server.pid()) - ticks_before);
    println!(
        "   {CHANGES} changes (a new route each), one at a time, {} files each:",
        dests.len()
    );
    percentiles("  put → one daemon's file ", &mut every_file);
    percentiles("  put → all files replaced", &mut all_files);
    println!(
        "     etcd CPU over the {CHANGES} changes: {etcd_ms:.0} ms ({:.1} ms per change; {:.0} ms of wall time from the puts to the last file)",
        etcd_ms / CHANGES as f64,
        ms(busy)
    );
    if let (Some(p), Some(before)) = (proxy, proxy_before) {
        let proxy_ms = tick_ms(cpu_ticks(p.pid()) - before);
        println!(
            "     grpc-proxy CPU over them: {proxy_ms:.0} ms ({:.1} ms per change)",
            proxy_ms / CHANGES as f64
        );
    }
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn tick_ms(ticks: u64) -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 * 1000.0 / hz
}

/// A confdir with the repository's gateway template and a resource like
/// conf.d/gateway.toml, without its check and reload commands.
fn gateway_confdir() -> Confdir {
    let dir = Confdir::new();
    let template = concat!(env!("CARGO_MANIFEST_DIR"), "/templates/nginx.conf.tmpl");
    dir.template(
        "nginx.conf.tmpl",
        &std::fs::read_to_string(template).expect("the gateway template"),
    );
    let dest = dir.dest("gateway");
    let resource = format!(
        "[template]\nsrc = \"nginx.conf.tmpl\"\ndest = \"{}\"\nprefix = \"/gateway\"\nkeys = [\"/listen\", \"/services\", \"/routes\"]\nmode = \"0644\"\n",
        dest.display()
    );
    std::fs::write(dir.root().join("conf.d/gateway.toml"), resource).expect("resource");
    dir
}

/// The keys of examples/gateway.yaml.
async fn seed_gateway(server: &EtcdServer) {
    let mut client = server.client().await;
    let pairs = [
        ("/gateway/listen", "127.0.0.1:8080"),
        (
            "/gateway/services/api/api-1",
            r#"{"addr": "127.0.0.1:9001", "weight": 3}"#,
        ),
        (
            "/gateway/services/api/api-2",
            r#"{"addr": "127.0.0.1:9002", "weight": 1}"#,
        ),
        (
            "/gateway/services/static/static-1",
            r#"{"addr": "127.0.0.1:9101", "weight": 1}"#,
        ),
        (
            "/gateway/routes/api",
            r#"{"path": "/api/", "service": "api", "strip_prefix": true}"#,
        ),
        (
            "/gateway/routes/assets",
            r#"{"path": "/assets/", "service": "static", "host": "www.example.test"}"#,
        ),
    ];
    seed(
        &mut client,
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
    .await;
}

/// What etcd counted: gRPC requests started by method, and bytes it received and sent.
struct Counters {
    requests: BTreeMap<String, u64>,
    received: f64,
    sent: f64,
}

impl Counters {
    fn since(&self, before: &Counters) -> String {
        format!(
            "requests {}, {:.0} KiB received, {:.0} KiB sent",
            show(&difference(&before.requests, &self.requests)),
            (self.received - before.received) / 1024.0,
            (self.sent - before.sent) / 1024.0
        )
    }
}

fn etcd_counters(server: &EtcdServer) -> Counters {
    let page = metrics_page(&server.endpoint());
    Counters {
        requests: grpc_started(server),
        received: metric_sum(&page, "etcd_network_client_grpc_received_bytes_total"),
        sent: metric_sum(&page, "etcd_network_client_grpc_sent_bytes_total"),
    }
}

/// `etcd grpc-proxy start` on a free loopback port, in front of `upstream`; killed on drop.
struct GrpcProxy {
    child: Child,
    endpoint: String,
}

impl GrpcProxy {
    fn start(upstream: &str) -> GrpcProxy {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("etcd")
            .args(["grpc-proxy", "start"])
            .arg(format!("--endpoints={upstream}"))
            .arg(format!("--listen-addr=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run etcd grpc-proxy (Debian's etcd-server)");
        let endpoint = format!("http://127.0.0.1:{port}");
        wait_for(|| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        GrpcProxy { child, endpoint }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for GrpcProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
