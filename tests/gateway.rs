//! The repository's own confdir (the nginx gateway of docs/nginx-gateway.md) against a
//! real nginx: a copy of the shipped `conf.d/` and `templates/` rendered by the real
//! binary, served by nginx on a free loopback port, in front of upstreams started by
//! the test.
//!
//! Here: `--onetime` with the file and env backends, the data file written by each test
//! in the gateway's data model (/gateway/listen, /gateway/services, /gateway/routes).
//! In [`watch`]: `--watch` following a real etcd while nginx serves. In [`register`]:
//! the same, with the instances' keys held by `conflux register` and its health checks.
//! In [`container`]: the container entrypoint rendering it once, then exec'ing nginx.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::harness::{Confdir, Run};
use crate::nginx::{Nginx, Upstream, free_addr, get, require_nginx, wait_for};

mod container;
mod live;
mod load;
mod register;
mod watch;

/// How long nginx may take to serve a reloaded config: a deadline to poll against,
/// not a timing assertion.
const RELOAD_DEADLINE: Duration = Duration::from_secs(5);

/// A temporary copy of the repository's gateway confdir.
struct Gateway {
    dir: Confdir,
    listen: String,
}

impl Gateway {
    fn new() -> Gateway {
        require_nginx();
        let dir = Confdir::new();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        for sub in ["conf.d", "templates"] {
            copy_dir(&repo.join(sub), &dir.path(sub));
        }
        Gateway {
            dir,
            listen: free_addr(),
        }
    }

    /// Empty gateway data listening on this gateway's address.
    fn data(&self) -> Data {
        Data {
            listen: self.listen.clone(),
            services: Map::new(),
            routes: Map::new(),
        }
    }

    /// `conflux --onetime --backend file` on `data`, with the shipped check and reload.
    fn apply(&self, data: &Data) -> Run {
        let file = self.dir.write("data.json", &data.to_json());
        self.dir.run(&[
            "--onetime",
            "--backend",
            "file",
            "--file",
            file.to_str().expect("utf-8 path"),
        ])
    }

    fn conf(&self) -> PathBuf {
        self.dir.path("out/nginx.conf")
    }

