//! One template resource: confd's `[template]` table, parsed into [`RawResource`]
//! (shaped like the file) and validated into [`Resource`]. Code that holds a
//! `Resource` never re-checks it. Errors name the file, and the line and key where
//! they are known.
//!
//! A resource is either confd's one file (`src` and `dest` on `[template]`) or a unit
//! of several (`[[template.output]]` tables, `output`): both become [`Resource::outputs`].
//!
//! Finding resource files under `conf.d` is [`crate::confdir`]'s job; rendering,
//! writing and running commands are the pipeline's.

mod output;
mod owner;

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::command::{Command, DEFAULT_TIMEOUT};
use crate::kv::keys;
use crate::template::{Engine, UnknownEngine};
use crate::values::{
    DurationError, ModeError, Wait, WaitError, parse_duration, parse_mode, toml_error_message,
};

pub use output::{NameError, OnReloadFailure, Output, OutputDest, check_name};
pub use owner::{IdKind, OwnerError};

/// One validated template resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// The resource file's path relative to `conf.d` (`nginx.toml`, `app/db.toml`):
    /// the name in logs, errors and metrics.
    pub name: String,
    /// The resource file itself.
    pub file: PathBuf,
    /// The template, relative to `<confdir>/templates` (its name in the template set);
    /// for a unit, its first output's.
    pub src: String,
    /// The file to write; absolute. For a unit, its first output's file (or fan-out
    /// directory): the path logs name for the unit as a whole.
    pub dest: PathBuf,
    /// The full key prefix (the global `--prefix` joined with the resource's), `/` when none.
    pub prefix: String,
    /// Absolute selectors: the prefix joined with each of `keys`.
    pub selectors: Vec<String>,
    /// The mode to give dest; `None` keeps the existing dest's mode (0644 for a new file).
    pub mode: Option<u32>,
    /// The owner to give dest; `None` keeps the existing dest's (ours for a new file).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub check: Option<Command>,
    pub reload: Option<Command>,
    /// The coalescing window in watch mode; `None` uses the global default.
    pub wait: Option<Wait>,
    /// Every file of the resource: confd's `src`/`dest` is one output (with `src`,
    /// `dest`, `mode` and owner above), a unit lists its own. Never empty.
    pub outputs: Vec<Output>,
    /// Declared with `[[template.output]]`: applied as a unit (checked in place,
    /// swapped together, journaled). confd's form is applied as confd does, unless it
    /// asks for a rollback, which only a unit can do.
    pub unit: bool,
    /// Fewer selected keys than this and the resource is not applied.
    pub min_keys: Option<usize>,
    pub on_reload_failure: OnReloadFailure,
    /// The template language of `src` (`engine = "go" | "tera"`), else the global
    /// default.
    pub engine: Engine,
}

impl Resource {
    /// Whether the pipeline applies this resource as a unit.
    pub fn is_unit(&self) -> bool {
        self.unit || self.on_reload_failure == OnReloadFailure::Rollback
    }
}

/// A resource file that could not be used. Its Display names the file, then the line
/// (where known) and what is wrong, with the key it concerns.
#[derive(Debug, thiserror::Error)]
#[error("resource {}: {}{problem}", .file.display(), at_line(*.line))]
pub struct ResourceError {
    pub file: PathBuf,
    /// 1-based line of the offending key or value, when known (a TOML syntax error
    /// carries its own position in its message).
    pub line: Option<usize>,
    pub problem: Problem,
}

fn at_line(line: Option<usize>) -> String {
    line.map(|n| format!("line {n}: ")).unwrap_or_default()
}

