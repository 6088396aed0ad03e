//! Check and reload commands as types: a shell line with `{{.src}}` and `{{.dest}}`
//! placeholders, run with `/bin/sh -c` in its own process group, with a timeout after
//! which the whole group is killed, and its output captured for the log.
//!
//! When to run a command is the pipeline's decision (or, for a health check,
//! [`crate::register`]'s), not this module's. Running is
//! synchronous (std threads only): the daemon calls it from `spawn_blocking`.

use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// The default for `check_timeout` and `reload_timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The most output kept from one run; the rest is dropped (and said to be).
pub const OUTPUT_CAP: usize = 64 * 1024;

/// How long to wait for the output pipe to close once the shell has exited. A command
/// that starts a daemon (`service foo restart`) may leave it holding the pipe: we take
/// what has been read by then rather than wait for the daemon to exit.
const OUTPUT_GRACE: Duration = Duration::from_millis(500);

/// A `check_cmd` or `reload_cmd` as written in a resource file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The shell line, with `{{.src}}` / `{{.dest}}` not yet substituted.
    pub line: String,
    pub timeout: Duration,
}

/// What a child runs between fork and exec. It must not allocate, lock or otherwise
/// touch what another thread of the parent may hold: only system calls on data it
/// owns, prepared before.
pub type PreExec = Box<dyn FnMut() -> io::Result<()> + Send + Sync>;

/// A run that exited 0.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    pub status: ExitStatus,
    pub duration: Duration,
    /// stdout and stderr interleaved as written, trimmed, at most [`OUTPUT_CAP`] bytes.
    pub output: String,
}

/// A run that did not exit 0.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("could not run /bin/sh: {source}")]
    Spawn {
        #[source]
        source: io::Error,
    },
    #[error("{status}{}", quoted(.output))]
    Failed { status: ExitStatus, output: String },
    #[error("timed out after {timeout:?}; its process group was killed{}", quoted(.output))]
    TimedOut { timeout: Duration, output: String },
}

fn quoted(output: &str) -> String {
    if output.is_empty() {
        ", no output".to_string()
    } else {
        format!(", output:\n{output}")
    }
}

/// The environment variables a command does not inherit: conflux's own settings
/// (`CONFLUX_PASSWORD`, `CONFLUX_CLIENT_KEY`, ... are credentials) and systemd's
/// messages meant for conflux alone (a reload that spoke to `NOTIFY_SOCKET` would speak
/// for conflux). Everything else is inherited, as a service's own variables
/// (`PATH`, `KUBECONFIG`, `DOCKER_HOST`) are what reload commands need.
fn withheld(name: &str) -> bool {
    name.starts_with("CONFLUX_")
        || name.starts_with("LISTEN_")
        || matches!(name, "NOTIFY_SOCKET" | "WATCHDOG_USEC" | "WATCHDOG_PID")
}

/// Characters a path substituted into a command line may not hold: the shell would
/// read them as syntax (`;`, `$(...)`, quotes, globs, spaces...).
const SHELL_SPECIAL: &[char] = &[
    ';', '&', '|', '<', '>', '(', ')', '$', '`', '\\', '"', '\'', '*', '?', '[', ']', '#', '~',
    '{', '}', '!', '^',
];

/// A path that cannot be substituted into a command line safely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{} holds {}, which the shell would run as syntax in `{{{{.src}}}}`/`{{{{.dest}}}}`; \
     choose a path without shell special characters or spaces",
    .path.display(), describe(*.found)
)]
pub struct UnsafePath {
    pub path: std::path::PathBuf,
    pub found: char,
}

fn describe(c: char) -> String {
    match c {
        ' ' => "a space".to_string(),
        c if c.is_whitespace() || c.is_control() => format!("the character {c:?}"),
        c => format!("`{c}`"),
    }
}

/// Refuses a path the shell would not read as one plain word. Paths are substituted
/// unquoted, as confd does (so that lines written as `"{{.src}}"` keep working); a
/// path that needs no quoting is the only one safe both ways.
pub fn check_path(path: &Path) -> Result<(), UnsafePath> {
    let text = path.to_string_lossy();
    match text
        .chars()
        .find(|&c| c.is_whitespace() || c.is_control() || SHELL_SPECIAL.contains(&c))
    {
        Some(found) => Err(UnsafePath {
            path: path.to_path_buf(),
            found,
        }),
        None => Ok(()),
    }
}

