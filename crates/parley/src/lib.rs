//! The `parley` command: flag parsing and wiring of the library crates. Logic lives in the
//! crates it calls, not here.

pub mod admin;
pub mod cli;
pub mod client_cmd;
pub mod cluster;
pub mod config;
pub mod dev;
pub mod node;
pub mod ops;
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
            let config = telemetry_config(0, "dev", None, &options.log_format, &options.telemetry);
            with_telemetry(&runtime, config, |telemetry| dev::run(*options, telemetry))
        }
        Command::Run(options) => {
            let config = telemetry_config(
                options.node_id,
                &options.roles.join(","),
                options.kafka.region.clone(),
                &options.log_format,
                &options.telemetry,
            );
            with_telemetry(&runtime, config, |telemetry| run::run(*options, telemetry))
        }
        Command::Cluster(options) => runtime.block_on(async {
            if let Some(secret) = &options.cluster_secret {
                parley_proto::cluster_auth::set_cluster_secret(secret)
                    .map_err(|error| anyhow::anyhow!("--cluster-secret: {error}"))?;
            }
            options.tls.install()?;
            cluster::operate(options.command).await?;
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

fn telemetry_config(
    node: u64,
    roles: &str,
    region: Option<String>,
    log_format: &str,
    options: &cli::TelemetryOptions,
) -> parley_telemetry::TelemetryConfig {
    parley_telemetry::TelemetryConfig {
        node,
        roles: roles.to_owned(),
        region,
        log_format: log_format.to_owned(),
        otlp_endpoint: options.otlp_endpoint.clone(),
        sample_ratio: options.trace_sample_ratio,
    }
}

/// Runs a server command with logs, traces and metrics installed, and flushes what the
/// exporters still hold when it ends.
fn with_telemetry<F: std::future::Future<Output = anyhow::Result<ExitCode>>>(
    runtime: &tokio::runtime::Runtime,
    config: parley_telemetry::TelemetryConfig,
    command: impl FnOnce(std::sync::Arc<parley_telemetry::Telemetry>) -> F,
) -> anyhow::Result<ExitCode> {
    // The OTLP exporters' connections live on the runtime.
    let telemetry = {
        let _runtime = runtime.enter();
        std::sync::Arc::new(parley_telemetry::Telemetry::init(&config)?)
    };
    let outcome = runtime.block_on(command(telemetry.clone()));
    telemetry.shutdown();
    outcome
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
