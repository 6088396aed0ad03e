//! confd's single-dash long flags (`-onetime`, `-node=x`), rewritten to clap's
//! double-dash form before parsing. The flags known at each point are clap's own:
//! the top level's until a subcommand's name, then that subcommand's (its own and the
//! global ones), so a new subcommand needs nothing here.

use std::ffi::OsString;

use clap::CommandFactory;

use super::Cli;

/// Rewrites confd's single-dash long flags (`-onetime`, `-node=x`) to their double-dash
/// form. Only known flag names are rewritten, and never the value of a flag that takes
/// one (`--prefix -onetime` keeps its prefix), so an unknown `-bogus` still fails as
/// usage. After a subcommand's name, its own flags are the known ones
/// (`conflux register -key /k -ttl 5s`).
pub fn normalize_args<I>(args: I) -> Vec<OsString>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    let mut top = Cli::command();
    // build() propagates the global flags into each subcommand and adds --help and
    // --version, so that every command's argument list is complete.
    top.build();
    let mut level = &top;
    let mut flags = long_flags(level);
    let mut args = args.into_iter().map(Into::into);
    let mut out: Vec<OsString> = args.next().into_iter().collect();
    let mut value_expected = false;
    let mut rest_are_values = false;
    for arg in args {
        let text = arg.to_str().unwrap_or("");
        if rest_are_values || std::mem::take(&mut value_expected) {
            out.push(arg);
            continue;
        }
        if text == "--" {
            rest_are_values = true;
            out.push(arg);
            continue;
        }
        let Some((name, inline_value)) = long_flag_name(text) else {
            if let Some(sub) = level.find_subcommand(text) {
                level = sub;
                flags = long_flags(level);
            }
            out.push(arg);
            continue;
        };
        match flags.iter().find(|(n, _)| n == name) {
            Some((_, takes_value)) => {
                value_expected = *takes_value && !inline_value;
                if text.starts_with("--") {
                    out.push(arg);
                } else {
                    out.push(OsString::from(format!("-{text}")));
                }
            }
            None => out.push(arg),
        }
    }
    out
}

/// Every long flag name of `command`, and whether it takes a value.
pub(super) fn long_flags(command: &clap::Command) -> Vec<(String, bool)> {
    command
        .get_arguments()
        .filter_map(|a| {
            a.get_long()
                .map(|l| (l.to_string(), a.get_action().takes_values()))
        })
        .collect()
}

/// The flag name of `-name`, `--name`, `-name=v` or `--name=v`, and whether a value
/// was given inline.
fn long_flag_name(arg: &str) -> Option<(&str, bool)> {
    let body = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'))?;
    if body.is_empty() || body.starts_with('-') {
        return None;
    }
    Some(match body.split_once('=') {
        Some((name, _)) => (name, true),
        None => (body, false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalized(args: &[&str]) -> Vec<OsString> {
        normalize_args(args.iter().copied())
    }

    #[test]
    fn values_that_look_like_flags_are_left_alone() {
        let args = normalized(&["conflux", "--prefix", "-onetime", "-watch", "-", "-5"]);
        assert_eq!(
            args,
            ["conflux", "--prefix", "-onetime", "--watch", "-", "-5"].map(OsString::from)
        );
    }

    #[test]
    fn help_and_version_take_a_single_dash() {
        let args = normalized(&["conflux", "-version", "-help"]);
        assert_eq!(args, ["conflux", "--version", "--help"].map(OsString::from));
    }

    #[test]
    fn a_subcommand_brings_its_own_flags_and_keeps_the_global_ones() {
        let args = normalized(&[
            "conflux",
            "-node",
            "n:1",
            "register",
            "-key",
            "-ttl",
            "-check-cmd=true",
            "-node",
            "m:1",
            "-onetime",
        ]);
        // `-ttl` is the value of -key here; -onetime is not one of register's flags,
        // so it is left for clap to refuse.
        let want = [
            "conflux",
            "--node",
            "n:1",
            "register",
            "--key",
            "-ttl",
            "--check-cmd=true",
            "--node",
            "m:1",
            "-onetime",
        ];
        assert_eq!(args, want.map(OsString::from));
    }

    #[test]
    fn a_subcommand_name_given_as_a_value_is_only_a_value() {
        let args = normalized(&["conflux", "--prefix", "register", "-key", "k"]);
        assert_eq!(
            args,
            ["conflux", "--prefix", "register", "-key", "k"].map(OsString::from)
        );
    }

    #[test]
    fn the_program_name_is_never_a_subcommand() {
        let args = normalized(&["register", "-onetime"]);
        assert_eq!(args, ["register", "--onetime"].map(OsString::from));
    }
}
