//! Go's `fmt.Sprintf` for both engines, through gotmpl's `printf` (a port of Go's
//! `fmt` verbs, flags, widths and error markers such as `%!d(string=x)`): the Go
//! engine's `printf` is gotmpl's own, and the Tera engine's `printf` and the Go
//! engine's `%q` error texts call this.
//!
//! gotmpl does not export its `printf` as a function, so this runs a one-action
//! template, `{{printf .f .a0 .a1 …}}`, parsed once per argument count. Writing a
//! second `fmt` by hand was the rejected alternative: two ports of Go's verbs would
//! drift apart, and the Go engine's output is the one that must match confd's.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use gotmpl::{Template, Value};

/// More arguments than any format string needs; past this, the rest are dropped.
pub const MAX_ARGS: usize = 32;

/// Go's `fmt.Sprintf(format, args...)`.
pub fn sprintf(format: &str, args: &[Value]) -> Result<String, gotmpl::TemplateError> {
    let args = &args[..args.len().min(MAX_ARGS)];
    let template = template_for(args.len())?;
    let mut data = BTreeMap::new();
    data.insert(Arc::<str>::from("f"), Value::String(format.into()));
    for (i, value) in args.iter().enumerate() {
        data.insert(Arc::<str>::from(format!("a{i}")), value.clone());
    }
    template.execute_to_string(&Value::Map(Arc::new(data)))
}

/// The parsed `{{printf .f .a0 … .a(n-1)}}`, cached.
fn template_for(n: usize) -> Result<Arc<Template>, gotmpl::TemplateError> {
    static CACHE: OnceLock<Mutex<BTreeMap<usize, Arc<Template>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(t) = cache.lock().ok().and_then(|c| c.get(&n).cloned()) {
        return Ok(t);
    }
    let source = format!(
        "{{{{printf .f{}}}}}",
        (0..n).map(|i| format!(" .a{i}")).collect::<String>()
    );
    let template = Arc::new(Template::new("printf").parse(&source)?);
    if let Ok(mut c) = cache.lock() {
        c.insert(n, Arc::clone(&template));
    }
    Ok(template)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::String(v.into())
    }

    #[test]
    fn go_verbs() {
        let cases: &[(&str, Vec<Value>, &str)] = &[
            ("%s=%d", vec![s("a"), Value::Int(5)], "a=5"),
            ("%05d|%-6s|", vec![Value::Int(42), s("ab")], "00042|ab    |"),
            ("%.2f", vec![Value::Float(0.5)], "0.50"),
            ("%q", vec![s("a\"b\n")], "\"a\\\"b\\n\""),
            ("%x %X", vec![Value::Int(255), s("hi")], "ff 6869"),
            ("%v %v", vec![Value::Bool(true), Value::Nil], "true <nil>"),
            ("%d", vec![s("x")], "%!d(string=x)"),
            ("%s %s", vec![s("one")], "one %!s(MISSING)"),
            ("100%%", vec![], "100%"),
        ];
        for (format, args, want) in cases {
            assert_eq!(sprintf(format, args).unwrap(), *want, "{format}");
        }
    }
}
