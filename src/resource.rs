//! Template resources: `<confdir>/conf.d/**/*.toml` files, each with confd's
//! `[template]` table, parsed into [`RawResource`] (shaped like the file) and validated
//! into [`Resource`]. Code that holds a `Resource` never re-checks it.
//!
//! A broken resource file is reported and skipped; the others still load (confd
//! aborts them all). Rendering, writing and running commands are the pipeline's.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::command::{Command, DEFAULT_TIMEOUT};
use crate::keys;

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
}

/// A resource's coalescing window, written `"<min>[:<max>]"`.
///
/// After an apply starts, a change waits until no further change has come for `min`,
/// but never longer than `max` after the first waiting change; `"<min>"` alone sets
/// `max = min` (changes wait `min`, no debouncing). A change that comes `min` or more
/// after the last apply started is applied at once. Durations need a unit (`ms`, `s`,
/// `m`, `h`) except `0`: a bare number is ambiguous next to confd's `interval`, which is
/// in seconds, so it is refused rather than guessed.
///
/// The default `100ms:1s` applies an isolated change at once, and a burst of 1,000
/// puts spread over a second in two or three applies (one at the first put, one a
/// second later at most, one after the last put), while no change waits more than a
/// second behind a continuous stream. `wait = "0"` suits a resource whose every change
/// must apply as soon as the previous apply is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    pub min: Duration,
    pub max: Duration,
}

impl Default for Wait {
    fn default() -> Self {
        Wait {
            min: Duration::from_millis(100),
            max: Duration::from_secs(1),
        }
    }
}

/// Why a `wait` setting was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    #[error("wait {0:?}: {1}")]
    Duration(String, String),
    #[error("wait {0:?}: the maximum is shorter than the minimum")]
    MaxBelowMin(String),
}

impl FromStr for Wait {
    type Err = WaitError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (min, max) = match text.split_once(':') {
            Some((min, max)) => (min, Some(max)),
            None => (text, None),
        };
        let duration =
            |part: &str| parse_duration(part).map_err(|e| WaitError::Duration(text.to_string(), e));
        let min = duration(min)?;
        let max = match max {
            Some(max) => duration(max)?,
            None => min,
        };
        if max < min {
            return Err(WaitError::MaxBelowMin(text.to_string()));
        }
        Ok(Wait { min, max })
    }
}

impl fmt::Display for Wait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms:{}ms", self.min.as_millis(), self.max.as_millis())
    }
}

/// A resource file that could not be used. Its Display names the file, and the line
/// and key where that is known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("resource {}: {message}", file.display())]
pub struct ResourceError {
    pub file: PathBuf,
    pub message: String,
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
}

/// Where resources are read from and what they are joined with.
#[derive(Debug, Clone)]
pub struct Layout<'a> {
    pub confdir: &'a Path,
    /// The global prefix (`/` when none).
    pub prefix: &'a str,
}

impl Layout<'_> {
    fn conf_d(&self) -> PathBuf {
        self.confdir.join("conf.d")
    }

    fn templates(&self) -> PathBuf {
        self.confdir.join("templates")
    }
}

/// Every resource under `<confdir>/conf.d`, in lexical order of their paths, and the
/// files that could not be used. Only a missing or unreadable `conf.d` is an `Err`.
pub fn load_all(layout: &Layout) -> Result<(Vec<Resource>, Vec<ResourceError>), ResourceError> {
    let conf_d = layout.conf_d();
    let files = find_resource_files(&conf_d)?;
    let mut resources = Vec::new();
    let mut errors = Vec::new();
    for file in files {
        match load_one(layout, &conf_d, &file) {
            Ok(r) => resources.push(r),
            Err(e) => errors.push(e),
        }
    }
    Ok((resources, errors))
}

/// Every `*.toml` under `dir`, recursively, symlinks followed, in walk order.
/// Hidden files are read too, as confd does.
fn find_resource_files(dir: &Path) -> Result<Vec<PathBuf>, ResourceError> {
    let files = crate::fswalk::files(dir, false).map_err(|e| ResourceError {
        file: dir.to_path_buf(),
        message: format!("cannot read the resource directory: {e}"),
    })?;
    Ok(files
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect())
}

