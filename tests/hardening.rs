//! The attacks and accidents of issue 8, each reproduced with the real binary (and a
//! real etcd where it matters), asserting the fixed behaviour and that the old files
//! are intact.

use std::time::Duration;

use crate::harness::{Confdir, Daemon};
use crate::support::etcd::EtcdServer;

const PATIENCE: Duration = Duration::from_secs(20);

fn app(dir: &Confdir, reload: &str) {
    dir.template("app.tmpl", "x={{ getv(key=\"/x\", default=\"none\") }}\n");
    dir.resource(
        "app.toml",
        &format!(
            "[template]\nsrc = \"app.tmpl\"\ndest = \"out/app.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\n\
             reload_cmd = '''{reload}'''\n"
        ),
    );
}

fn watch(dir: &Confdir, etcd: &EtcdServer) -> Daemon {
    Daemon::start(
        dir,
        &["--watch", "--backend", "etcdv3", "--node", &etcd.endpoint()],
    )
}

/// Regression: etcd wiped and restarted under a watching daemon (revision 34 → 1): the
/// daemon kept watching "after 34" and ignored every change until the new cluster
/// passed revision 34.
#[tokio::test]
async fn a_wiped_etcd_whose_revision_went_backwards_is_read_again() {
    let mut etcd = EtcdServer::start().await;
    etcd.put("/app/x", "1").await;
    for n in 0..30 {
        etcd.put(&format!("/other/{n}"), "v").await;
    }
    let dir = Confdir::new();
    app(&dir, "true");
    let daemon = watch(&dir, &etcd);
    daemon
        .wait_for("x=1 applied", PATIENCE, || {
            dir.try_read("out/app.conf").as_deref() == Some("x=1\n")
        })
        .await;

    etcd.wipe_and_restart().await;
    let revision = etcd.put("/app/x", "2").await;
    assert!(revision < 30, "the new cluster starts over: {revision}");
    daemon
        .wait_for("the new cluster's x=2 applied", PATIENCE, || {
            dir.try_read("out/app.conf").as_deref() == Some("x=2\n")
        })
        .await;
    assert!(
        daemon.stderr().contains("revision went backwards"),
        "{}",
        daemon.stderr()
    );
}

/// Regression: a reload that failed after its swap was dropped when a newer render then
/// failed its check: the service ran older config than dest said until some later
/// render passed. Now the owed reload of the file in place runs anyway.
#[tokio::test]
async fn an_owed_reload_runs_although_a_newer_render_fails_its_check() {
    let etcd = EtcdServer::start().await;
    etcd.put("/app/x", "1").await;
    let dir = Confdir::new();
    dir.template("app.tmpl", "x={{ getv(key=\"/x\", default=\"none\") }}\n");
    dir.resource(
        "app.toml",
        "[template]\nsrc = \"app.tmpl\"\ndest = \"out/app.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\n\
         check_cmd = '! grep -q bad {{.src}}'\n\
         reload_cmd = 'test -e $(dirname {{.dest}})/reload-ok && cat {{.dest}} >> $(dirname {{.dest}})/reloads.log'\n",
    );
    let daemon = watch(&dir, &etcd);
    daemon
        .wait_for("x=1 swapped, its reload failed", PATIENCE, || {
            daemon
                .stderr()
                .contains("IS in place, but its reload failed")
        })
        .await;
    // The service comes back, and at once a newer value arrives that fails its check.
    dir.write("out/reload-ok", "");
    etcd.put("/app/x", "bad").await;
    daemon
        .wait_for("the owed reload of x=1 runs", PATIENCE, || {
            dir.try_read("out/reloads.log").as_deref() == Some("x=1\n")
        })
        .await;
    assert_eq!(
        dir.read("out/app.conf"),
        "x=1\n",
        "the bad render never reached dest"
    );
}

