//! The template set: loading, rendering, errors, in either engine.

use std::collections::{BTreeMap, BTreeSet};
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
    let names: Vec<_> = t.errors().map(|(n, _, _)| n).collect();
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
    std::os::unix::fs::symlink(dir.path().join("gone"), dir.path().join("dangling.tmpl")).unwrap();
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
    std::os::unix::fs::symlink(dir.path().join("gone"), dir.path().join("dangling.tmpl")).unwrap();
    let t = Templates::load(dir.path()).unwrap();
    let s = store(1, &[]);
    let bad = t.render("bad.tmpl", &s).unwrap_err();
    assert!(
        matches!(&bad, RenderError::NotLoaded { name, source }
            if name == "bad.tmpl" && matches!(**source, BrokenTemplate::Invalid { .. })),
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

#[test]
fn confd_syntax_and_positional_arguments_get_hints() {
    let dir = dir_with(&[
        (
            "confd.tmpl",
            "upstream {\n{{range getvs \"/up/*\"}}  server {{.}};\n{{end}}}\n",
        ),
        ("positional.tmpl", "host = {{ getv(\"/db/host\") }}\n"),
    ]);
    let t = Templates::load(dir.path()).unwrap();
    let s = store(1, &[]);
    let confd = t.render("confd.tmpl", &s).unwrap_err().to_string();
    assert!(confd.contains("confd.tmpl:2:"), "{confd}");
    assert!(confd.contains("set `engine = \"go\"`"), "{confd}");
    assert!(confd.contains("docs/functions.md"), "{confd}");
    let positional = t.render("positional.tmpl", &s).unwrap_err().to_string();
    assert!(
        positional
            .contains(r#"`getv` takes keyword arguments, not positional ones: getv(key="/x""#),
        "{positional}"
    );
}

#[test]
fn the_go_engine_renders_the_same_directory() {
    let dir = dir_with(&[
        (
            "confd.tmpl",
            "{{range gets \"/up/*\"}}server {{.Value}};{{end}}",
        ),
        ("tera.tmpl", r#"{{ getv(key="/up/a") }}"#),
    ]);
    let both = BTreeSet::from([Engine::Tera, Engine::Go]);
    let t = Templates::load_for(dir.path(), Engine::Go, &both).unwrap();
    let s = store(1, &[("/up/a", "x"), ("/up/b", "y")]);
    assert_eq!(t.render("confd.tmpl", &s).unwrap(), "server x;server y;");
    assert_eq!(t.render_as(Engine::Tera, "tera.tmpl", &s).unwrap(), "x");
    // Each engine reports the files it cannot read; neither stops the other.
    let refused: Vec<_> = t.errors().map(|(n, e, _)| (n, e)).collect();
    assert_eq!(
        refused,
        vec![("confd.tmpl", Engine::Tera), ("tera.tmpl", Engine::Go)]
    );
    let tera_only = Templates::load(dir.path()).unwrap();
    assert!(matches!(
        tera_only.render_as(Engine::Go, "confd.tmpl", &s),
        Err(RenderError::EngineNotLoaded { .. })
    ));
}
