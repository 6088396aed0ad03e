//! The gateway's container recipe (packaging/gateway.Dockerfile) without a Docker
//! engine: its ENV, ENTRYPOINT and CMD as written, with /etc/conflux moved to a temp
//! confdir, against a real nginx. The entrypoint renders nginx.conf once, then execs
//! nginx in the foreground, and conflux keeps following the data beside it.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use super::{Gateway, one_api_route};
use crate::nginx::{NGINX, Upstream, get, wait_for};
use crate::packaging::Container;

/// A guard against a hang: the render runs `nginx -t` before nginx starts.
const DEADLINE: Duration = Duration::from_secs(20);

/// The recipe's instructions that run: the `ENV` pairs, and `ENTRYPOINT` + `CMD`
/// (exec form) with `/etc/conflux` replaced by `confdir`.
fn recipe(confdir: &Path) -> (Vec<(String, String)>, Vec<String>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/gateway.Dockerfile");
    let text = std::fs::read_to_string(&path).expect("read packaging/gateway.Dockerfile");
    let mut env = Vec::new();
    let mut argv = Vec::new();
    for line in text.lines() {
        if let Some(pair) = line.strip_prefix("ENV ") {
            let (k, v) = pair.split_once('=').expect("ENV KEY=VALUE");
            env.push((k.to_string(), v.to_string()));
        }
        for instruction in ["ENTRYPOINT ", "CMD "] {
            if let Some(json) = line.strip_prefix(instruction) {
                let words: Vec<String> = serde_json::from_str(json).expect("exec form");
                argv.extend(words);
            }
        }
    }
    let confdir = confdir.to_str().expect("utf-8 path");
    let argv: Vec<String> = argv
        .iter()
        .map(|a| a.replace("/etc/conflux", confdir))
        .collect();
    assert!(argv.iter().any(|a| a == "conflux-entrypoint"), "{argv:?}");
    assert!(argv.iter().any(|a| a == "nginx"), "{argv:?}");
    (env, argv)
}

fn start(gw: &Gateway, data: &Path) -> Container {
    let (env, argv) = recipe(gw.dir.root());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // nginx as the recipe names it, found on PATH: Debian's, as in nginx's image.
    assert!(Path::new(NGINX).exists(), "{NGINX} is missing");
    Container::run(&gw.dir, data, &argv, &env)
}

/// Waits until nginx serves `/api/` from `api-1`, and checks that the container's
/// process is nginx's master: the entrypoint exec'd it, rather than running it as a
/// child.
fn serves_api(gw: &Gateway, container: &Container) {
    wait_for(&gw.listen, "/api/users", None, DEADLINE, |status, _| {
        status == 200
    });
    assert_eq!(container.program(), "nginx", "{}", container.stderr());
    assert_eq!(
        get(&gw.listen, "/api/users", None),
        (200, "api-1".to_string())
    );
}

#[test]
fn the_gateway_recipe_renders_nginx_conf_then_execs_nginx() {
    let gw = Gateway::new();
    let api = Upstream::start("api-1");
    let data = gw
        .dir
        .write("data.json", &one_api_route(&gw, &api).to_json());
    let container = start(&gw, &data);

    serves_api(&gw, &container);

    // conflux beside nginx (CONFLUX_ENTRYPOINT_WATCH) renders a new route and reloads.
    let billing = Upstream::start("billing-1");
    let more = one_api_route(&gw, &api)
        .instance("billing", "billing-1", &billing.addr(), 1)
        .route(
            "billing",
            json!({"path": "/billing/", "service": "billing"}),
        );
    let tmp = gw.dir.write("data.json.new", &more.to_json());
    std::fs::rename(tmp, &data).expect("replace the data file");
    wait_for(&gw.listen, "/billing/", None, DEADLINE, |status, body| {
        status == 200 && body == "billing-1"
    });
    // Reloaded, not restarted: the same master.
    assert_eq!(container.program(), "nginx", "{}", container.stderr());
}

/// A restarted container keeps its files, nginx's pid file among them: the first
/// render after the restart (with changed keys) must not signal the pid of the last
/// run's nginx, nor fail on it.
#[test]
fn a_restarted_gateway_container_starts_despite_the_last_run_s_pid_file() {
    let gw = Gateway::new();
    let api = Upstream::start("api-1");
    // The last run's nginx: a process that is gone.
    let mut gone = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    let stale = gone.id();
    gone.wait().expect("wait true");
    gw.dir.write("out/nginx.pid", &format!("{stale}\n"));
    let data = gw
        .dir
        .write("data.json", &one_api_route(&gw, &api).to_json());
    let container = start(&gw, &data);

    serves_api(&gw, &container);
    let pid = std::fs::read_to_string(gw.dir.path("out/nginx.pid")).expect("nginx's pid");
    assert_eq!(pid.trim(), container.pid().to_string());
}