impl Command {
    pub fn new(line: impl Into<String>, timeout: Duration) -> Self {
        Command {
            line: line.into(),
            timeout,
        }
    }

    /// Whether the line substitutes `{{.src}}` or `{{.dest}}`.
    pub fn uses_paths(&self) -> bool {
        self.line.contains("{{") && self.expand(Path::new("\0"), Path::new("\0")) != self.line
    }

    /// The shell line with `{{.src}}` (the staged file) and `{{.dest}}` substituted;
    /// `{{ .src }}` spacing is accepted. Paths are inserted as is, not shell-quoted, as
    /// confd does: lines already written as `"{{.src}}"` keep working.
    pub fn expand(&self, src: &Path, dest: &Path) -> String {
        let mut out = String::with_capacity(self.line.len());
        let mut rest = self.line.as_str();
        while let Some(open) = rest.find("{{") {
            out.push_str(&rest[..open]);
            let after = &rest[open + 2..];
            let Some(close) = after.find("}}") else {
                rest = &rest[open..];
                break;
            };
            match after[..close].trim() {
                ".src" => out.push_str(&src.to_string_lossy()),
                ".dest" => out.push_str(&dest.to_string_lossy()),
                _ => out.push_str(&rest[open..open + 2 + close + 2]),
            }
            rest = &after[close + 2..];
        }
        out.push_str(rest);
        out
    }

    /// Runs the expanded line with `/bin/sh -c` in a new process group, stdin from
    /// `/dev/null`, stdout and stderr captured together. Past the timeout the whole
    /// group is killed with SIGKILL, so a `nginx -t` that forked helpers leaves none.
    /// Leftovers of a shell that exits on its own are not touched: a reload that
    /// starts a daemon must be able to.
    pub fn run(&self, src: &Path, dest: &Path) -> Result<CommandOutput, CommandError> {
        self.run_with(src, dest, None)
    }

    /// [`Command::run`] with `setup` run in the child between fork and exec (the
    /// in-place check enters its mount namespace there). A `setup` that fails makes
    /// the spawn fail with its error.
    pub fn run_with(
        &self,
        src: &Path,
        dest: &Path,
        setup: Option<PreExec>,
    ) -> Result<CommandOutput, CommandError> {
        self.run_line(&self.expand(src, dest), setup)
    }

    /// Runs the line as written, the same way, for a command that has no files to
    /// name (a health check): a `{{` in it reaches the shell untouched, where
    /// substituting empty paths would hide the mistake.
    pub fn run_as_written(&self) -> Result<CommandOutput, CommandError> {
        self.run_line(&self.line, None)
    }

    fn run_line(&self, line: &str, setup: Option<PreExec>) -> Result<CommandOutput, CommandError> {
        let spawn = |source| CommandError::Spawn { source };
        // One pipe for both streams keeps their interleaving, as `2>&1` would.
        let (reader, writer) = io::pipe().map_err(spawn)?;
        let stderr = writer.try_clone().map_err(spawn)?;
        let mut shell = std::process::Command::new("/bin/sh");
        for (name, _) in std::env::vars_os() {
            if withheld(&name.to_string_lossy()) {
                shell.env_remove(name);
            }
        }
        shell
            .arg("-c")
            .arg(line)
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(stderr)
            .process_group(0);
        if let Some(setup) = setup {
            // SAFETY: a `PreExec` only makes async-signal-safe system calls on memory
            // prepared before the fork (its contract, see the type).
            unsafe { shell.pre_exec(setup) };
        }
        let start = Instant::now();
        let child = shell.spawn().map_err(spawn)?;
        // Our copies of the write end must close, or the reader never sees EOF.
        drop(shell);
        let pid = child.id();
        let output = Capture::start(reader).inspect_err(|_| kill_group(pid));
        let output = output.map_err(spawn)?;
        let (tx, rx) = mpsc::channel();
        let mut child = child;
        let waiter = thread::Builder::new()
            .name("command-wait".into())
            .spawn(move || tx.send(child.wait()))
            .inspect_err(|_| kill_group(pid));
        waiter.map_err(spawn)?;

        let status = match rx.recv_timeout(self.timeout) {
            Ok(status) => status.map_err(spawn)?,
            Err(RecvTimeoutError::Timeout) => {
                kill_group(pid);
                // SIGKILL cannot be ignored: the shell is reaped promptly.
                let _ = rx.recv();
                return Err(CommandError::TimedOut {
                    timeout: self.timeout,
                    output: output.finish(),
                });
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(spawn(io::Error::other(
                    "the wait thread ended without a status",
                )));
            }
        };
        let duration = start.elapsed();
        let output = output.finish();
        if status.success() {
            Ok(CommandOutput {
                status,
                duration,
                output,
            })
        } else {
            Err(CommandError::Failed { status, output })
        }
    }
}

