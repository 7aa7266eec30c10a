use std::{io::IsTerminal as _, process::ExitCode};

use clap::Parser as _;
use flowtally::{
    cli::{Cli, Command},
    daemon,
};
use tracing_subscriber::EnvFilter;

/// Exit codes: 0 ok, 1 runtime failure, 2 bad usage or configuration
/// (clap exits with 2 itself for usage errors).
fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let (args, check_only) = match cli.command {
        Command::Run(args) => (args, false),
        Command::CheckConfig(args) => (args, true),
        Command::Whois(args) => {
            return match flowtally::whois::whois(&args.db, args.ip, args.at) {
                Ok(answer) => {
                    println!("{answer}");
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("flowtally: {err:#}");
                    ExitCode::from(1)
                }
            };
        }
    };
    let config = match args.load() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("flowtally: {err}");
            return ExitCode::from(2);
        }
    };
    if check_only {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    match daemon::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::from(1)
        }
    }
}