fn load_one(layout: &Layout, conf_d: &Path, file: &Path) -> Result<Resource, ResourceError> {
    let fail = |message: String| ResourceError {
        file: file.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(file).map_err(|e| fail(e.to_string()))?;
    let raw: RawResource =
        toml::from_str(&text).map_err(|e| fail(crate::config::toml_error_message(&e)))?;
    let name = file
        .strip_prefix(conf_d)
        .unwrap_or(file)
        .to_string_lossy()
        .into_owned();
    validate(layout, name, file, &text, raw.template).map_err(fail)
}

fn validate(
    layout: &Layout,
    name: String,
    file: &Path,
    text: &str,
    t: RawTemplate,
) -> Result<Resource, String> {
    let at = |span: std::ops::Range<usize>| format!("line {}", line_of(text, span.start));
    let src = t.src.get_ref().trim_start_matches('/').to_string();
    if src.is_empty() {
        return Err(format!("{}: `src` is empty", at(t.src.span())));
    }
    let template_path = layout.templates().join(&src);
    if !template_path.is_file() {
        return Err(format!(
            "{}: template {} not found",
            at(t.src.span()),
            template_path.display()
        ));
    }
    if t.dest.get_ref().is_empty() {
        return Err(format!("{}: `dest` is empty", at(t.dest.span())));
    }
    let dest = layout.confdir.join(t.dest.get_ref());
    let mode = match &t.mode {
        Some(m) => {
            Some(parse_mode(m.get_ref()).map_err(|e| format!("{}: mode: {e}", at(m.span())))?)
        }
        None => None,
    };
    let uid = resolve_id(t.uid, t.owner.as_ref(), "owner", "uid", lookup_user)
        .map_err(|e| with_line(&at, &t.owner, e))?;
    let gid = resolve_id(t.gid, t.group.as_ref(), "group", "gid", lookup_group)
        .map_err(|e| with_line(&at, &t.group, e))?;
    let check_timeout = timeout(&t.check_timeout, "check_timeout", &at)?;
    let reload_timeout = timeout(&t.reload_timeout, "reload_timeout", &at)?;
    let wait = match &t.wait {
        Some(w) => Some(
            w.get_ref()
                .parse::<Wait>()
                .map_err(|e| format!("{}: {e}", at(w.span())))?,
        ),
        None => None,
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
        check: non_empty(t.check_cmd).map(|l| Command::new(l, check_timeout)),
        reload: non_empty(t.reload_cmd).map(|l| Command::new(l, reload_timeout)),
        wait,
    })
}

fn with_line(
    at: &dyn Fn(std::ops::Range<usize>) -> String,
    field: &Option<Spanned<String>>,
    e: String,
) -> String {
    match field {
        Some(f) => format!("{}: {e}", at(f.span())),
        None => e,
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

fn timeout(
    field: &Option<Spanned<String>>,
    key: &str,
    at: &dyn Fn(std::ops::Range<usize>) -> String,
) -> Result<Duration, String> {
    match field {
        None => Ok(DEFAULT_TIMEOUT),
        Some(v) => parse_duration(v.get_ref()).map_err(|e| format!("{}: {key}: {e}", at(v.span()))),
    }
}

/// 1-based line of byte offset `pos`.
fn line_of(text: &str, pos: usize) -> usize {
    text[..pos.min(text.len())].matches('\n').count() + 1
}

/// A file mode written as an octal string: `"0644"`, `"644"` and `"0o644"` all mean
/// 0644. confd reads `"644"` as decimal (giving `--w----r--`); nobody means that.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.trim();
    let digits = digits.strip_prefix("0o").unwrap_or(digits);
    if digits.is_empty() || !digits.chars().all(|c| ('0'..='7').contains(&c)) {
        return Err(format!("{text:?} is not an octal mode such as \"0644\""));
    }
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o7777 => Ok(m),
        _ => Err(format!("{text:?} is out of range (at most 07777)")),
    }
}

/// A duration with its unit: `"500ms"`, `"30s"`, `"2m"`, `"1h"`, or `"0"`. A bare
/// number is refused rather than guessed: confd's `interval` is in seconds, a wait in
/// milliseconds would be as natural.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let part = text.trim();
    let split = part
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(part.len());
    let (digits, unit) = part.split_at(split);
    let bad = || format!("{text:?} is not a duration such as \"500ms\", \"30s\" or \"2m\"");
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let millis = match unit {
        "" if n == 0 => Some(0),
        "" => return Err(format!("{text:?} needs a unit (ms, s, m or h)")),
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(bad()),
    };
    millis.map(Duration::from_millis).ok_or_else(bad)
}

/// A numeric id and/or a name for it; both given must agree.
fn resolve_id(
    id: Option<u32>,
    name: Option<&Spanned<String>>,
    name_key: &str,
    id_key: &str,
    lookup: fn(&str) -> Result<u32, String>,
) -> Result<Option<u32>, String> {
    let by_name = match name {
        Some(n) => Some(lookup(n.get_ref()).map_err(|e| format!("{name_key}: {e}"))?),
        None => None,
    };
    match (id, by_name) {
        (Some(a), Some(b)) if a != b => Err(format!(
            "{name_key} {:?} is {id_key} {b}, but {id_key} says {a}",
            name.map(|n| n.get_ref().as_str()).unwrap_or_default()
        )),
        (a, b) => Ok(a.or(b)),
    }
}