/// Regression: a CA file that is not PEM was accepted at startup and failed at every
/// connection later (exit 1, as if etcd were away); it is a configuration error.
#[test]
fn a_tls_file_that_is_not_pem_is_a_configuration_error() {
    let dir = Confdir::new();
    app(&dir, "true");
    let ca = dir.write("ca.pem", "this is not a certificate\n");
    dir.run(&[
        "--onetime",
        "--backend",
        "etcdv3",
        "--node",
        "https://127.0.0.1:1",
        "--client-ca-keys",
        ca.to_str().unwrap(),
    ])
    .assert_code(2)
    .assert_stderr_contains(ca.to_str().unwrap())
    .assert_stderr_contains("PEM");
}

/// Regression: a syntax error in conflux.toml printed the line holding the password.
#[test]
fn a_config_error_never_prints_a_secret() {
    let dir = Confdir::new();
    app(&dir, "true");
    dir.write("conflux.toml", "backend = \"env\"\npassword = 'hunter2\n");
    let run = dir.run(&["--onetime"]);
    run.assert_code(2).assert_stderr_contains("line 2");
    assert!(!run.stderr.contains("hunter2"), "{}", run.stderr);
    dir.write("conflux.toml", "backend = \"env\"\npassword = 12345678\n");
    let run = dir.run(&["--onetime"]);
    run.assert_code(2).assert_stderr_contains("password");
    assert!(!run.stderr.contains("12345678"), "{}", run.stderr);
}

/// Regression: check and reload commands inherited CONFLUX_PASSWORD (and every other
/// credential in conflux's environment).
#[test]
fn commands_never_see_conflux_credentials() {
    let dir = Confdir::new();
    app(&dir, "env > $(dirname {{.dest}})/reload.env");
    let run = dir.run_env(
        &["--onetime", "--backend", "env"],
        &[
            ("CONFLUX_PASSWORD", "hunter2"),
            ("CONFLUX_USERNAME", "admin"),
            ("APP_X", "1"),
            ("SERVICE_TOKEN_FILE", "/run/kept"),
        ],
    );
    run.assert_code(0);
    let env = dir.read("out/reload.env");
    assert!(
        !env.contains("hunter2") && !env.contains("CONFLUX_"),
        "{env}"
    );
    assert!(
        env.contains("SERVICE_TOKEN_FILE=/run/kept"),
        "the service's own variables stay"
    );
}

/// Regression: `{{.dest}}` went into the command line unquoted, so a dest holding `;`
/// ran a command of its own. Such a dest is refused at load, naming file and line.
#[test]
fn a_dest_with_shell_syntax_is_refused_before_any_command_runs() {
    let dir = Confdir::new();
    dir.template("app.tmpl", "x\n");
    dir.resource(
        "app.toml",
        "[template]\nsrc = \"app.tmpl\"\ndest = \"out/a;touch pwned\"\nreload_cmd = \"cat {{.dest}}\"\n",
    );
    dir.run(&["--onetime", "--backend", "env"])
        .assert_code(1)
        .assert_stderr_contains("app.toml")
        .assert_stderr_contains("line 3")
        .assert_stderr_contains("`;`");
    assert!(!dir.exists("pwned") && !dir.exists("out/pwned"));
    assert!(!dir.exists("out/a;touch pwned"));
}

