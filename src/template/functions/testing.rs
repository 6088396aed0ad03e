//! Test helpers for the function modules: an engine with every function and filter
//! registered, and renders of a template string against a small store.

use std::collections::BTreeMap;

use tera::{Tera, TeraResult};

use super::{register, with_store};
use crate::store::Store;

pub(super) fn store(pairs: &[(&str, &str)]) -> Store {
    let kvs: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Store::new(1, kvs)
}

pub(crate) fn engine() -> Tera {
    let mut tera = Tera::new();
    tera.autoescape_on(Vec::<&str>::new());
    register(&mut tera);
    super::super::filters::register(&mut tera);
    super::super::go_helpers::register(&mut tera);
    tera
}

pub(super) fn render_with(store: &Store, template: &str) -> TeraResult<String> {
    with_store(store, || {
        engine().render_str(template, &tera::Context::new(), false)
    })
}

pub(super) fn render(template: &str) -> String {
    let s = store(&[
        ("/a/b/c", "1"),
        ("/a/d", "22"),
        ("/e", "333"),
        ("/upstream/app1", "10.0.0.1:80"),
        ("/upstream/app2", "10.0.0.2:80"),
        ("/empty", ""),
    ]);
    render_with(&s, template).unwrap_or_else(|e| panic!("{template}: {e}"))
}

pub(super) fn render_err(template: &str) -> String {
    render_with(&store(&[("/a", "1")]), template)
        .expect_err(template)
        .to_string()
}
