//! The template set of a confdir, in either engine: Tera 2 (autoescape off, every
//! template under `<confdir>/templates` loaded under its relative path so `include`,
//! `extends` and components work across the directory, confd's functions with
//! keyword arguments: [`functions`], [`filters`]) or Go `text/template` as confd
//! renders it (`go`). Which engine a resource uses is its own choice ([`Engine`]);
//! only the engines some resource uses are loaded.
//!
//! A template with an error does not take the others down: it is remembered with its
//! error, and rendering it reports that error. Reading the directory is `load`'s
//! job (through [`crate::fswalk`]), the error types are in `error`; which store a
//! render reads is decided by the caller, and reading keys is [`Store`]'s job.

mod dns;
mod engine;
mod error;
pub mod filters;
pub mod functions;
mod go;
mod go_helpers;
pub(crate) mod gofmt;
mod hints;
mod load;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};

use tera::{Context, Tera};

pub use self::engine::{Engine, UnknownEngine};
pub use self::error::{BrokenTemplate, GoCall, GoRenderError, LoadError, Position, RenderError};
use crate::store::Store;

/// The (target, port) pairs of the SRV record `record` (a full name such as
/// `_etcd._tcp.example.com.`), sorted as confd sorts them: for the etcd endpoints
/// of confd's `srv_domain`.
pub fn lookup_srv_record(
    record: &str,
    timeout: std::time::Duration,
) -> Result<Vec<(String, u16)>, dns::DnsError> {
    Ok(dns::lookup_srv("", "", record, timeout)?
        .into_iter()
        .map(|r| (r.target, r.port))
        .collect())
}

/// Every template of a confdir, parsed once by each engine in use.
pub struct Templates {
    /// Loaded when some resource renders with Tera.
    tera: Option<TeraSet>,
    /// Loaded when some resource renders with Go's text/template.
    go: Option<go::GoTemplates>,
    /// The engine of [`Templates::render`].
    default: Engine,
    dir: PathBuf,
    /// Templates written in resource files (a fan-out's file name), each parsed on its
    /// first render and kept under its own text: a fan-out of a thousand matches would
    /// otherwise parse its name a thousand times per pass (half of its render time).
    inline: RwLock<Tera>,
}

struct TeraSet {
    tera: Tera,
    /// Templates that failed to load, with the error to report when rendered.
    broken: load::Broken,
}

impl Templates {
    /// Loads every file under `dir` (recursively, following symlinks) for the Tera
    /// engine. A template with a syntax error does not stop the others from loading:
    /// rendering it reports the error.
    pub fn load(dir: &Path) -> Result<Templates, LoadError> {
        Templates::load_for(dir, Engine::Tera, &BTreeSet::from([Engine::Tera]))
    }

    /// Loads every file under `dir` for each engine of `engines`; `default` is the
    /// engine of [`Templates::render`].
    pub fn load_for(
        dir: &Path,
        default: Engine,
        engines: &BTreeSet<Engine>,
    ) -> Result<Templates, LoadError> {
        let (files, unreadable) = load::sources(dir).map_err(|source| LoadError {
            dir: dir.to_path_buf(),
            source,
        })?;
        let go = engines.contains(&Engine::Go).then(|| {
            let mut go = go::GoTemplates::parse(&files);
            go.broken.extend(unreadable.clone());
            go
        });
        let tera = engines.contains(&Engine::Tera).then(|| {
            let mut tera = engine();
            let mut broken = unreadable;
            broken.extend(load::add_all(&mut tera, files));
            TeraSet { tera, broken }
        });
        Ok(Templates {
            tera,
            go,
            default,
            dir: dir.to_path_buf(),
            inline: RwLock::new(engine()),
        })
    }

    /// The engines this set was loaded for.
    pub fn engines(&self) -> impl Iterator<Item = Engine> {
        let tera = self.tera.is_some().then_some(Engine::Tera);
        let go = self.go.is_some().then_some(Engine::Go);
        tera.into_iter().chain(go)
    }

    /// The engine of [`Templates::render`].
    pub fn default_engine(&self) -> Engine {
        self.default
    }

