//! The render step of a unit: every output rendered from one store into the files the
//! unit should hold, fan-outs expanded (one file per match, its name rendered and
//! checked so that it stays in the output's directory), and two renders of one file
//! refused.
//!
//! Comparing the plan with the disk and writing it are the unit's other steps.

use std::collections::BTreeMap;
use std::path::PathBuf;

use tracing::warn;

use crate::command::Command;
use crate::outcome::ApplyError;
use crate::resource::{Output, OutputDest, Resource, check_name};
use crate::store::Store;
use crate::template::{Item, Templates};

/// One file the unit should hold after the pass.
#[derive(Debug)]
pub(super) struct Planned {
    /// As written (through any symlink).
    pub(super) dest: PathBuf,
    pub(super) content: String,
    pub(super) mode: Option<u32>,
    pub(super) uid: Option<u32>,
    pub(super) gid: Option<u32>,
    pub(super) check: Option<Command>,
    /// Written by a fan-out: conflux owns it and removes it when its match goes.
    pub(super) fanned: bool,
}

/// Renders every output of `resource` from `store`.
pub(super) fn render(
    templates: &Templates,
    resource: &Resource,
    store: &Store,
) -> Result<Vec<Planned>, ApplyError> {
    let mut files = Vec::new();
    // Which match (or output) rendered each dest, to name both when two collide.
    let mut by_dest: BTreeMap<PathBuf, String> = BTreeMap::new();
    for output in &resource.outputs {
        for (planned, origin) in render_output(templates, resource, output, store)? {
            if let Some(first) = by_dest.insert(planned.dest.clone(), origin.clone()) {
                return Err(ApplyError::SameDest {
                    resource: resource.name.clone(),
                    dest: planned.dest,
                    first,
                    second: origin,
                });
            }
            files.push(planned);
        }
    }
    Ok(files)
}

/// One output's files, each with what rendered it (for errors).
fn render_output(
    templates: &Templates,
    resource: &Resource,
    output: &Output,
    store: &Store,
) -> Result<Vec<(Planned, String)>, ApplyError> {
    let planned = |dest: PathBuf, content: String, fanned: bool| Planned {
        dest,
        content,
        mode: output.mode,
        uid: output.uid,
        gid: output.gid,
        check: output.check.clone(),
        fanned,
    };
    let failed = |dest: PathBuf| {
        move |source| ApplyError::Render {
            resource: resource.name.clone(),
            dest,
            source,
        }
    };
    match &output.dest {
        OutputDest::File(dest) => {
            let content = templates
                .render_as(resource.engine, &output.src, store)
                .map_err(failed(dest.clone()))?;
            Ok(vec![(
                planned(dest.clone(), content, false),
                format!("the output {}", dest.display()),
            )])
        }
        OutputDest::FanOut {
            for_each,
            pattern,
            dir,
            name,
        } => {
            let depth = for_each.matches('/').count();
            let mut files = Vec::new();
            for (key, value) in store.matches(pattern, depth) {
                let item = Item {
                    name: key.rsplit('/').next().unwrap_or_default().to_string(),
                    key,
                    value: value.map(str::to_string),
                };
                let shell = output.check.as_ref().is_some_and(|c| c.uses_paths());
                let Some(file) = file_name(templates, resource, name, store, &item, dir, shell)?
                else {
                    continue;
                };
                let dest = dir.join(&file);
                let content = templates
                    .render_item_as(resource.engine, &output.src, store, Some(&item))
                    .map_err(failed(dest.clone()))?;
                files.push((planned(dest, content, true), format!("key {}", item.key)));
            }
            Ok(files)
        }
    }
}

/// The file name `item` renders to, or `None` (with a warning naming the key) when it
/// is not a plain file name in the output's directory, or (`shell`: a check command
/// substitutes the path) when the shell would read it as syntax.
fn file_name(
    templates: &Templates,
    resource: &Resource,
    name: &str,
    store: &Store,
    item: &Item,
    dir: &std::path::Path,
    shell: bool,
) -> Result<Option<String>, ApplyError> {
    let file = templates
        .render_text("the dest file name", name, store, Some(item))
        .map_err(|source| ApplyError::Render {
            resource: resource.name.clone(),
            dest: dir.join(name),
            source,
        })?;
    match check_name(&file) {
        Ok(()) if shell => match crate::command::check_path(&dir.join(&file)) {
            Ok(()) => Ok(Some(file)),
            Err(why) => {
                warn!(resource = %resource.name, key = %item.key, name = ?file, dir = %dir.display(), cause = %why, "fan-out match skipped: its check command would run the name as shell syntax");
                Ok(None)
            }
        },
        Ok(()) => Ok(Some(file)),
        Err(why) => {
            warn!(resource = %resource.name, key = %item.key, name = ?file, dir = %dir.display(), cause = %why, "fan-out match skipped: not a plain file name");
            Ok(None)
        }
    }
}
