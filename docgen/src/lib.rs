//! `--generate KIND` for both binaries: a man page or a shell's completions, from the
//! same clap definitions as `--help` (`scripts/gen-assets.sh` writes them all).

use std::io::{self, Write};

use clap::ValueEnum;

/// What `--generate` writes to standard output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// The man page (roff), section 1.
    Man,
    /// Completions for bash.
    CompleteBash,
    /// Completions for zsh.
    CompleteZsh,
    /// Completions for fish.
    CompleteFish,
}

/// Writes `kind` for the command `cmd` to `out`.
pub fn write(mut cmd: clap::Command, kind: Kind, out: &mut impl Write) -> io::Result<()> {
    let name = cmd.get_name().to_owned();
    match kind {
        Kind::Man => clap_mangen::Man::new(cmd).render(out),
        Kind::CompleteBash => {
            clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, name, out);
            Ok(())
        }
        Kind::CompleteZsh => {
            clap_complete::generate(clap_complete::Shell::Zsh, &mut cmd, name, out);
            Ok(())
        }
        Kind::CompleteFish => {
            clap_complete::generate(clap_complete::Shell::Fish, &mut cmd, name, out);
            Ok(())
        }
    }
}

/// Writes `kind` for `cmd` to standard output; the exit status for `main`.
pub fn print(cmd: clap::Command, kind: Kind) -> std::process::ExitCode {
    let mut out = io::stdout().lock();
    match write(cmd, kind, &mut out).and_then(|()| out.flush()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("--generate: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
