//! One resource, one pass: render → compare → stage → check → swap → reload.
//!
//! Each step is a function named for it. The pass stops after `compare` when dest is
//! already what it should be (content, mode and owner), so an unchanged file is never
//! checked, rewritten or reloaded. The new file is staged next to the real dest (a
//! symlinked dest keeps its link; the file it points to is replaced), given its mode and
//! owner before any content is written, checked with `check_cmd`, renamed over dest,
//! and only then is `reload_cmd` run.
//!
//! Which store a resource renders with, when to run a pass and what to do with the
//! outcome (logs, retries, exit codes) are the caller's business. Everything here is
//! synchronous; the daemon calls it from `spawn_blocking`.

mod files;
mod state;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{debug, info, info_span, warn};

use crate::command::{Command, CommandError};
use crate::resource::Resource;
use crate::store::Store;
use crate::template::{RenderError, Templates};

use files::{
    StageFile, copy_in_place, create_exclusive, resolve_links, set_owner_and_mode, sync_parent,
    write_synced,
};
use state::{Changes, Comparison, Wanted, read_current};

/// The mode of a new dest when the resource sets none.
const DEFAULT_MODE: u32 = 0o644;

/// confd's `-noop`, `-sync-only` and `-keep-stage-file`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Render and compare only: never write a file nor run a command.
    pub noop: bool,
    /// Write files, but run neither `check_cmd` nor `reload_cmd`.
    pub sync_only: bool,
    /// Leave the stage file behind when it was not renamed into place.
    pub keep_stage_file: bool,
}

/// What a pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// dest already had the rendered content, mode and owner.
    Unchanged,
    /// dest was written; each duration is present when that command ran.
    Updated {
        /// dest did not exist before.
        created: bool,
        checked: Option<Duration>,
        reloaded: Option<Duration>,
    },
    /// noop: dest differs. `diff` is a unified diff (or a note on mode and owner) for
    /// the caller to print.
    WouldUpdate { diff: String },
    /// dest was already right, but the reload after its last swap had failed (perhaps
    /// in an earlier process): the reload was run again.
    Reloaded { reloaded: Duration },
}

/// A failed pass, by step. Every variant names the resource and its dest.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{resource}: cannot render {}: {source}", .dest.display())]
    Render {
        resource: String,
        dest: PathBuf,
        #[source]
        source: RenderError,
    },
    #[error("{resource}: cannot read the current {}: {source}", .dest.display())]
    Compare {
        resource: String,
        dest: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{resource}: cannot stage a new {}: {source}", .dest.display())]
    Stage {
        resource: String,
        dest: PathBuf,
        #[source]
        source: StageError,
    },
    #[error(
        "{resource}: check of the new {} failed, the file was left untouched and not reloaded: `{command}`: {source}",
        .dest.display()
    )]
    Check {
        resource: String,
        dest: PathBuf,
        /// The line as run.
        command: String,
        #[source]
        source: CommandError,
    },
    #[error(
        "{resource}: cannot move the new file into {}: {source}; the file was left untouched",
        .dest.display()
    )]
    Swap {
        resource: String,
        dest: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{resource}: the new {} IS in place, but its reload failed: `{command}`: {source}",
        .dest.display()
    )]
    Reload {
        resource: String,
        dest: PathBuf,
        /// The line as run.
        command: String,
        #[source]
        source: CommandError,
    },
}

/// Why the stage file could not be made.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("directory {} does not exist (conflux never creates it)", .dir.display())]
    MissingDir { dir: PathBuf },
    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Renders, then applies: the entry point for one resource.
pub fn apply(
    resource: &Resource,
    templates: &Templates,
    store: &Store,
    opts: &Options,
) -> Result<Outcome, ApplyError> {
    let span = info_span!("apply", resource = %resource.name, revision = store.revision());
    let _entered = span.enter();
    let content = render(resource, templates, store)?;
    apply_rendered(resource, &content, opts)
}

