//! The gateway in `--watch` mode: the real binary following a real etcd, rendering a
//! copy of the repository's confdir for a real nginx in front of upstreams started by
//! the test (see [`super::live`]). Routes and instances change in etcd while nginx
//! serves; instances register under leases, as they would in production.

use std::thread;
use std::time::{Duration, Instant};

use super::live::{DEADLINE, Live, instance_key, instance_value, lines_since, poll, route_key};
use super::load::Load;
use crate::nginx::{Upstream, get, try_get, wait_for};

/// The promise: a route added in etcd serves traffic through nginx within 2 s.
/// A deadline to poll against, not a measurement.
const ROUTE_DEADLINE: Duration = Duration::from_secs(2);

/// Sends batches of `n` requests for `path` until every answer of one batch satisfies
/// `want` (each nginx worker of the previous config may answer for up to ~100 ms after
/// a reload); returns that batch's bodies.
#[track_caller]
fn wait_for_batch(
    addr: &str,
    path: &str,
    n: usize,
    want: impl Fn(u16, &str) -> bool,
) -> Vec<String> {
    let end = Instant::now() + DEADLINE;
    loop {
        let batch: Vec<(u16, String)> = (0..n).map(|_| get(addr, path, None)).collect();
        if batch.iter().all(|(s, b)| want(*s, b)) {
            return batch.into_iter().map(|(_, b)| b).collect();
        }
        assert!(
            Instant::now() < end,
            "GET http://{addr}{path}: no batch of {n} wanted answers within {DEADLINE:?}; last: {batch:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// One upstream `api-1` registered for service `api`, behind route `/api/`, serving.
/// Waits until 50 requests in a row to `path` answer 200.
fn settle(addr: &str, path: &str) {
    let end = Instant::now() + DEADLINE;
    let mut in_a_row = 0;
    while in_a_row < 50 {
        match try_get(addr, path, None) {
            Ok((200, _)) => in_a_row += 1,
            _ => in_a_row = 0,
        }
        assert!(
            Instant::now() < end,
            "{path} never answered 200 50 times in a row"
        );
    }
}

fn api_route(live: &Live) -> Upstream {
    let api = Upstream::start("api-1");
    live.instance("api", "api-1", &api, 1);
    live.route("api", "/api/", "api");
    wait_for(live.addr(), "/api/", None, DEADLINE, |s, b| {
        s == 200 && b == "api-1"
    });
    api
}

#[test]
fn a_route_added_in_etcd_serves_traffic_within_two_seconds() {
    let live = Live::start();
    let api = Upstream::start("api-1");
    live.instance("api", "api-1", &api, 1);
    assert_eq!(get(live.addr(), "/api/users", None).0, 404);

    live.route("api", "/api/", "api");
    wait_for(live.addr(), "/api/users", None, ROUTE_DEADLINE, |s, b| {
        s == 200 && b == "api-1"
    });
    assert!(api.paths().iter().all(|p| p == "/api/users"));
    live.assert_every_reload_was_checked();
}

#[test]
fn instances_registered_under_leases_share_traffic_by_weight() {
    let live = Live::start();
    let (heavy, light) = (Upstream::start("heavy"), Upstream::start("light"));
    for (name, up, weight) in [("heavy", &heavy, 3), ("light", &light, 1)] {
        let lease = live.etcd.grant(60);
        live.etcd.put_leased(
            &instance_key("api", name),
            &instance_value(up, weight),
            lease,
        );
    }
    // The route comes last, so every config that has it has both instances.
    live.route("api", "/api/", "api");

    let bodies = wait_for_batch(live.addr(), "/api/", 80, |s, _| s == 200);
    // 60:20 exactly per worker's round robin; each nginx worker keeps its own.
    let h = bodies.iter().filter(|b| *b == "heavy").count();
    let l = bodies.iter().filter(|b| *b == "light").count();
    assert_eq!(h + l, 80, "{bodies:?}");
    assert!(
        (50..=70).contains(&h),
        "heavy {h}, light {l}: not about 3:1"
    );
    live.assert_every_reload_was_checked();
}

#[test]
fn an_instance_whose_lease_expires_stops_receiving_traffic() {
    let live = Live::start();
    let (stays, crashes) = (Upstream::start("stays"), Upstream::start("crashes"));
    let long = live.etcd.grant(60);
    // 5 s rather than etcd's 2 s minimum: on a loaded machine, seeing both instances
    // serve can take longer than 2 s, and the lease must outlive that (it is renewed
    // every 500 ms until dropped, but a renewal can be late under load).
    let short = live.etcd.grant(5);
    let keeping = live.etcd.keep_alive(short);
    live.etcd.put_leased(
        &instance_key("api", "stays"),
        &instance_value(&stays, 1),
        long,
    );
    live.etcd.put_leased(
        &instance_key("api", "crashes"),
        &instance_value(&crashes, 1),
        short,
    );
    live.route("api", "/api/", "api");
    poll("both instances serving", || {
        let _ = try_get(live.addr(), "/api/", None);
        stays.hits() > 0 && crashes.hits() > 0
    });

    // The instance stops renewing its lease, as a crashed one would. Its upstream keeps
    // running: only the lease, through etcd, conflux and nginx, can take it out.
    drop(keeping);
    let key = instance_key("api", "crashes");
    poll("etcd expiring the 5 s lease", || !live.etcd.exists(&key));
    let bodies = wait_for_batch(live.addr(), "/api/", 20, |s, b| s == 200 && b == "stays");
    assert_eq!(bodies.len(), 20);
    let conf = std::fs::read_to_string(live.gw.conf()).expect("read nginx.conf");
    assert!(!conf.contains(&crashes.addr()), "{conf}");
    live.assert_every_reload_was_checked();
}

#[test]
fn deleting_a_route_in_etcd_gives_404() {
    let live = Live::start();
    let _api = api_route(&live);

    live.etcd.delete(&route_key("api"));
    wait_for(live.addr(), "/api/", None, DEADLINE, |s, _| s == 404);
    live.assert_every_reload_was_checked();
}

#[test]
fn bad_values_leave_the_previous_config_serving_and_the_next_good_change_applies() {
    let mut live = Live::start();
    let _api = api_route(&live);

    // A value the template skips: the rest renders as before.
    live.etcd.put(&route_key("garbled"), "{not json");
    live.conflux.wait_for_log("skipped-route warning", |log| {
        log.contains("route /routes/garbled skipped")
    });
    assert_eq!(get(live.addr(), "/api/", None), (200, "api-1".to_string()));
    live.route("v2", "/v2/", "api");
    wait_for(live.addr(), "/v2/", None, DEADLINE, |s, _| s == 200);

    // A config `nginx -t` refuses is never installed; a change made after it waits
    // behind it, since every render still holds the clash.
    let installed = std::fs::read(live.gw.conf()).expect("read nginx.conf");
    let clash = live.route("again", "/api/", "api");
    live.conflux.wait_for_log("refused apply", |log| {
        !lines_since(log, "apply failed", clash).is_empty() && log.contains("duplicate location")
    });
    let blocked = live.route("new", "/new/", "api");
    live.conflux.wait_for_log("refused apply", |log| {
        !lines_since(log, "apply failed", blocked).is_empty()
    });
    assert_eq!(
        std::fs::read(live.gw.conf()).expect("read nginx.conf"),
        installed,
        "a refused config replaced nginx.conf"
    );
    assert_eq!(get(live.addr(), "/api/", None), (200, "api-1".to_string()));
    assert_eq!(get(live.addr(), "/new/", None).0, 404);
    live.conflux.assert_running();

    // Deleting the clash unblocks the change behind it.
    live.etcd.delete(&route_key("again"));
    wait_for(live.addr(), "/new/", None, DEADLINE, |s, b| {
        s == 200 && b == "api-1"
    });
    live.conflux.assert_running();
    live.assert_every_reload_was_checked();
}

/// A change under /gateway that leaves nginx.conf as it was (here a value the template
/// skips) must not reload nginx: conflux compares the render with the installed file,
/// so the file must not carry anything that changes with every write, such as the
/// etcd revision.
#[test]
fn a_change_that_renders_the_same_config_does_not_reload_nginx() {
    let mut live = Live::start();
    let _api = api_route(&live);
    let reloads = live.reloads();

    let revision = live.etcd.put(&route_key("garbled"), "{not json");
    live.conflux.wait_for_log("apply", |log| {
        !lines_since(log, " applied ", revision).is_empty()
    });
    let log = live.conflux.log();
    let applied = lines_since(&log, " applied ", revision);
    assert!(applied[0].contains("changed=false"), "{}", applied[0]);
    assert_eq!(live.reloads(), reloads, "{:?}", live.commands());
    assert_eq!(get(live.addr(), "/api/", None), (200, "api-1".to_string()));
}

#[test]
fn every_reload_follows_a_passing_nginx_check() {
    let live = Live::start();
    let _api = api_route(&live);
    live.route("again", "/api/", "api");
    poll("a failed check", || {
        live.commands().iter().any(|l| l == "check failed")
    });
    live.etcd.delete(&route_key("again"));
    let v2 = Upstream::start("v2");
    live.instance("v2", "i1", &v2, 1);
    live.route("v2", "/v2/", "v2");
    wait_for(live.addr(), "/v2/", None, DEADLINE, |s, b| {
        s == 200 && b == "v2"
    });

    let lines = live.commands();
    assert!(lines.iter().any(|l| l == "check failed"), "{lines:?}");
    // The first render, the api route and the v2 changes: at least three reloads.
    let reloads = live.assert_every_reload_was_checked();
    assert!(reloads >= 3, "{lines:?}");
}

/// The reload-under-load check: 20 changes (instances of `api` joining and
/// leaving around one that always stays, new routes to it), each reloaded into nginx
/// while a client keeps sending requests: not one may fail.
#[test]
fn requests_never_fail_while_routes_and_instances_change() {
    let live = Live::start();
    let (b, c) = (Upstream::start("api-b"), Upstream::start("api-c"));
    let _a = api_route(&live);
    // nginx's workers of the config before the route may still take connections for a
    // moment after its reload (a 404 on /api/ under load, seen in 2 of 9 runs): wait
    // until they are gone, so that the run measures the 20 changes, not the set-up.
    settle(live.addr(), "/api/");
    let load = Load::start(live.addr(), "/api/");
    let before = live.reloads();
    let started = Instant::now();

    for change in 0..20 {
        let reloads = live.reloads();
        if change % 2 == 0 {
            // add b, add c, remove b, remove c, add b, ...: api-1 always stays.
            let (name, up) = if change % 4 == 0 {
                ("b", &b)
            } else {
                ("c", &c)
            };
            if change % 8 < 4 {
                live.instance("api", name, up, 1);
            } else {
                live.etcd.delete(&instance_key("api", name));
            }
        } else {
            let path = format!("/r{change}/");
            live.route(&format!("r{change}"), &path, "api");
            wait_for(live.addr(), &path, None, DEADLINE, |s, _| s == 200);
            load.add_path(&path);
        }
        poll("the change's reload", || live.reloads() > reloads);
        // Let the new config carry traffic before the next change.
        load.wait_requests(20);
    }

    let elapsed = started.elapsed();
    let tally = load.stop();
    let reloads = live.assert_every_reload_was_checked() - before;
    eprintln!(
        "reload under load: {} requests, {} failures, {} stale 404s, {reloads} reloads, {} changes, {:.1} s",
        tally.requests,
        tally.failures.len(),
        tally.stale,
        20,
        elapsed.as_secs_f64()
    );
    assert!(
        tally.failures.is_empty(),
        "failed requests: {:#?}",
        tally.failures
    );
    assert_eq!(reloads, 20, "one reload per change");
    assert!(
        b.hits() > 0 && c.hits() > 0,
        "b {}, c {}",
        b.hits(),
        c.hits()
    );
}
