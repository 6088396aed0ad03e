//! Tera 2 set-up for config files: autoescape off, every template under
//! `<confdir>/templates` loaded under its relative path (so `include`, `extends` and
//! components work across the directory), and confd's function set registered
//! (see [`functions`] and [`filters`]).
//!
//! A template with an error does not take the others down: it is remembered with its
//! error, and rendering it reports that error. Which store a render reads is decided
//! by the caller; reading keys is [`Store`]'s job.

mod dns;
pub mod filters;
pub mod functions;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use tera::{Context, Tera};

use crate::store::Store;

/// Every template of a confdir, parsed once.
pub struct Templates {
    tera: Tera,
    /// Templates that failed to load, with the error to report when rendered.
    broken: BTreeMap<String, String>,
    dir: PathBuf,
}

/// A template set that could not be loaded at all (missing or unreadable directory).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct LoadError {
    pub message: String,
}

/// A render that failed. Its Display names the template file, line and column, and
/// for a missing key the key.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RenderError {
    pub message: String,
}

impl Templates {
    /// Loads every file under `dir` (recursively, following symlinks). A template with
    /// a syntax error does not stop the others from loading: rendering it reports the
    /// error.
    pub fn load(dir: &Path) -> Result<Templates, LoadError> {
        let mut files = Vec::new();
        let mut broken = BTreeMap::new();
        let mut ancestors = HashSet::new();
        walk(dir, "", &mut ancestors, &mut files, &mut broken).map_err(|e| LoadError {
            message: format!("cannot load templates from {}: {e}", dir.display()),
        })?;
        let mut tera = engine();
        broken.extend(add_all(&mut tera, files));
        Ok(Templates {
            tera,
            broken,
            dir: dir.to_path_buf(),
        })
    }

    /// Whether a template of that name exists (loaded or broken).
    pub fn contains(&self, name: &str) -> bool {
        self.tera.contains_template(name) || self.broken.contains_key(name)
    }

