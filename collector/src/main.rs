use std::{
    io::{IsTerminal as _, Write as _},
    process::ExitCode,
    time::{SystemTime, UNIX_EPOCH},
};

use clap::Parser as _;
use flowtally::{
    cli::{Cli, Command},
    daemon,
    progress::Bar,
    timestamp::Timestamp,
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
            return match flowtally::whois::whois(
                &args.db,
                args.target,
                args.query(),
                args.at.at(now()),
            ) {
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
        Command::Report(args) => return report(args),
        Command::Audit(args) => return audit(args),
        Command::Quota(args) => return quota(args),
    };
    let config = match args.load() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("flowtally: {err}");
            return ExitCode::from(2);
        }
    };
    if check_only {
        for warning in config.warnings() {
            eprintln!("warning: {warning}");
        }
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

fn now() -> Timestamp {
    Timestamp(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    )
}

/// Exit 0 whatever it finds (it is a report); 2 on bad usage, 1 when the
/// database cannot be read.
fn audit(args: flowtally::cli::AuditArgs) -> ExitCode {
    match flowtally::integrity::command::run(&args.request(), now()) {
        Ok((_, text)) => write_out(&text),
        Err(err) => {
            eprintln!("flowtally: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

/// 2 on a bad configuration, 1 when the database cannot be read.
fn quota(args: flowtally::cli::QuotaArgs) -> ExitCode {
    match flowtally::quota::command::run(&args.request(now())) {
        Ok(text) => write_out(&text),
        Err(err) => {
            eprintln!("flowtally: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

fn write_out(text: &str) -> ExitCode {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        // A reader that has seen enough (`| head`) is no failure.
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("flowtally: cannot write: {err}");
            ExitCode::from(1)
        }
        _ => ExitCode::SUCCESS,
    }
}

fn report(args: flowtally::cli::ReportArgs) -> ExitCode {
    let now = now();
    let request = args.request(now, std::io::stdout().is_terminal());
    let mut bar = Bar::on_terminal("reading usage");
    let report =
        flowtally::report::command::run_with_progress(&request, now, &mut |done, total| {
            if let Some(bar) = &mut bar {
                bar.update(done, total);
            }
        });
    drop(bar);
    let report = match report {
        Ok(report) => report,
        Err(err) => {
            eprintln!("flowtally: {err}");
            return ExitCode::from(err.exit_code());
        }
    };
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    write_out(&report.text)
}
