//! One-shot runs of the real binary (`--onetime`) on temporary confdirs: backends,
//! prefixes, the apply pipeline's guarantees, flags and exit codes, and every kind of
//! bad input.

use crate::harness::{Confdir, assert_golden};

/// confd's own integration data, as environment variables (its `integration/env`).
const CONFD_ENV: &[(&str, &str)] = &[
    ("HOSTNAME", "localhost"),
    ("KEY", "foobar"),
    ("DATABASE_HOST", "127.0.0.1"),
    ("DATABASE_PASSWORD", "p@sSw0rd"),
    ("DATABASE_PORT", "3306"),
    ("DATABASE_USERNAME", "confd"),
    ("UPSTREAM_APP1", "10.0.1.10:8080"),
    ("UPSTREAM_APP2", "10.0.1.11:8080"),
    ("NESTED_EAST_APP1", "10.0.1.10:8080"),
    ("NESTED_WEST_APP2", "10.0.1.11:8080"),
];

fn assert_confd_outputs(dir: &Confdir) {
    assert_golden("basic.conf", &dir.read("out/basic.conf"));
    assert_golden("basic.conf", &dir.read("out/manykeys.conf"));
    assert_golden("exists-test.conf", &dir.read("out/exists-test.conf"));
    assert_golden("iteration.conf", &dir.read("out/iteration.conf"));
    assert_golden("nested.conf", &dir.read("out/nested.conf"));
}

#[test]
fn confd_integration_suite_with_the_file_backend() {
    let dir = Confdir::from_fixture("confd");
    let b1 = dir.path("data/backends1");
    let b2 = dir.path("data/backends2");
    dir.run_env(
        &[
            "--onetime",
            "--backend",
            "file",
            "--file",
            b1.to_str().unwrap(),
            "--file",
            b2.to_str().unwrap(),
        ],
        &[("HOSTNAME", "localhost")],
    )
    .assert_code(0);
    assert_confd_outputs(&dir);
}

#[test]
fn confd_integration_suite_with_the_env_backend() {
    let dir = Confdir::from_fixture("confd");
    dir.run_env(&["--onetime", "--backend", "env"], CONFD_ENV)
        .assert_code(0);
    assert_confd_outputs(&dir);
}

#[test]
fn global_prefix_is_joined_with_the_resource_prefix() {
    let dir = Confdir::from_fixture("confd");
    let b2 = dir.path("data/backends2");
    dir.run_env(
        &[
            "--onetime",
            "--backend",
            "file",
            "--file",
            b2.to_str().unwrap(),
            "--prefix",
            "/prefix",
        ],
        &[("HOSTNAME", "localhost")],
    )
    .assert_code(0);
    assert_golden("basic.conf", &dir.read("out/basic.conf"));
    assert_golden("iteration.conf", &dir.read("out/iteration.conf"));
}

#[test]
fn confd_single_dash_flags_work() {
    let dir = Confdir::from_fixture("confd");
    let root = dir.root().to_str().unwrap().to_string();
    let data = format!("-file={}", dir.path("data/backends1").display());
    let args = [
        "-confdir",
        &root,
        "-onetime",
        "-backend=file",
        &data,
        "-log-level",
        "debug",
    ];
    crate::harness::conflux(&args.map(String::from), &[("HOSTNAME", "localhost")]).assert_code(0);
    assert_golden("basic.conf", &dir.read("out/basic.conf"));
}

/// A confdir with one resource `app` rendering `/app/*` from a data file, whose
/// check and reload commands append to `out/commands.log`.
fn app_confdir(check: &str, reload: &str) -> Confdir {
    let dir = Confdir::new();
    dir.template("app.conf.tmpl", "port = {{ getv(key=\"/port\") }}\n");
    dir.write("data.yaml", "app:\n  port: 8080\n");
    dir.resource(
        "app.toml",
        &format!(
            "[template]\nsrc = \"app.conf.tmpl\"\ndest = \"out/app.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\n\
             mode = \"644\"\ncheck_cmd = '''{check}'''\nreload_cmd = '''{reload}'''\n"
        ),
    );
    dir
}

