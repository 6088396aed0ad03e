//! The Go engine against Go's and confd's behaviour: built-ins, confd's functions,
//! definitions shared across files, errors with positions. confd's own test cases are
//! in `confd`.

mod confd;

use std::collections::BTreeMap;

use super::GoTemplates;
use crate::store::Store;
use crate::template::RenderError;

fn store(keys: &[(&str, &str)]) -> Store {
    let kvs: BTreeMap<String, String> = keys
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Store::new(1, kvs)
}

/// Renders `template` (as `t.tmpl`) with `keys` in the store.
pub(super) fn render_go(template: &str, keys: &[(&str, &str)]) -> Result<String, String> {
    render_files(&[("t.tmpl", template)], "t.tmpl", keys)
}

fn render_files(
    files: &[(&str, &str)],
    name: &str,
    keys: &[(&str, &str)],
) -> Result<String, String> {
    let files: Vec<(String, String)> = files
        .iter()
        .map(|(n, c)| (n.to_string(), c.to_string()))
        .collect();
    let set = GoTemplates::parse(&files);
    if let Some(err) = set.broken.get(name) {
        return Err(err.to_string());
    }
    set.render(name, &store(keys), None)
        .expect("template exists")
        .map_err(|e| {
            RenderError::GoFailed {
                name: name.into(),
                source: Box::new(e),
            }
            .to_string()
        })
}

fn ok(template: &str, keys: &[(&str, &str)]) -> String {
    render_go(template, keys).unwrap_or_else(|e| panic!("{template}: {e}"))
}

fn err(template: &str, keys: &[(&str, &str)]) -> String {
    render_go(template, keys).expect_err(template)
}

