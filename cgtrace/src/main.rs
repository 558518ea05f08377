//! The `cgtrace` command (its definition lives in the library: [`cgtrace::cli`]).
use std::{io, process::ExitCode};

use cgtrace::{UsageError, cli};
use clap::Parser as _;

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default))
        .format_target(false)
        .init();
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_logging(cli.verbose);
    if let Some(path) = &cli.btf {
        // SAFETY: still single-threaded (nothing has been started yet), so no other thread reads
        // the environment while it changes.
        unsafe { std::env::set_var(cgtrace::kernel::btf::BTF_ENV, path) };
    }
    match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            // `cgtrace live | head` closes the pipe: exit quietly, like other Unix tools.
            if e.chain().any(|c| {
                c.downcast_ref::<io::Error>()
                    .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("cgtrace: error: {e:#}");
            if e.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
