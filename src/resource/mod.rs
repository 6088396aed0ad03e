//! One template resource: confd's `[template]` table, parsed into [`RawResource`]
//! (shaped like the file) and validated into [`Resource`]. Code that holds a
//! `Resource` never re-checks it. Errors name the file, and the line and key where
//! they are known.
//!
//! Finding resource files under `conf.d` is [`crate::confdir`]'s job; rendering,
//! writing and running commands are the pipeline's.

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

pub use owner::{IdKind, OwnerError};

/// One validated template resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// The resource file's path relative to `conf.d` (`nginx.toml`, `app/db.toml`):
    /// the name in logs, errors and metrics.
    pub name: String,
    /// The resource file itself.
    pub file: PathBuf,
    /// The template, relative to `<confdir>/templates` (its name in the template set).
    pub src: String,
    /// The file to write; absolute.
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
    /// The template language of `src` (`engine = "go" | "tera"`), else the global
    /// default.
    pub engine: Engine,
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
    src: Spanned<String>,
    dest: Spanned<String>,
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
    let src = t.src.get_ref().trim_start_matches('/').to_string();
    if src.is_empty() {
        return Err((at(&t.src), Problem::EmptySrc));
    }
    let template_path = layout.templates().join(&src);
    if !template_path.is_file() {
        return Err((at(&t.src), Problem::TemplateNotFound(template_path)));
    }
    if t.dest.get_ref().is_empty() {
        return Err((at(&t.dest), Problem::EmptyDest));
    }
    let dest = layout.confdir.join(t.dest.get_ref());
    let mode = match &t.mode {
        Some(m) => Some(parse_mode(m.get_ref()).map_err(|e| (at(m), Problem::Mode(e)))?),
        None => None,
    };
    let uid = owner::resolve(
        IdKind::User,
        t.uid,
        t.owner.as_ref().map(|o| o.get_ref().as_str()),
    )
    .map_err(|e| (t.owner.as_ref().map(Spanned::span), e.into()))?;
    let gid = owner::resolve(
        IdKind::Group,
        t.gid,
        t.group.as_ref().map(|g| g.get_ref().as_str()),
    )
    .map_err(|e| (t.group.as_ref().map(Spanned::span), e.into()))?;
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
        check: non_empty(&t.check_cmd).map(|l| Command::new(l, check_timeout)),
        reload: non_empty(&t.reload_cmd).map(|l| Command::new(l, reload_timeout)),
        wait,
        engine,
    })
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
        Some(v) => parse_duration(v.get_ref())
            .map_err(|source| (Some(v.span()), Problem::Timeout { key, source })),
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
        dest,
        prefix: "/".into(),
        selectors: selectors.iter().map(|s| s.to_string()).collect(),
        mode: None,
        uid: None,
        gid: None,
        check: None,
        reload: None,
        wait: None,
        engine: Engine::Tera,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct Dir {
        tmp: tempfile::TempDir,
    }

    impl Dir {
        fn new() -> Dir {
            let tmp = tempfile::tempdir().expect("tempdir");
            std::fs::create_dir_all(tmp.path().join("conf.d")).expect("conf.d");
            std::fs::create_dir_all(tmp.path().join("templates")).expect("templates");
            std::fs::write(tmp.path().join("templates/app.tmpl"), "x").expect("template");
            Dir { tmp }
        }

        fn resource(&self, name: &str, text: &str) {
            let path = self.tmp.path().join("conf.d").join(name);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        }

        fn load(&self, prefix: &str, name: &str) -> Result<Resource, ResourceError> {
            let layout = Layout {
                confdir: self.tmp.path(),
                prefix,
                engine: Engine::Tera,
            };
            load(&layout, name.to_string(), &layout.conf_d().join(name))
        }

        fn load_one(&self, text: &str) -> Result<Resource, String> {
            self.resource("one.toml", text);
            self.load("/", "one.toml").map_err(|e| e.to_string())
        }
    }

    #[test]
    fn every_key_is_parsed() {
        let d = Dir::new();
        let r = d
            .load_one(
                r#"[template]
src = "app.tmpl"
dest = "out/app.conf"
keys = ["/db", "web/"]
prefix = "app"
mode = "0640"
uid = 0
gid = 0
owner = "root"
group = "root"
check_cmd = "test -s {{.src}}"
reload_cmd = "true"
check_timeout = "5s"
reload_timeout = "500ms"
wait = "100ms:2s"
"#,
            )
            .expect("valid");
        assert_eq!(r.name, "one.toml");
        assert_eq!(r.src, "app.tmpl");
        assert_eq!(r.dest, d.tmp.path().join("out/app.conf"));
        assert_eq!(r.prefix, "/app");
        assert_eq!(r.selectors, vec!["/app/db", "/app/web"]);
        assert_eq!(r.mode, Some(0o640));
        assert_eq!((r.uid, r.gid), (Some(0), Some(0)));
        assert_eq!(
            r.check,
            Some(Command::new("test -s {{.src}}", Duration::from_secs(5)))
        );
        assert_eq!(
            r.reload,
            Some(Command::new("true", Duration::from_millis(500)))
        );
        assert_eq!(r.wait, Some("100ms:2s".parse().expect("valid")));
    }

    #[test]
    fn global_prefix_is_joined_before_the_resource_prefix() {
        let d = Dir::new();
        d.resource("a.toml", "[template]\nsrc = \"app.tmpl\"\ndest = \"/tmp/x\"\nprefix = \"/app\"\nkeys = [\"/db\"]\n");
        let r = d.load("/production", "a.toml").expect("valid");
        assert_eq!(r.prefix, "/production/app");
        assert_eq!(r.selectors, vec!["/production/app/db"]);
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let d = Dir::new();
        let cases = [
            (
                "[template]\nsrc = \"app.tmpl\"\ndest = \"/x\"\nbogus = 1\n",
                &["one.toml", "line 4", "bogus"][..],
            ),
            (
                "[template]\nsrc = \"app.tmpl\"\ndest = \"/x\"\nmode = \"rw-r--r--\"\n",
                &["line 4", "mode"],
            ),
            (
                "[template]\nsrc = \"missing.tmpl\"\ndest = \"/x\"\n",
                &["line 2", "missing.tmpl", "not found"],
            ),
            (
                "[template]\nsrc = \"\"\ndest = \"/x\"\n",
                &["line 2", "src"],
            ),
            ("[template]\nsrc = \"app.tmpl\"\n", &["dest"]),
            (
                "[template]\nsrc = \"app.tmpl\"\ndest = \"/x\"\nowner = \"no-such-user-here\"\n",
                &["line 4", "no-such-user-here"],
            ),
            (
                "[template]\nsrc = \"app.tmpl\"\ndest = \"/x\"\ngroup = \"no-such-group-here\"\n",
                &["line 4", "no-such-group-here"],
            ),
            (
                "[template]\nsrc = \"app.tmpl\"\ndest = \"/x\"\nowner = \"root\"\nuid = 5\n",
                &["owner", "uid"],
            ),
            (
                "[template]\nsrc = \"app.tmpl\"\ndest = \"/x\"\ncheck_timeout = \"soon\"\n",
                &["line 4", "check_timeout"],
            ),
            ("[template\n", &["one.toml", "line 1"]),
            ("[[template]]\nsrc = \"app.tmpl\"\n", &["one.toml"]),
        ];
        for (text, wanted) in cases {
            let err = d.load_one(text).expect_err(text);
            for w in wanted {
                assert!(err.contains(w), "{text:?}: {err:?} lacks {w:?}");
            }
        }
    }
}
