//! The pipeline on real files in temporary directories, with real shell commands:
//! the flow of a pass and its outcome here; modes, owners, links and noop diffs in
//! [`files`].

use super::*;
use crate::command::Command;
use crate::command::DEFAULT_TIMEOUT;
use crate::outcome::StageError;
use std::fs::{self, Permissions};
use std::os::unix::fs::symlink;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::path::PathBuf;

mod files;

pub(super) fn resource(dir: &Path, dest: &str) -> Resource {
    let mut r = crate::resource::test_resource("test.toml", &[], dir.join(dest));
    r.file = dir.join("test.toml");
    r
}

pub(super) fn cmd(line: &str) -> Option<Command> {
    Some(Command::new(line, DEFAULT_TIMEOUT))
}

/// A command that leaves `name` behind in `dir` when it runs.
pub(super) fn marker(dir: &Path, name: &str) -> Option<Command> {
    cmd(&format!("touch {}", dir.join(name).display()))
}

pub(super) fn write(path: &Path, content: &str, mode: u32) {
    fs::write(path, content).unwrap();
    fs::set_permissions(path, Permissions::from_mode(mode)).unwrap();
}

pub(super) fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().mode() & 0o7777
}

/// Hidden files in `dir`: stage files left behind.
pub(super) fn stage_files(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect()
}

/// A pipeline with no templates and its state in `state/` beside the resource file
/// (not hidden, so never taken for a stage file).
pub(super) fn pipeline(res: &Resource, options: Options) -> Pipeline {
    let dir = res.file.parent().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let templates = Arc::new(Templates::load(empty.path()).unwrap());
    let state = StateDir::open(&dir.join("state"), true).unwrap();
    Pipeline::new(templates, state, options)
}

pub(super) fn apply_rendered(
    res: &Resource,
    content: &str,
    options: &Options,
) -> Result<Done, ApplyError> {
    pipeline(res, *options).run_rendered(res, content, 1).result
}

pub(super) fn run(res: &Resource, content: &str) -> Result<Done, ApplyError> {
    apply_rendered(res, content, &Options::default())
}

fn reload(res: &Resource) -> Result<Done, ApplyError> {
    pipeline(res, Options::default())
        .run(res, &Arc::default(), Work::Reload)
        .result
}

#[test]
fn unchanged_content_runs_no_command() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut res = resource(d, "app.conf");
    res.check = marker(d, "checked");
    res.reload = marker(d, "reloaded");
    write(&res.dest, "same\n", 0o644);

    assert_eq!(run(&res, "same\n").unwrap(), Done::Unchanged);
    assert!(!d.join("checked").exists());
    assert!(!d.join("reloaded").exists());
    assert!(stage_files(d).is_empty());
}

#[test]
fn changed_content_is_checked_then_swapped_then_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let log = d.join("log");
    let mut res = resource(d, "app.conf");
    // Each command logs what dest holds when it runs.
    res.check = cmd(&format!(
        "echo \"check $(cat {{{{.src}}}}) $(cat {{{{.dest}}}})\" >> {}",
        log.display()
    ));
    res.reload = cmd(&format!(
        "echo \"reload $(cat {{{{.dest}}}})\" >> {}",
        log.display()
    ));
    write(&res.dest, "old", 0o644);

    let outcome = pipeline(&res, Options::default()).run_rendered(&res, "new", 1);

    assert!(matches!(outcome.result, Ok(Done::Updated)), "{outcome:?}");
    assert!(!outcome.files[0].created);
    assert!(outcome.took(Step::Check).is_some() && outcome.took(Step::Reload).is_some());
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        "check new old\nreload new\n"
    );
    assert_eq!(fs::read_to_string(&res.dest).unwrap(), "new");
    assert!(stage_files(d).is_empty());
}

#[test]
fn failed_check_leaves_dest_untouched_and_does_not_reload() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut res = resource(d, "app.conf");
    res.check = cmd("echo 'bad directive on line 3'; exit 1");
    res.reload = marker(d, "reloaded");
    write(&res.dest, "old", 0o644);

    let err = run(&res, "new").unwrap_err();

    assert!(matches!(err, ApplyError::Check { .. }), "{err:?}");
    assert!(err.to_string().contains("bad directive on line 3"), "{err}");
    assert_eq!(fs::read_to_string(&res.dest).unwrap(), "old");
    assert!(!d.join("reloaded").exists());
    assert!(stage_files(d).is_empty());
}