    /// nginx on the rendered config, with `out/` as its prefix (the pid file and temp
    /// paths the shipped check_cmd and reload_cmd expect).
    fn start_nginx(&self) -> Nginx {
        Nginx::start(&self.dir.path("out"), &self.conf())
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

/// The gateway's keys under /gateway, as a data file for the file backend.
struct Data {
    listen: String,
    services: Map<String, Value>,
    routes: Map<String, Value>,
}

impl Data {
    /// `/gateway/services/<service>/<instance>` = `{"addr": addr, "weight": weight}`.
    fn instance(self, service: &str, instance: &str, addr: &str, weight: u32) -> Data {
        let value = json!({"addr": addr, "weight": weight}).to_string();
        self.raw_instance(service, instance, &value)
    }

    /// `/gateway/services/<service>/<instance>` = `value`, as is.
    fn raw_instance(mut self, service: &str, instance: &str, value: &str) -> Data {
        let instances = self
            .services
            .entry(service)
            .or_insert_with(|| Value::Object(Map::new()));
        instances
            .as_object_mut()
            .expect("a service is a map of instances")
            .insert(instance.to_string(), Value::String(value.to_string()));
        self
    }

    /// `/gateway/routes/<name>` = `route` (a JSON object).
    fn route(self, name: &str, route: Value) -> Data {
        self.raw_route(name, &route.to_string())
    }

    /// `/gateway/routes/<name>` = `value`, as is.
    fn raw_route(mut self, name: &str, value: &str) -> Data {
        self.routes
            .insert(name.to_string(), Value::String(value.to_string()));
        self
    }

    fn to_json(&self) -> String {
        json!({"gateway": {
            "listen": self.listen,
            "services": self.services,
            "routes": self.routes,
        }})
        .to_string()
    }
}

/// One upstream `api-1` behind the route `/api/` of service `api`.
fn one_api_route(gw: &Gateway, api: &Upstream) -> Data {
    gw.data()
        .instance("api", "api-1", &api.addr(), 1)
        .route("api", json!({"path": "/api/", "service": "api"}))
}

#[test]
fn a_route_serves_traffic_from_its_upstream() {
    let gw = Gateway::new();
    let api = Upstream::start("api-1");
    // The first render finds no running nginx: the reload is skipped, not failed.
    gw.apply(&one_api_route(&gw, &api)).assert_code(0);

    let nginx = gw.start_nginx();
    assert_eq!(
        get(nginx.addr(), "/api/users", None),
        (200, "api-1".to_string())
    );
    assert_eq!(api.paths(), ["/api/users"]);
}

#[test]
fn instances_receive_requests_according_to_weight() {
    let gw = Gateway::new();
    let (heavy, light) = (Upstream::start("heavy"), Upstream::start("light"));
    let data = gw
        .data()
        .instance("api", "heavy", &heavy.addr(), 3)
        .instance("api", "light", &light.addr(), 1)
        .route("api", json!({"path": "/api/", "service": "api"}));
    gw.apply(&data).assert_code(0);
    let nginx = gw.start_nginx();

    for _ in 0..80 {
        assert_eq!(get(nginx.addr(), "/api/", None).0, 200);
    }
    // 60:20 exactly per worker's round robin; each nginx worker keeps its own, so allow
    // a loose band around it.
    let (h, l) = (heavy.hits(), light.hits());
    assert_eq!(h + l, 80);
    assert!(
        (50..=70).contains(&h),
        "heavy {h}, light {l}: not about 3:1"
    );
}

#[test]
fn a_route_whose_service_has_no_instance_answers_503() {
    let gw = Gateway::new();
    let api = Upstream::start("api-1");
    let data = one_api_route(&gw, &api).route(
        "billing",
        json!({"path": "/billing/", "service": "billing"}),
    );
    gw.apply(&data).assert_code(0);
    let nginx = gw.start_nginx();

    assert_eq!(get(nginx.addr(), "/billing/invoices", None).0, 503);
    assert_eq!(get(nginx.addr(), "/api/", None).0, 200);
}

#[test]
fn an_unknown_path_answers_404() {
    let gw = Gateway::new();
    let api = Upstream::start("api-1");
    gw.apply(&one_api_route(&gw, &api)).assert_code(0);
    let nginx = gw.start_nginx();

    assert_eq!(get(nginx.addr(), "/nowhere", None).0, 404);
    assert_eq!(get(nginx.addr(), "/", None).0, 404);
    assert_eq!(api.hits(), 0);
}

#[test]
fn strip_prefix_removes_the_route_path_before_proxying() {
    let gw = Gateway::new();
    let (api, web) = (Upstream::start("api"), Upstream::start("web"));
    let data = gw
        .data()
        .instance("api", "i1", &api.addr(), 1)
        .instance("web", "i1", &web.addr(), 1)
        .route(
            "api",
            json!({"path": "/api/", "service": "api", "strip_prefix": true}),
        )
        .route("web", json!({"path": "/web/", "service": "web"}));
    gw.apply(&data).assert_code(0);
    let nginx = gw.start_nginx();

    assert_eq!(get(nginx.addr(), "/api/users?page=2", None).1, "api");
    assert_eq!(get(nginx.addr(), "/web/index.html", None).1, "web");
    assert_eq!(api.paths(), ["/users?page=2"]);
    assert_eq!(web.paths(), ["/web/index.html"]);
}

#[test]
fn a_host_route_only_matches_its_host_header() {
    let gw = Gateway::new();
    let (api, assets) = (Upstream::start("api"), Upstream::start("assets"));
    let data = gw
        .data()
        .instance("api", "i1", &api.addr(), 1)
        .instance("static", "i1", &assets.addr(), 1)
        .route("api", json!({"path": "/api/", "service": "api"}))
        .route(
            "assets",
            json!({"path": "/assets/", "service": "static", "host": "www.example.test"}),
        );
    gw.apply(&data).assert_code(0);
    let nginx = gw.start_nginx();

    let www = Some("www.example.test");
    assert_eq!(
        get(nginx.addr(), "/assets/logo.png", www),
        (200, "assets".to_string())
    );
    assert_eq!(get(nginx.addr(), "/assets/logo.png", None).0, 404);
    assert_eq!(
        get(nginx.addr(), "/assets/logo.png", Some("other.test")).0,
        404
    );
    // A host has its own server: routes without a host belong to the default one.
    assert_eq!(get(nginx.addr(), "/api/", www).0, 404);
    assert_eq!(get(nginx.addr(), "/api/", Some("other.test")).0, 200);
}

#[test]
fn bad_route_and_instance_values_are_skipped_with_a_warning() {
    let gw = Gateway::new();
    let api = Upstream::start("api-1");
    let data = one_api_route(&gw, &api)
        .raw_route("garbled", "{not json")
        .raw_route("nopath", r#"{"service": "api"}"#)
        .raw_route("noservice", r#"{"path": "/x/"}"#)
        .raw_instance("api", "noaddr", r#"{"weight": 5}"#)
        .raw_instance("broken", "i1", "127.0.0.1:9")
        .route("broken", json!({"path": "/broken/", "service": "broken"}));
    let run = gw.apply(&data);
    run.assert_code(0);
    for key in [
        "route /routes/garbled skipped",
        "route /routes/nopath skipped",
        "route /routes/noservice skipped",
        "instance /services/api/noaddr skipped",
        "instance /services/broken/i1 skipped",
    ] {
        run.assert_stderr_contains(key);
    }
    let nginx = gw.start_nginx();

    assert_eq!(get(nginx.addr(), "/api/", None), (200, "api-1".to_string()));
    assert_eq!(get(nginx.addr(), "/x/", None).0, 404);
    // A service left with no valid instance has no upstream: its route answers 503.
    assert_eq!(get(nginx.addr(), "/broken/", None).0, 503);
}

#[test]
fn a_config_nginx_rejects_is_never_installed_and_nginx_keeps_serving() {
    let gw = Gateway::new();
    let api = Upstream::start("api-1");
    gw.apply(&one_api_route(&gw, &api)).assert_code(0);
    let before = std::fs::read(gw.conf()).expect("read nginx.conf");
    let nginx = gw.start_nginx();

    // Two routes with one path: the template renders it, `nginx -t` refuses it.
    let clash = one_api_route(&gw, &api)
        .route("again", json!({"path": "/api/", "service": "api"}))
        .route("new", json!({"path": "/new/", "service": "api"}));
    gw.apply(&clash)
        .assert_code(1)
        .assert_stderr_contains("duplicate location");

    assert_eq!(
        std::fs::read(gw.conf()).expect("read nginx.conf"),
        before,
        "the refused config replaced nginx.conf"
    );
    assert_eq!(get(nginx.addr(), "/api/", None), (200, "api-1".to_string()));
    assert_eq!(get(nginx.addr(), "/new/", None).0, 404);
}

#[test]
fn a_value_only_nginx_rejects_leaves_no_config_behind() {
    let gw = Gateway::new();
    // The template only checks that `addr` is there; nginx judges the weight.
    let data = gw
        .data()
        .raw_instance("api", "i1", r#"{"addr": "127.0.0.1:9", "weight": "heavy"}"#)
        .route("api", json!({"path": "/api/", "service": "api"}));
    gw.apply(&data)
        .assert_code(1)
        .assert_stderr_contains(r#"invalid parameter "weight=heavy""#);
    assert!(
        !gw.conf().exists(),
        "a refused first render installed nginx.conf"
    );
}

#[test]
fn a_valid_change_is_reloaded_into_the_running_nginx() {
    let gw = Gateway::new();
    let (api, v2) = (Upstream::start("api-1"), Upstream::start("v2"));
    gw.apply(&one_api_route(&gw, &api)).assert_code(0);
    let nginx = gw.start_nginx();
    assert_eq!(get(nginx.addr(), "/v2/", None).0, 404);

    let changed = gw
        .data()
        .instance("v2", "i1", &v2.addr(), 1)
        .route("v2", json!({"path": "/v2/", "service": "v2"}));
    gw.apply(&changed).assert_code(0);

    wait_for(
        nginx.addr(),
        "/v2/",
        None,
        RELOAD_DEADLINE,
        |status, body| status == 200 && body == "v2",
    );
    // The route that left the data leaves nginx with the same reload. Polled too: until
    // the old workers have seen the master's signal, one of them may still accept a
    // connection and answer with the old config.
    wait_for(nginx.addr(), "/api/", None, RELOAD_DEADLINE, |status, _| {
        status == 404
    });
}

#[test]
fn the_env_backend_renders_the_same_gateway() {
    let gw = Gateway::new();
    let (i1, i2) = (Upstream::start("i1"), Upstream::start("i2"));
    // Names map as GATEWAY_SERVICES_API_I1 → /gateway/services/api/i1: lower-cased,
    // `_` → `/`, so a name cannot hold `_` (nor upper case) in the environment.
    let run = gw.dir.run_env(
        &["--onetime", "--backend", "env"],
        &[
            ("GATEWAY_LISTEN", &gw.listen),
            (
                "GATEWAY_ROUTES_API",
                r#"{"path": "/api/", "service": "api", "strip_prefix": true}"#,
            ),
            (
                "GATEWAY_SERVICES_API_I1",
                &json!({"addr": i1.addr(), "weight": 1}).to_string(),
            ),
            (
                "GATEWAY_SERVICES_API_I2",
                &json!({"addr": i2.addr(), "weight": 1}).to_string(),
            ),
        ],
    );
    run.assert_code(0);
    let nginx = gw.start_nginx();

    for _ in 0..10 {
        assert_eq!(get(nginx.addr(), "/api/ping", None).0, 200);
    }
    // Equal weights alternate within each nginx worker; some worker served at least 5.
    let (h1, h2) = (i1.hits(), i2.hits());
    assert!(h1 > 0 && h2 > 0 && h1 + h2 == 10, "i1 {h1}, i2 {h2}");
    assert!(i1.paths().iter().all(|p| p == "/ping"), "{:?}", i1.paths());
}
