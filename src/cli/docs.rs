//! The man pages and the shell completions, generated from the clap definition that
//! `--help` prints ([`Cli`]), so that they cannot drift from it: one page for the top
//! level and one for every subcommand clap knows (`conflux-register(1)`, and whatever
//! subcommand is added later, with no change here), and completions for bash, zsh and
//! fish. clap's own generators write them (`clap_mangen`, `clap_complete`), rather
//! than a hand-kept roff file that the first new flag would leave behind.
//!
//! They are generated when the package is built (`scripts/package` runs the
//! `conflux-gen-docs` binary, which calls [`write_all`]), not committed: a committed
//! copy would need regenerating with every edited flag description. Where they are
//! installed is the packaging's business (`Cargo.toml`'s `[package.metadata.deb]`).

use std::io;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

use super::{Cli, VERSION};

/// The shells completions are generated for.
pub const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// One generated file: its path relative to the output directory, and its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    pub path: PathBuf,
    pub content: Vec<u8>,
}

/// The command as the binary parses it, with every global flag propagated to the
/// subcommands (their pages list `--node` too).
fn command() -> clap::Command {
    let mut cmd = Cli::command()
        .bin_name("conflux")
        // `conflux help register` is clap's; it needs no page of its own.
        .disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// `man/conflux.1` and `man/conflux-<subcommand>.1` for every subcommand, nested ones
/// included (`conflux-a-b.1`), hidden ones left out.
pub fn man_pages() -> io::Result<Vec<Generated>> {
    let mut pages = Vec::new();
    add_pages(command(), &mut pages)?;
    Ok(pages)
}

fn add_pages(cmd: clap::Command, pages: &mut Vec<Generated>) -> io::Result<()> {
    // Every page's footer names the build, not only the top level's (clap_mangen
    // would print "register " for a subcommand, which has no version of its own).
    let man = clap_mangen::Man::new(cmd.clone()).source(format!("conflux {VERSION}"));
    let mut content = Vec::new();
    man.render(&mut content)?;
    pages.push(Generated {
        path: Path::new("man").join(man.get_filename()),
        content,
    });
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        add_pages(sub.clone(), pages)?;
    }
    Ok(())
}

/// `completions/conflux.bash`, `completions/_conflux` (zsh) and
/// `completions/conflux.fish`: clap_complete's names for them.
pub fn completions() -> Vec<Generated> {
    SHELLS
        .iter()
        .map(|&shell| {
            let mut cmd = command();
            let mut content = Vec::new();
            clap_complete::generate(shell, &mut cmd, "conflux", &mut content);
            let name = clap_complete::Generator::file_name(&shell, "conflux");
            Generated {
                path: Path::new("completions").join(name),
                content,
            }
        })
        .collect()
}

/// Writes every man page and completion under `dir` (created if missing); returns
/// the paths written.
pub fn write_all(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for file in man_pages()?.into_iter().chain(completions()) {
        let path = dir.join(&file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, &file.content)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(file: &Generated) -> String {
        String::from_utf8(file.content.clone()).expect("utf-8")
    }

    fn find<'a>(files: &'a [Generated], path: &str) -> &'a Generated {
        files
            .iter()
            .find(|f| f.path == Path::new(path))
            .unwrap_or_else(|| panic!("no {path} among {files:?}"))
    }

    /// Every visible subcommand of the real CLI, by name.
    fn subcommands() -> Vec<String> {
        command()
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(|s| s.get_name().to_string())
            .collect()
    }

    #[test]
    fn a_page_for_the_top_level_and_each_subcommand() {
        let pages = man_pages().expect("rendered");
        let mut names: Vec<_> = pages.iter().map(|p| p.path.clone()).collect();
        names.sort();
        let mut want = vec![PathBuf::from("man/conflux.1")];
        want.extend(
            subcommands()
                .iter()
                .map(|s| PathBuf::from(format!("man/conflux-{s}.1"))),
        );
        want.sort();
        assert_eq!(names, want);
        assert!(subcommands().contains(&"register".to_string()));
    }

    #[test]
    fn pages_carry_the_help_text() {
        let pages = man_pages().expect("rendered");
        let top = text(find(&pages, "man/conflux.1"));
        assert!(top.starts_with(".ie \\n(.g .ds Aq"), "{top}");
        assert!(top.contains(".TH conflux 1"), "{top}");
        for flag in ["onetime", "confdir", "metrics\\-addr"] {
            assert!(
                top.contains(&format!("\\-\\-{flag}")),
                "--{flag} missing:\n{top}"
            );
        }
        // The subcommands are listed, pointing to their own pages.
        assert!(top.contains("conflux\\-register(1)"), "{top}");
        let register = text(find(&pages, "man/conflux-register.1"));
        assert!(register.contains(".TH conflux-register 1"), "{register}");
        assert!(register.contains("\\-\\-check\\-cmd"), "{register}");
        // The global connection flags are on the subcommand's page too.
        assert!(register.contains("\\-\\-node"), "{register}");
    }

    #[test]
    fn pages_name_the_version_and_commit() {
        let pages = man_pages().expect("rendered");
        let top = text(find(&pages, "man/conflux.1"));
        assert!(top.contains(env!("CARGO_PKG_VERSION")), "{top}");
        assert!(top.contains(env!("CONFLUX_BUILD_COMMIT")), "{top}");
        let register = text(find(&pages, "man/conflux-register.1"));
        assert!(register.contains(VERSION), "{register}");
    }

    #[test]
    fn completions_know_every_subcommand_and_flag() {
        let files = completions();
        let paths: Vec<_> = files.iter().map(|f| f.path.clone()).collect();
        assert_eq!(
            paths,
            [
                "completions/conflux.bash",
                "completions/_conflux",
                "completions/conflux.fish"
            ]
            .map(PathBuf::from)
        );
        let cmd = command();
        for file in &files {
            let script = text(file);
            for sub in subcommands() {
                assert!(script.contains(&sub), "{sub} missing from {:?}", file.path);
            }
            for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
                if let Some(long) = arg.get_long() {
                    assert!(
                        script.contains(long),
                        "--{long} missing from {:?}",
                        file.path
                    );
                }
            }
        }
    }

    #[test]
    fn write_all_writes_what_it_lists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let written = write_all(dir.path()).expect("written");
        assert!(written.contains(&dir.path().join("man/conflux.1")));
        assert!(written.contains(&dir.path().join("completions/_conflux")));
        for path in &written {
            assert!(
                std::fs::metadata(path).expect("exists").len() > 0,
                "{path:?}"
            );
        }
    }
}
