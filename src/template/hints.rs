//! Hints for a Tera template that does not parse, from what its text shows: confd's
//! Go syntax (`{{getv "/x"}}`, `{{range …}}`, `{{.Key}}`) means the resource wants
//! the Go engine, and `getv("/x")` means a function that takes keywords was given a
//! positional argument. Tera's own message stays first; the hint follows it.

/// Keyword arguments of the functions conflux adds to Tera, for the positional hint.
const KEYWORDS: &[(&str, &str)] = &[
    ("getv", r#"getv(key="/x", default="…")"#),
    ("get", r#"get(key="/x")"#),
    ("gets", r#"gets(pattern="/x/*")"#),
    ("getvs", r#"getvs(pattern="/x/*")"#),
    ("exists", r#"exists(key="/x")"#),
    ("ls", r#"ls(path="/x")"#),
    ("lsdir", r#"lsdir(path="/x")"#),
    ("getenv", r#"getenv(name="HOME", default="…")"#),
    ("fileExists", r#"fileExists(path="/etc/x")"#),
    ("lookupIP", r#"lookupIP(name="host")"#),
    ("lookupIPV4", r#"lookupIPV4(name="host")"#),
    ("lookupIPV6", r#"lookupIPV6(name="host")"#),
    (
        "lookupSRV",
        r#"lookupSRV(service="http", proto="tcp", name="example.com")"#,
    ),
    ("seq", "seq(start=1, end=5)"),
    ("datetime", r#"datetime(format="%Y-%m-%d")"#),
    ("add", "add(a=1, b=2)"),
    ("sub", "sub(a=1, b=2)"),
    ("mul", "mul(a=1, b=2)"),
    ("div", "div(a=1, b=2)"),
    ("mod", "mod(a=1, b=2)"),
    ("printf", r#"printf(format="%s:%d", args=[host, port])"#),
    ("warn", r#"warn(message="…")"#),
];

/// Go template words that cannot start a Tera expression.
const GO_WORDS: &[&str] = &[
    "range", "end", "if", "else", "with", "define", "template", "block",
];

/// The hint for a template `text` that Tera refused, if its text explains why.
pub(super) fn for_tera(text: &str) -> Option<String> {
    if looks_like_go(text) {
        return Some(
            "hint: this looks like a Go template (confd's syntax): set `engine = \"go\"` in the \
             resource (or --template-engine go), or see docs/functions.md for the Tera form"
                .to_string(),
        );
    }
    positional_call(text).map(|(name, form)| {
        format!("hint: `{name}` takes keyword arguments, not positional ones: {form}")
    })
}

/// Whether some `{{ … }}` of `text` opens with Go syntax: `.Field`, `$var`, a Go
/// keyword, or a confd function followed by a space and its argument.
fn looks_like_go(text: &str) -> bool {
    // Only `{{ … }}`: `{% if %}` is Tera's own.
    delimited(text, "{{", "}}").any(|inner| {
        let inner = inner.trim_start_matches('-').trim_start();
        if inner.starts_with('.') || inner.starts_with('$') || inner.starts_with("/*") {
            return true;
        }
        let word: String = inner
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let after = &inner[word.len()..];
        GO_WORDS.contains(&word.as_str())
            || (!word.is_empty()
                && after.starts_with(' ')
                && KEYWORDS.iter().any(|(name, _)| *name == word)
                && !after.trim_start().starts_with(['(', '|', '}']))
    })
}

/// The first call of one of our functions with a positional first argument, as
/// `name(` followed by a quote, a digit or a name and no `=`.
fn positional_call(text: &str) -> Option<(&'static str, &'static str)> {
    for inner in actions(text) {
        for (name, form) in KEYWORDS {
            let mut rest = inner;
            while let Some(at) = rest.find(&format!("{name}(")) {
                let before = rest[..at].chars().next_back();
                let args = &rest[at + name.len() + 1..];
                rest = args;
                if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
                    continue;
                }
                let first_arg = args.split([',', ')']).next().unwrap_or("");
                if !first_arg.trim().is_empty() && !first_arg.contains('=') {
                    return Some((name, form));
                }
            }
        }
    }
    None
}

/// The insides of every `{{ … }}` and `{% … %}` of `text`.
fn actions(text: &str) -> impl Iterator<Item = &str> {
    delimited(text, "{{", "}}").chain(delimited(text, "{%", "%}"))
}

fn delimited<'t>(text: &'t str, open: &'t str, close: &'t str) -> impl Iterator<Item = &'t str> {
    text.split(open)
        .skip(1)
        .filter_map(move |piece| piece.split_once(close).map(|(inner, _)| inner.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_syntax_points_to_the_go_engine() {
        for text in [
            r#"{{getv "/x"}}"#,
            "{{range gets \"/a/*\"}}x{{end}}",
            "{{- .Key }}",
            "{{$x := 1}}",
            r#"{{ getv "/x" "d" }}"#,
        ] {
            let hint = for_tera(text).unwrap_or_default();
            assert!(hint.contains("engine = \"go\""), "{text}: {hint}");
            assert!(hint.contains("docs/functions.md"), "{text}: {hint}");
        }
    }

    #[test]
    fn a_positional_argument_names_the_keyword() {
        let hint = for_tera(r#"host = {{ getv("/db/host") }}"#).unwrap_or_default();
        assert!(hint.contains(r#"getv(key="/x""#), "{hint}");
        let hint = for_tera("{% for i in seq(1, 3) %}{% endfor %}").unwrap_or_default();
        assert!(hint.contains("seq(start=1, end=5)"), "{hint}");
    }

    #[test]
    fn tera_syntax_gets_no_hint() {
        assert_eq!(
            for_tera(r#"{{ getv(key="/x") }} {{ x | upper }} {{ oops( }}"#),
            None
        );
        assert_eq!(
            for_tera("{% if a %}{{ getenv(name=\"HOME\") }}{% endif %}"),
            None
        );
    }
}
