//! The gateway's container recipe (docs/packaging.md) without a Docker engine: the
//! entrypoint renders nginx.conf from the gateway's confdir once, then execs nginx in
//! the foreground, which serves the routes it rendered.

use std::time::Duration;

use serde_json::json;

use super::{Gateway, one_api_route};
use crate::nginx::{NGINX, Upstream, get, wait_for};
use crate::packaging::Container;

#[test]
fn the_entrypoint_renders_nginx_conf_then_execs_nginx() {
    let gw = Gateway::new();
    let api = Upstream::start("api-1");
    let data = one_api_route(&gw, &api).route(
        "billing",
        json!({"path": "/billing/", "service": "billing"}),
    );
    let file = gw.dir.write("data.json", &data.to_json());
    let prefix = format!("{}/", gw.dir.path("out").display());
    let conf = gw.conf();
    let conf = conf.to_str().expect("utf-8 path");
    // The CMD of the recipe, with the pid file and temp paths under out/ as the shipped
    // check_cmd expects, and nginx's own startup log on stderr.
    let cmd = [
        NGINX,
        "-p",
        &prefix,
        "-c",
        conf,
        "-e",
        "stderr",
        "-g",
        "daemon off;",
    ];
    let container = Container::start(&gw.dir, &file, &cmd, &[]);

    // A deadline against a hang: the render runs `nginx -t` before nginx starts.
    wait_for(
        &gw.listen,
        "/api/users",
        None,
        Duration::from_secs(20),
        |status, _| status == 200,
    );
    // The entrypoint's process is nginx's master now: exec, not a child.
    assert_eq!(container.program(), "nginx", "{}", container.stderr());
    assert_eq!(
        get(&gw.listen, "/api/users", None),
        (200, "api-1".to_string())
    );
    assert_eq!(get(&gw.listen, "/billing/", None).0, 503);
}
