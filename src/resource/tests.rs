//! Resource files parsed and validated: every key, both forms, errors with file and line.

use super::*;
use crate::template::Engine;
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
    d.resource(
        "a.toml",
        "[template]\nsrc = \"app.tmpl\"\ndest = \"/tmp/x\"\nprefix = \"/app\"\nkeys = [\"/db\"]\n",
    );
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

const UNIT: &str = r#"[template]
prefix = "/gateway"
keys = ["/services"]
check_cmd = "nginx -t"
reload_cmd = "nginx -s reload"
min_keys = 2
on_reload_failure = "rollback"

[[template.output]]
src = "app.tmpl"
dest = "out/nginx.conf"
mode = "0640"

[[template.output]]
src = "app.tmpl"
dest = "out/upstream-{{ item.name }}.conf"
for_each = "services/*"
check_cmd = "test -s {{.src}}"
"#;

#[test]
fn a_unit_lists_its_outputs_and_the_unit_wide_keys() {
    let d = Dir::new();
    let r = d.load_one(UNIT).expect("valid");
    assert!(r.unit && r.is_unit());
    assert_eq!(r.min_keys, Some(2));
    assert_eq!(r.on_reload_failure, OnReloadFailure::Rollback);
    assert_eq!(r.outputs.len(), 2);
    assert_eq!(r.dest, d.tmp.path().join("out/nginx.conf"));
    assert_eq!(r.outputs[0].mode, Some(0o640));
    let OutputDest::FanOut {
        for_each,
        dir,
        name,
        ..
    } = &r.outputs[1].dest
    else {
        panic!("a fan-out: {:?}", r.outputs[1]);
    };
    assert_eq!(for_each, "/services/*");
    assert_eq!(dir, &d.tmp.path().join("out"));
    assert_eq!(name, "upstream-{{ item.name }}.conf");
    assert!(r.outputs[1].check.is_some());
}

#[test]
fn confds_form_is_one_output_and_not_a_unit() {
    let d = Dir::new();
    let r = d
        .load_one("[template]\nsrc = \"app.tmpl\"\ndest = \"out/a.conf\"\nmode = \"0600\"\n")
        .expect("valid");
    assert!(!r.is_unit());
    assert_eq!(r.outputs.len(), 1);
    assert_eq!(r.outputs[0].dest, OutputDest::File(r.dest.clone()));
    assert_eq!(r.outputs[0].mode, Some(0o600));
    let rollback = d
        .load_one("[template]\nsrc = \"app.tmpl\"\ndest = \"out/a.conf\"\non_reload_failure = \"rollback\"\n")
        .expect("valid");
    assert!(rollback.is_unit(), "only a unit can roll back");
}

#[test]
fn unit_errors_name_the_file_and_line() {
    let d = Dir::new();
    let out = "\n[[template.output]]\nsrc = \"app.tmpl\"\ndest = \"/x\"\n";
    let cases = [
        (format!("[template]\nsrc = \"app.tmpl\"\n{out}"), vec!["one.toml", "line 2", "both"]),
        (format!("[template]\ndest = \"/y\"\n{out}"), vec!["line 2", "both"]),
        ("[template]\nkeys = []\n".to_string(), vec!["one.toml", "[[template.output]]"]),
        (format!("[template]\n{out}{out}"), vec!["line 9", "two outputs write /x"]),
        (
            "[template]\n[[template.output]]\nsrc = \"app.tmpl\"\ndest = \"/d/{{ item.name }}/x.conf\"\nfor_each = \"*\"\n".to_string(),
            vec!["line 4", "literal directory"],
        ),
        (
            "[template]\n[[template.output]]\nsrc = \"app.tmpl\"\ndest = \"/d/fixed.conf\"\nfor_each = \"*\"\n".to_string(),
            vec!["line 4", "file-name template"],
        ),
        (
            "[template]\n[[template.output]]\nsrc = \"app.tmpl\"\ndest = \"/d/{{ item.name }}\"\nfor_each = \"[\"\n".to_string(),
            vec!["line 5", "for_each"],
        ),
        (
            "[template]\non_reload_failure = \"never\"\n".to_string(),
            vec!["one.toml", "on_reload_failure"],
        ),
        (
            format!("[template]\n{out}bogus = 1\n"),
            vec!["one.toml", "bogus"],
        ),
    ];
    for (text, wanted) in cases {
        let err = d.load_one(&text).expect_err(&text);
        for w in wanted {
            assert!(err.contains(w), "{text:?}: {err:?} lacks {w:?}");
        }
    }
}
