//! Every case of confd's `resource/template/template_test.go`, rendered with the Go
//! engine: the template, the keys confd's test puts in its store, and the output
//! confd's test expects, byte for byte (where confd accepts one of several outputs,
//! for lookups whose answer depends on the host, any of them).

use super::render_go;

/// (description, template, keys, accepted outputs)
type Case = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static [&'static str],
);

const CASES: &[Case] = &[
    (
        r#"base, get test"#,
        r#"
{{with get "/test/key"}}
key: {{base .Key}}
val: {{.Value}}
{{end}}
"#,
        &[(r#"/test/key"#, r#"abc"#)],
        &[r#"

key: key
val: abc

"#],
    ),
    (
        r#"gets test"#,
        r#"
{{range gets "/test/*"}}
key: {{.Key}}
val: {{.Value}}
{{end}}
"#,
        &[
            (r#"/test/user"#, r#"mary"#),
            (r#"/test/pass"#, r#"abc"#),
            (r#"/nada/url"#, r#"url"#),
        ],
        &[r#"

key: /test/pass
val: abc

key: /test/user
val: mary

"#],
    ),
    (
        r#"getv test"#,
        r#"
url = {{getv "/test/url"}}
user = {{getv "/test/user"}}
"#,
        &[
            (r#"/test/url"#, r#"http://www.abc.com"#),
            (r#"/test/user"#, r#"bob"#),
        ],
        &[r#"
url = http://www.abc.com
user = bob
"#],
    ),
    (
        r#"getvs test"#,
        r#"
{{range getvs "/test/*"}}
val: {{.}}
{{end}}
"#,
        &[
            (r#"/test/user"#, r#"mary"#),
            (r#"/test/pass"#, r#"abc"#),
            (r#"/nada/url"#, r#"url"#),
        ],
        &[r#"

val: abc

val: mary

"#],
    ),
    (
        r#"split test"#,
        r#"
{{$data := split (getv "/test/data") ":"}}
f: {{index $data 0}}
br: {{index $data 1}}
bz: {{index $data 2}}
"#,
        &[(r#"/test/data"#, r#"foo:bar:baz"#)],
        &[r#"

f: foo
br: bar
bz: baz
"#],
    ),
    (
        r#"toUpper test"#,
        r#"
{{$data := toUpper (getv "/test/data") }}
key: {{$data}}
"#,
        &[(r#"/test/data"#, r#"Value"#)],
        &[r#"

key: VALUE
"#],
    ),
    (
        r#"toLower test"#,
        r#"
{{$data := toLower (getv "/test/data") }}
key: {{$data}}
"#,
        &[(r#"/test/data"#, r#"Value"#)],
        &[r#"

key: value
"#],
    ),
    (
        r#"json test"#,
        r#"
{{range getvs "/test/data/*"}}
{{$data := json .}}
id: {{$data.Id}}
ip: {{$data.IP}}
{{end}}
"#,
        &[
            (r#"/test/data/1"#, r#"{"Id":"host1", "IP":"192.168.10.11"}"#),
            (r#"/test/data/2"#, r#"{"Id":"host2", "IP":"192.168.10.12"}"#),
        ],
        &[r#"


id: host1
ip: 192.168.10.11


id: host2
ip: 192.168.10.12

"#],
    ),
    (
        r#"jsonArray test"#,
        r#"
{{range jsonArray (getv "/test/data/")}}
num: {{.}}
{{end}}
"#,
        &[(r#"/test/data/"#, r#"["1", "2", "3"]"#)],
        &[r#"

num: 1

num: 2

num: 3

"#],
    ),
    (
        r#"ls test"#,
        r#"
{{range ls "/test/data"}}
value: {{.}}
{{end}}
"#,
        &[
            (r#"/test/data/abc"#, r#"123"#),
            (r#"/test/data/def"#, r#"456"#),
            (r#"/test/data/ghi"#, r#"789"#),
        ],
        &[r#"

value: abc

value: def

value: ghi

"#],
    ),
    (
        r#"lsdir test"#,
        r#"
{{range lsdir "/test/data"}}
value: {{.}}
{{end}}
"#,
        &[
            (r#"/test/data/abc"#, r#"123"#),
            (r#"/test/data/def/ghi"#, r#"456"#),
            (r#"/test/data/jkl/mno"#, r#"789"#),
        ],
        &[r#"

value: def

value: jkl

"#],
    ),
    (
        r#"dir test"#,
        r#"
{{with dir "/test/data/abc"}}
dir: {{.}}
{{end}}
"#,
        &[
            (r#"/test/data"#, r#"parent"#),
            (r#"/test/data/def"#, r#"child"#),
        ],
        &[r#"

dir: /test/data

"#],
    ),
    (
        r#"ipv4 lookup test"#,
        r#"
{{range lookupIPV4 "localhost"}}
ip: {{.}}
{{end}}
"#,
        &[
            (r#"/test/data"#, r#"parent"#),
            (r#"/test/data/def"#, r#"child"#),
        ],
        &[r#"

ip: 127.0.0.1

"#],
    ),
    (
        r#"ipv6 lookup test"#,
        r#"
{{range lookupIPV6 "localhost"}}
ip: {{.}}
{{end}}
"#,
        &[
            (r#"/test/data"#, r#"parent"#),
            (r#"/test/data/def"#, r#"child"#),
        ],
        &[
            r#"
ip: ::1

"#,
            r#"

"#,
        ],
    ),
    (
        r#"ip lookup test"#,
        r#"
{{range lookupIP "localhost"}}
ip: {{.}}
{{end}}
"#,
        &[
            (r#"/test/data"#, r#"parent"#),
            (r#"/test/data/def"#, r#"child"#),
        ],
        &[
            r#"

ip: 127.0.0.1

"#,
            r#"

ip: 127.0.0.1

ip: ::1

"#,
            r#"

ip: ::1

"#,
        ],
    ),
    (
        r#"base64Encode test"#,
        r#"
{{$data := base64Encode (getv "/test/data") }}
key: {{$data}}
"#,
        &[(r#"/test/data"#, r#"Value"#)],
        &[r#"

key: VmFsdWU=
"#],
    ),
    (
        r#"base64Decode test"#,
        r#"
{{$data := base64Decode (getv "/test/data") }}
key: {{$data}}
"#,
        &[(r#"/test/data"#, r#"VmFsdWU="#)],
        &[r#"

key: Value
"#],
    ),
    (
        r#"seq test"#,
        r#"
{{ seq 1 3 }}
"#,
        &[],
        &[r#"
[1 2 3]
"#],
    ),
    (
        r#"atoi test"#,
        r#"
{{ seq 1 (atoi (getv "/test/count")) }}
"#,
        &[(r#"/test/count"#, r#"3"#)],
        &[r#"
[1 2 3]
"#],
    ),
];

#[test]
fn every_case_of_confd_template_test_renders_as_confd_expects() {
    for (desc, template, keys, accepted) in CASES {
        let out = render_go(template, keys).unwrap_or_else(|e| panic!("{desc}: {e}"));
        assert!(
            accepted.contains(&out.as_str()),
            "{desc}: got {out:?}, confd expects one of {accepted:?}"
        );
    }
}
