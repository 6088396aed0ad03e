//! The file side of a pass: modes and owners, symlinked and bind-mounted dests, and
//! the diffs noop prints.

use super::*;

#[test]
fn mode_only_change_counts_as_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut res = resource(d, "app.conf");
    res.mode = Some(0o600);
    res.check = marker(d, "checked");
    write(&res.dest, "same", 0o644);

    let outcome = run(&res, "same").unwrap();

    assert!(matches!(outcome, Done::Updated), "{outcome:?}");
    assert!(d.join("checked").exists());
    assert_eq!(mode_of(&res.dest), 0o600);
    assert_eq!(run(&res, "same").unwrap(), Done::Unchanged);
}

#[test]
fn new_file_gets_its_mode_and_the_stage_file_is_never_world_readable() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let seen = d.join("seen");
    let mut res = resource(d, "secret.conf");
    res.mode = Some(0o640);
    res.check = cmd(&format!("stat -c %a {{{{.src}}}} > {}", seen.display()));

    let outcome = pipeline(&res, Options::default()).run_rendered(&res, "password=x", 1);

    assert!(matches!(outcome.result, Ok(Done::Updated)));
    assert!(outcome.files[0].created);
    assert_eq!(fs::read_to_string(&seen).unwrap().trim(), "640");
    assert_eq!(mode_of(&res.dest), 0o640);
}

#[test]
fn new_file_without_a_mode_gets_0644_and_existing_keeps_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let res = resource(d, "app.conf");
    run(&res, "one").unwrap();
    assert_eq!(mode_of(&res.dest), 0o644);

    fs::set_permissions(&res.dest, Permissions::from_mode(0o604)).unwrap();
    run(&res, "two").unwrap();
    assert_eq!(mode_of(&res.dest), 0o604);
}

#[test]
fn symlinked_dest_keeps_its_link_and_updates_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir(d.join("real")).unwrap();
    write(&d.join("real/app.conf"), "old", 0o644);
    symlink("real/app.conf", d.join("app.conf")).unwrap();
    let staged_in = d.join("staged_in");
    let mut res = resource(d, "app.conf");
    res.check = cmd(&format!("dirname {{{{.src}}}} > {}", staged_in.display()));

    run(&res, "new").unwrap();

    assert!(
        fs::symlink_metadata(&res.dest)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        fs::read_link(&res.dest).unwrap(),
        Path::new("real/app.conf")
    );
    assert_eq!(fs::read_to_string(d.join("real/app.conf")).unwrap(), "new");
    let staged_in = fs::read_to_string(&staged_in).unwrap();
    assert_eq!(Path::new(staged_in.trim()), d.join("real"));
    assert_eq!(run(&res, "new").unwrap(), Done::Unchanged);
}

#[test]
fn noop_returns_a_diff_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut res = resource(d, "app.conf");
    res.check = marker(d, "checked");
    res.reload = marker(d, "reloaded");
    write(&res.dest, "a\nold\n", 0o644);
    let noop = Options {
        noop: true,
        ..Options::default()
    };

    let outcome = pipeline(&res, noop).run_rendered(&res, "a\nnew\n", 1);

    let name = res.dest.display().to_string();
    let name = name.trim_start_matches('/');
    let expected = format!("--- a/{name}\n+++ b/{name}\n@@ -1,2 +1,2 @@\n a\n-old\n+new\n");
    assert!(matches!(outcome.result, Ok(Done::WouldUpdate)));
    assert_eq!(outcome.diff, Some(expected));
    assert_eq!(fs::read_to_string(&res.dest).unwrap(), "a\nold\n");
    assert!(!d.join("checked").exists());
    assert!(!d.join("reloaded").exists());
    assert!(stage_files(d).is_empty());
}

#[test]
fn noop_on_a_new_file_diffs_from_dev_null_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let res = resource(dir.path(), "app.conf");
    let noop = Options {
        noop: true,
        ..Options::default()
    };

    let outcome = pipeline(&res, noop).run_rendered(&res, "x\n", 1);
    assert!(matches!(outcome.result, Ok(Done::WouldUpdate)));
    let diff = outcome.diff.expect("a diff");

    assert!(diff.starts_with("--- /dev/null\n"), "{diff}");
    assert!(diff.ends_with("+x\n"), "{diff}");
    assert!(!res.dest.exists());
}

#[test]
fn noop_mode_only_change_is_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let mut res = resource(dir.path(), "app.conf");
    res.mode = Some(0o600);
    write(&res.dest, "same", 0o644);
    let noop = Options {
        noop: true,
        ..Options::default()
    };

    let outcome = pipeline(&res, noop).run_rendered(&res, "same", 1);
    assert!(matches!(outcome.result, Ok(Done::WouldUpdate)));
    let diff = outcome.diff.expect("a diff");

    assert_eq!(
        diff,
        format!("mode of {}: 0644 -> 0600\n", res.dest.display())
    );
    assert_eq!(mode_of(&res.dest), 0o644);
}

#[test]
fn owner_is_set_to_the_current_user() {
    let dir = tempfile::tempdir().unwrap();
    let mut res = resource(dir.path(), "app.conf");
    res.uid = Some(nix::unistd::geteuid().as_raw());
    res.gid = Some(nix::unistd::getegid().as_raw());

    run(&res, "x").unwrap();

    let meta = fs::metadata(&res.dest).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (res.uid.unwrap(), res.gid.unwrap())
    );
    assert_eq!(run(&res, "x").unwrap(), Done::Unchanged);
}

/// Tests run as root: a real chown to another user.
#[test]
fn owner_is_set_to_nobody_and_an_owner_only_change_counts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut res = resource(d, "app.conf");
    res.uid = Some(65534);
    res.gid = Some(65534);
    res.mode = Some(0o640);
    res.check = marker(d, "checked");
    write(&res.dest, "same", 0o640);

    let outcome = pipeline(&res, Options::default()).run_rendered(&res, "same", 1);

    assert!(matches!(outcome.result, Ok(Done::Updated)), "{outcome:?}");
    assert!(!outcome.files[0].created);
    assert!(d.join("checked").exists());
    let meta = fs::metadata(&res.dest).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!(run(&res, "same").unwrap(), Done::Unchanged);
}

/// Unmounts on drop, so a failing assertion leaves no mount behind.
struct BindMount(PathBuf);

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// A bind-mounted dest (a Docker volume of one file) cannot be renamed over: the
/// content is copied in place instead. Tests run as root, so `mount --bind` works.
#[test]
fn bind_mounted_dest_is_overwritten_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let host = d.join("host.conf");
    let mut res = resource(d, "app.conf");
    res.mode = Some(0o640);
    write(&host, "old", 0o644);
    write(&res.dest, "", 0o644);
    let status = std::process::Command::new("mount")
        .arg("--bind")
        .arg(&host)
        .arg(&res.dest)
        .status()
        .unwrap();
    assert!(status.success(), "mount --bind failed");
    let mount = BindMount(res.dest.clone());

    let outcome = run(&res, "new").unwrap();

    assert!(matches!(outcome, Done::Updated), "{outcome:?}");
    assert_eq!(fs::read_to_string(&host).unwrap(), "new");
    assert_eq!(mode_of(&host), 0o640);
    assert!(stage_files(d).is_empty());
    drop(mount);
}
