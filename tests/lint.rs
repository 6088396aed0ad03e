//! `conflux lint` with the real binary: a confdir with one of each kind of error
//! (golden output in both formats), a clean confdir, `--strict`, `--check` leaving
//! dest alone and running no reload, a broken conflux.toml, usage errors.

use crate::harness::{Confdir, assert_golden};

/// `conflux lint --confdir <dir> <args>`, with the confdir's path shown as `<confdir>`.
fn lint(dir: &Confdir, args: &[&str]) -> crate::harness::Run {
    let mut all = vec!["lint"];
    all.extend_from_slice(args);
    let mut run = dir.run(&all);
    let root = dir.root().to_str().unwrap();
    run.stdout = run.stdout.replace(root, "<confdir>");
    run
}

#[test]
fn every_kind_of_error_is_one_finding_per_line_in_text_and_json() {
    let dir = Confdir::from_fixture("lint");
    let text = lint(&dir, &["--file", dir.path("data.yaml").to_str().unwrap()]);
    text.assert_code(1);
    assert_golden("lint.txt", &text.stdout);
    let json = lint(
        &dir,
        &[
            "--file",
            dir.path("data.yaml").to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    json.assert_code(1);
    assert_golden("lint.jsonl", &json.stdout);
    for line in json.stdout.lines() {
        let finding: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(
            finding["path"].is_string() && finding["message"].is_string(),
            "{line}"
        );
    }
    assert!(!dir.exists("out/missing_key.conf"), "lint writes nothing");
}

#[test]
fn a_clean_confdir_exits_0_and_the_repository_gateway_is_clean() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let run = crate::harness::conflux(
        &[
            "lint",
            "--confdir",
            repo.to_str().unwrap(),
            "--file",
            repo.join("examples/gateway.yaml").to_str().unwrap(),
            "--check",
        ]
        .map(String::from),
        &[],
    );
    run.assert_code(0);
    assert_eq!(run.stdout, "", "no finding");
}

#[test]
fn warnings_fail_only_with_strict() {
    let dir = Confdir::new();
    dir.template(
        "app.tmpl",
        "x = {{ getv(key=\"/x\") }} y = {{ getv(key=\"/y\", default=\"\") }}\n",
    );
    dir.resource(
        "app.toml",
        "[template]\nsrc = \"app.tmpl\"\ndest = \"out/app.conf\"\nkeys = [\"/x\"]\n",
    );
    dir.write("data.yaml", "x: 1\ny: 2\n");
    let data = dir.path("data.yaml");
    let run = lint(&dir, &["--file", data.to_str().unwrap()]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("warning: the template reads /y"),
        "{}",
        run.stdout
    );
    lint(&dir, &["--file", data.to_str().unwrap(), "--strict"]).assert_code(1);
}

#[test]
fn check_runs_the_check_on_a_copy_leaves_dest_alone_and_runs_no_reload() {
    let dir = Confdir::new();
    dir.template("app.tmpl", "port = {{ getv(key=\"/port\") }}\n");
    dir.resource(
        "app.toml",
        "[template]\nsrc = \"app.tmpl\"\ndest = \"out/app.conf\"\nkeys = [\"/port\"]\n\
         check_cmd = 'grep -q \"port = 80$\" {{.src}} && echo checked >> $(dirname {{.dest}})/checks.log'\n\
         reload_cmd = 'touch $(dirname {{.dest}})/reloaded'\n",
    );
    dir.write("out/app.conf", "the live file\n");
    dir.write("data.yaml", "port: 80\n");
    let data = dir.path("data.yaml");
    lint(&dir, &["--file", data.to_str().unwrap(), "--check"]).assert_code(0);
    assert_eq!(dir.read("out/checks.log"), "checked\n", "the check ran");
    assert_eq!(dir.read("out/app.conf"), "the live file\n");
    assert!(!dir.exists("out/reloaded"));
    dir.write("data.yaml", "port: 81\n");
    let run = lint(&dir, &["--file", data.to_str().unwrap(), "--check"]);
    run.assert_code(1);
    assert!(run.stdout.contains("error: check_cmd"), "{}", run.stdout);
    assert_eq!(dir.read("out/app.conf"), "the live file\n");
}

#[test]
fn a_broken_conflux_toml_is_a_finding_at_its_line_and_usage_errors_exit_2() {
    let dir = Confdir::new();
    dir.write("conflux.toml", "backend = \"file\"\nbogus = 1\n");
    let run = lint(&dir, &[]);
    run.assert_code(1);
    assert_eq!(
        run.stdout,
        "<confdir>/conflux.toml:2: error: unknown key `bogus`\n"
    );
    lint(&dir, &["--no-such-flag"]).assert_code(2);
    lint(&dir, &["--format", "yaml"]).assert_code(2);
}