/// Everything after `render`: compare, and when dest differs, stage, check, swap and
/// reload (or only the diff, for noop).
pub fn apply_rendered(
    resource: &Resource,
    content: &str,
    opts: &Options,
) -> Result<Outcome, ApplyError> {
    let comparison = compare(resource, content.as_bytes())?;
    let changes = &comparison.changes;
    let runs_commands = !opts.noop && !opts.sync_only;
    if !changes.any() {
        if runs_commands && reload_owed(resource) {
            warn!(dest = %resource.dest.display(), "in sync, but its last reload failed: reloading again");
            return Ok(Outcome::Reloaded {
                reloaded: reload(resource)?,
            });
        }
        debug!(dest = %resource.dest.display(), "in sync");
        return Ok(Outcome::Unchanged);
    }
    if opts.noop {
        info!(dest = %resource.dest.display(), %changes, "out of sync; noop, not modified");
        let diff = comparison.diff(&resource.dest, content);
        return Ok(Outcome::WouldUpdate { diff });
    }
    info!(dest = %resource.dest.display(), %changes, "out of sync");
    let mut staged = stage(resource, &comparison.wanted, content.as_bytes(), opts)?;
    let checked = match opts.sync_only {
        true => None,
        false => check(resource, &staged.path)?,
    };
    if runs_commands && resource.reload.is_some() {
        owe_reload(resource);
    }
    swap(
        resource,
        &mut staged,
        &comparison.wanted,
        content.as_bytes(),
    )?;
    drop(staged);
    let reloaded = match opts.sync_only {
        true => None,
        false => Some(reload(resource)?),
    };
    info!(
        dest = %resource.dest.display(),
        check_ms = checked.map(|d| d.as_millis() as u64),
        reload_ms = reloaded.map(|d| d.as_millis() as u64),
        "updated"
    );
    Ok(Outcome::Updated {
        created: changes.created,
        checked,
        reloaded,
    })
}

/// Runs the resource's `reload_cmd` alone, for a caller retrying after
/// [`ApplyError::Reload`]. `{{.src}}` and `{{.dest}}` both stand for dest, where the
/// new content now is. `Duration::ZERO` when the resource has no reload command.
pub fn reload(resource: &Resource) -> Result<Duration, ApplyError> {
    let took = run_reload(resource)?.unwrap_or_default();
    match fs::remove_file(owed_marker(&resource.dest)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            warn!(dest = %resource.dest.display(), cause = %e, "cannot clear the owed-reload marker")
        }
        _ => {}
    }
    Ok(took)
}

/// Where a reload that is owed is remembered across restarts: a hidden file beside
/// dest, created before the swap and removed once the reload succeeds. After a crash or
/// a failed reload, the next pass (in this process or the next) finds dest already
/// right, so comparing alone would never run the reload again; the marker makes it.
/// Beside dest rather than in a state directory, so that `--onetime` runs and daemons
/// share it without another setting, and it lives as long as dest's directory does.
fn owed_marker(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.conflux-reload-owed"))
}

fn reload_owed(resource: &Resource) -> bool {
    resource.reload.is_some() && owed_marker(&resource.dest).exists()
}

/// Marks the reload owed before the swap. A marker that cannot be written costs only
/// the memory across restarts (the daemon still retries in-process), so it warns.
fn owe_reload(resource: &Resource) {
    let marker = owed_marker(&resource.dest);
    if let Err(e) = fs::File::create(&marker).and_then(|f| f.sync_all()) {
        warn!(marker = %marker.display(), cause = %e, "cannot record the owed reload");
    }
}

/// The template's output for this store.
pub fn render(
    resource: &Resource,
    templates: &Templates,
    store: &Store,
) -> Result<String, ApplyError> {
    templates
        .render(&resource.src, store)
        .map_err(|source| ApplyError::Render {
            resource: resource.name.clone(),
            dest: resource.dest.clone(),
            source,
        })
}

/// Reads dest (following a symlink) and works out the mode and owner it should have:
/// the resource's, else dest's own, else 0644 and ours for a new file.
fn compare(resource: &Resource, content: &[u8]) -> Result<Comparison, ApplyError> {
    let current = read_current(&resource.dest).map_err(|source| ApplyError::Compare {
        resource: resource.name.clone(),
        dest: resource.dest.clone(),
        source,
    })?;
    let wanted = Wanted {
        mode: resource
            .mode
            .or(current.as_ref().map(|c| c.mode))
            .unwrap_or(DEFAULT_MODE),
        uid: resource.uid.or(current.as_ref().map(|c| c.uid)),
        gid: resource.gid.or(current.as_ref().map(|c| c.gid)),
        owner_required: resource.uid.is_some() || resource.gid.is_some(),
    };
    let changes = match &current {
        None => Changes {
            created: true,
            ..Changes::default()
        },
        Some(cur) => {
            let owner = (wanted.uid.unwrap_or(cur.uid), wanted.gid.unwrap_or(cur.gid));
            Changes {
                created: false,
                content: cur.content != content,
                mode: (cur.mode != wanted.mode).then_some((cur.mode, wanted.mode)),
                owner: ((cur.uid, cur.gid) != owner).then_some(((cur.uid, cur.gid), owner)),
            }
        }
    };
    Ok(Comparison {
        current,
        wanted,
        changes,
    })
}

