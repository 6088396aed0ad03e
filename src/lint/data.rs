//! Lint with data: every output of every resource rendered in memory from one
//! snapshot (errors with the template's line and column, a missing key among them),
//! the keys each render read that its resource's `keys` do not cover, and with
//! `--check` each check command run on the renders in a temporary directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::finding::{self, Finding};
use crate::confdir::Confdir;
use crate::config::Config;
use crate::kv::{Snapshot, keys};
use crate::outcome::ApplyError;
use crate::pipeline::{Rendered, render_outputs};
use crate::resource::Resource;
use crate::store::Store;
use crate::template::RenderError;
use crate::template::functions::{Lookup, recording};

pub(super) fn render_all(
    config: &Config,
    confdir: &Confdir,
    snapshot: &Arc<Snapshot>,
    check: bool,
    out: &mut Vec<Finding>,
) {
    for resource in &confdir.resources {
        let store = Store::cut(snapshot, &resource.prefix, &resource.selectors);
        let (rendered, lookups) =
            recording(|| render_outputs(&confdir.templates, resource, &store));
        uncovered(resource, &lookups, out);
        match rendered {
            Ok(files) if check => run_checks(resource, &files, out),
            Ok(_) => {}
            Err(e) => out.extend(render_finding(config, resource, &e)),
        }
    }
}

/// A render that failed, at the template's line and column when the error says;
/// `None` for a template that did not load (reported already, where it is).
fn render_finding(config: &Config, resource: &Resource, e: &ApplyError) -> Option<Finding> {
    if let ApplyError::Render {
        source: RenderError::NotLoaded { .. },
        ..
    } = e
    {
        return None;
    }
    let text = e.to_string();
    // The engine's own words: after the last "error: " of the chain.
    let one = finding::one_line(&text);
    let cause = one.rsplit_once("error: ").map_or(one.as_str(), |(_, c)| c);
    let message = format!("{cause} (rendering {})", resource.name);
    let templates = config.templates_dir();
    let sources = std::iter::once(resource.src.as_str())
        .chain(resource.outputs.iter().map(|o| o.src.as_str()));
    for name in sources {
        if let Some((line, column)) = finding::position_in(&text, name) {
            return Some(
                Finding::error(&templates.join(name), message).at(Some(line), Some(column)),
            );
        }
    }
    Some(Finding::error(&resource.file, message))
}

/// Keys a render read that no selector of its resource selects: the watch would never
/// re-render on them. A pattern or a listing is covered when its directory is.
fn uncovered(resource: &Resource, lookups: &[Lookup], out: &mut Vec<Finding>) {
    let mut reported = std::collections::BTreeSet::new();
    for lookup in lookups {
        let relative = lookup.directory();
        let absolute = keys::join(&resource.prefix, &relative);
        if resource
            .selectors
            .iter()
            .any(|s| keys::selects(s, &absolute))
            || !reported.insert(absolute.clone())
        {
            continue;
        }
        out.push(Finding::warning(
            &resource.file,
            format!(
                "the template reads {} ({}), which `keys` ({}) do not cover: the watch would never re-render on it",
                absolute,
                lookup,
                resource.selectors.join(", ")
            ),
        ));
    }
}

/// `--check`: each output's own check on its render, then the resource's, in a
/// temporary directory; dest is never touched and no reload runs.
fn run_checks(resource: &Resource, files: &[Rendered], out: &mut Vec<Finding>) {
    let fail = |message: String| Finding::error(&resource.file, message);
    let Ok(dir) = tempfile::tempdir() else {
        out.push(fail("cannot make a temporary directory for --check".into()));
        return;
    };
    // Each render at its dest's path below the temporary directory, so that files of
    // one unit find each other as they will in place (nginx.conf's relative includes).
    let mut staged: Vec<(PathBuf, &Rendered)> = Vec::new();
    for file in files {
        let path = dir
            .path()
            .join(file.dest.strip_prefix("/").unwrap_or(&file.dest));
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, &file.content));
        if let Err(e) = written {
            out.push(fail(format!("cannot write {}: {e}", path.display())));
            return;
        }
        staged.push((path, file));
    }
    for (path, file) in &staged {
        if let Some(cmd) = &file.check {
            check_one(cmd, path, &file.dest, out, &resource.file);
        }
    }
    if let (Some(cmd), Some((path, file))) = (&resource.check, staged.first()) {
        check_one(cmd, path, &file.dest, out, &resource.file);
    }
}

fn check_one(
    cmd: &crate::command::Command,
    src: &Path,
    dest: &Path,
    out: &mut Vec<Finding>,
    file: &Path,
) {
    if let Err(e) = cmd.run(src, dest) {
        out.push(Finding::error(
            file,
            format!(
                "check_cmd `{}` fails on the render of {}: {e}",
                cmd.expand(src, dest),
                dest.display()
            ),
        ));
    }
}
