//! The `warden` binary: parses the command line, sets up logging, runs the command, and exits in
//! exactly one place.

use anyhow::Context;
use clap::Parser;
use std::process::ExitCode;
use warden_collector::cli::{Cli, Command, LogFormat};
use warden_collector::config::Config;

fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Colours only on a terminal: harnesses capture stderr into log files.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            init_logging(cli.log_format, "info");
            let mut config = Config::load(args.config.as_deref())?;
            if let Some(a) = args.grpc_listen {
                config.grpc.listen = a;
            }
            if let Some(a) = args.http_listen {
                config.http.listen = a;
            }
            if let Some(d) = args.data_dir {
                config.storage.data_dir = d;
            }
            if args.check {
                let summary = warden_collector::server::check(&config)
                    .await
                    .context("warden serve --check")?;
                println!("{summary}");
                return Ok(());
            }
            warden_collector::server::serve(
                config,
                args.ready_file,
                warden_collector::server::shutdown_signal(),
                |_| {},
            )
            .await
            .context("warden serve")?;
        }
        command => {
            // Client commands keep stderr quiet unless asked.
            init_logging(cli.log_format, "warn");
            warden_collector::cli::run(command).await?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|rt| rt.block_on(run(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
