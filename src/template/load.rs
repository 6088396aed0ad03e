//! From `templates/` to a loaded [`Tera`]: every file read under its relative path
//! (through [`crate::fswalk`], with a directory reached by two links named both ways),
//! then added to Tera so that one bad template leaves the others loaded. What to do
//! with the templates that failed (report them when rendered) is [`super`]'s.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::Arc;

use tera::Tera;

use super::error::BrokenTemplate;
use crate::fswalk::{self, Entry, Options};

/// Templates that failed to load, by name.
pub(super) type Broken = BTreeMap<String, Arc<BrokenTemplate>>;

/// Every file below `dir` as (relative name with `/`, content), and the names that
/// could not be read. Only a directory that cannot be listed is an `Err`.
pub(super) fn sources(dir: &Path) -> io::Result<(Vec<(String, String)>, Broken)> {
    // Templates are named by their path, so a directory linked under two names must
    // load under both. Hidden files and backups (`name~`) are editors' and tools'
    // leftovers (a swap file, an atomic write's temporary), not templates: confd loads
    // them, and a half-written swap file then fails every reload.
    let options = Options {
        skip_hidden: true,
        every_name: true,
    };
    let mut files = Vec::new();
    let mut broken = Broken::new();
    for entry in fswalk::walk(dir, options)? {
        let (path, read) = match entry {
            Entry::File(path) => {
                let read = std::fs::read_to_string(&path);
                (path, read)
            }
            Entry::Unusable { path, error } => (path, Err(error)),
        };
        // A name that is not UTF-8 cannot be named in a resource: skipped.
        let Some(name) = name(dir, &path) else {
            continue;
        };
        if name.ends_with('~') {
            continue;
        }
        match read {
            Ok(content) => files.push((name, content)),
            Err(source) => {
                broken.insert(name, Arc::new(BrokenTemplate::Unreadable { path, source }));
            }
        }
    }
    Ok((files, broken))
}

/// `path` relative to `dir`, its components joined with `/`.
fn name(dir: &Path, path: &Path) -> Option<String> {
    let relative = path.strip_prefix(dir).ok()?;
    let parts: Option<Vec<&str>> = relative.iter().map(|c| c.to_str()).collect();
    Some(parts?.join("/"))
}

/// Adds `files` to `tera` and returns the ones that failed, with their errors.
///
/// All at once first: that is one validation pass, and the usual case. Tera rejects
/// the whole batch if one template is bad, and a good template can depend on
/// another (`extends`, `include`, components), so on failure they are added one at a
/// time, in rounds, until a round adds nothing: a parent loads in an early round and
/// its children in later ones, and what is left is broken.
pub(super) fn add_all(tera: &mut Tera, files: Vec<(String, String)>) -> Broken {
    if tera
        .add_raw_templates(files.iter().map(|(n, c)| (n, c)))
        .is_ok()
    {
        return Broken::new();
    }
    let mut pending = files;
    let mut errors = BTreeMap::new();
    loop {
        let before = pending.len();
        pending.retain(
            |(name, content)| match tera.add_raw_template(name, content) {
                Ok(()) => false,
                Err(e) => {
                    errors.insert(name.clone(), e);
                    true
                }
            },
        );
        if pending.is_empty() || pending.len() == before {
            break;
        }
    }
    errors
        .into_iter()
        .filter_map(|(name, source)| {
            let (_, text) = pending.iter().find(|(n, _)| *n == name)?;
            let hint = super::hints::for_tera(text);
            Some((name, Arc::new(BrokenTemplate::Invalid { source, hint })))
        })
        .collect()
}
