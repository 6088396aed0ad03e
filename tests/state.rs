//! The state directory with the real binary: created with mode 0700, a clear exit 2
//! when it cannot be used, an owed-reload marker of the previous release honoured once
//! and removed, nothing of conflux's left beside dest; and one-shot runs applying
//! several resources side by side through the scheduler.

use std::os::unix::fs::PermissionsExt;

use crate::harness::Confdir;

/// One resource rendering `/app/port` from `data.yaml` into `out/app.conf`, whose
/// reload appends to `out/reloads.log` once `out/healthy` exists.
fn app() -> Confdir {
    let dir = Confdir::new();
    dir.template("app.conf.tmpl", "port = {{ getv(key=\"/port\") }}\n");
    dir.write("data.yaml", "app:\n  port: 8080\n");
    dir.resource(
        "app.toml",
        "[template]\nsrc = \"app.conf.tmpl\"\ndest = \"out/app.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\n\
         reload_cmd = 'test -e $(dirname {{.dest}})/healthy && echo reload >> $(dirname {{.dest}})/reloads.log'\n",
    );
    dir
}

fn onetime(dir: &Confdir, extra: &[&str]) -> crate::harness::Run {
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

/// Every name in `out/` but the test's own files: dest, and nothing of conflux's.
fn out_dir(dir: &Confdir) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.path("out"))
        .expect("out/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n != "healthy" && n != "reloads.log")
        .collect();
    names.sort();
    names
}

#[test]
fn the_state_directory_is_created_0700_and_holds_what_was_applied() {
    let dir = app();
    dir.write("out/healthy", "");
    let state = dir.path("var/lib/conflux");
    onetime(&dir, &["--state-dir", state.to_str().unwrap()]).assert_code(0);
    let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700);
    let records: Vec<_> = std::fs::read_dir(state.join("resources"))
        .unwrap()
        .map(|e| e.unwrap().path().join("state.json"))
        .collect();
    assert_eq!(records.len(), 1);
    let record = std::fs::read_to_string(&records[0]).unwrap();
    assert!(record.contains("\"reload_owed\": false"), "{record}");
    assert!(
        record.contains(&dir.path("out/app.conf").display().to_string()),
        "{record}"
    );
    assert!(record.contains("sha256"), "{record}");
}

#[test]
fn a_state_directory_that_cannot_be_used_exits_2_naming_it() {
    let dir = app();
    dir.write("not-a-dir", "");
    let bad = dir.path("not-a-dir/state");
    onetime(&dir, &["--state-dir", bad.to_str().unwrap()])
        .assert_code(2)
        .assert_stderr_contains(bad.to_str().unwrap())
        .assert_stderr_contains("--state-dir");
    assert!(!dir.exists("out/app.conf"), "nothing was attempted");
}

/// A marker `.app.conf.conflux-reload-owed` left beside dest by the previous release:
/// the reload runs once although dest is already right, and the marker is gone.
#[test]
fn a_marker_of_the_previous_release_is_honoured_once_and_removed() {
    let dir = app();
    dir.write("out/app.conf", "port = 8080\n");
    dir.write("out/.app.conf.conflux-reload-owed", "");
    dir.write("out/healthy", "");
    onetime(&dir, &[]).assert_code(0);
    assert_eq!(dir.read("out/reloads.log"), "reload\n");
    assert_eq!(out_dir(&dir), ["app.conf"]);
    onetime(&dir, &[]).assert_code(0);
    assert_eq!(
        dir.read("out/reloads.log"),
        "reload\n",
        "owed once, paid once"
    );
}

/// A failed reload is owed through the state directory: the next run pays it, and
/// nothing of conflux's is ever written beside dest.
#[test]
fn an_owed_reload_survives_a_restart_through_the_state_directory() {
    let dir = app();
    onetime(&dir, &[]).assert_code(1);
    assert_eq!(out_dir(&dir), ["app.conf"]);
    assert!(!dir.exists("out/reloads.log"));
    dir.write("out/healthy", "");
    onetime(&dir, &[])
        .assert_code(0)
        .assert_stderr_contains("reloading again");
    assert_eq!(dir.read("out/reloads.log"), "reload\n");
    onetime(&dir, &[]).assert_code(0);
    assert_eq!(dir.read("out/reloads.log"), "reload\n");
}

/// Four resources whose checks wait for each other: they can only pass if the
/// one-shot run applies them side by side (one at a time, each check would wait for
/// checks that never start, and time out).
#[test]
fn onetime_applies_resources_side_by_side_through_the_scheduler() {
    let dir = Confdir::new();
    dir.template("t.tmpl", "x\n");
    dir.write("data.yaml", "a: 1\n");
    let barrier = dir.path("barrier");
    std::fs::create_dir_all(&barrier).unwrap();
    for n in 0..4 {
        dir.resource(
            &format!("r{n}.toml"),
            &format!(
                "[template]\nsrc = \"t.tmpl\"\ndest = \"out/r{n}.conf\"\ncheck_timeout = \"20s\"\n\
                 check_cmd = 'touch {b}/{n}; while [ $(ls {b} | wc -l) -lt 4 ]; do sleep 0.05; done'\n",
                b = barrier.display()
            ),
        );
    }
    onetime(&dir, &[]).assert_code(0);
    for n in 0..4 {
        assert_eq!(dir.read(&format!("out/r{n}.conf")), "x\n");
    }
}