/// What is wrong with a resource file.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("{0}")]
    Read(#[source] io::Error),
    #[error("{}", toml_error_message(.0))]
    Syntax(#[source] Box<toml::de::Error>),
    #[error("`src` is empty")]
    EmptySrc,
    #[error("`src`/`dest` and [[template.output]] are both given: use one form or the other")]
    BothForms,
    #[error("[template] needs `src` and `dest`, or [[template.output]] tables")]
    NoFiles,
    #[error("two outputs write {}", .0.display())]
    DuplicateDest(PathBuf),
    #[error("for_each: {0}")]
    ForEach(String),
    #[error(
        "dest {}: with for_each, dest is a literal directory and a file-name template \
         such as `/etc/nginx/routes/{{{{ item.name }}}}.conf`",
        .0.display()
    )]
    FanOutDest(PathBuf),
    #[error("template {} not found", .0.display())]
    TemplateNotFound(PathBuf),
    #[error("`dest` is empty")]
    EmptyDest,
    #[error("mode: {0}")]
    Mode(#[source] ModeError),
    #[error(transparent)]
    Owner(#[from] OwnerError),
    #[error("{key}: {source}")]
    Timeout {
        key: &'static str,
        #[source]
        source: DurationError,
    },
    #[error(transparent)]
    Wait(#[from] WaitError),
    #[error("dest: {0}")]
    UnsafeDest(#[source] crate::command::UnsafePath),
    #[error("{key}: 0 would kill every run of the command at once; give a duration above 0")]
    ZeroTimeout { key: &'static str },
    #[error("engine: {0}")]
    Engine(#[source] UnknownEngine),
}

/// A resource file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResource {
    template: RawTemplate,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplate {
    src: Option<Spanned<String>>,
    dest: Option<Spanned<String>>,
    output: Option<Spanned<Vec<output::RawOutput>>>,
    min_keys: Option<usize>,
    #[serde(default)]
    on_reload_failure: OnReloadFailure,
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    prefix: String,
    mode: Option<Spanned<String>>,
    uid: Option<u32>,
    gid: Option<u32>,
    owner: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    check_cmd: Option<String>,
    reload_cmd: Option<String>,
    check_timeout: Option<Spanned<String>>,
    reload_timeout: Option<Spanned<String>>,
    wait: Option<Spanned<String>>,
    engine: Option<Spanned<String>>,
}

/// What resources are resolved against: the confdir (templates, relative dests) and
/// the global prefix.
#[derive(Debug, Clone, Copy)]
pub struct Layout<'a> {
    pub confdir: &'a Path,
    /// The global prefix (`/` when none).
    pub prefix: &'a str,
    /// The template engine of resources that name none.
    pub engine: Engine,
}

impl Layout<'_> {
    pub fn conf_d(&self) -> PathBuf {
        self.confdir.join("conf.d")
    }

    pub fn templates(&self) -> PathBuf {
        self.confdir.join("templates")
    }
}

/// Reads and validates the resource file `file`, named `name` (its path below `conf.d`).
pub fn load(layout: &Layout, name: String, file: &Path) -> Result<Resource, ResourceError> {
    let fail = |line, problem| ResourceError {
        file: file.to_path_buf(),
        line,
        problem,
    };
    let text = std::fs::read_to_string(file).map_err(|e| fail(None, Problem::Read(e)))?;
    let raw: RawResource =
        toml::from_str(&text).map_err(|e| fail(None, Problem::Syntax(Box::new(e))))?;
    validate(layout, name, file, &raw.template).map_err(|(span, problem)| {
        let line = span.map(|s: Range<usize>| line_of(&text, s.start));
        fail(line, problem)
    })
}

/// A problem and the span of the value it concerns.
type Invalid = (Option<Range<usize>>, Problem);

fn validate(
    layout: &Layout,
    name: String,
    file: &Path,
    t: &RawTemplate,
) -> Result<Resource, Invalid> {
    let at = |field: &Spanned<String>| Some(field.span());
    let (src, dest, unit, outputs) = match (&t.src, &t.dest, &t.output) {
        (Some(f), _, Some(_)) | (None, Some(f), Some(_)) => {
            return Err((at(f), Problem::BothForms));
        }
        (None, None, Some(raw)) if !raw.get_ref().is_empty() => {
            let outputs = output::validate_all(layout, raw.get_ref())?;
            let first = &outputs[0];
            (
                first.src.clone(),
                first.dest.path().to_path_buf(),
                true,
                outputs,
            )
        }
        (Some(src), Some(dest), None) => {
            let src = template_name(layout, src)?;
            if dest.get_ref().is_empty() {
                return Err((at(dest), Problem::EmptyDest));
            }
            (src, layout.confdir.join(dest.get_ref()), false, Vec::new())
        }
        (_, _, raw) => return Err((raw.as_ref().map(Spanned::span), Problem::NoFiles)),
    };
    let (mode, uid, gid) = attributes(&t.mode, (t.uid, &t.owner), (t.gid, &t.group))?;
    let check_timeout = timeout(&t.check_timeout, "check_timeout")?;
    let reload_timeout = timeout(&t.reload_timeout, "reload_timeout")?;
    let wait = match &t.wait {
        Some(w) => Some(w.get_ref().parse::<Wait>().map_err(|e| (at(w), e.into()))?),
        None => None,
    };
    let engine = match &t.engine {
        Some(e) => e
            .get_ref()
            .parse()
            .map_err(|u| (at(e), Problem::Engine(u)))?,
        None => layout.engine,
    };
    let prefix = keys::join(layout.prefix, &t.prefix);
    let selectors = t.keys.iter().map(|k| keys::join(&prefix, k)).collect();
    let check = non_empty(&t.check_cmd).map(|l| Command::new(l, check_timeout));
    let reload = non_empty(&t.reload_cmd).map(|l| Command::new(l, reload_timeout));
    let outputs = if unit {
        outputs
    } else {
        vec![Output {
            src: src.clone(),
            dest: OutputDest::File(dest.clone()),
            mode,
            uid,
            gid,
            check: None,
        }]
    };
    // Paths go into command lines unquoted, as confd puts them: one the shell would
    // read as syntax is refused here rather than run. (A fan-out's rendered names are
    // checked when rendered.)
    let commands_use_paths = check.iter().chain(&reload).any(Command::uses_paths);
    for output in &outputs {
        if commands_use_paths || output.check.as_ref().is_some_and(Command::uses_paths) {
            let span = t
                .dest
                .as_ref()
                .map(Spanned::span)
                .or(t.output.as_ref().map(Spanned::span));
            crate::command::check_path(output.dest.path())
                .map_err(|e| (span, Problem::UnsafeDest(e)))?;
        }
    }
    Ok(Resource {
        name,
        file: file.to_path_buf(),
        src,
        dest,
        prefix,
        selectors,
        mode,
        uid,
        gid,
        check,
        reload,
        wait,
        outputs,
        unit,
        min_keys: t.min_keys,
        on_reload_failure: t.on_reload_failure,
        engine,
    })
}

/// A file's mode, uid and gid, each `None` when not set.
type Attributes = (Option<u32>, Option<u32>, Option<u32>);

/// `mode`, `owner`/`uid` and `group`/`gid` of a file, validated.
fn attributes(
    mode: &Option<Spanned<String>>,
    (uid, owner): (Option<u32>, &Option<Spanned<String>>),
    (gid, group): (Option<u32>, &Option<Spanned<String>>),
) -> Result<Attributes, Invalid> {
    let mode = match mode {
        Some(m) => Some(parse_mode(m.get_ref()).map_err(|e| (Some(m.span()), Problem::Mode(e)))?),
        None => None,
    };
    let name = |f: &Option<Spanned<String>>| f.as_ref().map(|s| s.get_ref().clone());
    let span = |f: &Option<Spanned<String>>| f.as_ref().map(Spanned::span);
    let uid = owner::resolve(IdKind::User, uid, name(owner).as_deref())
        .map_err(|e| (span(owner), e.into()))?;
    let gid = owner::resolve(IdKind::Group, gid, name(group).as_deref())
        .map_err(|e| (span(group), e.into()))?;
    Ok((mode, uid, gid))
}

/// A `src` as the template's name in the set, which must exist.
fn template_name(layout: &Layout, src: &Spanned<String>) -> Result<String, Invalid> {
    let name = src.get_ref().trim_start_matches('/').to_string();
    if name.is_empty() {
        return Err((Some(src.span()), Problem::EmptySrc));
    }
    let path = layout.templates().join(&name);
    if !path.is_file() {
        return Err((Some(src.span()), Problem::TemplateNotFound(path)));
    }
    Ok(name)
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.trim().is_empty())
}

fn timeout(
    field: &Option<Spanned<String>>,
    key: &'static str,
) -> Result<std::time::Duration, Invalid> {
    match field {
        None => Ok(DEFAULT_TIMEOUT),
        Some(v) => match parse_duration(v.get_ref()) {
            Ok(d) if d.is_zero() => Err((Some(v.span()), Problem::ZeroTimeout { key })),
            Ok(d) => Ok(d),
            Err(source) => Err((Some(v.span()), Problem::Timeout { key, source })),
        },
    }
}

/// 1-based line of byte offset `pos`.
fn line_of(text: &str, pos: usize) -> usize {
    text[..pos.min(text.len())].matches('\n').count() + 1
}

/// A resource with nothing but a name, selectors and a dest, for other modules' tests.
#[cfg(test)]
pub(crate) fn test_resource(name: &str, selectors: &[&str], dest: PathBuf) -> Resource {
    Resource {
        name: name.into(),
        file: PathBuf::from(format!("/etc/conflux/conf.d/{name}")),
        src: "test.tmpl".into(),
        dest: dest.clone(),
        prefix: "/".into(),
        selectors: selectors.iter().map(|s| s.to_string()).collect(),
        mode: None,
        uid: None,
        gid: None,
        check: None,
        reload: None,
        wait: None,
        outputs: vec![Output {
            src: "test.tmpl".into(),
            dest: OutputDest::File(dest.clone()),
            mode: None,
            uid: None,
            gid: None,
            check: None,
        }],
        unit: false,
        min_keys: None,
        on_reload_failure: OnReloadFailure::Retry,
        engine: Engine::Tera,
    }
}

#[cfg(test)]
mod tests;

/// Properties over any input: no resource file text panics loading, and every key's
/// value, whatever it is, gives a resource or an error naming the file.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn layout_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("conf.d")).expect("conf.d");
        std::fs::create_dir_all(dir.path().join("templates")).expect("templates");
        std::fs::write(dir.path().join("templates/app.tmpl"), "x").expect("template");
        dir
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_resource_text_loads_or_names_the_file(text in ".{0,120}") {
            let dir = layout_dir();
            let file = dir.path().join("conf.d/r.toml");
            std::fs::write(&file, &text).expect("write");
            let layout = Layout { confdir: dir.path(), prefix: "/", engine: Engine::Tera };
            if let Err(e) = load(&layout, "r.toml".into(), &file) {
                prop_assert!(e.to_string().contains("r.toml"));
            }
        }

        #[test]
        fn any_value_of_every_key_loads_or_names_the_file(
            key in "(mode|owner|group|check_timeout|reload_timeout|wait|dest|prefix|check_cmd)",
            value in ".{0,20}",
        ) {
            let dir = layout_dir();
            let file = dir.path().join("conf.d/r.toml");
            let text = if key == "dest" {
                format!("[template]\nsrc = \"app.tmpl\"\ndest = {value:?}\n")
            } else {
                format!("[template]\nsrc = \"app.tmpl\"\ndest = \"/x\"\n{key} = {value:?}\n")
            };
            std::fs::write(&file, &text).expect("write");
            let layout = Layout { confdir: dir.path(), prefix: "/", engine: Engine::Tera };
            if let Err(e) = load(&layout, "r.toml".into(), &file) {
                prop_assert!(e.to_string().contains("r.toml"), "{}", e);
            }
        }
    }
}