/// `--onetime` with the file backend on `<dir>/data.yaml`.
pub(crate) fn run_app(dir: &Confdir, extra: &[&str]) -> crate::harness::Run {
    let data = dir.path("data.yaml");
    let mut args = vec![
        "--onetime",
        "--backend",
        "file",
        "--file",
        data.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    dir.run(&args)
}

const LOG_CHECK: &str = "echo check >> $(dirname {{.dest}})/commands.log";
const LOG_RELOAD: &str = "echo reload >> $(dirname {{.dest}})/commands.log";

#[test]
fn a_changed_file_is_checked_swapped_and_reloaded_with_its_mode() {
    let dir = app_confdir(LOG_CHECK, LOG_RELOAD);
    run_app(&dir, &[]).assert_code(0);
    assert_eq!(dir.read("out/app.conf"), "port = 8080\n");
    assert_eq!(dir.read("out/commands.log"), "check\nreload\n");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path("out/app.conf"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o644, "\"644\" is octal");
}

#[test]
fn unchanged_output_runs_no_commands() {
    let dir = app_confdir(LOG_CHECK, LOG_RELOAD);
    run_app(&dir, &[]).assert_code(0);
    run_app(&dir, &[]).assert_code(0);
    assert_eq!(
        dir.read("out/commands.log"),
        "check\nreload\n",
        "the second run ran nothing"
    );
}

#[test]
fn failed_check_leaves_dest_untouched_and_runs_no_reload() {
    let dir = app_confdir("echo 'port is invalid here' >&2; exit 3", LOG_RELOAD);
    dir.write("out/app.conf", "old\n");
    run_app(&dir, &[])
        .assert_code(1)
        .assert_stderr_contains("port is invalid here")
        .assert_stderr_contains("app.toml");
    assert_eq!(dir.read("out/app.conf"), "old\n");
    assert!(!dir.exists("out/commands.log"), "no reload ran");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, vec!["app.conf"], "no stage file is left behind");
}

#[test]
fn failed_reload_is_reported_and_the_new_file_stays() {
    let dir = app_confdir(LOG_CHECK, "echo 'nginx is not running' >&2; exit 1");
    run_app(&dir, &[])
        .assert_code(1)
        .assert_stderr_contains("nginx is not running");
    assert_eq!(dir.read("out/app.conf"), "port = 8080\n");
}

