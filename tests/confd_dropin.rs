//! conflux in place of confd: confd's Go templates rendered byte for byte as confd
//! renders them (once, and under `-watch` against a real etcd), confd's config file and
//! flags, and the binary started as `confd`.
//!
//! The golden files under `tests/golden/confd-go/` and `tests/golden/confd-parity/`
//! were written by real confd (kelseyhightower/confd at 919444eb, built locally with
//! Debian's Go 1.19 outside this repository) from the same fixtures and data, with the
//! file backend: `confd -onetime -confdir <copy of the fixture> -config-file
//! /nonexistent -backend file -file data.yaml` run in the fixture's directory (for
//! `confd-go`, `-file data/backends1/ -file data/backends2/` and `HOSTNAME=localhost`;
//! for `confd-parity`, `CONFD_PARITY_SHELL=/bin/bash`). Neither confd nor a recipe
//! to build it is part of this repository; regenerate the goldens the same way
//! after changing a fixture.

use std::path::Path;
use std::process::Command;

use crate::harness::{Confdir, Run, assert_golden};

fn file_args(dir: &Confdir, files: &[&str]) -> Vec<String> {
    let mut args = vec!["-onetime".to_string(), "-backend".into(), "file".into()];
    for f in files {
        args.push("-file".into());
        args.push(dir.path(f).to_str().unwrap().to_string());
    }
    args
}

fn run(dir: &Confdir, args: &[String], env: &[(&str, &str)]) -> Run {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    dir.run_env(&args, env)
}

/// confd's own `integration/confdir`, its templates unchanged, on its file-backend
/// data.
#[test]
fn confds_integration_confdir_renders_byte_identically_with_the_go_engine() {
    let dir = Confdir::from_fixture("confd-go");
    let mut args = file_args(&dir, &["data/backends1", "data/backends2"]);
    args.extend(["-template-engine".into(), "go".into()]);
    run(&dir, &args, &[("HOSTNAME", "localhost")]).assert_code(0);
    for name in [
        "basic.conf",
        "exists.conf",
        "iteration.conf",
        "manykeys.conf",
        "nested.conf",
    ] {
        assert_golden(
            &format!("confd-go/{name}"),
            &dir.read(&format!("out/{name}")),
        );
    }
}

/// nginx upstreams, haproxy backends, an application config using each of confd's
/// functions, and printf's verbs: nested ranges with variables, define/template,
/// block, break/continue, trim markers, comments.
#[test]
fn realistic_confdirs_render_as_real_confd_rendered_them() {
    let dir = Confdir::from_fixture("confd-parity");
    let mut args = file_args(&dir, &["data.yaml"]);
    args.extend(["-template-engine".into(), "go".into()]);
    run(&dir, &args, &[("CONFD_PARITY_SHELL", "/bin/bash")]).assert_code(0);
    for name in ["nginx.conf", "haproxy.cfg", "app.ini", "printf.txt"] {
        assert_golden(
            &format!("confd-parity/{name}"),
            &dir.read(&format!("out/{name}")),
        );
    }
}

