//! The gateway with both halves of service discovery from the one binary: `conflux
//! --watch` renders nginx from etcd, and each upstream instance is registered by its
//! own `conflux register` with an HTTP health check against the instance's own port,
//! as in the walkthrough of docs/nginx-gateway.md.

use crate::harness::{Confdir, Daemon};
use crate::nginx::{Upstream, get};

use super::live::{Live, instance_key, instance_value, poll};
use super::watch::wait_for_batch;

/// `conflux register` for instance `name` of service `api`, its health check a `curl`
/// of the upstream's `/health`: every 300 ms, rise 2, fall 3.
struct Registrar {
    daemon: Daemon,
    _dir: Confdir,
}

impl Registrar {
    fn start(live: &Live, name: &str, up: &Upstream) -> Registrar {
        let dir = Confdir::new();
        let check = format!("curl -fsS -o /dev/null -m 1 http://{}/health", up.addr());
        let daemon = Daemon::start(
            &dir,
            &[
                "register",
                "--node",
                &live.etcd.endpoint(),
                "--key",
                &instance_key("api", name),
                "--value",
                &instance_value(up, 1),
                "--ttl",
                "5s",
                "--check-cmd",
                &check,
                "--check-interval",
                "300ms",
            ],
        );
        Registrar { daemon, _dir: dir }
    }
}

/// Requests the upstream served that were not health checks: traffic through nginx.
fn traffic(up: &Upstream) -> usize {
    up.paths().iter().filter(|p| *p != "/health").count()
}

#[test]
fn a_registered_instance_gets_traffic_only_while_its_health_check_passes() {
    let live = Live::start();
    let (one, two) = (Upstream::start("api-1"), Upstream::start("api-2"));
    live.route("api", "/api/", "api");
    let first = Registrar::start(&live, "i1", &one);
    let _second = Registrar::start(&live, "i2", &two);
    poll("both instances registered and served", || {
        let bodies: Vec<String> = (0..10).map(|_| get(live.addr(), "/api/", None).1).collect();
        bodies.iter().any(|b| b == "api-1") && bodies.iter().any(|b| b == "api-2")
    });

    // api-1 still serves, but its health check fails: after `fall` checks its key is
    // deleted, conflux renders nginx without it, and nginx stops sending it requests.
    one.set_healthy(false);
    poll("i1 deregistered", || {
        !live.etcd.exists(&instance_key("api", "i1"))
    });
    wait_for_batch(live.addr(), "/api/", 10, |s, b| s == 200 && b == "api-2");
    // A worker of the config before the reload may still take a connection for a
    // moment (seen under load): count only once they are gone.
    live.settle();
    let served = traffic(&one);
    for _ in 0..20 {
        assert_eq!(get(live.addr(), "/api/", None), (200, "api-2".to_string()));
    }
    assert_eq!(traffic(&one), served, "api-1 got requests while unhealthy");
    assert!(
        first
            .daemon
            .stderr()
            .contains("unhealthy: the check failed 3 time(s) in a row"),
        "{}",
        first.daemon.stderr()
    );

    // Healthy again: registered after `rise` checks, and back in the rotation.
    one.set_healthy(true);
    poll("api-1 serving again", || {
        (0..10).any(|_| get(live.addr(), "/api/", None).1 == "api-1")
    });
    assert!(live.etcd.exists(&instance_key("api", "i1")));
}
