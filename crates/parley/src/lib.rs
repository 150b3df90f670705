//! The `parley` command: flag parsing and wiring of the library crates. Logic lives in the
//! crates it calls, not here.

pub mod admin;
pub mod cli;
pub mod client_cmd;
pub mod cluster;
pub mod config;
pub mod dev;
pub mod run;
pub mod web;

use std::process::ExitCode;

use cli::Cli;
use cli::Command;

/// Runs a parsed command line.
pub fn main(cli: Cli) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("start the tokio runtime");
    let outcome = match cli.command {
        Command::Dev(options) => {
            init_logging(&options.log_format);
            runtime.block_on(dev::run(options))
        }
        Command::Run(options) => {
            init_logging(&options.log_format);
            runtime.block_on(run::run(options))
        }
        Command::Cluster(command) => runtime.block_on(async {
            cluster::operate(command).await?;
            Ok(ExitCode::SUCCESS)
        }),
        Command::Token(options) => {
            println!("{}", options.build());
            Ok(ExitCode::SUCCESS)
        }
        Command::Admin(options) => runtime.block_on(admin::run(options)),
        Command::Client(options) => {
            init_logging("text");
            runtime.block_on(client_cmd::run(options))
        }
    };
    // A blocking read of standard input may still be pending; it must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("parley: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Structured logs on standard error; `RUST_LOG` chooses what is logged (default `info`).
fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