    /// The templates that failed to load, by name, with their errors: for a warning
    /// at start-up, before any resource renders them.
    pub fn errors(&self) -> impl Iterator<Item = (&str, &str)> {
        self.broken.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Renders template `name` with `store` behind the store functions, and the
    /// variable `revision` set to the store's revision.
    pub fn render(&self, name: &str, store: &Store) -> Result<String, RenderError> {
        if let Some(err) = self.broken.get(name) {
            return Err(RenderError {
                message: format!("template {name} did not load: {err}"),
            });
        }
        if !self.tera.contains_template(name) {
            return Err(RenderError {
                message: format!("template {name} not found in {}", self.dir.display()),
            });
        }
        let mut context = Context::new();
        context.insert("revision", &store.revision());
        functions::with_store(store, || self.tera.render(name, &context)).map_err(|e| RenderError {
            message: format!("template {name}: {e}"),
        })
    }
}

/// A Tera with confd's functions and filters and no escaping. Functions must be
/// registered before any template is added: Tera 2 rejects unknown ones at load.
fn engine() -> Tera {
    let mut tera = Tera::new();
    // Config files are not HTML: `&` in a URL must stay `&`.
    tera.autoescape_on(Vec::<&str>::new());
    functions::register(&mut tera);
    filters::register(&mut tera);
    tera
}

/// Adds `files` to `tera` and returns the ones that failed, with their errors.
///
/// All at once first: that is one validation pass, and the usual case. Tera rejects
/// the whole batch if one template is bad, and a good template can depend on
/// another (`extends`, `include`, components), so on failure they are added one at a
/// time, in rounds, until a round adds nothing: a parent loads in an early round and
/// its children in later ones, and what is left is broken.
fn add_all(tera: &mut Tera, files: Vec<(String, String)>) -> BTreeMap<String, String> {
    if tera
        .add_raw_templates(files.iter().map(|(n, c)| (n, c)))
        .is_ok()
    {
        return BTreeMap::new();
    }
    let mut pending = files;
    let mut errors = BTreeMap::new();
    loop {
        let before = pending.len();
        pending.retain(
            |(name, content)| match tera.add_raw_template(name, content) {
                Ok(()) => false,
                Err(e) => {
                    errors.insert(name.clone(), e.to_string());
                    true
                }
            },
        );
        if pending.is_empty() || pending.len() == before {
            break;
        }
    }
    errors.retain(|name, _| pending.iter().any(|(n, _)| n == name));
    errors
}

/// Collects every file below `dir` as (relative name with `/`, content), following
/// symlinks. A directory that is its own ancestor (a symlink loop) is skipped; two
/// links to one directory both load, under both names. A file that cannot be read or
/// is not UTF-8 goes to `broken`, so only that template fails.
fn walk(
    dir: &Path,
    prefix: &str,
    ancestors: &mut HashSet<PathBuf>,
    files: &mut Vec<(String, String)>,
    broken: &mut BTreeMap<String, String>,
) -> std::io::Result<()> {
    let canonical = dir.canonicalize()?;
    if !ancestors.insert(canonical.clone()) {
        return Ok(());
    }
    let result = walk_entries(dir, prefix, ancestors, files, broken);
    ancestors.remove(&canonical);
    result
}

fn walk_entries(
    dir: &Path,
    prefix: &str,
    ancestors: &mut HashSet<PathBuf>,
    files: &mut Vec<(String, String)>,
    broken: &mut BTreeMap<String, String>,
) -> std::io::Result<()> {
    let mut entries = std::fs::read_dir(dir)?.collect::<std::io::Result<Vec<_>>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let Some(file_name) = entry.file_name().to_str().map(String::from) else {
            continue;
        };
        let name = format!("{prefix}{file_name}");
        let path = entry.path();
        // `metadata` follows symlinks; a dangling one is a broken template.
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                walk(&path, &format!("{name}/"), ancestors, files, broken)?
            }
            Ok(_) => match std::fs::read_to_string(&path) {
                Ok(content) => files.push((name, content)),
                Err(e) => {
                    broken.insert(name, format!("cannot read {}: {e}", path.display()));
                }
            },
            Err(e) => {
                broken.insert(name, format!("cannot read {}: {e}", path.display()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        dir
    }

    fn store(revision: i64, pairs: &[(&str, &str)]) -> Store {
        let kvs: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Store::new(revision, kvs)
    }

    #[test]
    fn renders_with_store_and_revision_without_escaping() {
        let dir = dir_with(&[(
            "app.conf.tmpl",
            r#"host={{ getv(key="/db/host") }} url={{ getv(key="/url") }} rev={{ revision }}"#,
        )]);
        let t = Templates::load(dir.path()).unwrap();
        let s = store(42, &[("/db/host", "db1"), ("/url", "http://a/?x=1&y=<2>")]);
        assert_eq!(
            t.render("app.conf.tmpl", &s).unwrap(),
            "host=db1 url=http://a/?x=1&y=<2> rev=42"
        );
    }

    #[test]
    fn html_named_templates_are_not_escaped_either() {
        let dir = dir_with(&[("page.html", r#"{{ getv(key="/x") }}"#)]);
        let t = Templates::load(dir.path()).unwrap();
        assert_eq!(
            t.render("page.html", &store(1, &[("/x", "<&>")])).unwrap(),
            "<&>"
        );
    }

    #[test]
    fn include_extends_and_components_work_across_the_directory() {
        let dir = dir_with(&[
            ("base.tmpl", "[{% block body %}base{% endblock body %}]"),
            (
                "partials/upstreams.tmpl",
                r#"{% for kv in gets(pattern="/upstream/*") %}server {{ kv.value }};{% endfor %}"#,
            ),
            (
                "partials/components.tmpl",
                r#"{% component listen(port, host="127.0.0.1") %}listen {{ host }}:{{ port }};{% endcomponent listen %}"#,
            ),
            (
                "nginx/site.tmpl",
                r#"{% extends "base.tmpl" %}{% block body %}{% include "partials/upstreams.tmpl" %} {{ <listen port={getv(key="/port")} /> }}{% endblock body %}"#,
            ),
        ]);
        let t = Templates::load(dir.path()).unwrap();
        assert_eq!(
            t.errors().count(),
            0,
            "{:?}",
            t.errors().collect::<Vec<_>>()
        );
        let s = store(
            1,
            &[
                ("/port", "80"),
                ("/upstream/a", "10.0.0.1:80"),
                ("/upstream/b", "10.0.0.2:80"),
            ],
        );
        assert_eq!(
            t.render("nginx/site.tmpl", &s).unwrap(),
            "[server 10.0.0.1:80;server 10.0.0.2:80; listen 127.0.0.1:80;]"
        );
    }

    #[test]
    fn a_broken_template_does_not_break_the_others() {
        let dir = dir_with(&[
            (
                "a_child.tmpl",
                r#"{% extends "z_parent.tmpl" %}{% block b %}child{% endblock b %}"#,
            ),
            ("bad.tmpl", "line one\n{{ oops( }}\n"),
            ("uses_bad.tmpl", r#"{% include "bad.tmpl" %}"#),
            ("unknown_fn.tmpl", "{{ nosuchfn() }}"),
            ("good.tmpl", "good"),
            ("z_parent.tmpl", "<{% block b %}{% endblock b %}>"),
        ]);
        let t = Templates::load(dir.path()).unwrap();
        let store = store(1, &[]);
        assert_eq!(t.render("good.tmpl", &store).unwrap(), "good");
        // The child sorts before its parent, so it loads only in a later round.
        assert_eq!(t.render("a_child.tmpl", &store).unwrap(), "<child>");
        assert!(t.contains("bad.tmpl"));
        let bad = t.render("bad.tmpl", &store).unwrap_err().to_string();
        assert!(bad.contains("bad.tmpl:2:"), "{bad}");
        let uses_bad = t.render("uses_bad.tmpl", &store).unwrap_err().to_string();
        assert!(uses_bad.contains("bad.tmpl"), "{uses_bad}");
        let unknown = t.render("unknown_fn.tmpl", &store).unwrap_err().to_string();
        assert!(unknown.contains("Unknown function `nosuchfn`"), "{unknown}");
        let names: Vec<_> = t.errors().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["bad.tmpl", "unknown_fn.tmpl", "uses_bad.tmpl"]);
    }

    #[test]
    fn a_missing_key_names_template_line_column_and_key() {
        let dir = dir_with(&[(
            "db.conf.tmpl",
            "# db\nhost = {{ getv(key=\"/db/host\") }}\n",
        )]);
        let t = Templates::load(dir.path()).unwrap();
        let err = t
            .render("db.conf.tmpl", &store(1, &[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("db.conf.tmpl:2:"), "{err}");
        assert!(err.contains("getv: key not found: /db/host"), "{err}");
    }

    #[test]
    fn an_error_in_an_included_template_names_that_file() {
        let dir = dir_with(&[
            ("main.tmpl", "a\n{% include \"inc/part.tmpl\" %}"),
            ("inc/part.tmpl", "x\ny\n{{ div(a=1, b=0) }}"),
        ]);
        let t = Templates::load(dir.path()).unwrap();
        let err = t
            .render("main.tmpl", &store(1, &[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("inc/part.tmpl:3:"), "{err}");
        assert!(err.contains("div: division by zero"), "{err}");
    }

    #[test]
    fn unknown_template_and_missing_dir_are_clear_errors() {
        let dir = dir_with(&[("a.tmpl", "a")]);
        let t = Templates::load(dir.path()).unwrap();
        assert!(!t.contains("b.tmpl"));
        let err = t.render("b.tmpl", &store(1, &[])).unwrap_err().to_string();
        assert!(err.contains("template b.tmpl not found in"), "{err}");
        let missing = dir.path().join("nope");
        let err = Templates::load(&missing).err().unwrap().to_string();
        assert!(err.contains(&missing.display().to_string()), "{err}");
    }

    #[test]
    fn symlinked_files_and_dirs_are_followed_once() {
        let shared = dir_with(&[("inner.tmpl", "inner"), ("deep/x.tmpl", "x")]);
        let dir = dir_with(&[
            ("top.tmpl", r#"{% include "linked/inner.tmpl" %}"#),
            ("real.tmpl", "real"),
        ]);
        std::os::unix::fs::symlink(shared.path(), dir.path().join("linked")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("real.tmpl"), dir.path().join("alias.tmpl"))
            .unwrap();
        // A loop back to the root must not recurse forever.
        std::os::unix::fs::symlink(dir.path(), dir.path().join("loop")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("gone"), dir.path().join("dangling.tmpl"))
            .unwrap();
        let t = Templates::load(dir.path()).unwrap();
        let s = store(1, &[]);
        assert_eq!(t.render("top.tmpl", &s).unwrap(), "inner");
        assert_eq!(t.render("linked/deep/x.tmpl", &s).unwrap(), "x");
        assert_eq!(t.render("alias.tmpl", &s).unwrap(), "real");
        assert!(!t.contains("loop/real.tmpl"));
        assert!(t.render("dangling.tmpl", &s).is_err());
    }

    #[test]
    fn concurrent_renders_each_see_their_own_store() {
        let dir = dir_with(&[(
            "t.tmpl",
            r#"{% for i in seq(start=1, end=200) %}{{ getv(key="/who") }}{% endfor %}"#,
        )]);
        let t = Arc::new(Templates::load(dir.path()).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|n| {
                let t = Arc::clone(&t);
                std::thread::spawn(move || {
                    let who = format!("{n},");
                    let s = store(n, &[("/who", &who)]);
                    for _ in 0..50 {
                        assert_eq!(t.render("t.tmpl", &s).unwrap(), who.repeat(200));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
    }
}
