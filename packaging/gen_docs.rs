//! `conflux-gen-docs DIR`: writes conflux's man pages and shell completions under DIR
//! (`man/`, `completions/`), generated from the same clap definition as `--help` by
//! [`conflux::cli::docs`]. `scripts/package` runs it before `cargo deb` packs them.
//!
//! A binary of its own, built only with the `gen-docs` feature, rather than a hidden
//! `conflux` subcommand: clap's completion generators list hidden subcommands too, so
//! operators would be offered it on every TAB.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: conflux-gen-docs DIR");
        return ExitCode::from(2);
    };
    let dir = PathBuf::from(dir);
    match conflux::cli::docs::write_all(&dir) {
        Ok(written) => {
            for path in written {
                println!("{}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("conflux-gen-docs: writing under {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}