/// A resource's own `engine` beats the global default, both ways.
#[test]
fn a_resource_chooses_its_engine() {
    let dir = Confdir::new();
    dir.write("data.yaml", "app:\n  port: \"8080\"\n");
    dir.template("go.tmpl", "port={{getv \"/app/port\"}}\n");
    dir.template("tera.tmpl", "port={{ getv(key=\"/app/port\") }}\n");
    dir.resource(
        "go.toml",
        "[template]\nsrc = \"go.tmpl\"\ndest = \"out/go\"\nkeys = [\"/app\"]\nengine = \"go\"\n",
    );
    dir.resource(
        "tera.toml",
        "[template]\nsrc = \"tera.tmpl\"\ndest = \"out/tera\"\nkeys = [\"/app\"]\n",
    );
    run(&dir, &file_args(&dir, &["data.yaml"]), &[]).assert_code(0);
    assert_eq!(dir.read("out/go"), "port=8080\n");
    assert_eq!(dir.read("out/tera"), "port=8080\n");
    dir.resource(
        "bad.toml",
        "[template]\nsrc = \"go.tmpl\"\ndest = \"out/bad\"\nengine = \"jinja\"\n",
    );
    run(&dir, &file_args(&dir, &["data.yaml"]), &[])
        .assert_code(1)
        .assert_stderr_contains(r#"line 4: engine: unknown template engine "jinja""#);
}

#[test]
fn a_go_template_error_names_template_line_and_column() {
    let dir = Confdir::new();
    dir.write("data.yaml", "app:\n  port: \"8080\"\n");
    dir.template("app.tmpl", "# app\nhost = {{getv \"/app/host\"}}\n");
    dir.resource(
        "app.toml",
        "[template]\nsrc = \"app.tmpl\"\ndest = \"out/app\"\nkeys = [\"/app\"]\nengine = \"go\"\n",
    );
    run(&dir, &file_args(&dir, &["data.yaml"]), &[])
        .assert_code(1)
        .assert_stderr_contains(
            r#"app.tmpl:2:9: executing "app.tmpl" at <getv "/app/host">: error calling getv: key does not exist: /app/host"#,
        );
}

/// A confd template read as Tera says what to do.
#[test]
fn a_confd_template_under_tera_points_to_the_go_engine() {
    let dir = Confdir::from_fixture("confd-go");
    let args = file_args(&dir, &["data/backends1", "data/backends2"]);
    run(&dir, &args, &[("HOSTNAME", "localhost")])
        .assert_code(1)
        .assert_stderr_contains(
            "hint: this looks like a Go template (confd's syntax): set `engine = \"go\"`",
        );
}

/// The migration guide's check: a template moved to Tera renders what confd wrote,
/// so `--noop` against confd's files shows no diff.
#[test]
fn a_template_moved_to_tera_is_checked_with_noop_against_confds_files() {
    let dir = Confdir::from_fixture("confd-go");
    for name in ["basic.conf", "iteration.conf"] {
        let golden = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden/confd-go")
            .join(name);
        std::fs::copy(golden, dir.path(&format!("out/{name}"))).unwrap();
    }
    for name in ["exists.toml", "manykeys.toml", "nested.toml"] {
        std::fs::remove_file(dir.path(&format!("conf.d/{name}"))).unwrap();
    }
    dir.template(
        "basic.conf.tmpl",
        "hostname: {{ getenv(name=\"HOSTNAME\") }}\n[database]\nhost={{ getv(key=\"/database/host\") }}\n\
         password={{ getv(key=\"/database/password\") }}\nport={{ getv(key=\"/database/port\") }}\n\
         username={{ getv(key=\"/database/username\") }}\n",
    );
    let iteration = std::fs::read_to_string(dir.path("templates/iteration.conf.tmpl")).unwrap();
    dir.template(
        "iteration.conf.tmpl",
        &iteration
            .replace(
                "{{- range gets \"/upstream/*\" }}",
                "{%- for kv in gets(pattern=\"/upstream/*\") %}",
            )
            .replace("{{ .Value }}", "{{ kv.value }}")
            .replace("{{- end }}", "{%- endfor %}"),
    );
    let mut args = file_args(&dir, &["data/backends1", "data/backends2"]);
    args.push("-noop".into());
    let out = run(&dir, &args, &[("HOSTNAME", "localhost")]);
    out.assert_code(0);
    assert_eq!(
        out.stdout, "",
        "a diff against confd's output:\n{}",
        out.stdout
    );
}

/// confd's example `confd.toml` (its configuration guide) with the keys of backends
/// conflux lacks: it starts, and one warning names what it ignores.
#[test]
fn confds_example_config_file_and_single_dash_flags_start() {
    let dir = Confdir::from_fixture("confd-go");
    dir.write(
        "confd.toml",
        "backend = \"etcd\"\nclient_cert = \"/etc/confd/ssl/client.crt\"\n\
         client_key = \"/etc/confd/ssl/client.key\"\nconfdir = \"/etc/confd\"\n\
         log-level = \"debug\"\ninterval = 600\nnodes = [\n  \"http://127.0.0.1:4001\",\n]\n\
         noop = false\nprefix = \"/\"\nscheme = \"https\"\nsrv_domain = \"etcd.example.com\"\n\
         client_insecure = true\nauth_type = \"app-id\"\ntable = \"confd\"\n",
    );
    let config = dir.path("confd.toml");
    let mut args = vec![
        "-config-file".to_string(),
        config.to_str().unwrap().into(),
        "-template-engine".into(),
        "go".into(),
        "-log-level".into(),
        "warn".into(),
        "-auth-token".into(),
        "x".into(),
        "-separator".into(),
        "_".into(),
    ];
    args.extend(file_args(&dir, &["data/backends1", "data/backends2"]));
    let out = run(&dir, &args, &[("HOSTNAME", "localhost")]);
    out.assert_code(0).assert_stderr_contains(
        "confd settings accepted and ignored (backends conflux does not have, client_insecure) \
         settings=-auth-token, -separator, auth_type, table, client_insecure",
    );
    assert_eq!(
        out.stderr.matches("accepted and ignored").count(),
        1,
        "{}",
        out.stderr
    );
    assert_golden("confd-go/basic.conf", &dir.read("out/basic.conf"));
}

#[test]
fn an_unknown_flag_is_named_as_typed() {
    let dir = Confdir::new();
    run(&dir, &["-onetime".into(), "-bogus-flag=1".into()], &[])
        .assert_code(2)
        .assert_stderr_contains("unknown flag -bogus-flag");
}

/// Installed as `confd` (a symlink), conflux takes confd's defaults: the Go engine,
/// and confdir /etc/confd.
#[test]
fn started_as_confd_it_takes_confds_defaults() {
    let dir = Confdir::from_fixture("confd-go");
    let bin = tempfile::tempdir().unwrap();
    let confd = bin.path().join("confd");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_conflux"), &confd).unwrap();
    let run_confd = |args: &[String]| {
        let out = Command::new(&confd)
            .args(args)
            .env("RUST_BACKTRACE", "0")
            .env("CONFLUX_STATE_DIR", dir.state_dir())
            .env("HOSTNAME", "localhost")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let mut args = vec!["-confdir".to_string(), dir.root().to_str().unwrap().into()];
    args.extend(file_args(&dir, &["data/backends1", "data/backends2"]));
    let (code, stderr) = run_confd(&args);
    assert_eq!(code, Some(0), "{stderr}");
    assert_golden("confd-go/iteration.conf", &dir.read("out/iteration.conf"));
    // No -confdir: confd's /etc/confd (absent on a test machine).
    let (code, stderr) = run_confd(&file_args(&dir, &["data/backends1"]));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("confdir /etc/confd does not exist"),
        "{stderr}"
    );
}

/// confd reads the TLS files from `CONFD_CLIENT_CERT`, `CONFD_CLIENT_KEY` and
/// `CONFD_CLIENT_CAKEYS` when nothing else sets them: so does conflux (here seen
/// refusing them with a plaintext endpoint, before any connection).
#[test]
fn confds_tls_environment_variables_are_read() {
    let dir = Confdir::from_fixture("confd-go");
    let args: Vec<String> = [
        "-onetime",
        "-backend",
        "etcdv3",
        "-node",
        "http://127.0.0.1:9",
    ]
    .map(String::from)
    .to_vec();
    run(
        &dir,
        &args,
        &[
            ("CONFD_CLIENT_CERT", "/nonexistent/client.crt"),
            ("CONFD_CLIENT_KEY", "/nonexistent/client.key"),
        ],
    )
    .assert_code(2)
    .assert_stderr_contains("is plaintext");
}

/// A confd template followed under `-watch` against a real etcd: confd's upstream
/// loop re-rendered by the Go engine as keys come and go.
#[tokio::test]
async fn a_go_template_follows_etcd_under_watch() {
    let etcd = crate::support::etcd::EtcdServer::start().await;
    let dir = Confdir::new();
    dir.template(
        "upstream.tmpl",
        "upstream app {\n{{- range gets \"/upstream/*\"}}\n  server {{.Value}};{{end}}\n}\n",
    );
    dir.resource(
        "upstream.toml",
        "[template]\nsrc = \"upstream.tmpl\"\ndest = \"out/upstream.conf\"\nkeys = [\"/upstream\"]\n",
    );
    let args = [
        "-watch",
        "-backend",
        "etcdv3",
        "-node",
        &etcd.endpoint(),
        "-template-engine",
        "go",
    ];
    let daemon = crate::harness::Daemon::start(&dir, &args);
    let patience = std::time::Duration::from_secs(20);
    let reads = |want: &'static str| {
        let dir = &dir;
        move || dir.try_read("out/upstream.conf").as_deref() == Some(want)
    };
    daemon
        .wait_for("the first render", patience, reads("upstream app {\n}\n"))
        .await;
    etcd.put("/upstream/b", "10.0.0.2:80").await;
    etcd.put("/upstream/a", "10.0.0.1:80").await;
    let both = "upstream app {\n  server 10.0.0.1:80;\n  server 10.0.0.2:80;\n}\n";
    daemon.wait_for("both servers", patience, reads(both)).await;
    etcd.delete("/upstream/a").await;
    let one = "upstream app {\n  server 10.0.0.2:80;\n}\n";
    daemon.wait_for("the delete", patience, reads(one)).await;
}
