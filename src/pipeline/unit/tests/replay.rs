//! The journal's replay at start: a swap completed or undone as its phase says, and
//! replaying twice the same as once.

use std::fs;

use super::super::{recover, txn};
use super::Unit;
use crate::state::{Backup, Entry, Journal, Phase};

/// A journal as a kill leaves it: `a.conf` swapped already, `b.conf` still staged,
/// `gone.conf` not yet removed; previous copies of all three in the state directory.
fn interrupted(u: &Unit, phase: Phase) -> Journal {
    let state = u.state();
    let previous = state.fresh_previous_dir(&u.resource).unwrap();
    let mut entries = Vec::new();
    for (name, old, new) in [
        ("a", "old a", Some("new a")),
        ("b", "old b", Some("new b")),
        ("gone", "old gone", None),
    ] {
        let target = u.path(&format!("out/s/{name}.conf"));
        let copy = previous.join(name);
        fs::write(&copy, old).unwrap();
        let stage = new.map(|content| {
            let stage = u.path(&format!("out/s/.{name}.conf.0000"));
            fs::write(&stage, content).unwrap();
            stage
        });
        fs::write(&target, old).unwrap();
        entries.push(Entry {
            target,
            stage,
            backup: Some(Backup {
                copy,
                mode: 0o644,
                uid: 0,
                gid: 0,
            }),
        });
    }
    fs::rename(u.path("out/s/.a.conf.0000"), u.path("out/s/a.conf")).unwrap();
    let journal = Journal {
        phase,
        entries,
        after: crate::state::Record::default(),
        before: crate::state::Record::default(),
    };
    state.write_journal(&u.resource, &journal).unwrap();
    journal
}

fn contents(u: &Unit) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(u.path("out/s"))
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            format!("{name}: {}", fs::read_to_string(&path).unwrap())
        })
        .collect();
    names.sort();
    names
}

#[test]
fn replaying_a_checked_journal_completes_the_swap_and_owes_the_reload() {
    let mut u = Unit::new();
    u.resource.reload = u.logged("reload", "true");
    interrupted(&u, Phase::Checked);
    recover(&u.state(), std::slice::from_ref(&u.resource));
    assert_eq!(contents(&u), ["a.conf: new a", "b.conf: new b"]);
    assert!(u.state().load(&u.resource).reload_owed);
    assert_eq!(u.state().journal(&u.resource), None);
}

#[test]
fn replaying_a_trial_or_a_rollback_puts_the_previous_set_back() {
    for (phase, owed) in [(Phase::Trial, false), (Phase::RollingBack, true)] {
        let mut u = Unit::new();
        u.resource.reload = u.logged("reload", "true");
        interrupted(&u, phase);
        recover(&u.state(), std::slice::from_ref(&u.resource));
        assert_eq!(
            contents(&u),
            ["a.conf: old a", "b.conf: old b", "gone.conf: old gone"],
            "{phase:?}"
        );
        assert_eq!(u.state().load(&u.resource).reload_owed, owed, "{phase:?}");
        assert_eq!(u.state().journal(&u.resource), None);
    }
}

#[test]
fn replaying_twice_is_replaying_once() {
    let u = Unit::new();
    let journal = interrupted(&u, Phase::Checked);
    txn::complete(&journal.entries).unwrap();
    txn::complete(&journal.entries).unwrap();
    assert_eq!(contents(&u), ["a.conf: new a", "b.conf: new b"]);
    txn::undo(&journal.entries).unwrap();
    txn::undo(&journal.entries).unwrap();
    assert_eq!(
        contents(&u),
        ["a.conf: old a", "b.conf: old b", "gone.conf: old gone"]
    );
}