/// Writes the new content to `.<destname>.<random>` in the real dest's directory:
/// created with O_EXCL and mode 0600, then given its owner and mode before any content
/// is written (so it is never readable by more than its final readers), then fsynced.
fn stage(
    resource: &Resource,
    wanted: &Wanted,
    content: &[u8],
    opts: &Options,
) -> Result<StageFile, ApplyError> {
    let fail = |source| ApplyError::Stage {
        resource: resource.name.clone(),
        dest: resource.dest.clone(),
        source,
    };
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| StageError::Io { what, path, source }
    };
    let target = resolve_links(&resource.dest)
        .map_err(io("cannot resolve", &resource.dest))
        .map_err(fail)?;
    let (file, path) = create_exclusive(&target).map_err(fail)?;
    let staged = StageFile {
        path,
        target,
        keep: opts.keep_stage_file,
        renamed: false,
    };
    set_owner_and_mode(&file, wanted)
        .map_err(io("cannot set owner and mode of", &staged.path))
        .map_err(fail)?;
    write_synced(&file, content)
        .map_err(io("cannot write", &staged.path))
        .map_err(fail)?;
    Ok(staged)
}

/// Runs `cmd`, logging its output at debug when it succeeds: on failure the output
/// travels in the error, for the operator.
fn run_command(cmd: &Command, src: &Path, dest: &Path, what: &str) -> CommandResult {
    let line = cmd.expand(src, dest);
    let result = cmd.run(src, dest);
    if let Ok(out) = &result {
        debug!(command = %line, output = %out.output, duration_ms = out.duration.as_millis() as u64, "{what} ran");
    }
    (line, result.map(|out| out.duration))
}

type CommandResult = (String, Result<Duration, CommandError>);

/// Runs `check_cmd` with `{{.src}}` = the stage file and `{{.dest}}` = dest.
fn check(resource: &Resource, staged: &Path) -> Result<Option<Duration>, ApplyError> {
    let Some(cmd) = &resource.check else {
        return Ok(None);
    };
    let (command, result) = run_command(cmd, staged, &resource.dest, "check");
    result.map(Some).map_err(|source| ApplyError::Check {
        resource: resource.name.clone(),
        dest: resource.dest.clone(),
        command,
        source,
    })
}

/// Renames the stage file over the real dest and fsyncs the directory so the rename
/// survives a crash. A bind-mounted dest cannot be renamed over (EBUSY): its content is
/// then overwritten in place, which is not atomic, with a warning.
fn swap(
    resource: &Resource,
    staged: &mut StageFile,
    wanted: &Wanted,
    content: &[u8],
) -> Result<(), ApplyError> {
    let fail = |source| ApplyError::Swap {
        resource: resource.name.clone(),
        dest: resource.dest.clone(),
        source,
    };
    match fs::rename(&staged.path, &staged.target) {
        Ok(()) => {
            staged.renamed = true;
            sync_parent(&staged.target);
            Ok(())
        }
        Err(err) if err.kind() == io::ErrorKind::ResourceBusy => {
            warn!(
                dest = %staged.target.display(),
                "dest cannot be renamed over (a bind mount?): overwriting it in place, not atomically"
            );
            copy_in_place(&staged.target, wanted, content).map_err(fail)
        }
        Err(err) => Err(fail(err)),
    }
}

