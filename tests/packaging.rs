//! The packaging, as far as it runs without dpkg or a Docker engine (scripts/test-package
//! checks the installed .deb; no Docker engine runs on the test machines, so
//! packaging/Dockerfile is not built): `conflux --version`, and the container
//! entrypoint (packaging/entrypoint.sh) run directly, with the real binary first on its
//! PATH and the file backend. The gateway's container recipe (render nginx.conf, exec
//! nginx) is in `gateway::container`, with a real nginx.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::harness::{Confdir, conflux};

/// A guard against a hang, not a speed requirement.
const DEADLINE: Duration = Duration::from_secs(20);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The commit `--version` must name: CONFLUX_GIT_COMMIT when the build was given one,
/// else git's HEAD, else (a tarball) "unknown" (build.rs's rules).
fn expected_commit() -> String {
    if let Ok(given) = std::env::var("CONFLUX_GIT_COMMIT")
        && !given.trim().is_empty()
    {
        return given.trim().to_string();
    }
    if !repo().join(".git").exists() {
        return "unknown".into();
    }
    let out = Command::new("git")
        .arg("-C")
        .arg(repo())
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .expect("run git");
    assert!(out.status.success(), "git rev-parse: {out:?}");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let want = format!(
        "conflux {} (commit {})\n",
        env!("CARGO_PKG_VERSION"),
        expected_commit()
    );
    for flag in ["--version", "-version", "-V"] {
        let run = conflux(&[flag.to_string()], &[]);
        run.assert_code(0);
        assert_eq!(run.stdout, want, "{flag}");
    }
}

/// A container's process run without one: `argv` (its ENTRYPOINT and CMD) in its own
/// process group (killed on drop with whatever it left running), with the real
/// binary as `conflux` and packaging/entrypoint.sh as `conflux-entrypoint` first on
/// its PATH, as in the image, and conflux configured through CONFLUX_* variables for
/// the file backend on `data`.
pub struct Container {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Container {
    /// `conflux-entrypoint <args>`.
    pub fn start<S: AsRef<std::ffi::OsStr>>(
        dir: &Confdir,
        data: &Path,
        args: &[S],
        env: &[(&str, &str)],
    ) -> Container {
        let mut argv = vec![std::ffi::OsString::from("conflux-entrypoint")];
        argv.extend(args.iter().map(|a| a.as_ref().to_os_string()));
        Container::run(dir, data, &argv, env)
    }

