//! `ncu-send`: ships every line of standard input (or of a command's output) over UDP
//! the moment it is written. Glue around [`ncu_proto::framer`]; see `ncu-send --help`.

mod cli;
mod command;
mod harden;
mod kmsg;
mod net;
mod netcons;
mod resolve;
mod run;
mod signals;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

fn main() -> ExitCode {
    let args = cli::Args::parse();
    if let Some(kind) = args.generate() {
        return ncu_docgen::print(cli::Args::command(), kind);
    }
    if let Some(path) = args.gen_key() {
        return match ncu_host::generate_key_file(path) {
            Ok(()) => {
                let p = path.display();
                eprintln!(
                    "ncu-send: wrote a new key to {p} (mode 0600); copy it to the receiver \
                     (e.g. scp -p {p} host:{p}) and run ncu-send --key-file {p} HOST:PORT \
                     and ncu-recv --key-file {p} PORT"
                );
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("ncu-send: {err}");
                ExitCode::from(1)
            }
        };
    }
    let config = match args.into_config() {
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
