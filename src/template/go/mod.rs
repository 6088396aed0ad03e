//! The Go engine: confd's templates as Go `text/template` renders them, through the
//! `gotmpl` crate (a port of Go's `text/template` checked against Go's own output:
//! pipelines, variables, `range`/`else`, `with`, `define`/`template`/`block`, trim
//! markers, Go's `fmt` verbs in `printf`), with confd's function map ([`funcs`],
//! [`system`]).
//!
//! Each file under `templates/` is parsed on its own, named by its relative path, as
//! confd parses each resource's `src` alone; then each file gets the `{{define}}`s of
//! the other files that it invokes ([`share`]), so a partial can live in its own
//! file. The data (`.`) is nil, as in confd.
//!
//! Reading the directory and the Tera engine are [`super`]'s; this module only parses
//! and renders.

mod args;
mod funcs;
mod gotime;
mod json;
mod locate;
mod memkv;
mod share;
mod system;

use std::collections::BTreeMap;
use std::sync::Arc;

use gotmpl::{Template, Value};

use super::error::{BrokenTemplate, GoCall, GoRenderError, Position};
use super::functions::with_store;
use super::load::Broken;
use crate::store::Store;

/// Every template of a confdir parsed as a Go template.
pub(super) struct GoTemplates {
    parsed: BTreeMap<String, Parsed>,
    pub(super) broken: Broken,
}

struct Parsed {
    template: Template,
    source: Arc<str>,
    /// The names whose trees come from this file's source: the file and its own
    /// `{{define}}`s (not those shared from other files).
    own: Vec<String>,
}

impl Parsed {
    /// The call `failed` made, if it is in this file: the template (the file or one
    /// of its definitions) that holds it, and where.
    fn find(&self, failed: &locate::FailedCall) -> Option<(&str, locate::Found)> {
        self.own.iter().find_map(|name| {
            let found = locate::find(self.template.lookup(name)?, failed)?;
            Some((name.as_str(), found))
        })
    }
}

impl GoTemplates {
    /// Parses `files` (name, content); a file that does not parse is kept in
    /// `broken` and the others still load.
    pub(super) fn parse(files: &[(String, String)]) -> GoTemplates {
        let func_map = funcs::func_map();
        let mut parsed = BTreeMap::new();
        let mut broken = Broken::new();
        for (name, content) in files {
            match Template::new(name).funcs(func_map.clone()).parse(content) {
                Ok(template) => {
                    let source = Arc::from(content.as_str());
                    let mut own: Vec<String> =
                        template.templates().iter().map(|s| s.to_string()).collect();
                    // The file's own tree first: that is where most calls are.
                    own.sort_by_key(|n| n != name);
                    parsed.insert(
                        name.clone(),
                        Parsed {
                            template,
                            source,
                            own,
                        },
                    );
                }
                Err(e) => {
                    broken.insert(name.clone(), Arc::new(BrokenTemplate::GoInvalid(e)));
                }
            }
        }
        share_definitions(&mut parsed);
        GoTemplates { parsed, broken }
    }

    pub(super) fn contains(&self, name: &str) -> bool {
        self.parsed.contains_key(name)
    }

    /// Renders `name` with `store` behind the store functions; the data (`.`) is nil,
    /// as in confd, or `{"item": ...}` for one match of a fan-out.
    pub(super) fn render(
        &self,
        name: &str,
        store: &Store,
        item: Option<&super::Item>,
    ) -> Option<Result<String, GoRenderError>> {
        let parsed = self.parsed.get(name)?;
        let data = item.map_or(Value::Nil, item_data);
        locate::clear();
        let result = with_store(store, || parsed.template.execute_to_string(&data));
        Some(result.map_err(|source| self.error(name, parsed, source)))
    }

    /// The error of a failed render, with where the failing call is when a function
    /// of ours failed.
    fn error(&self, name: &str, parsed: &Parsed, source: gotmpl::TemplateError) -> GoRenderError {
        let failed = locate::take_failed();
        let at = failed
            .and_then(|call| self.function_call(name, parsed, &call))
            .or_else(|| self.action_at(&source));
        GoRenderError { call: at, source }
    }

    /// Where the failing call of one of our functions is: in the rendered file, else
    /// in the file whose definition it is in.
    fn function_call(
        &self,
        name: &str,
        parsed: &Parsed,
        call: &locate::FailedCall,
    ) -> Option<GoCall> {
        std::iter::once((name, parsed))
            .chain(self.parsed.iter().map(|(n, p)| (n.as_str(), p)))
            .find_map(|(file, p)| {
                let (template, found) = p.find(call)?;
                let (line, column) = locate::line_col(&p.source, found.offset);
                Some(GoCall {
                    at: Position {
                        file: file.to_string(),
                        line,
                        column,
                    },
                    template: template.to_string(),
                    call: found.text,
                })
            })
    }

    /// Where the action that raised an error no function of ours raised is, from
    /// gotmpl's `At` (the template executing and the byte offset of the action).
    fn action_at(&self, error: &gotmpl::TemplateError) -> Option<GoCall> {
        let gotmpl::TemplateError::At {
            template, offset, ..
        } = error
        else {
            return None;
        };
        // The template is a file, or a definition: the file whose own it is.
        let (file, p) = self
            .parsed
            .get_key_value(template.as_str())
            .or_else(|| self.parsed.iter().find(|(_, p)| p.own.contains(template)))?;
        let tree = p.template.lookup(template)?;
        let (line, column) = locate::line_col(&p.source, *offset);
        Some(GoCall {
            at: Position {
                file: file.clone(),
                line,
                column,
            },
            template: template.clone(),
            call: locate::command_at(tree, *offset).unwrap_or_default(),
        })
    }
}

/// Gives each file the other files' `{{define}}`s it invokes ([`share`]).
fn share_definitions(parsed: &mut BTreeMap<String, Parsed>) {
    let library = share::library(parsed.iter().map(|(n, p)| (n.as_str(), &p.template)));
    if library.is_empty() {
        return;
    }
    for p in parsed.values_mut() {
        let template = std::mem::replace(&mut p.template, Template::new(""));
        p.template = share::complete(template, &library);
    }
}

#[cfg(test)]
mod tests;

/// A fan-out match as a Go template's data: `{{ .item.key }}`, `{{ .item.name }}`,
/// `{{ .item.value }}` (nil for a directory).
fn item_data(item: &super::Item) -> Value {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    let text = |s: &str| Value::String(Arc::from(s));
    let fields: BTreeMap<Arc<str>, Value> = [
        (Arc::from("key"), text(&item.key)),
        (Arc::from("name"), text(&item.name)),
        (
            Arc::from("value"),
            item.value.as_deref().map_or(Value::Nil, text),
        ),
    ]
    .into_iter()
    .collect();
    let data: BTreeMap<Arc<str>, Value> = [(Arc::from("item"), Value::Map(Arc::new(fields)))]
        .into_iter()
        .collect();
    Value::Map(Arc::new(data))
}
