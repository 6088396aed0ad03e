//! Units on real files in temporary directories, with real templates and real shell
//! commands: fan-out and its manifest, the in-place check both ways, each rollback
//! branch, `min_keys` and noop diffs; the journal's replay in `replay`.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use super::*;
use crate::command::{Command, DEFAULT_TIMEOUT};
use crate::kv::pattern::Pattern;
use crate::outcome::{Outcome, Work};
use crate::pipeline::{InPlace, Options};
use crate::resource::{OnReloadFailure, Output, OutputDest};
use crate::state::StateDir;
use crate::template::Templates;

mod replay;

/// A confdir-like directory: templates, `out/` (main.conf) and `out/s/` (the fan-out).
struct Unit {
    tmp: tempfile::TempDir,
    resource: Resource,
    templates: Arc<Templates>,
}

impl Unit {
    fn new() -> Unit {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        for dir in ["templates", "out/s"] {
            fs::create_dir_all(d.join(dir)).unwrap();
        }
        fs::write(
            d.join("templates/main.tmpl"),
            "{% for name in ls(path=\"/s\") %}include s/{{ name }}.conf;\n{% endfor %}",
        )
        .unwrap();
        fs::write(
            d.join("templates/item.tmpl"),
            "{{ item.key }}={{ item.value }}\n",
        )
        .unwrap();
        let mut r = crate::resource::test_resource("unit.toml", &["/s"], d.join("out/main.conf"));
        r.file = d.join("conf.d/unit.toml");
        r.unit = true;
        r.outputs = vec![
            output("main.tmpl", OutputDest::File(d.join("out/main.conf"))),
            output(
                "item.tmpl",
                OutputDest::FanOut {
                    for_each: "/s/*".into(),
                    pattern: Pattern::parse("/s/*").unwrap(),
                    dir: d.join("out/s"),
                    name: "{{ item.name }}.conf".into(),
                },
            ),
        ];
        let templates = Arc::new(Templates::load(&d.join("templates")).unwrap());
        Unit {
            tmp,
            resource: r,
            templates,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    fn state(&self) -> StateDir {
        StateDir::open(&self.path("state"), true).unwrap()
    }

    fn pipeline(&self, in_place: InPlace) -> Pipeline {
        let options = Options {
            in_place,
            ..Options::default()
        };
        Pipeline::new(Arc::clone(&self.templates), self.state(), options)
    }

    fn apply(&self, keys: &[(&str, &str)]) -> Outcome {
        self.apply_with(InPlace::Overlay, keys)
    }

    fn apply_with(&self, in_place: InPlace, keys: &[(&str, &str)]) -> Outcome {
        let kvs: BTreeMap<String, String> = keys
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.pipeline(in_place).run(
            &self.resource,
            &Arc::new(Snapshot::new(7, kvs)),
            Work::Apply,
        )
    }

    /// A command that appends `word` to `log` and then runs `then`.
    fn logged(&self, word: &str, then: &str) -> Option<Command> {
        let log = self.path("log");
        Some(Command::new(
            format!("echo {word} >> {}; {then}", log.display()),
            DEFAULT_TIMEOUT,
        ))
    }

    fn log(&self) -> Vec<String> {
        fs::read_to_string(self.path("log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

fn output(src: &str, dest: OutputDest) -> Output {
    Output {
        src: src.into(),
        dest,
        mode: None,
        uid: None,
        gid: None,
        check: None,
    }
}

const TWO: &[(&str, &str)] = &[("/s/a", "1"), ("/s/b", "2")];

#[test]
fn a_fan_out_writes_a_file_per_match_and_removes_the_file_of_a_gone_match() {
    let u = Unit::new();
    u.apply(TWO).result.unwrap();
    assert_eq!(
        u.read("out/main.conf"),
        "include s/a.conf;\ninclude s/b.conf;\n"
    );
    assert_eq!(u.read("out/s/a.conf"), "/s/a=1\n");
    fs::write(u.path("out/s/by-hand.conf"), "mine").unwrap();

    let outcome = u.apply(&[("/s/a", "1")]);

    assert!(matches!(outcome.result, Ok(Done::Updated)), "{outcome:?}");
    assert!(!u.path("out/s/b.conf").exists());
    assert_eq!(u.read("out/s/by-hand.conf"), "mine", "not conflux's file");
    let removed: Vec<_> = outcome.files.iter().filter(|f| f.removed).collect();
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].path, u.path("out/s/b.conf"));
    let record = u.state().load(&u.resource);
    assert_eq!(record.owned, [u.path("out/s/a.conf")].into());
}

#[test]
fn hostile_names_are_skipped_and_nothing_is_written_outside_the_directory() {
    let u = Unit::new();
    let keys = [
        ("/s/..", "up"),
        ("/s/.hidden", "h"),
        ("/s/ok", "fine"),
        ("/s/dir/deep", "d"),
    ];
    u.apply(&keys).result.unwrap();
    let mut names: Vec<_> = fs::read_dir(u.path("out/s"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["dir.conf", "ok.conf"]);
    assert!(!u.path("out/.conf").exists());
    assert!(!u.path("out/s/..conf").exists());
}

#[test]
fn two_matches_rendering_one_file_fail_the_unit_and_write_nothing() {
    let mut u = Unit::new();
    if let OutputDest::FanOut { name, .. } = &mut u.resource.outputs[1].dest {
        *name = "{{ item.value }}.conf".into();
    }
    let outcome = u.apply(&[("/s/a", "same"), ("/s/b", "same")]);
    let err = outcome.result.unwrap_err();
    assert!(matches!(err, ApplyError::SameDest { .. }), "{err}");
    assert!(!u.path("out/main.conf").exists());
}

#[test]
fn a_failed_check_in_the_overlay_leaves_every_live_file_and_runs_no_reload() {
    for in_place in [InPlace::Overlay, InPlace::SwapFirst] {
        let mut u = Unit::new();
        u.apply(TWO).result.unwrap();
        // The check fails on the new set only: it sees the new main.conf in place.
        u.resource.check = Some(Command::new(
            format!("! grep -q c.conf {}", u.path("out/main.conf").display()),
            DEFAULT_TIMEOUT,
        ));
        u.resource.reload = u.logged("reload", "true");
        let before = (u.read("out/main.conf"), u.read("out/s/b.conf"));

        let outcome = u.apply_with(in_place, &[("/s/a", "1"), ("/s/c", "3")]);

        assert_eq!(outcome.failed_step(), Some(Step::Check), "{in_place:?}");
        assert_eq!((u.read("out/main.conf"), u.read("out/s/b.conf")), before);
        assert!(!u.path("out/s/c.conf").exists(), "{in_place:?}");
        assert!(u.log().is_empty(), "{in_place:?}: no reload");
        assert_eq!(u.state().journal(&u.resource), None);
    }
}

#[test]
fn a_passing_check_sees_the_whole_new_set_and_one_reload_follows() {
    for in_place in [InPlace::Overlay, InPlace::SwapFirst] {
        let mut u = Unit::new();
        let out = u.path("out");
        u.resource.check = Some(Command::new(
            format!(
                "test -f {0}/s/a.conf && grep -q a.conf {0}/main.conf",
                out.display()
            ),
            DEFAULT_TIMEOUT,
        ));
        u.resource.reload = u.logged("reload", "true");
        let outcome = u.apply_with(in_place, TWO);
        assert!(matches!(outcome.result, Ok(Done::Updated)), "{outcome:?}");
        assert_eq!(u.log(), ["reload"]);
        assert_eq!(outcome.files.len(), 3);
    }
}

/// The reload of the new set fails once, the rollback's reload succeeds.
#[test]
fn rollback_restores_the_previous_set_reloads_it_and_marks_the_outcome_degraded() {
    let mut u = Unit::new();
    u.apply(TWO).result.unwrap();
    u.resource.on_reload_failure = OnReloadFailure::Rollback;
    let once = u.path("failed-once");
    u.resource.reload = u.logged(
        "reload",
        &format!("test -e {0} || {{ touch {0}; exit 1; }}", once.display()),
    );

    let outcome = u.apply(&[("/s/a", "new"), ("/s/c", "3")]);

    let err = outcome.result.as_ref().unwrap_err();
    assert!(
        matches!(
            err,
            ApplyError::RolledBack {
                restored: Ok(()),
                ..
            }
        ),
        "{err}"
    );
    assert!(outcome.degraded && !outcome.reload_owed);
    assert_eq!(u.read("out/s/a.conf"), "/s/a=1\n");
    assert_eq!(u.read("out/s/b.conf"), "/s/b=2\n");
    assert!(!u.path("out/s/c.conf").exists());
    assert_eq!(u.log(), ["reload", "reload"]);
    assert_eq!(u.state().journal(&u.resource), None);

    // The retry applies the new data, and the mark is gone.
    let outcome = u.apply(&[("/s/a", "new"), ("/s/c", "3")]);
    assert!(matches!(outcome.result, Ok(Done::Updated)), "{outcome:?}");
    assert!(!outcome.degraded);
    assert_eq!(u.read("out/s/c.conf"), "/s/c=3\n");
}

#[test]
fn a_rollback_whose_reload_fails_too_owes_the_reload_of_the_previous_set() {
    let mut u = Unit::new();
    u.apply(TWO).result.unwrap();
    u.resource.on_reload_failure = OnReloadFailure::Rollback;
    u.resource.reload = u.logged("reload", "exit 1");

    let outcome = u.apply(&[("/s/a", "new")]);

    let err = outcome.result.as_ref().unwrap_err();
    assert!(
        matches!(
            err,
            ApplyError::RolledBack {
                restored: Err(_),
                ..
            }
        ),
        "{err}"
    );
    assert!(outcome.degraded && outcome.reload_owed);
    assert_eq!(u.read("out/s/a.conf"), "/s/a=1\n");
    assert!(u.path("out/s/b.conf").exists());
    assert!(u.state().load(&u.resource).reload_owed);
}

#[test]
fn retry_keeps_the_new_set_and_owes_the_reload() {
    let mut u = Unit::new();
    u.apply(TWO).result.unwrap();
    u.resource.reload = u.logged("reload", "exit 1");
    let outcome = u.apply(&[("/s/a", "new")]);
    assert_eq!(outcome.failed_step(), Some(Step::Reload));
    assert!(outcome.reload_owed && !outcome.degraded);
    assert_eq!(u.read("out/s/a.conf"), "/s/a=new\n");
    assert!(u.state().load(&u.resource).reload_owed);
    assert_eq!(u.state().journal(&u.resource), None);
}

#[test]
fn too_few_keys_apply_nothing_and_say_how_many_were_seen() {
    let mut u = Unit::new();
    u.apply(TWO).result.unwrap();
    u.resource.min_keys = Some(2);
    let outcome = u.apply(&[]);
    let err = outcome.result.unwrap_err();
    assert!(
        matches!(
            err,
            ApplyError::TooFewKeys {
                seen: 0,
                min: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(u.path("out/s/a.conf").exists());
    assert_eq!(
        u.read("out/main.conf"),
        "include s/a.conf;\ninclude s/b.conf;\n"
    );
}

#[test]
fn noop_diffs_every_file_of_the_unit_removals_included() {
    let u = Unit::new();
    u.apply(TWO).result.unwrap();
    let options = Options {
        noop: true,
        ..Options::default()
    };
    let pipeline = Pipeline::new(Arc::clone(&u.templates), u.state(), options);
    let kvs = BTreeMap::from([("/s/a".to_string(), "9".to_string())]);
    let outcome = pipeline.run(&u.resource, &Arc::new(Snapshot::new(8, kvs)), Work::Apply);
    assert!(matches!(outcome.result, Ok(Done::WouldUpdate)));
    let diff = outcome.diff.unwrap();
    assert!(diff.contains("+/s/a=9"), "{diff}");
    assert!(diff.contains("-include s/b.conf;"), "{diff}");
    assert!(diff.contains("+++ /dev/null"), "{diff}");
    assert!(u.path("out/s/b.conf").exists());
}

#[test]
fn a_file_edited_by_hand_is_rewritten_though_unchanged_files_are_not_read() {
    let u = Unit::new();
    u.apply(TWO).result.unwrap();
    let record = u.state().load(&u.resource);
    assert!(
        record.files.values().all(|a| a.stamp.is_some()),
        "every written file stamped: {record:?}"
    );
    // Same length, other bytes: only its stamp (inode, change time) gives it away.
    fs::write(u.path("out/s/a.conf"), "/s/a=X\n").unwrap();

    let outcome = u.apply(TWO);

    assert!(matches!(outcome.result, Ok(Done::Updated)), "{outcome:?}");
    assert_eq!(outcome.files.len(), 1);
    assert_eq!(u.read("out/s/a.conf"), "/s/a=1\n");
    assert!(matches!(u.apply(TWO).result, Ok(Done::Unchanged)));
}

#[test]
fn a_rollback_that_cannot_restore_keeps_the_journal_for_the_next_start() {
    let mut u = Unit::new();
    u.apply(TWO).result.unwrap();
    u.resource.on_reload_failure = OnReloadFailure::Rollback;
    // The reload fails after taking the previous copies away: nothing to restore from.
    let previous = u.state().resource_dir(&u.resource).join("previous");
    u.resource.reload = u.logged("reload", &format!("rm -r {}; exit 1", previous.display()));

    let outcome = u.apply(&[("/s/a", "new")]);

    let err = outcome.result.as_ref().unwrap_err();
    let ApplyError::RolledBack {
        restored: Err(why), ..
    } = err
    else {
        panic!("{err}");
    };
    assert!(why.contains("cannot restore"), "{why}");
    assert!(outcome.degraded && outcome.reload_owed);
    let journal = u.state().journal(&u.resource).expect("journal kept");
    assert_eq!(journal.phase, crate::state::Phase::RollingBack);
}