    /// `argv` as it is.
    pub fn run<S: AsRef<std::ffi::OsStr>>(
        dir: &Confdir,
        data: &Path,
        argv: &[S],
        env: &[(&str, &str)],
    ) -> Container {
        let bin = dir.path("bin");
        std::fs::create_dir_all(&bin).expect("mkdir bin");
        let entrypoint = bin.join("conflux-entrypoint");
        if !entrypoint.exists() {
            std::os::unix::fs::symlink(repo().join("packaging/entrypoint.sh"), &entrypoint)
                .expect("link conflux-entrypoint");
        }
        let conflux_dir = Path::new(env!("CARGO_BIN_EXE_conflux"))
            .parent()
            .expect("the binary's directory");
        let path = format!(
            "{}:{}:{}",
            bin.display(),
            conflux_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let (stdout, stderr) = (dir.path("container.stdout"), dir.path("container.stderr"));
        let (program, args) = argv.split_first().expect("a program to run");
        let mut cmd = Command::new(program);
        for (k, _) in std::env::vars() {
            if k.starts_with("CONFLUX_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .env("PATH", path)
            .env("RUST_BACKTRACE", "0")
            .env("CONFLUX_CONFDIR", dir.root())
            .env("CONFLUX_STATE_DIR", dir.state_dir())
            .env("CONFLUX_BACKEND", "file")
            .env("CONFLUX_FILE", data)
            .envs(env.iter().copied())
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("create stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("create stderr file"))
            .process_group(0)
            .spawn()
            .expect("run the container's command");
        Container {
            child,
            stdout,
            stderr,
        }
    }

    /// The entrypoint's process, which `exec` hands to the service.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The name of the program the entrypoint's process runs now.
    pub fn program(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/comm", self.pid()))
            .expect("read /proc/<pid>/comm")
            .trim()
            .to_string()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits for the entrypoint's process to exit by itself; panics after [`DEADLINE`].
    pub fn wait(&mut self) -> ExitStatus {
        let until = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < until,
                "the container did not exit within {DEADLINE:?}\n--- stderr\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls until `condition` holds; panics after [`DEADLINE`] with `what`.
    pub fn wait_until(&mut self, what: &str, condition: impl Fn() -> bool) {
        let until = Instant::now() + DEADLINE;
        while !condition() {
            if let Some(status) = self.child.try_wait().expect("wait") {
                panic!(
                    "the container exited ({status}) before {what}:\n{}",
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < until,
                "not within {DEADLINE:?}: {what}\n--- stderr\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn group(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.pid()).expect("pid fits in i32"))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = killpg(self.group(), Signal::SIGTERM);
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until && !matches!(self.child.try_wait(), Ok(Some(_))) {
            std::thread::sleep(Duration::from_millis(20));
        }
        // Whatever is left of the group (a daemon beside the service).
        let _ = killpg(self.group(), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// A confdir with one resource, `out/app.conf` = "greeting = <the key /app/greeting>",
/// and its data file saying `greeting`; the data file's path.
fn app(greeting: &str) -> (Confdir, PathBuf) {
    let dir = Confdir::new();
    dir.template("app.tmpl", "greeting = {{ getv(key=\"/app/greeting\") }}\n");
    dir.resource(
        "app.toml",
        "[template]\nsrc = \"app.tmpl\"\ndest = \"out/app.conf\"\nkeys = [\"/app\"]\n",
    );
    let data = dir.write("data.yaml", &format!("app:\n  greeting: {greeting}\n"));
    (dir, data)
}

/// Replaces the data file whole (a rename), as an edit that the watcher never sees
/// half-written.
fn rewrite(dir: &Confdir, data: &Path, greeting: &str) {
    let tmp = dir.write("data.yaml.new", &format!("app:\n  greeting: {greeting}\n"));
    std::fs::rename(tmp, data).expect("rename the data file");
}

#[test]
fn the_entrypoint_renders_once_then_becomes_the_command() {
    let (dir, data) = app("hello");
    let dest = dir.path("out/app.conf");
    let script = r#"cat "$0"; echo "pid $$""#;
    let mut container = Container::start(
        &dir,
        &data,
        &["sh", "-c", script, dest.to_str().expect("utf-8")],
        &[],
    );
    let status = container.wait();

    assert!(status.success(), "{status}\n{}", container.stderr());
    // The command saw the rendered file, and ran in the entrypoint's own process.
    assert_eq!(
        container.stdout(),
        format!("greeting = hello\npid {}\n", container.pid())
    );
}

#[test]
fn the_entrypoint_starts_nothing_when_a_resource_fails() {
    let (dir, data) = app("hello");
    dir.resource(
        "app.toml",
        "[template]\nsrc = \"app.tmpl\"\ndest = \"out/app.conf\"\nkeys = [\"/app\"]\ncheck_cmd = \"false\"\n",
    );
    let marker = dir.path("service-started");
    let mut container = Container::start(
        &dir,
        &data,
        &["touch", marker.to_str().expect("utf-8")],
        &[],
    );

    // conflux --onetime's code: 1, a resource failed.
    assert_eq!(container.wait().code(), Some(1), "{}", container.stderr());
    assert!(!marker.exists(), "the service was started");
    assert!(!dir.exists("out/app.conf"), "a failed check reached dest");

    // A configuration error: 2, and still no service.
    let mut container = Container::start(
        &dir,
        &data,
        &["touch", marker.to_str().expect("utf-8")],
        &[("CONFLUX_BACKEND", "consul")],
    );
    assert_eq!(container.wait().code(), Some(2), "{}", container.stderr());
    assert!(!marker.exists(), "the service was started");
}

#[test]
fn the_entrypoint_without_a_command_is_the_daemon() {
    let (dir, data) = app("hello");
    let dest = dir.path("out/app.conf");
    let mut container = Container::start::<&str>(&dir, &data, &[], &[]);
    container.wait_until("the first render", || dest.exists());
    assert_eq!(container.program(), "conflux");

    rewrite(&dir, &data, "again");
    container.wait_until("the watch's render", || {
        std::fs::read_to_string(&dest).is_ok_and(|t| t == "greeting = again\n")
    });
    nix::sys::signal::kill(container.group(), Signal::SIGTERM).expect("SIGTERM");
    assert_eq!(container.wait().code(), Some(0), "{}", container.stderr());
}

#[test]
fn the_entrypoint_keeps_the_daemon_beside_the_service() {
    let (dir, data) = app("hello");
    let dest = dir.path("out/app.conf");
    // The "service" waits until conflux, beside it, has rendered the change.
    let script = r#"until grep -qx "greeting = bye" "$0"; do sleep 0.05; done; echo seen"#;
    let mut container = Container::start(
        &dir,
        &data,
        &["sh", "-c", script, dest.to_str().expect("utf-8")],
        &[("CONFLUX_ENTRYPOINT_WATCH", "1")],
    );
    container.wait_until("the first render", || dest.exists());

    rewrite(&dir, &data, "bye");
    let status = container.wait();
    assert!(status.success(), "{status}\n{}", container.stderr());
    assert_eq!(container.stdout(), "seen\n");
}
