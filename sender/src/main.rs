//! `ncu-send`: ships every line of standard input (or of a command's output) over UDP
//! the moment it is written. Glue around [`ncu_proto::framer`]; see `ncu-send --help`.

mod cli;
mod harden;
mod lines;
mod net;
mod run;
mod signals;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let config = match cli::Args::parse().into_config() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("ncu-send: {err}");
            return ExitCode::from(2);
        }
    };
    match run::run(config) {
        Ok(status) => ExitCode::from(status),
        Err(run::RunError(msg)) => {
            eprintln!("ncu-send: {msg}");
            ExitCode::from(1)
        }
    }
}
