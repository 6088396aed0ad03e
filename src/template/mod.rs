//! Tera 2 set-up for config files: autoescape off, every template under
//! `<confdir>/templates` loaded under its relative path (so `include`, `extends` and
//! components work across the directory), and confd's function set registered
//! (see [`functions`] and [`filters`]).
//!
//! A template with an error does not take the others down: it is remembered with its
//! error, and rendering it reports that error. Reading the directory is `load`'s
//! job (through [`crate::fswalk`]), the error types are in `error`; which store a
//! render reads is decided by the caller, and reading keys is [`Store`]'s job.

mod dns;
mod error;
pub mod filters;
pub mod functions;
mod load;

use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};

use tera::{Context, Tera};

pub use self::error::{BrokenTemplate, LoadError, RenderError};
use crate::store::Store;

/// Every template of a confdir, parsed once.
pub struct Templates {
    tera: Tera,
    /// Templates that failed to load, with the error to report when rendered.
    broken: load::Broken,
    dir: PathBuf,
    /// Templates written in resource files (a fan-out's file name), each parsed on its
    /// first render and kept under its own text: a fan-out of a thousand matches would
    /// otherwise parse its name a thousand times per pass (half of its render time).
    inline: RwLock<Tera>,
}

impl Templates {
    /// Loads every file under `dir` (recursively, following symlinks). A template with
    /// a syntax error does not stop the others from loading: rendering it reports the
    /// error.
    pub fn load(dir: &Path) -> Result<Templates, LoadError> {
        let (files, mut broken) = load::sources(dir).map_err(|source| LoadError {
            dir: dir.to_path_buf(),
            source,
        })?;
        let mut tera = engine();
        broken.extend(load::add_all(&mut tera, files));
        Ok(Templates {
            tera,
            broken,
            dir: dir.to_path_buf(),
            inline: RwLock::new(engine()),
        })
    }

    /// Whether a template of that name exists (loaded or broken).
    pub fn contains(&self, name: &str) -> bool {
        self.tera.contains_template(name) || self.broken.contains_key(name)
    }

    /// The templates that failed to load, by name, with their errors: for a warning
    /// at start-up, before any resource renders them.
    pub fn errors(&self) -> impl Iterator<Item = (&str, &BrokenTemplate)> {
        self.broken.iter().map(|(k, v)| (k.as_str(), &**v))
    }

    /// Renders template `name` with `store` behind the store functions, and the
    /// variable `revision` set to the store's revision.
    pub fn render(&self, name: &str, store: &Store) -> Result<String, RenderError> {
        self.render_item(name, store, None)
    }

    /// [`Templates::render`] for one match of a fan-out: the template also sees `item`.
    pub fn render_item(
        &self,
        name: &str,
        store: &Store,
        item: Option<&Item>,
    ) -> Result<String, RenderError> {
        if let Some(err) = self.broken.get(name) {
            return Err(RenderError::NotLoaded {
                name: name.to_string(),
                source: err.clone(),
            });
        }
        if !self.tera.contains_template(name) {
            return Err(RenderError::NotFound {
                name: name.to_string(),
                dir: self.dir.clone(),
            });
        }
        let context = context(store, item);
        functions::with_store(store, || self.tera.render(name, &context)).map_err(|source| {
            RenderError::Failed {
                name: name.to_string(),
                source: Box::new(source),
            }
        })
    }

    /// Renders `text`, a template written in a resource file (a fan-out's file name),
    /// with the same functions and variables as a template; `what` names it in errors.
    pub fn render_text(
        &self,
        what: &str,
        text: &str,
        store: &Store,
        item: Option<&Item>,
    ) -> Result<String, RenderError> {
        let failed = |source| RenderError::Failed {
            name: what.to_string(),
            source: Box::new(source),
        };
        let known = self
            .inline
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_template(text);
        if !known {
            let mut inline = self.inline.write().unwrap_or_else(PoisonError::into_inner);
            if !inline.contains_template(text) {
                inline.add_raw_template(text, text).map_err(failed)?;
            }
        }
        let context = context(store, item);
        let inline = self.inline.read().unwrap_or_else(PoisonError::into_inner);
        functions::with_store(store, || inline.render(text, &context)).map_err(failed)
    }
}

/// One match of a fan-out's `for_each`, as its templates see it (`item.key`, ...).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Item {
    /// The matched path, relative to the resource's prefix (`/services/web`).
    pub key: String,
    /// Its last segment (`web`).
    pub name: String,
    /// The value when the match is a key; none for a directory.
    pub value: Option<String>,
}

fn context(store: &Store, item: Option<&Item>) -> Context {
    let mut context = Context::new();
    context.insert("revision", &store.revision());
    if let Some(item) = item {
        context.insert("item", item);
    }
    context
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
    fn errors_keep_their_kind_and_source() {
        use std::error::Error as _;
        let dir = dir_with(&[
            ("bad.tmpl", "{{ oops( }}"),
            ("db.tmpl", r#"{{ getv(key="/x") }}"#),
        ]);
        std::os::unix::fs::symlink(dir.path().join("gone"), dir.path().join("dangling.tmpl"))
            .unwrap();
        let t = Templates::load(dir.path()).unwrap();
        let s = store(1, &[]);
        let bad = t.render("bad.tmpl", &s).unwrap_err();
        assert!(
            matches!(&bad, RenderError::NotLoaded { name, source }
                if name == "bad.tmpl" && matches!(**source, BrokenTemplate::Invalid(_))),
            "{bad:?}"
        );
        assert!(bad.source().is_some_and(|s| s.source().is_some()));
        let dangling = t.render("dangling.tmpl", &s).unwrap_err();
        assert!(
            matches!(&dangling, RenderError::NotLoaded { source, .. }
                if matches!(&**source, BrokenTemplate::Unreadable { source, .. }
                    if source.kind() == std::io::ErrorKind::NotFound)),
            "{dangling:?}"
        );
        let failed = t.render("db.tmpl", &s).unwrap_err();
        assert!(
            matches!(&failed, RenderError::Failed { name, source }
                if name == "db.tmpl" && matches!(source.kind(), tera::ErrorKind::RenderingError(_))),
            "{failed:?}"
        );
        assert!(matches!(
            t.render("nope.tmpl", &s),
            Err(RenderError::NotFound { .. })
        ));
        let missing = Templates::load(&dir.path().join("nope")).err().unwrap();
        assert_eq!(missing.source.kind(), std::io::ErrorKind::NotFound);
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
