//! Test harness for runs of the real `conflux` binary on temporary confdirs: build a
//! confdir, run the binary (to completion, or in the background as a [`Daemon`]),
//! compare outputs with golden files (a full diff on mismatch).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// A temporary confdir with `conf.d/` and `templates/`, removed on drop.
pub struct Confdir {
    tmp: tempfile::TempDir,
}

impl Confdir {
    pub fn new() -> Confdir {
        let tmp = tempfile::tempdir().expect("tempdir");
        for d in ["conf.d", "templates", "out"] {
            std::fs::create_dir_all(tmp.path().join(d)).expect("mkdir");
        }
        Confdir { tmp }
    }

    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// Writes `text` at `rel`, creating parent directories; returns the path.
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, text).expect("write");
        path
    }

    pub fn template(&self, name: &str, text: &str) -> PathBuf {
        self.write(&format!("templates/{name}"), text)
    }

    pub fn resource(&self, name: &str, text: &str) -> PathBuf {
        self.write(&format!("conf.d/{name}"), text)
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.path(rel).exists()
    }

    /// `conflux --confdir <this> <args>`.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    /// The same with extra environment variables.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let confdir = self.root().to_str().expect("utf-8 path").to_string();
        let mut all = vec!["--confdir".to_string(), confdir];
        all.extend(args.iter().map(|a| a.to_string()));
        let state = self.state_dir();
        let state = state.to_str().expect("utf-8 path");
        let mut env = env.to_vec();
        if !env.iter().any(|(k, _)| *k == "CONFLUX_STATE_DIR") {
            env.insert(0, ("CONFLUX_STATE_DIR", state));
        }
        conflux(&all, &env)
    }

    /// The state directory runs of this confdir use (`<root>/state`), so that tests
    /// never share one nor write to /var/lib/conflux.
    pub fn state_dir(&self) -> PathBuf {
        self.path("state")
    }
}

/// What a run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn assert_stderr_contains(&self, needle: &str) -> &Run {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            self.stderr
        );
        self
    }
}

/// Runs the real binary with a clean `CONFLUX_*` environment and no backtraces; its
/// state directory is a fresh temporary one unless `env` names one.
pub fn conflux(args: &[String], env: &[(&str, &str)]) -> Run {
    let state = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_conflux"));
    for (k, _) in std::env::vars() {
        if k.starts_with("CONFLUX_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("CONFLUX_STATE_DIR", state.path().join("state"));
    cmd.args(args)
        .env("RUST_BACKTRACE", "0")
        .envs(env.iter().copied());
    let out = cmd.output().expect("run conflux");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Asserts `actual` equals the golden file `tests/golden/<name>`, printing a unified
/// diff when it does not.
#[track_caller]
pub fn assert_golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    let expected =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("golden {}: {e}", path.display()));
    if expected != actual {
        let diff = similar::TextDiff::from_lines(&expected, actual)
            .unified_diff()
            .header(&format!("golden/{name}"), "actual")
            .to_string();
        panic!("{name} differs from its golden file:\n{diff}");
    }
}

impl Confdir {
    /// A confdir holding a copy of `tests/fixtures/<name>`.
    pub fn from_fixture(name: &str) -> Confdir {
        let dir = Confdir::new();
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        copy_tree(&src, dir.root());
        dir
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read fixture") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

impl Confdir {
    /// The file at `rel`, or `None` while it does not exist (for polling).
    pub fn try_read(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.path(rel)).ok()
    }
}

/// How long a [`Daemon`] gets to exit after SIGTERM before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// The real binary running in the background (`--watch`, interval mode, or a run that
/// may hang), its stderr captured to a file. On drop: SIGCONT (in case a test stopped
/// it), SIGTERM, and SIGKILL if it has not exited by [`STOP_DEADLINE`].
pub struct Daemon {
    child: Option<Child>,
    stderr: PathBuf,
}

impl Daemon {
    /// `conflux --confdir <dir> <args>`, stderr to `<dir>/daemon.stderr`.
    pub fn start<S: AsRef<std::ffi::OsStr>>(dir: &Confdir, args: &[S]) -> Daemon {
        Daemon::start_env(dir, args, &[])
    }

    /// The same with extra environment variables.
    pub fn start_env<S: AsRef<std::ffi::OsStr>>(
        dir: &Confdir,
        args: &[S],
        env: &[(&str, &str)],
    ) -> Daemon {
        let stderr = dir.path("daemon.stderr");
        let file = std::fs::File::create(&stderr).expect("create the stderr file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_conflux"));
        for (k, _) in std::env::vars() {
            if k.starts_with("CONFLUX_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .env("CONFLUX_STATE_DIR", dir.state_dir())
            .envs(env.iter().copied())
            .arg("--confdir")
            .arg(dir.root())
            .args(args)
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start conflux");
        Daemon {
            child: Some(child),
            stderr,
        }
    }

    pub fn pid(&self) -> Pid {
        let child = self.child.as_ref().expect("the daemon was started");
        Pid::from_raw(i32::try_from(child.id()).expect("pid fits in i32"))
    }

    pub fn signal(&self, signal: Signal) {
        nix::sys::signal::kill(self.pid(), signal).expect("signal the daemon");
    }

    /// Everything the daemon wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Polls `condition` every 20 ms until it holds; panics after `deadline` with
    /// `what` and the daemon's stderr. A deadline is a guard against hanging, not a
    /// speed requirement: make it generous.
    pub async fn wait_for(
        &self,
        what: &str,
        deadline: Duration,
        mut condition: impl FnMut() -> bool,
    ) {
        let until = Instant::now() + deadline;
        while !condition() {
            if Instant::now() > until {
                panic!(
                    "not within {deadline:?}: {what}\n--- daemon stderr\n{}",
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Panics with the daemon's stderr when it has exited.
    #[track_caller]
    pub fn assert_running(&mut self) {
        let child = self.child.as_mut().expect("the daemon was started");
        if let Some(status) = child.try_wait().expect("wait for the daemon") {
            panic!("conflux exited ({status}):\n{}", self.stderr());
        }
    }

    /// Waits for the process to exit by itself; its exit code (`-1` for a signal).
    /// Panics, killing it, after `deadline`.
    pub async fn exit_code(&mut self, deadline: Duration) -> i32 {
        let until = Instant::now() + deadline;
        let child = self.child.as_mut().expect("the daemon was started");
        loop {
            if let Some(status) = child.try_wait().expect("wait for the daemon") {
                self.child = None;
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > until {
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                panic!(
                    "the daemon did not exit within {deadline:?}\n--- stderr\n{}",
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, Signal::SIGCONT);
        let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
        let until = Instant::now() + STOP_DEADLINE;
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
