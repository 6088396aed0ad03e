//! A confdir: `conf.d/**/*.toml` and `templates/`, loaded into a validated set of
//! [`Resource`]s and their [`Templates`]. Finds resource files (recursively, in name
//! order, symlinks followed, hidden files read too, as confd does); a broken file is
//! kept as an error and the others still load.
//!
//! Validating one resource file is [`crate::resource`]'s job; deciding what to do with
//! a set that has broken files (skip them at start, refuse the set on SIGHUP) is the
//! caller's.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{error, warn};

use crate::config::Config;
use crate::kv::keys;
use crate::resource::{self, Layout, OutputDest, Resource, ResourceError};
use crate::template::{BrokenTemplate, Engine, LoadError, Templates};

/// The resources of a confdir with their template set: what one pass applies.
pub struct Confdir {
    pub resources: Vec<Resource>,
    pub templates: Arc<Templates>,
    /// Resource files that could not be used.
    pub errors: Vec<ResourceError>,
}

/// A confdir that cannot be used at all: nothing is attempted (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum ConfdirError {
    #[error("{what} {} does not exist or is not a directory", .path.display())]
    Missing { what: &'static str, path: PathBuf },
    #[error("cannot read the resource directory {}: {source}", .dir.display())]
    Unreadable {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Templates(#[from] LoadError),
    /// Two resources writing one file would apply side by side and the file would
    /// flip between them.
    #[error("{} and {} both write {}: each file belongs to one resource", .first.display(), .second.display(), .dest.display())]
    SameDest {
        dest: PathBuf,
        first: PathBuf,
        second: PathBuf,
    },
}

impl Confdir {
    /// Loads `conf.d` and `templates` of the configured confdir.
    pub fn load(config: &Config) -> Result<Confdir, ConfdirError> {
        let layout = Layout {
            confdir: &config.confdir,
            prefix: &config.prefix,
            engine: config.template_engine,
        };
        require_dir(layout.confdir, "confdir")?;
        require_dir(&layout.conf_d(), "resource directory")?;
        require_dir(&layout.templates(), "templates directory")?;
        let (resources, errors) = load_resources(&layout)?;
        one_resource_per_dest(&resources)?;
        // Only the engines some resource uses are loaded: a confd confdir is not
        // parsed as Tera too (each file would fail, and loading costs time).
        let mut engines: BTreeSet<Engine> = resources.iter().map(|r| r.engine).collect();
        if engines.is_empty() {
            engines.insert(config.template_engine);
        }
        let templates = Templates::load_for(&layout.templates(), config.template_engine, &engines)?;
        Ok(Confdir {
            resources,
            templates: Arc::new(templates),
            errors,
        })
    }

    /// Logs the resource files and templates that could not be loaded, and an empty
    /// conf.d. A broken template that no resource renders is only a warning.
    pub fn log_problems(&self, conf_d: &Path) {
        for e in &self.errors {
            error!(file = %e.file.display(), cause = %e, "resource skipped");
        }
        for (name, engine, cause) in self.template_errors() {
            if self.renders(name) {
                error!(template = name, %engine, cause = %cause, "template did not load");
            } else {
                warn!(template = name, %engine, cause = %cause, "a template no resource renders did not load");
            }
        }
        if self.resources.is_empty() && self.errors.is_empty() {
            warn!(dir = %conf_d.display(), "no resources found");
        }
    }

    /// The broken templates that a resource renders (directly; a broken partial also
    /// breaks every template that includes it): what refuses a new set on SIGHUP. A
    /// broken template no resource renders (a README, a draft) is only warned about.
    pub fn broken_templates_in_use(&self) -> Vec<&str> {
        self.template_errors()
            .map(|(name, _, _)| name)
            .filter(|name| self.renders(name))
            .collect()
    }

    /// Whether some resource renders the template `name` directly.
    fn renders(&self, name: &str) -> bool {
        self.resources.iter().any(|r| uses(r, name))
    }

    /// The templates that did not load in an engine that should read them: one a
    /// resource renders with that engine, or one no resource renders (a partial)
    /// that the engine of no resource can read. A Go template that Tera cannot
    /// parse is no problem when only Go resources use it.
    pub fn template_errors(&self) -> impl Iterator<Item = (&str, Engine, &BrokenTemplate)> {
        self.templates.errors().filter(|(name, engine, _)| {
            let users: Vec<Engine> = self
                .resources
                .iter()
                .filter(|r| uses(r, name))
                .map(|r| r.engine)
                .collect();
            if users.is_empty() {
                // A partial: a problem only if every loaded engine refuses it.
                self.templates
                    .errors()
                    .filter(|(n, _, _)| n == name)
                    .count()
                    == self.templates.engines().count()
                    && *engine == self.templates.default_engine()
            } else {
                users.contains(engine)
            }
        })
    }

    /// Every selector of every resource, merged into the fewest ranges.
    pub fn selectors(&self) -> Vec<String> {
        keys::merge(
            self.resources
                .iter()
                .flat_map(|r| r.selectors.iter().cloned()),
        )
    }
}

/// Refuses two resources with the same dest (compared with `.` and `..` resolved).
fn one_resource_per_dest(resources: &[Resource]) -> Result<(), ConfdirError> {
    let mut owners: std::collections::HashMap<PathBuf, &Path> = std::collections::HashMap::new();
    for r in resources {
        // A unit's own outputs are checked against each other when it loads; here,
        // each file (or fan-out directory's file names) belongs to one resource.
        let mut mine = std::collections::HashSet::new();
        for dest in r.outputs.iter().map(|o| lexically_clean(&written(&o.dest))) {
            if !mine.insert(dest.clone()) {
                continue;
            }
            if let Some(first) = owners.insert(dest.clone(), &r.file) {
                return Err(ConfdirError::SameDest {
                    dest,
                    first: first.to_path_buf(),
                    second: r.file.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Whether `resource` renders the template `name` (any of its outputs).
fn uses(resource: &Resource, name: &str) -> bool {
    resource.src == name || resource.outputs.iter().any(|o| o.src == name)
}

/// What an output writes, for comparing outputs: its file, or its fan-out directory
/// with the name template (two fan-outs into one directory are fine unless they name
/// their files alike; what they render is checked when rendered).
fn written(dest: &OutputDest) -> PathBuf {
    match dest {
        OutputDest::File(path) => path.clone(),
        OutputDest::FanOut { dir, name, .. } => dir.join(name),
    }
}

fn lexically_clean(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn require_dir(path: &Path, what: &'static str) -> Result<(), ConfdirError> {
    if path.is_dir() {
        Ok(())
    } else {
        Err(ConfdirError::Missing {
            what,
            path: path.to_path_buf(),
        })
    }
}

/// Every resource under `<confdir>/conf.d`, in lexical order of their paths, and the
/// files that could not be used. Only a missing or unreadable `conf.d` is an `Err`.
pub fn load_resources(
    layout: &Layout,
) -> Result<(Vec<Resource>, Vec<ResourceError>), ConfdirError> {
    let conf_d = layout.conf_d();
    let mut resources = Vec::new();
    let mut errors = Vec::new();
    for file in resource_files(&conf_d)? {
        let name = file
            .strip_prefix(&conf_d)
            .unwrap_or(&file)
            .to_string_lossy()
            .into_owned();
        match resource::load(layout, name, &file) {
            Ok(r) => resources.push(r),
            Err(e) => errors.push(e),
        }
    }
    Ok((resources, errors))
}

/// Every `*.toml` under `dir`, recursively, symlinks followed, in walk order.
/// Hidden files are read too, as confd does.
fn resource_files(dir: &Path) -> Result<Vec<PathBuf>, ConfdirError> {
    let files = crate::fswalk::files(dir, false).map_err(|source| ConfdirError::Unreadable {
        dir: dir.to_path_buf(),
        source,
    })?;
    Ok(files
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

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

        fn load(&self, prefix: &str) -> (Vec<Resource>, Vec<ResourceError>) {
            load_resources(&Layout {
                confdir: self.tmp.path(),
                prefix,
                engine: crate::template::Engine::Tera,
            })
            .expect("conf.d readable")
        }
    }

    #[test]
    fn a_broken_file_does_not_stop_the_others_and_order_is_lexical() {
        let d = Dir::new();
        let ok = "[template]\nsrc = \"app.tmpl\"\ndest = \"/tmp/x\"\n";
        d.resource("b.toml", ok);
        d.resource("a/z.toml", ok);
        d.resource("c.toml", "[template]\nsrc = 1\n");
        d.resource("notes.txt", "ignored");
        let (loaded, errors) = d.load("/");
        let names: Vec<_> = loaded.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, vec!["a/z.toml", "b.toml"]);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].file.ends_with("c.toml"));
    }

    #[test]
    fn symlinked_directories_are_followed_once() {
        let d = Dir::new();
        let elsewhere = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            elsewhere.path().join("x.toml"),
            "[template]\nsrc = \"app.tmpl\"\ndest = \"/tmp/x\"\n",
        )
        .expect("w");
        std::os::unix::fs::symlink(elsewhere.path(), d.tmp.path().join("conf.d/linked"))
            .expect("link");
        std::os::unix::fs::symlink(
            d.tmp.path().join("conf.d"),
            d.tmp.path().join("conf.d/loop"),
        )
        .expect("loop");
        let (loaded, errors) = d.load("/");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            loaded.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            vec!["linked/x.toml"]
        );
    }

    #[test]
    fn missing_conf_d_is_an_error() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let err = load_resources(&Layout {
            confdir: tmp.path(),
            prefix: "/",
            engine: crate::template::Engine::Tera,
        })
        .expect_err("missing");
        assert!(err.to_string().contains("conf.d"), "{err}");
    }

    /// With both engines loaded, a template is a problem only for the engine that
    /// must read it: a Go template Tera cannot parse is fine when only Go resources
    /// use it, and a partial is reported when no loaded engine can read it.
    #[test]
    fn template_errors_concern_the_engines_that_read_them() {
        let d = Dir::new();
        let t = d.tmp.path().join("templates");
        std::fs::write(t.join("go.tmpl"), "{{getv \"/a\"}}").expect("w");
        std::fs::write(t.join("tera.tmpl"), "{{ getv(key=\"/a\") }}").expect("w");
        std::fs::write(t.join("lib.tmpl"), "{{define \"x\"}}x{{end}}").expect("w");
        std::fs::write(t.join("broken.tmpl"), "{{ oops( }}").expect("w");
        d.resource(
            "go.toml",
            "[template]\nsrc = \"go.tmpl\"\ndest = \"/tmp/x\"\nengine = \"go\"\n",
        );
        d.resource(
            "tera.toml",
            "[template]\nsrc = \"tera.tmpl\"\ndest = \"/tmp/y\"\n",
        );
        let (resources, errors) = d.load("/");
        assert!(errors.is_empty(), "{errors:?}");
        let engines = BTreeSet::from([Engine::Tera, Engine::Go]);
        let templates = Templates::load_for(&t, Engine::Tera, &engines).expect("loads");
        let set = Confdir {
            resources,
            templates: Arc::new(templates),
            errors,
        };
        let reported: Vec<_> = set.template_errors().map(|(n, e, _)| (n, e)).collect();
        assert_eq!(reported, vec![("broken.tmpl", Engine::Tera)]);
        assert_eq!(
            set.broken_templates_in_use(),
            Vec::<&str>::new(),
            "no resource renders it"
        );
    }
}