#[test]
fn noop_prints_a_diff_and_changes_nothing() {
    let dir = app_confdir(LOG_CHECK, LOG_RELOAD);
    dir.write("out/app.conf", "port = 80\n");
    let run = run_app(&dir, &["--noop"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("-port = 80\n") && run.stdout.contains("+port = 8080\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("app.conf"),
        "the diff names the file: {}",
        run.stdout
    );
    assert_eq!(dir.read("out/app.conf"), "port = 80\n");
    assert!(!dir.exists("out/commands.log"));
}

#[test]
fn sync_only_writes_but_runs_no_command() {
    let dir = app_confdir(LOG_CHECK, LOG_RELOAD);
    run_app(&dir, &["--sync-only"]).assert_code(0);
    assert_eq!(dir.read("out/app.conf"), "port = 8080\n");
    assert!(!dir.exists("out/commands.log"));
}

#[test]
fn a_symlinked_dest_keeps_its_link() {
    let dir = app_confdir(LOG_CHECK, LOG_RELOAD);
    dir.write("real/app.conf", "old\n");
    std::os::unix::fs::symlink(dir.path("real/app.conf"), dir.path("out/app.conf")).unwrap();
    run_app(&dir, &[]).assert_code(0);
    assert!(
        std::fs::symlink_metadata(dir.path("out/app.conf"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(dir.read("real/app.conf"), "port = 8080\n");
}

#[test]
fn one_failed_resource_does_not_stop_the_others() {
    let dir = app_confdir(LOG_CHECK, LOG_RELOAD);
    dir.template("broken.tmpl", "{{ getv(key=\"/missing\") }}\n");
    dir.resource(
        "broken.toml",
        "[template]\nsrc = \"broken.tmpl\"\ndest = \"out/broken.conf\"\nkeys = [\"/app\"]\n",
    );
    dir.resource(
        "unparsable.toml",
        "[template]\nsrc = \"app.conf.tmpl\"\ndest = \n",
    );
    run_app(&dir, &[])
        .assert_code(1)
        .assert_stderr_contains("unparsable.toml");
    assert_eq!(dir.read("out/app.conf"), "port = 8080\n");
    assert!(!dir.exists("out/broken.conf"));
}

#[test]
fn usage_and_configuration_errors_exit_2() {
    let dir = app_confdir("true", "true");
    run_app(&dir, &["--bogus-flag"]).assert_code(2);
    run_app(&dir, &["-bogus"]).assert_code(2);
    dir.write("conflux.toml", "backend = \"file\"\nnot_a_key = 1\n");
    run_app(&dir, &[])
        .assert_code(2)
        .assert_stderr_contains("not_a_key")
        .assert_stderr_contains("line 2");
    std::fs::remove_file(dir.path("conflux.toml")).unwrap();
    crate::harness::conflux(
        &[
            "--onetime",
            "--backend",
            "env",
            "--confdir",
            "/nonexistent/conflux",
        ]
        .map(String::from),
        &[],
    )
    .assert_code(2)
    .assert_stderr_contains("/nonexistent/conflux");
    std::fs::remove_dir_all(dir.path("templates")).unwrap();
    run_app(&dir, &[])
        .assert_code(2)
        .assert_stderr_contains("templates");
}

#[test]
fn help_documents_exit_codes_and_examples() {
    let run = crate::harness::conflux(&["--help".to_string()], &[]);
    run.assert_code(0);
    assert!(run.stdout.contains("Exit codes"), "{}", run.stdout);
    assert!(run.stdout.contains("-onetime"), "{}", run.stdout);
}

/// Each bad input fails its resource with an error naming what is wrong.
#[test]
fn bad_input_is_reported_with_file_line_and_key() {
    let cases: &[(&str, &str, &str, &[&str])] = &[
        // (template, resource body after src/dest, what the error must name)
        (
            "port = {{ getv(key=\"/nope\") }}\n",
            "keys = [\"/app\"]\n",
            "missing key",
            &["app.conf.tmpl", "/nope", ":1"],
        ),
        (
            "line one\n{% if %}\n",
            "keys = [\"/app\"]\n",
            "syntax error",
            &["app.conf.tmpl", "2"],
        ),
        (
            "x\n",
            "mode = \"0999\"\n",
            "bad mode",
            &["res.toml", "mode", "0999"],
        ),
        (
            "x\n",
            "owner = \"no-such-user\"\n",
            "unknown owner",
            &["res.toml", "no-such-user"],
        ),
    ];
    for (template, body, what, needles) in cases {
        let dir = Confdir::new();
        dir.write("data.yaml", "app:\n  port: 8080\n");
        dir.template("app.conf.tmpl", template);
        dir.resource(
            "res.toml",
            &format!("[template]\nsrc = \"app.conf.tmpl\"\ndest = \"out/app.conf\"\n{body}"),
        );
        let run = run_app(&dir, &[]);
        assert_eq!(run.code, 1, "{what}: {}", run.stderr);
        for n in *needles {
            assert!(
                run.stderr.contains(n),
                "{what}: stderr lacks {n:?}:\n{}",
                run.stderr
            );
        }
        assert!(!dir.exists("out/app.conf"), "{what}: nothing written");
    }
}

#[test]
fn missing_template_and_missing_dest_dir_are_named() {
    let dir = Confdir::new();
    dir.write("data.yaml", "app:\n  port: 8080\n");
    dir.resource(
        "res.toml",
        "[template]\nsrc = \"nowhere.tmpl\"\ndest = \"out/app.conf\"\n",
    );
    run_app(&dir, &[])
        .assert_code(1)
        .assert_stderr_contains("nowhere.tmpl");

    let dir = Confdir::new();
    dir.write("data.yaml", "app:\n  port: 8080\n");
    dir.template("app.conf.tmpl", "x\n");
    dir.resource(
        "res.toml",
        "[template]\nsrc = \"app.conf.tmpl\"\ndest = \"no/such/dir/app.conf\"\n",
    );
    run_app(&dir, &[])
        .assert_code(1)
        .assert_stderr_contains("no/such/dir");
}

/// A reload that failed after the swap is owed: the next run finds dest already right,
/// yet runs the reload again (every confd-style tool forgets it), and only the reload.
#[test]
fn a_failed_reload_is_run_again_by_the_next_run() {
    let dir = app_confdir(
        LOG_CHECK,
        "test -e $(dirname {{.dest}})/healthy && echo reload >> $(dirname {{.dest}})/commands.log",
    );
    run_app(&dir, &[]).assert_code(1);
    assert_eq!(
        dir.read("out/commands.log"),
        "check\n",
        "the first reload failed"
    );
    dir.write("out/healthy", "");
    run_app(&dir, &[])
        .assert_code(0)
        .assert_stderr_contains("reloading again");
    assert_eq!(
        dir.read("out/commands.log"),
        "check\nreload\n",
        "only the reload ran again"
    );
    run_app(&dir, &[]).assert_code(0);
    assert_eq!(
        dir.read("out/commands.log"),
        "check\nreload\n",
        "nothing is owed any more"
    );
}

#[test]
fn tls_files_with_a_plaintext_endpoint_are_a_configuration_error() {
    let dir = app_confdir("true", "true");
    let ca = dir.write("ca.pem", "not read");
    dir.run(&[
        "--onetime",
        "--node",
        "http://127.0.0.1:9",
        "--client-ca-keys",
        ca.to_str().unwrap(),
    ])
    .assert_code(2)
    .assert_stderr_contains("plaintext");
    assert!(!dir.exists("out/app.conf"));
}