#[test]
fn failed_reload_reports_the_new_file_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut res = resource(d, "app.conf");
    res.reload = cmd("echo 'service not running'; exit 2");
    write(&res.dest, "old", 0o644);

    let err = run(&res, "new").unwrap_err();

    assert!(matches!(err, ApplyError::Reload { .. }), "{err:?}");
    assert!(err.to_string().contains("IS in place"), "{err}");
    assert!(err.to_string().contains("service not running"), "{err}");
    assert_eq!(fs::read_to_string(&res.dest).unwrap(), "new");
}

#[test]
fn reload_alone_runs_the_reload_command_on_dest() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut res = resource(d, "app.conf");
    res.reload = cmd(&format!("cp {{{{.dest}}}} {}", d.join("copy").display()));
    write(&res.dest, "content", 0o644);

    reload(&res).unwrap();

    assert_eq!(fs::read_to_string(d.join("copy")).unwrap(), "content");
}

#[test]
fn missing_dest_directory_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let res = resource(d, "nowhere/app.conf");

    let err = run(&res, "x").unwrap_err();

    assert!(
        matches!(&err, ApplyError::Stage { source: StageError::MissingDir { dir }, .. } if *dir == d.join("nowhere")),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains(&d.join("nowhere").display().to_string())
    );
    assert!(!d.join("nowhere").exists());
}

#[test]
fn sync_only_writes_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut res = resource(d, "app.conf");
    res.check = cmd("exit 1");
    res.reload = marker(d, "reloaded");
    let sync_only = Options {
        sync_only: true,
        ..Options::default()
    };

    let outcome = pipeline(&res, sync_only).run_rendered(&res, "new", 1);

    assert!(matches!(outcome.result, Ok(Done::Updated)));
    assert!(outcome.files[0].created);
    assert_eq!(
        (outcome.took(Step::Check), outcome.took(Step::Reload)),
        (None, None)
    );
    assert_eq!(fs::read_to_string(&res.dest).unwrap(), "new");
    assert!(!d.join("reloaded").exists());
}

#[test]
fn keep_stage_file_keeps_it_after_a_failed_check() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut res = resource(d, "app.conf");
    res.check = cmd("exit 1");
    let keep = Options {
        keep_stage_file: true,
        ..Options::default()
    };

    apply_rendered(&res, "new", &keep).unwrap_err();

    let kept = stage_files(d);
    assert_eq!(kept.len(), 1, "{kept:?}");
    let name = kept[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with(".app.conf."), "{name}");
    assert_eq!(fs::read_to_string(&kept[0]).unwrap(), "new");
    assert!(!res.dest.exists());
}

#[test]
fn a_directory_as_dest_is_a_compare_error() {
    let dir = tempfile::tempdir().unwrap();
    let res = resource(dir.path(), "");
    let mut res = res;
    res.dest = dir.path().to_path_buf();

    let err = run(&res, "x").unwrap_err();

    assert!(matches!(err, ApplyError::Compare { .. }), "{err:?}");
}

/// The outcome names the step that ended the pass and times every step that ran.
fn steps(outcome: &Outcome) -> Vec<Step> {
    outcome.steps.iter().map(|s| s.step).collect()
}

#[test]
fn a_full_pass_records_every_step_in_order_and_the_file_it_changed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let templates = dir_with_template(d, "app.tmpl", "x={{ getv(key=\"/x\") }}\n");
    let mut res = resource(d, "app.conf");
    res.src = "app.tmpl".into();
    res.selectors = vec!["/x".into()];
    res.check = cmd("true");
    res.reload = cmd("true");
    let pipeline = Pipeline::new(templates, state_of(&res), Options::default());

    let outcome = pipeline.run(&res, &snapshot(7, &[("/x", "1")]), Work::Apply);

    assert!(matches!(outcome.result, Ok(Done::Updated)), "{outcome:?}");
    assert_eq!(
        (outcome.resource.as_str(), outcome.revision),
        ("test.toml", 7)
    );
    assert_eq!(outcome.step, Step::Reload);
    assert_eq!(
        steps(&outcome),
        vec![
            Step::Render,
            Step::Compare,
            Step::Stage,
            Step::Check,
            Step::Swap,
            Step::Reload
        ]
    );
    assert_eq!(outcome.files.len(), 1);
    assert_eq!(outcome.files[0].path, res.dest);
    assert!(outcome.files[0].created);
    assert!(!outcome.reload_owed);
    let record = state_of(&res).load(&res);
    assert_eq!(record.files[&res.dest].revision, 7);
    assert_eq!(record.files[&res.dest].sha256, content_hash(b"x=1\n"));
}

