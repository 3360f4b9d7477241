//! `ncu-recv`: receives ncu-send's numbered log lines (and kernel netconsole, and
//! plain `nc -u` text) from any number of senders, prints them in order and names
//! every lost line. Glue around [`ncu_proto::reassembler`]; see `ncu-recv --help`.

mod cli;
mod escape;
mod hook;
mod intake;
mod journal;
mod json;
mod metrics;
mod net;
mod notify;
mod outdir;
mod output;
mod report;
mod run;
mod stdout;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

fn main() -> ExitCode {
    let args = match cli::Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if let Some(kind) = args.generate() {
        return ncu_docgen::print(cli::Args::command(), kind);
    }
    let config = match args.into_config() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("ncu-recv: {err}");
            return ExitCode::from(2);
        }
    };
    match run::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(run::RunError(msg)) => {
            eprintln!("ncu-recv: {msg}");
            ExitCode::from(1)
        }
    }
}