/// Regression: a value that is not UTF-8 became U+FFFD without a word. It still does
/// (templates deal in strings, as confd's), but the log names the key, once.
#[tokio::test]
async fn a_value_that_is_not_utf8_is_warned_about_once_naming_its_key() {
    let etcd = EtcdServer::start().await;
    etcd.client()
        .await
        .put("/app/x", vec![0xffu8, 0xfe, b'a'], None)
        .await
        .unwrap();
    let dir = Confdir::new();
    app(&dir, "true");
    let run = dir.run(&[
        "--onetime",
        "--backend",
        "etcdv3",
        "--node",
        &etcd.endpoint(),
    ]);
    run.assert_code(0);
    assert_eq!(dir.read("out/app.conf"), "x=\u{fffd}\u{fffd}a\n");
    let warnings: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("not UTF-8"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", run.stderr);
    assert!(warnings[0].contains("/app/x"), "{}", warnings[0]);
}

/// Regression: one key spelled twice in a data file (`a: {b: x}` and `"a/b": y`)
/// collided silently. A one-shot run now stops with a configuration error naming the
/// file and the key; the file it would have written is untouched.
#[test]
fn a_data_file_giving_one_key_twice_is_a_configuration_error() {
    let dir = Confdir::new();
    app(&dir, "true");
    dir.write("out/app.conf", "x=old\n");
    dir.write("data.yaml", "app:\n  x: 1\n\"app/x\": 2\n");
    crate::onetime::run_app(&dir, &[])
        .assert_code(2)
        .assert_stderr_contains("data.yaml")
        .assert_stderr_contains("/app/x");
    assert_eq!(dir.read("out/app.conf"), "x=old\n");
}

/// Regression: two resources with one dest were applied side by side and the file's
/// content flipped between them. It is a configuration error naming both.
#[test]
fn two_resources_with_one_dest_are_a_configuration_error_naming_both() {
    let dir = Confdir::new();
    dir.template("app.tmpl", "x\n");
    for name in ["one", "two"] {
        dir.resource(
            &format!("{name}.toml"),
            "[template]\nsrc = \"app.tmpl\"\ndest = \"out/./app.conf\"\n",
        );
    }
    dir.resource(
        "sub/three.toml",
        "[template]\nsrc = \"app.tmpl\"\ndest = \"out/other.conf\"\n",
    );
    dir.run(&["--onetime", "--backend", "env"])
        .assert_code(2)
        .assert_stderr_contains("one.toml")
        .assert_stderr_contains("two.toml")
        .assert_stderr_contains("app.conf");
    assert!(!dir.exists("out/app.conf") && !dir.exists("out/other.conf"));
}

/// Regression: an editor's swap file (or any file no resource renders, such as a
/// README) in templates/ made every SIGHUP reload fail and logged an error at each
/// start. Hidden and backup files are not templates; an unused broken one is a warning.
#[tokio::test]
async fn a_swap_file_or_a_readme_in_templates_does_not_block_a_reload() {
    let etcd = EtcdServer::start().await;
    etcd.put("/app/x", "1").await;
    let dir = Confdir::new();
    app(&dir, "true");
    let daemon = watch(&dir, &etcd);
    daemon
        .wait_for("applied", PATIENCE, || {
            dir.try_read("out/app.conf").is_some()
        })
        .await;
    dir.template(".app.tmpl.swp", "{{ half written");
    dir.template("app.tmpl~", "{{ old");
    dir.template("README", "how these templates work: {{ not a template }}");
    dir.template("app.tmpl", "x is {{ getv(key=\"/x\") }}\n");
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    daemon
        .wait_for("the reload applied", PATIENCE, || {
            dir.try_read("out/app.conf").as_deref() == Some("x is 1\n")
        })
        .await;
    let stderr = daemon.stderr();
    assert!(!stderr.contains("reload refused"), "{stderr}");
    assert!(
        stderr.contains("a template no resource renders did not load"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(".app.tmpl.swp"),
        "hidden files are not read: {stderr}"
    );
}

/// Regression: a dest under /proc failed with "directory /proc/... does not exist".
#[test]
fn a_dest_in_a_directory_that_takes_no_files_names_the_real_error() {
    let dir = Confdir::new();
    dir.template("app.tmpl", "x\n");
    dir.resource(
        "app.toml",
        "[template]\nsrc = \"app.tmpl\"\ndest = \"/proc/conflux-test.conf\"\n",
    );
    let run = dir.run(&["--onetime", "--backend", "env"]);
    run.assert_code(1)
        .assert_stderr_contains("cannot create a file in /proc");
    assert!(!run.stderr.contains("does not exist"), "{}", run.stderr);
}

/// Makes `path` (a symlink) owned by `uid`, without following it.
fn chown_link(path: &std::path::Path, uid: u32) {
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        path,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(uid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// Regression: in a directory anyone can write (mode 1777), a user planted
/// `app.conf` → a root-only secret; conflux (as root) followed it, wrote the render
/// into the secret and made it 0644, and `--noop` printed the secret in its diff.
#[test]
fn a_planted_symlink_in_a_world_writable_directory_is_not_followed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Confdir::new();
    let secret = dir.write("root-only/secret", "the secret\n");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let shared = dir.path("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let link = shared.join("app.conf");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    chown_link(&link, 65534);
    dir.template("app.tmpl", "rendered\n");
    dir.resource(
        "app.toml",
        "[template]\nsrc = \"app.tmpl\"\ndest = \"shared/app.conf\"\n",
    );

    let noop = dir.run(&["--onetime", "--noop", "--backend", "env"]);
    noop.assert_code(1)
        .assert_stderr_contains("shared/app.conf")
        .assert_stderr_contains("uid 65534");
    assert!(!noop.stdout.contains("the secret") && !noop.stderr.contains("the secret"));
    dir.run(&["--onetime", "--backend", "env"])
        .assert_code(1)
        .assert_stderr_contains("not followed");
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "the secret\n");
    let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600);
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

/// Regression: a FIFO as dest made `--onetime` hang in `open` (SIGTERM could not end
/// it), and a character device was replaced by a regular file (with `dest =
/// "/dev/null"`, the system's /dev/null). Neither is opened nor replaced now.
#[test]
fn a_dest_that_is_a_fifo_or_a_device_is_refused_before_anything_is_opened() {
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    let dir = Confdir::new();
    dir.template("app.tmpl", "x\n");
    let fifo = dir.path("out/fifo.conf");
    nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o644)).unwrap();
    let null = dir.path("out/null.conf");
    mknod(
        &null,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(1, 3),
    )
    .unwrap();
    for name in ["fifo", "null"] {
        dir.resource(
            &format!("{name}.toml"),
            &format!("[template]\nsrc = \"app.tmpl\"\ndest = \"out/{name}.conf\"\n"),
        );
    }
    let run = dir.run(&["--onetime", "--backend", "env"]);
    run.assert_code(1)
        .assert_stderr_contains("is a FIFO, not a regular file")
        .assert_stderr_contains("is a character device, not a regular file");
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert!(
        std::fs::symlink_metadata(&null)
            .unwrap()
            .file_type()
            .is_char_device()
    );
}

/// Regression: stage files left by a kill -9 during a slow check were never removed
/// (60 kills left 7 files, 12.7 MB with a large dest). The next start removes them.
#[tokio::test]
async fn a_stage_file_left_by_a_kill_during_a_slow_check_is_removed_at_the_next_start() {
    let dir = Confdir::new();
    dir.template("app.tmpl", "x\n");
    dir.resource(
        "app.toml",
        "[template]\nsrc = \"app.tmpl\"\ndest = \"out/app.conf\"\n\
         check_cmd = \"echo $$ > $(dirname {{.dest}})/check.pid && exec sleep 30\"\n",
    );
    let mut slow = Daemon::start(&dir, &["--onetime", "--backend", "env"]);
    let stage_files = || -> Vec<String> {
        std::fs::read_dir(dir.path("out"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".app.conf."))
            .collect()
    };
    slow.wait_for("the stage file and the check", PATIENCE, || {
        !stage_files().is_empty()
            && dir
                .try_read("out/check.pid")
                .is_some_and(|p| p.ends_with('\n'))
    })
    .await;
    // kill -9 conflux and the check it started (its own process group).
    let pid = slow.pid();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    assert_eq!(slow.exit_code(PATIENCE).await, -1);
    let check: i32 = dir.read("out/check.pid").trim().parse().unwrap();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(check),
        nix::sys::signal::Signal::SIGKILL,
    );
    assert_eq!(stage_files().len(), 1, "the kill left its stage file");

    dir.resource(
        "app.toml",
        "[template]\nsrc = \"app.tmpl\"\ndest = \"out/app.conf\"\n",
    );
    dir.run(&["--onetime", "--backend", "env"])
        .assert_code(0)
        .assert_stderr_contains("removed stage files left by an interrupted apply");
    assert!(stage_files().is_empty(), "{:?}", stage_files());
    assert_eq!(dir.read("out/app.conf"), "x\n");
}