fn lookup_user(name: &str) -> Result<u32, String> {
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) => Ok(u.uid.as_raw()),
        Ok(None) => Err(format!("unknown user {name:?}")),
        Err(e) => Err(format!("cannot look up user {name:?}: {e}")),
    }
}

fn lookup_group(name: &str) -> Result<u32, String> {
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(format!("unknown group {name:?}")),
        Err(e) => Err(format!("cannot look up group {name:?}: {e}")),
    }
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

        fn load(&self, prefix: &str) -> (Vec<Resource>, Vec<ResourceError>) {
            load_all(&Layout {
                confdir: self.tmp.path(),
                prefix,
            })
            .expect("conf.d readable")
        }

        fn load_one(&self, text: &str) -> Result<Resource, String> {
            self.resource("one.toml", text);
            let (mut ok, mut errs) = self.load("/");
            match (ok.pop(), errs.pop()) {
                (Some(r), None) => Ok(r),
                (None, Some(e)) => Err(e.to_string()),
                other => panic!("{other:?}"),
            }
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
        let (ok, _) = d.load("/production");
        assert_eq!(ok[0].prefix, "/production/app");
        assert_eq!(ok[0].selectors, vec!["/production/app/db"]);
    }

    #[test]
    fn mode_is_octal_with_or_without_leading_zero() {
        assert_eq!(parse_mode("0644"), Ok(0o644));
        assert_eq!(parse_mode("644"), Ok(0o644));
        assert_eq!(parse_mode("0o600"), Ok(0o600));
        assert!(parse_mode("0x1a4").is_err());
        assert!(parse_mode("0899").is_err());
        assert!(parse_mode("77777").is_err());
    }

    #[test]
    fn wait_parses_min_and_max_with_units() {
        let w: Wait = "2s:10s".parse().expect("valid");
        assert_eq!(
            (w.min, w.max),
            (Duration::from_millis(2_000), Duration::from_millis(10_000))
        );
        let w: Wait = "50ms".parse().expect("valid");
        assert_eq!(
            (w.min, w.max),
            (Duration::from_millis(50), Duration::from_millis(50))
        );
        let w: Wait = "0".parse().expect("valid");
        assert_eq!(
            (w.min, w.max),
            (Duration::from_millis(0), Duration::from_millis(0))
        );
        let w: Wait = "0:1m".parse().expect("valid");
        assert_eq!(w.max, Duration::from_millis(60_000));
        assert_eq!(Wait::default().to_string(), "100ms:1000ms");
    }

    #[test]
    fn wait_refuses_bare_numbers_unknown_units_and_max_below_min() {
        assert!(matches!("50".parse::<Wait>(), Err(WaitError::Duration(..))));
        assert!(matches!("5x".parse::<Wait>(), Err(WaitError::Duration(..))));
        assert!(matches!("".parse::<Wait>(), Err(WaitError::Duration(..))));
        assert!(matches!(
            "2s:1s".parse::<Wait>(),
            Err(WaitError::MaxBelowMin(_))
        ));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert!(parse_duration("30").is_err(), "a bare number needs a unit");
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 days").is_err());
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

    #[test]
    fn a_broken_file_does_not_stop_the_others_and_order_is_lexical() {
        let d = Dir::new();
        let ok = "[template]\nsrc = \"app.tmpl\"\ndest = \"/tmp/x\"\n";
        d.resource("b.toml", ok);
        d.resource("a/z.toml", ok);
        d.resource("c.toml", "[template]\nsrc = 1\n");
        d.resource("notes.txt", "ignored");
        let (loaded, errors) = d.load("/");
        let names: Vec<_> = loaded.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, vec!["a/z.toml", "b.toml"]);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].file.ends_with("c.toml"));
    }

    #[test]
    fn symlinked_directories_are_followed_once() {
        let d = Dir::new();
        let elsewhere = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            elsewhere.path().join("x.toml"),
            "[template]\nsrc = \"app.tmpl\"\ndest = \"/tmp/x\"\n",
        )
        .expect("w");
        std::os::unix::fs::symlink(elsewhere.path(), d.tmp.path().join("conf.d/linked"))
            .expect("link");
        std::os::unix::fs::symlink(
            d.tmp.path().join("conf.d"),
            d.tmp.path().join("conf.d/loop"),
        )
        .expect("loop");
        let (loaded, errors) = d.load("/");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            loaded.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            vec!["linked/x.toml"]
        );
    }

    #[test]
    fn missing_conf_d_is_an_error() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let err = load_all(&Layout {
            confdir: tmp.path(),
            prefix: "/",
        })
        .expect_err("missing");
        assert!(err.to_string().contains("conf.d"), "{err}");
    }
}