/// SIGKILL to the process group led by `pid` (the shell, started with `process_group(0)`).
fn kill_group(pid: u32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    let pgid = nix::unistd::Pid::from_raw(pid);
    if let Err(err) = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL) {
        tracing::debug!(pgid = pid, %err, "killing the command's process group");
    }
}

/// The output read so far, kept in a shared buffer so that it can be taken even if a
/// leftover process keeps the pipe open.
#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    truncated: bool,
}

struct Capture {
    captured: Arc<Mutex<Captured>>,
    eof: mpsc::Receiver<()>,
}

impl Capture {
    /// Reads `pipe` to its end on a thread, so that a chatty command never blocks on a
    /// full pipe while we wait for it.
    fn start(mut pipe: io::PipeReader) -> io::Result<Capture> {
        let captured = Arc::new(Mutex::new(Captured::default()));
        let (tx, eof) = mpsc::channel();
        let shared = Arc::clone(&captured);
        thread::Builder::new()
            .name("command-output".into())
            .spawn(move || {
                let mut chunk = [0u8; 8192];
                while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                    let mut captured = shared.lock().unwrap_or_else(PoisonError::into_inner);
                    let room = OUTPUT_CAP.saturating_sub(captured.bytes.len());
                    captured.bytes.extend_from_slice(&chunk[..n.min(room)]);
                    captured.truncated |= n > room;
                }
                let _ = tx.send(());
            })?;
        Ok(Capture { captured, eof })
    }

    /// The output, once the pipe has closed or [`OUTPUT_GRACE`] has passed.
    fn finish(self) -> String {
        let closed = self.eof.recv_timeout(OUTPUT_GRACE).is_ok();
        let captured = self.captured.lock().unwrap_or_else(PoisonError::into_inner);
        let mut text = String::from_utf8_lossy(&captured.bytes).trim().to_string();
        if captured.truncated {
            text.push_str("\n[output truncated]");
        }
        if !closed {
            text.push_str("\n[output still open: a background process holds it]");
        }
        text.trim_start().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn run(line: &str, timeout: Duration) -> Result<CommandOutput, CommandError> {
        Command::new(line, timeout).run(Path::new("/s"), Path::new("/d"))
    }

    #[test]
    fn expand_substitutes_both_placeholders_with_any_spacing() {
        let cmd = Command::new(
            "nginx -t -c {{.src}} && cp {{ .src }} {{.dest}}; echo {{.other}} {{",
            DEFAULT_TIMEOUT,
        );
        let line = cmd.expand(Path::new("/etc/.a.conf.1"), Path::new("/etc/a.conf"));
        assert_eq!(
            line,
            "nginx -t -c /etc/.a.conf.1 && cp /etc/.a.conf.1 /etc/a.conf; echo {{.other}} {{"
        );
    }

    #[test]
    fn paths_with_shell_syntax_are_refused_and_plain_ones_pass() {
        for bad in [
            "/etc/a;b",
            "/etc/$(id)",
            "/etc/a b",
            "/etc/a`b`",
            "/etc/a\nb",
            "/etc/'a'",
        ] {
            assert!(check_path(Path::new(bad)).is_err(), "{bad:?}");
        }
        for good in [
            "/etc/nginx/nginx.conf",
            "/srv/app-1_2/x.y+z@a:b,c=d%",
            "/opt/é.conf",
        ] {
            assert_eq!(check_path(Path::new(good)), Ok(()), "{good}");
        }
        let err = check_path(Path::new("/etc/a;b")).unwrap_err().to_string();
        assert!(err.contains("/etc/a;b") && err.contains("`;`"), "{err}");
    }

    #[test]
    fn uses_paths_sees_either_placeholder() {
        assert!(Command::new("nginx -t -c {{ .src }}", DEFAULT_TIMEOUT).uses_paths());
        assert!(Command::new("cp x {{.dest}}", DEFAULT_TIMEOUT).uses_paths());
        assert!(!Command::new("nginx -s reload {{.other}}", DEFAULT_TIMEOUT).uses_paths());
    }

    #[test]
    fn conflux_settings_and_systemd_variables_are_withheld() {
        assert!(withheld("CONFLUX_PASSWORD") && withheld("NOTIFY_SOCKET"));
        assert!(!withheld("PATH") && !withheld("KUBECONFIG"));
    }

    #[test]
    fn success_returns_status_and_trimmed_output() {
        let out = run("echo hello; echo world >&2", DEFAULT_TIMEOUT).unwrap();
        assert!(out.status.success());
        assert_eq!(out.output, "hello\nworld");
    }

    #[test]
    fn placeholders_reach_the_shell() {
        let out = run("echo {{.src}} {{.dest}}", DEFAULT_TIMEOUT).unwrap();
        assert_eq!(out.output, "/s /d");
    }

    #[test]
    fn run_as_written_substitutes_nothing() {
        let cmd = Command::new("echo '{{.src}}'", DEFAULT_TIMEOUT);
        assert_eq!(cmd.run_as_written().unwrap().output, "{{.src}}");
    }

    #[test]
    fn non_zero_exit_carries_status_and_output() {
        let err = run("echo bad config; echo line 3 >&2; exit 3", DEFAULT_TIMEOUT).unwrap_err();
        let CommandError::Failed { status, output } = &err else {
            panic!("expected Failed, got {err:?}");
        };
        assert_eq!(status.code(), Some(3));
        assert_eq!(output, "bad config\nline 3");
        let shown = err.to_string();
        assert!(shown.contains("exit status: 3"), "{shown}");
        assert!(shown.contains("bad config\nline 3"), "{shown}");
    }

    #[test]
    fn output_is_capped() {
        let err = run(
            "head -c 200000 /dev/zero | tr '\\0' x; exit 1",
            DEFAULT_TIMEOUT,
        )
        .unwrap_err();
        let CommandError::Failed { output, .. } = err else {
            panic!("expected Failed");
        };
        assert!(output.starts_with(&"x".repeat(OUTPUT_CAP)));
        assert!(output.ends_with("[output truncated]"));
    }

    /// Whether `pid` has exited (gone, or a zombie waiting for its new parent).
    fn exited(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        }
    }

    #[test]
    fn timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker: PathBuf = dir.path().join("bg.pid");
        let cmd = Command::new(
            "sleep 30 & echo $! > {{.dest}}; sleep 30",
            Duration::from_millis(200),
        );
        let err = cmd.run(Path::new("/s"), &marker).unwrap_err();
        assert!(matches!(err, CommandError::TimedOut { .. }), "{err:?}");
        let pid: u32 = std::fs::read_to_string(&marker)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // SIGKILL is delivered asynchronously; allow the kernel a moment to finish it.
        let mut tries = 0;
        while !exited(pid) && tries < 500 {
            thread::sleep(Duration::from_millis(10));
            tries += 1;
        }
        assert!(exited(pid), "background child {pid} survived the timeout");
    }
}

/// Properties over any input: path validation never panics, and a path of the plain
/// characters always passes while one with a shell character never does.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn plain_paths_pass_and_shell_syntax_never_does(
            plain in "[A-Za-z0-9/._+@:,=%-]{1,24}",
            bad in prop::sample::select(SHELL_SPECIAL.to_vec()),
            at in 0usize..24,
        ) {
            prop_assert!(check_path(Path::new(&plain)).is_ok());
            let mut unsafe_path = plain.clone();
            unsafe_path.insert(at.min(plain.len()), bad);
            prop_assert!(check_path(Path::new(&unsafe_path)).is_err());
        }
    }
}
