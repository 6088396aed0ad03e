//! A unit of nginx files against the real `nginx -t`: a fragment valid alone but
//! invalid in context is never installed (over the overlay, and by swap, check, restore
//! where the overlay is forbidden), and a change to two files swaps both with one reload.

use etcd_client::TxnOp;

use super::txn;
use crate::harness::Confdir;
use crate::nginx::require_nginx;
use crate::support::etcd::EtcdServer;

/// An nginx unit: `nginx.conf` defines upstream `main` and includes every fragment;
/// each fragment is an upstream block, valid alone.
fn nginx_confdir() -> Confdir {
    require_nginx();
    let dir = Confdir::new();
    dir.template(
        "nginx.tmpl",
        "pid nginx.pid;\nerror_log stderr;\nevents {}\nhttp {\n    access_log off;\n    \
         client_body_temp_path client_body_temp;\n    proxy_temp_path proxy_temp;\n    \
         fastcgi_temp_path fastcgi_temp;\n    uwsgi_temp_path uwsgi_temp;\n    \
         scgi_temp_path scgi_temp;\n    upstream main { server 127.0.0.1:1; }\n    \
         include up-*.conf;\n    server { listen 127.0.0.1:1; location / { return 200 \
         \"{{ getv(key=\"/version\", default=\"0\") }}\"; } }\n}\n",
    );
    dir.template(
        "up.tmpl",
        "upstream {{ item.name }} { server {{ item.value }}; }\n",
    );
    let log = dir.path("reload.log");
    dir.resource(
        "nginx.toml",
        &format!(
            r#"[template]
prefix = "/ngx"
keys = ["/"]
check_cmd = 'nginx -t -q -p "$(dirname {{{{.src}}}})/" -c {{{{.src}}}}'
reload_cmd = 'echo reload >> {}'

[[template.output]]
src = "nginx.tmpl"
dest = "out/nginx.conf"

[[template.output]]
src = "up.tmpl"
dest = "out/up-{{{{ item.name }}}}.conf"
for_each = "ups/*"
check_cmd = "test -s {{{{.src}}}}"
"#,
            log.display()
        ),
    );
    dir
}

/// Everything in `out/`, name and bytes, to compare before and after.
fn snapshot_out(dir: &Confdir) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.path("out"))
        .expect("read out")
        .map(|e| {
            let e = e.expect("entry");
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    files.sort();
    files
}

/// The in-place check over an overlay (root here), then the fallback that
/// `CONFLUX_CHECK_OVERLAY=off` forces: swap, check, restore.
#[tokio::test]
async fn a_fragment_that_breaks_the_main_config_in_context_is_never_installed() {
    for (setting, said) in [
        ("on", "checked in place over an overlay"),
        ("off", "checked by swap, check, restore"),
    ] {
        let etcd = EtcdServer::start().await;
        etcd.put("/ngx/ups/api", "127.0.0.1:2").await;
        let dir = nginx_confdir();
        let endpoint = etcd.endpoint();
        let args = ["--onetime", "--backend", "etcdv3", "--node", &endpoint];
        let env = [("CONFLUX_CHECK_OVERLAY", setting)];
        dir.run_env(&args, &env).assert_code(0);
        let before = configs(&dir);
        assert_eq!(dir.read("reload.log"), "reload\n");

        // `upstream main` alone is a valid fragment; with nginx.conf it is a duplicate.
        etcd.put("/ngx/ups/main", "127.0.0.1:3").await;
        etcd.put("/ngx/version", "2").await;
        dir.run_env(&args, &env)
            .assert_code(1)
            .assert_stderr_contains("duplicate upstream \"main\"")
            .assert_stderr_contains(said);

        assert_eq!(
            configs(&dir),
            before,
            "{said}: live files byte-identical, none added"
        );
        assert_eq!(dir.read("reload.log"), "reload\n", "{said}: no reload");
    }
}

/// nginx.conf and the upstream files in `out/` (not what `nginx -t` itself leaves
/// there when it runs outside an overlay: a pid file, temp directories).
fn configs(dir: &Confdir) -> Vec<(String, Vec<u8>)> {
    snapshot_out(dir)
        .into_iter()
        .filter(|(name, _)| name == "nginx.conf" || name.starts_with("up-"))
        .collect()
}

#[tokio::test]
async fn a_valid_change_to_two_files_swaps_both_and_reloads_once() {
    let etcd = EtcdServer::start().await;
    etcd.put("/ngx/ups/api", "127.0.0.1:2").await;
    let dir = nginx_confdir();
    let args = [
        "--onetime",
        "--backend",
        "etcdv3",
        "--node",
        &etcd.endpoint(),
    ];
    dir.run(&args).assert_code(0);

    let change = vec![
        TxnOp::put("/ngx/ups/api", "127.0.0.1:4", None),
        TxnOp::put("/ngx/version", "2", None),
    ];
    txn(&etcd, change).await;
    dir.run(&args).assert_code(0);

    assert!(dir.read("out/nginx.conf").contains("return 200 \"2\""));
    assert_eq!(
        dir.read("out/up-api.conf"),
        "upstream api { server 127.0.0.1:4; }\n"
    );
    assert_eq!(
        dir.read("reload.log"),
        "reload\nreload\n",
        "one reload per run"
    );
    // nginx -t ran in the overlay: the pid file and temp directories it creates
    // never reached out/.
    assert!(!dir.exists("out/nginx.pid"));
    assert!(!dir.exists("out/client_body_temp"));
}