/// Runs `reload_cmd`, if any, with `{{.src}}` and `{{.dest}}` both dest.
fn run_reload(resource: &Resource) -> Result<Option<Duration>, ApplyError> {
    let Some(cmd) = &resource.reload else {
        return Ok(None);
    };
    let (command, result) = run_command(cmd, &resource.dest, &resource.dest, "reload");
    result.map(Some).map_err(|source| ApplyError::Reload {
        resource: resource.name.clone(),
        dest: resource.dest.clone(),
        command,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::DEFAULT_TIMEOUT;
    use std::fs::Permissions;
    use std::os::unix::fs::symlink;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn resource(dir: &Path, dest: &str) -> Resource {
        let mut r = crate::resource::test_resource("test.toml", &[], dir.join(dest));
        r.file = dir.join("test.toml");
        r
    }

    fn cmd(line: &str) -> Option<Command> {
        Some(Command::new(line, DEFAULT_TIMEOUT))
    }

    /// A command that leaves `name` behind in `dir` when it runs.
    fn marker(dir: &Path, name: &str) -> Option<Command> {
        cmd(&format!("touch {}", dir.join(name).display()))
    }

    fn write(path: &Path, content: &str, mode: u32) {
        fs::write(path, content).unwrap();
        fs::set_permissions(path, Permissions::from_mode(mode)).unwrap();
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o7777
    }

    /// Hidden files in `dir`: stage files left behind.
    fn stage_files(dir: &Path) -> Vec<PathBuf> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .collect()
    }

    fn run(res: &Resource, content: &str) -> Result<Outcome, ApplyError> {
        apply_rendered(res, content, &Options::default())
    }

    #[test]
    fn unchanged_content_runs_no_command() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut res = resource(d, "app.conf");
        res.check = marker(d, "checked");
        res.reload = marker(d, "reloaded");
        write(&res.dest, "same\n", 0o644);

        assert_eq!(run(&res, "same\n").unwrap(), Outcome::Unchanged);
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

        let outcome = run(&res, "new").unwrap();

        let Outcome::Updated {
            created: false,
            checked: Some(_),
            reloaded: Some(_),
        } = outcome
        else {
            panic!("unexpected outcome {outcome:?}");
        };
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
    fn mode_only_change_counts_as_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut res = resource(d, "app.conf");
        res.mode = Some(0o600);
        res.check = marker(d, "checked");
        write(&res.dest, "same", 0o644);

        let outcome = run(&res, "same").unwrap();

        assert!(matches!(outcome, Outcome::Updated { .. }), "{outcome:?}");
        assert!(d.join("checked").exists());
        assert_eq!(mode_of(&res.dest), 0o600);
        assert_eq!(run(&res, "same").unwrap(), Outcome::Unchanged);
    }

    #[test]
    fn new_file_gets_its_mode_and_the_stage_file_is_never_world_readable() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let seen = d.join("seen");
        let mut res = resource(d, "secret.conf");
        res.mode = Some(0o640);
        res.check = cmd(&format!("stat -c %a {{{{.src}}}} > {}", seen.display()));

        let outcome = run(&res, "password=x").unwrap();

        assert!(matches!(outcome, Outcome::Updated { created: true, .. }));
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
        assert_eq!(run(&res, "new").unwrap(), Outcome::Unchanged);
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

        let outcome = apply_rendered(&res, "a\nnew\n", &noop).unwrap();

        let name = res.dest.display().to_string();
        let name = name.trim_start_matches('/');
        let expected = format!("--- a/{name}\n+++ b/{name}\n@@ -1,2 +1,2 @@\n a\n-old\n+new\n");
        assert_eq!(outcome, Outcome::WouldUpdate { diff: expected });
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

        let Outcome::WouldUpdate { diff } = apply_rendered(&res, "x\n", &noop).unwrap() else {
            panic!("expected WouldUpdate");
        };

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

        let Outcome::WouldUpdate { diff } = apply_rendered(&res, "same", &noop).unwrap() else {
            panic!("expected WouldUpdate");
        };

        assert_eq!(
            diff,
            format!("mode of {}: 0644 -> 0600\n", res.dest.display())
        );
        assert_eq!(mode_of(&res.dest), 0o644);
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

        let outcome = apply_rendered(&res, "new", &sync_only).unwrap();

        assert_eq!(
            outcome,
            Outcome::Updated {
                created: true,
                checked: None,
                reloaded: None
            }
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
        assert_eq!(run(&res, "x").unwrap(), Outcome::Unchanged);
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

        let outcome = run(&res, "same").unwrap();

        assert!(
            matches!(outcome, Outcome::Updated { created: false, .. }),
            "{outcome:?}"
        );
        assert!(d.join("checked").exists());
        let meta = fs::metadata(&res.dest).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
        assert_eq!(meta.mode() & 0o7777, 0o640);
        assert_eq!(run(&res, "same").unwrap(), Outcome::Unchanged);
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

        assert!(matches!(outcome, Outcome::Updated { .. }), "{outcome:?}");
        assert_eq!(fs::read_to_string(&host).unwrap(), "new");
        assert_eq!(mode_of(&host), 0o640);
        assert!(stage_files(d).is_empty());
        drop(mount);
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
}