#[test]
fn go_builtins_behave_as_in_go() {
    let keys = [("/n", "5"), ("/s", "abc")];
    let cases = [
        (
            r#"{{printf "%05d|%-4s|%.2f|%q|%x|%v" 42 "ab" 0.5 "q" 255 true}}"#,
            r#"00042|ab  |0.50|"q"|ff|true"#,
        ),
        (
            r#"{{len (getv "/s")}} {{index (split "a,b,c" ",") 1}}"#,
            "3 b",
        ),
        (
            r#"{{if and (eq (getv "/n") "5") (ne 1 2)}}yes{{else}}no{{end}}"#,
            "yes",
        ),
        (
            r#"{{or "" "fallback"}} {{not true}} {{lt 1 2}} {{le 2 2}} {{gt 1 2}}"#,
            "fallback false true true false",
        ),
        (
            r#"{{with getv "/missing" ""}}set{{else}}empty{{end}}"#,
            "empty",
        ),
        ("a  {{- \"b\" -}}  \n c", "abc"),
        (
            r#"{{/* a comment */}}{{print 1 2 "x"}}{{println "y"}}"#,
            "1 2xy\n",
        ),
        (
            r#"{{range $i, $v := split "x,y" ","}}{{$i}}={{$v}};{{end}}"#,
            "0=x;1=y;",
        ),
        (r#"{{range split "" ","}}[{{.}}]{{else}}none{{end}}"#, "[]"),
        (
            r#"{{$c := 0}}{{range seq 1 3}}{{$c = add $c .}}{{end}}{{$c}}"#,
            "6",
        ),
        (r#"{{.}}"#, "<no value>"),
        (
            r#"{{index (json `{"a":{"b":[1,2]}}`) "a"}}"#,
            "map[b:[1 2]]",
        ),
        (r#"{{(json `{"port":8080}`).port}}"#, "8080"),
        // Go prints a float64 as %v does (vendor/gotmpl/PATCHED.md).
        (
            r#"{{(json `{"big":1000000,"small":0.00001}`)}}"#,
            "map[big:1e+06 small:1e-05]",
        ),
        (
            r#"{{slice "abcdef" 1 3}} {{html "<a&b>"}} {{urlquery "a b"}}"#,
            "bc &lt;a&amp;b&gt; a+b",
        ),
    ];
    for (template, want) in cases {
        assert_eq!(ok(template, &keys), want, "{template}");
    }
}

#[test]
fn confd_functions_with_confd_semantics() {
    let keys = [
        ("/app/upstream/b", "10.0.0.2:80"),
        ("/app/upstream/a", "10.0.0.1:80"),
        ("/app/db/host", "db1"),
        ("/e", "333"),
    ];
    let cases = [
        (
            r#"{{range gets "/app/upstream/*"}}{{base .Key}}={{.Value}} {{end}}"#,
            "a=10.0.0.1:80 b=10.0.0.2:80 ",
        ),
        (
            r#"{{join (getvs "/app/upstream/*") ","}}"#,
            "10.0.0.1:80,10.0.0.2:80",
        ),
        (
            r#"{{getv "/nope" "dflt"}} {{exists "/e"}} {{exists "/app"}}"#,
            "dflt true false",
        ),
        (
            r#"{{join (ls "/app") " "}}|{{join (lsdir "/app") " "}}"#,
            "db upstream|db upstream",
        ),
        (
            r#"{{toUpper "ab"}}{{toLower "CD"}} {{contains "abc" "b"}} {{trimSuffix "a.conf" ".conf"}}"#,
            "ABcd true a",
        ),
        (
            r#"{{replace "a-b-c" "-" "+" 1}} {{replace "a-b-c" "-" "+" -1}}"#,
            "a+b-c a+b+c",
        ),
        (
            r#"{{dir "/a/b/c"}} {{base "/a/b/"}} {{base ""}}"#,
            "/a/b b .",
        ),
        (
            r#"{{range reverse (split "1,2,3" ",")}}{{.}}{{end}}"#,
            "321",
        ),
        (r#"{{sortByLength (split "ccc,a,bb" ",")}}"#, "[a bb ccc]"),
        (
            r#"{{range sortKVByLength (gets "/*")}}{{.Key}} {{end}}"#,
            "/e ",
        ),
        (
            r#"{{add 1 2}} {{sub 1 2}} {{mul 3 4}} {{div 7 2}} {{mod 7 2}}"#,
            "3 -1 12 3 1",
        ),
        (
            r#"{{$m := map "a" 1 "b" "x"}}{{$m.a}}{{$m.b}} {{index $m "b"}}"#,
            "1x x",
        ),
        (
            r#"{{parseBool "T"}} {{atoi "-12"}} {{seq 3 1}}"#,
            "true -12 []",
        ),
        (
            r#"{{base64Encode "Value"}} {{base64Decode "VmFsdWU="}}"#,
            "VmFsdWU= Value",
        ),
        (
            r#"{{getenv "CONFLUX_SURELY_UNSET" "d"}}{{getenv "CONFLUX_SURELY_UNSET"}}|"#,
            "d|",
        ),
        (
            r#"{{fileExists "/"}} {{fileExists "/surely/not/here"}}"#,
            "true false",
        ),
        (r#"{{with get "/e"}}{{.Key}}={{.Value}}{{end}}"#, "/e=333"),
    ];
    for (template, want) in cases {
        assert_eq!(ok(template, &keys), want, "{template}");
    }
}

#[test]
fn datetime_prints_and_formats_like_go_time() {
    let year = chrono::Local::now().format("%Y").to_string();
    assert_eq!(ok(r#"{{datetime.Format "2006"}}"#, &[]), year);
    let now = ok("{{datetime}}", &[]);
    assert!(now.starts_with(&year) && now.contains(':'), "{now}");
}

#[test]
fn errors_name_template_line_column_and_cause_like_go() {
    // Go's words, position and column (confd logs these).
    let e = err("# db\nhost = {{getv \"/db/host\"}}\n", &[]);
    let want = r#"t.tmpl:2:9: executing "t.tmpl" at <getv "/db/host">: error calling getv: key does not exist: /db/host"#;
    assert!(e.ends_with(want), "{e}");
    let e = err("\n{{range gets \"/a/[\"}}{{end}}", &[]);
    let want = r#"t.tmpl:2:8: executing "t.tmpl" at <gets "/a/[">: error calling gets: syntax error in pattern"#;
    assert!(e.ends_with(want), "{e}");
    // The call with the arguments that failed, not the first call of the function.
    let e = err("{{getv \"/a\"}}\n{{getv \"/b\"}}", &[("/a", "1")]);
    assert!(e.contains("t.tmpl:2:2: "), "{e}");
    let e = err(r#"{{div 1 0}}"#, &[]);
    assert!(e.contains("integer divide by zero"), "{e}");
    let e = err(r#"{{atoi "x"}}"#, &[]);
    assert!(
        e.contains(r#"strconv.Atoi: parsing "x": invalid syntax"#),
        "{e}"
    );
    let e = err(r#"{{add "1" 2}}"#, &[]);
    assert!(e.contains("expected int; got string"), "{e}");
    let e = err(r#"{{getv}}"#, &[]);
    assert!(
        e.contains("wrong number of args for getv: want at least 1 got 0"),
        "{e}"
    );
    // Errors no function of ours raised: located by the action that raised them.
    let e = err("a\n  {{index (split \"a,b\" \",\") 5}}", &[]);
    assert!(
        e.contains(r#"t.tmpl:2:4: executing "t.tmpl" at <index (split "a,b" ",") 5>: "#),
        "{e}"
    );
    let e = err("{{range split \"a\" \",\"}}\n{{.Key}}{{end}}", &[]);
    assert!(
        e.contains(r#"t.tmpl:2:2: executing "t.tmpl" at <.Key>: "#),
        "{e}"
    );
    let e = err("\n{{template \"nope\"}}", &[]);
    assert!(
        e.contains(r#"t.tmpl:2:2: executing "t.tmpl": "#) && e.contains("nope"),
        "{e}"
    );
    let e = err("x\n{{if}}", &[]);
    assert!(e.contains("t.tmpl:2:"), "{e}");
    let e = err(r#"{{nosuch "x"}}"#, &[]);
    assert!(e.contains("nosuch"), "{e}");
}

#[test]
fn definitions_are_shared_across_files_and_a_files_own_win() {
    let files = [
        (
            "partials/upstream.tmpl",
            r#"{{define "upstream"}}server {{.}};{{end}}"#,
        ),
        ("other.tmpl", r#"{{define "x"}}other{{end}}"#),
        (
            "site.tmpl",
            "{{define \"x\"}}mine{{end}}{{range getvs \"/up/*\"}}{{template \"upstream\" .}}{{end}} {{template \"x\"}} {{block \"b\" 1}}b{{.}}{{end}}",
        ),
    ];
    let out = render_files(&files, "site.tmpl", &[("/up/1", "a"), ("/up/2", "b")]).unwrap();
    // Through another file's definition, too.
    let chain = [
        (
            "a.tmpl",
            r#"{{define "outer"}}<{{template "inner"}}>{{end}}"#,
        ),
        ("b.tmpl", r#"{{define "inner"}}in{{end}}"#),
        ("c.tmpl", r#"{{template "outer"}}"#),
    ];
    assert_eq!(render_files(&chain, "c.tmpl", &[]).unwrap(), "<in>");
    assert_eq!(out, "server a;server b; mine b1");
    assert_eq!(render_files(&files, "other.tmpl", &[]).unwrap(), "");
    // An error inside a definition from another file names that file.
    let files = [
        ("lib.tmpl", "{{define \"host\"}}\n  {{getv \"/h\"}}{{end}}"),
        ("main.tmpl", r#"{{template "host"}}"#),
    ];
    let lib = [
        ("lib.tmpl", "{{define \"bad\"}}\n {{len 3}}{{end}}"),
        ("main.tmpl", r#"{{template "bad"}}"#),
    ];
    let e = render_files(&lib, "main.tmpl", &[]).unwrap_err();
    assert!(
        e.contains(r#"lib.tmpl:2:3: executing "bad" at <len 3>: "#),
        "{e}"
    );
    let e = render_files(&files, "main.tmpl", &[]).unwrap_err();
    assert!(
        e.contains(r#"lib.tmpl:2:4: executing "host" at <getv "/h">"#),
        "{e}"
    );
}

/// Regression: gotmpl 0.6.1 let `{{- /* … */}}` trim the text after the comment too
/// (vendor/gotmpl/PATCHED.md); Go trims only before it.
#[test]
fn a_comment_with_an_opening_trim_marker_keeps_the_text_after_it() {
    let cases = [
        ("a\n{{- /* c */}}\nb", "a\nb"),
        ("a\n{{- /* c\n d */}}\nb", "a\nb"),
        ("a {{/* c */}}\nb", "a \nb"),
        ("a {{- /* c */ -}}\nb", "ab"),
        ("a {{/* c */ -}}\n b", "a b"),
    ];
    for (template, want) in cases {
        assert_eq!(ok(template, &[]), want, "{template:?}");
    }
}

/// confd's `template_funcs_test.go` (an older confd, whose `parseBool` returned
/// false for anything else): true and false as it expects; any other value is an
/// error, as in confd's current `strconv.ParseBool`.
#[test]
fn confd_template_funcs_test_parse_bool() {
    assert_eq!(ok(r#"{{parseBool "true"}}"#, &[]), "true");
    assert_eq!(ok(r#"{{parseBool "false"}}"#, &[]), "false");
    let e = err(r#"{{parseBool "SOME UNKNOWN VALUE"}}"#, &[]);
    assert!(
        e.contains(r#"strconv.ParseBool: parsing "SOME UNKNOWN VALUE": invalid syntax"#),
        "{e}"
    );
}

/// A fan-out's match reaches a Go template as its data: `.item.key`, `.item.name`,
/// `.item.value` (nil for a directory), while `.` stays nil without one, as in confd.
#[test]
fn a_fan_out_match_is_the_data_of_a_go_template() {
    let files = vec![(
        "route.tmpl".to_string(),
        "{{ .item.name }} {{ .item.key }} {{ .item.value }} {{ getv \"/x\" }}".to_string(),
    )];
    let set = GoTemplates::parse(&files);
    let item = crate::template::Item {
        key: "/routes/api".into(),
        name: "api".into(),
        value: Some("v".into()),
    };
    let out = set
        .render("route.tmpl", &store(&[("/x", "1")]), Some(&item))
        .expect("exists")
        .expect("renders");
    assert_eq!(out, "api /routes/api v 1");
    assert_eq!(render_go("{{ . }}", &[]), Ok("<no value>".into()));
}
