//! The files of a resource that is a unit: `[[template.output]]` tables, each one file
//! (`dest`) or one file per key (`for_each` with `dest` a template of the match), and
//! the unit-wide keys (`min_keys`, `on_reload_failure`). Parsed into [`RawOutput`],
//! validated into [`Output`]; the rule for a file name a fan-out may write
//! ([`check_name`]) lives here so that the pipeline and the tests share one.
//!
//! Rendering, comparing and writing the files are the pipeline's job.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::{Invalid, Layout, Problem, attributes, non_empty, timeout};
use crate::command::Command;
use crate::kv::pattern::Pattern;

/// One file (or one file per match) of a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The template, relative to `<confdir>/templates`.
    pub src: String,
    pub dest: OutputDest,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Run on each new or changed file alone (`{{.src}}` = its stage file), before the
    /// unit's own check.
    pub check: Option<Command>,
}

/// Where an output's files go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputDest {
    /// One file; absolute.
    File(PathBuf),
    /// One file per match of `for_each` in `dir`, named by rendering `name`.
    FanOut {
        /// The glob as written (prefix-relative, with its leading `/`).
        for_each: String,
        pattern: Pattern,
        /// The directory written in `dest`; absolute, never a template.
        dir: PathBuf,
        /// The file-name part of `dest`: a template of the match (`{{ item.name }}.conf`).
        name: String,
    },
}

impl OutputDest {
    /// The file, or the fan-out's directory: what logs and errors name.
    pub fn path(&self) -> &Path {
        match self {
            OutputDest::File(path) => path,
            OutputDest::FanOut { dir, .. } => dir,
        }
    }
}

/// What the unit does when its reload fails after the swap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnReloadFailure {
    /// Keep the new files and retry the reload (confd's behaviour).
    #[default]
    Retry,
    /// Put the previous files back, reload again, and retry the new data with backoff.
    Rollback,
}

/// An `[[template.output]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOutput {
    src: Spanned<String>,
    dest: Spanned<String>,
    for_each: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
    uid: Option<u32>,
    gid: Option<u32>,
    owner: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    check_cmd: Option<String>,
    check_timeout: Option<Spanned<String>>,
}

/// Validates every output: templates exist, modes and owners resolve, fan-out dests
/// are a literal directory and a name template, and no two fixed dests are the same.
pub(super) fn validate_all(layout: &Layout, raw: &[RawOutput]) -> Result<Vec<Output>, Invalid> {
    let mut outputs: Vec<Output> = Vec::with_capacity(raw.len());
    for r in raw {
        let output = validate(layout, r)?;
        if let OutputDest::File(path) = &output.dest
            && outputs.iter().any(|o| o.dest == output.dest)
        {
            return Err((
                Some(r.dest.span()),
                Problem::DuplicateDest(path.to_path_buf()),
            ));
        }
        outputs.push(output);
    }
    Ok(outputs)
}

fn validate(layout: &Layout, r: &RawOutput) -> Result<Output, Invalid> {
    let at = |field: &Spanned<String>| Some(field.span());
    let src = super::template_name(layout, &r.src)?;
    if r.dest.get_ref().is_empty() {
        return Err((at(&r.dest), Problem::EmptyDest));
    }
    let dest = layout.confdir.join(r.dest.get_ref());
    let dest = match &r.for_each {
        None => OutputDest::File(dest),
        Some(glob) => fan_out(glob, &dest, r.dest.span())?,
    };
    let (mode, uid, gid) = attributes(&r.mode, (r.uid, &r.owner), (r.gid, &r.group))?;
    let check_timeout = timeout(&r.check_timeout, "check_timeout")?;
    Ok(Output {
        src,
        dest,
        mode,
        uid,
        gid,
        check: non_empty(&r.check_cmd).map(|l| Command::new(l, check_timeout)),
    })
}

/// `dest` split into its literal directory and its name template.
fn fan_out(glob: &Spanned<String>, dest: &Path, span: Range<usize>) -> Result<OutputDest, Invalid> {
    let for_each = crate::kv::keys::join("", glob.get_ref());
    let pattern = Pattern::parse(&for_each)
        .map_err(|e| (Some(glob.span()), Problem::ForEach(e.to_string())))?;
    let (Some(dir), Some(name)) = (dest.parent(), dest.file_name()) else {
        return Err((Some(span), Problem::FanOutDest(dest.to_path_buf())));
    };
    let name = name.to_string_lossy().into_owned();
    let dir_text = dir.to_string_lossy();
    if dir_text.contains("{{") || dir_text.contains("{%") || !name.contains("{{") {
        return Err((Some(span), Problem::FanOutDest(dest.to_path_buf())));
    }
    Ok(OutputDest::FanOut {
        for_each,
        pattern,
        dir: dir.to_path_buf(),
        name,
    })
}

/// Why a rendered fan-out file name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("it is empty")]
    Empty,
    #[error("it contains `/`")]
    Slash,
    #[error("it contains a NUL byte")]
    Nul,
    #[error("it is `.` or `..`")]
    Dots,
    #[error("it starts with `.` (hidden files are never written)")]
    Hidden,
}

/// Whether `name` may be written by a fan-out: one plain, visible file name, so that the
/// file lands in the output's directory and nowhere else. Hidden names are refused too:
/// conflux's stage files are hidden, and so are editors' and tools' own files.
pub fn check_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        Err(NameError::Empty)
    } else if name.contains('/') {
        Err(NameError::Slash)
    } else if name.contains('\0') {
        Err(NameError::Nul)
    } else if name == "." || name == ".." {
        Err(NameError::Dots)
    } else if name.starts_with('.') {
        Err(NameError::Hidden)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_name_is_accepted() {
        for name in ["api.conf", "a", "web-1.conf", "x..y", "名前.conf", "a b"] {
            assert_eq!(check_name(name), Ok(()), "{name:?}");
        }
    }

    #[test]
    fn a_name_that_could_leave_the_directory_or_hide_is_refused() {
        let cases = [
            ("", NameError::Empty),
            ("a/b", NameError::Slash),
            ("../etc/passwd", NameError::Slash),
            ("/etc/passwd", NameError::Slash),
            ("a\0b", NameError::Nul),
            (".", NameError::Dots),
            ("..", NameError::Dots),
            (".hidden.conf", NameError::Hidden),
            (".api.conf.0123456789abcdef", NameError::Hidden),
        ];
        for (name, wanted) in cases {
            assert_eq!(check_name(name), Err(wanted), "{name:?}");
        }
    }
}

/// Properties over any input: a name `check_name` accepts always lands in the output's
/// directory as a visible file, and no name panics it.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn an_accepted_name_stays_in_its_directory_and_visible(name in "\\PC{0,12}|[./a-z]{0,6}") {
            if check_name(&name).is_ok() {
                let dir = Path::new("/etc/nginx/routes");
                let path = dir.join(&name);
                prop_assert_eq!(path.parent(), Some(dir));
                prop_assert_eq!(path.file_name().map(|n| n.to_string_lossy().into_owned()), Some(name.clone()));
                prop_assert!(!name.starts_with('.'));
            }
        }
    }
}