    /// Whether a template of that name exists (loaded or broken).
    pub fn contains(&self, name: &str) -> bool {
        self.tera
            .as_ref()
            .is_some_and(|t| t.tera.contains_template(name) || t.broken.contains_key(name))
            || self
                .go
                .as_ref()
                .is_some_and(|g| g.contains(name) || g.broken.contains_key(name))
    }

    /// The templates that failed to load, by name, with the engine that refused them
    /// and its error: for a warning at start-up, before any resource renders them.
    pub fn errors(&self) -> impl Iterator<Item = (&str, Engine, &BrokenTemplate)> {
        let tera = self.tera.iter().flat_map(|t| {
            t.broken
                .iter()
                .map(|(k, v)| (k.as_str(), Engine::Tera, &**v))
        });
        let go = self
            .go
            .iter()
            .flat_map(|g| g.broken.iter().map(|(k, v)| (k.as_str(), Engine::Go, &**v)));
        tera.chain(go)
    }

    /// Renders template `name` with the set's default engine (see
    /// [`Templates::render_as`]).
    pub fn render(&self, name: &str, store: &Store) -> Result<String, RenderError> {
        self.render_item_as(self.default, name, store, None)
    }

    /// Renders template `name` with `engine`, `store` behind the store functions. A
    /// Tera template also sees the variable `revision` (the store's revision); a Go
    /// template's data (`.`) is nil, as in confd.
    pub fn render_as(
        &self,
        engine: Engine,
        name: &str,
        store: &Store,
    ) -> Result<String, RenderError> {
        self.render_item_as(engine, name, store, None)
    }

    /// [`Templates::render_as`] for one match of a fan-out: the template also sees
    /// `item` (Tera's variable `item`; a Go template's data is `{"item": ...}`, so
    /// `{{ .item.name }}`).
    pub fn render_item_as(
        &self,
        engine: Engine,
        name: &str,
        store: &Store,
        item: Option<&Item>,
    ) -> Result<String, RenderError> {
        let not_loaded = || RenderError::EngineNotLoaded {
            name: name.to_string(),
            engine,
        };
        let broken = match engine {
            Engine::Tera => &self.tera.as_ref().ok_or_else(not_loaded)?.broken,
            Engine::Go => &self.go.as_ref().ok_or_else(not_loaded)?.broken,
        };
        if let Some(err) = broken.get(name) {
            return Err(RenderError::NotLoaded {
                name: name.to_string(),
                source: err.clone(),
            });
        }
        let not_found = || RenderError::NotFound {
            name: name.to_string(),
            dir: self.dir.clone(),
        };
        match engine {
            Engine::Tera => {
                let tera = &self.tera.as_ref().ok_or_else(not_loaded)?.tera;
                if !tera.contains_template(name) {
                    return Err(not_found());
                }
                render_tera(tera, name, store, item)
            }
            Engine::Go => {
                let go = self.go.as_ref().ok_or_else(not_loaded)?;
                go.render(name, store, item)
                    .ok_or_else(not_found)?
                    .map_err(|source| RenderError::GoFailed {
                        name: name.to_string(),
                        source: Box::new(source),
                    })
            }
        }
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

fn render_tera(
    tera: &Tera,
    name: &str,
    store: &Store,
    item: Option<&Item>,
) -> Result<String, RenderError> {
    let context = context(store, item);
    functions::with_store(store, || tera.render(name, &context)).map_err(|source| {
        RenderError::Failed {
            name: name.to_string(),
            source: Box::new(source),
        }
    })
}

/// A Tera with confd's functions and filters and no escaping. Functions must be
/// registered before any template is added: Tera 2 rejects unknown ones at load.
fn engine() -> Tera {
    let mut tera = Tera::new();
    // Config files are not HTML: `&` in a URL must stay `&`.
    tera.autoescape_on(Vec::<&str>::new());
    functions::register(&mut tera);
    filters::register(&mut tera);
    go_helpers::register(&mut tera);
    tera
}

#[cfg(test)]
mod tests;