/// A state record for every file written made a first one-shot run of 1,000 plain
/// resources 30 % slower: a file without a reload keeps none (it has nothing to owe,
/// and dest itself is what the next pass compares with).
#[test]
fn a_file_without_a_reload_writes_no_state_record() {
    let dir = tempfile::tempdir().unwrap();
    let res = resource(dir.path(), "plain.conf");
    assert!(matches!(run(&res, "a\n"), Ok(Done::Updated)));
    assert_eq!(std::fs::read_to_string(&res.dest).unwrap(), "a\n");
    assert!(
        !state_of(&res).resource_dir(&res).exists(),
        "no record for a file without a reload"
    );
    assert!(state_of(&res).load(&res).files.is_empty());
}

#[test]
fn a_render_failure_is_an_outcome_of_the_render_step() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let templates = dir_with_template(d, "app.tmpl", "x={{ getv(key=\"/missing\") }}\n");
    let mut res = resource(d, "app.conf");
    res.src = "app.tmpl".into();
    let pipeline = Pipeline::new(templates, state_of(&res), Options::default());

    let outcome = pipeline.run(&res, &snapshot(3, &[]), Work::Apply);

    assert_eq!(outcome.step, Step::Render);
    assert_eq!(outcome.failed_step(), Some(Step::Render));
    let err = outcome.result.unwrap_err();
    assert!(matches!(err, ApplyError::Render { .. }), "{err:?}");
    assert!(err.to_string().contains("/missing"), "{err}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "the render error is kept"
    );
    assert!(!res.dest.exists());
}

#[test]
fn compare_stage_check_swap_and_reload_failures_each_name_their_step() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let mut compare = resource(d, "");
    compare.dest = d.to_path_buf();
    let stage = resource(d, "nowhere/app.conf");
    let mut check = resource(d, "check.conf");
    check.check = cmd("exit 1");
    // The check replaces dest with a directory, so that the rename over it fails.
    let mut swap = resource(d, "swap.conf");
    swap.check = cmd("rm -f {{.dest}} && mkdir {{.dest}} && touch {{.dest}}/x");
    let mut reload = resource(d, "reload.conf");
    reload.reload = cmd("exit 3");

    let cases = [
        (compare, Step::Compare),
        (stage, Step::Stage),
        (check, Step::Check),
        (swap, Step::Swap),
        (reload, Step::Reload),
    ];
    for (res, step) in cases {
        let outcome = pipeline(&res, Options::default()).run_rendered(&res, "new", 1);
        assert_eq!(outcome.failed_step(), Some(step), "{outcome:?}");
        assert_eq!(steps(&outcome).last(), Some(&step), "{outcome:?}");
        let err = outcome.result.as_ref().unwrap_err();
        assert_eq!(err.step(), Some(step));
        assert!(err.to_string().contains("test.toml"), "{err}");
        assert_eq!(outcome.reload_owed, step == Step::Reload, "{step}");
    }
}

#[test]
fn an_owed_reload_is_kept_in_the_state_directory_and_run_by_the_next_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut res = resource(d, "app.conf");
    res.reload = cmd(&format!(
        "test -e {} && touch {}",
        d.join("healthy").display(),
        d.join("reloaded").display()
    ));

    let first = pipeline(&res, Options::default()).run_rendered(&res, "new", 1);
    assert_eq!(first.failed_step(), Some(Step::Reload));
    assert!(state_of(&res).load(&res).reload_owed);
    assert!(stage_files(d).is_empty(), "nothing of ours beside dest");

    fs::write(d.join("healthy"), "").unwrap();
    let second = pipeline(&res, Options::default()).run_rendered(&res, "new", 2);
    assert!(matches!(second.result, Ok(Done::Reloaded)), "{second:?}");
    assert_eq!(steps(&second), vec![Step::Compare, Step::Reload]);
    assert!(d.join("reloaded").exists());
    assert!(!state_of(&res).load(&res).reload_owed);
}

fn dir_with_template(d: &Path, name: &str, text: &str) -> Arc<Templates> {
    let templates = d.join("templates");
    fs::create_dir_all(&templates).unwrap();
    fs::write(templates.join(name), text).unwrap();
    Arc::new(Templates::load(&templates).unwrap())
}

fn state_of(res: &Resource) -> StateDir {
    StateDir::open(&res.file.parent().unwrap().join("state"), true).unwrap()
}

fn snapshot(revision: i64, pairs: &[(&str, &str)]) -> Arc<Snapshot> {
    Arc::new(Snapshot::new(
        revision,
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    ))
}
