//! `novelstream run`: the daemon, until a signal or `--run-for`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::KafkaOverrides;

/// Arguments of `run`.
#[derive(Args)]
pub struct RunArgs {
    /// Configuration file (TOML); see config/novelstream.toml for every key.
    #[arg(long, short, env = "NOVELSTREAM_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    kafka: KafkaOverrides,
    /// What this process does: `all` (one process does everything), `assign` (a stateless
    /// worker), `train` (the trainer); overrides pipeline.role. See README, "Scaling out".
    #[arg(long, env = "NOVELSTREAM_ROLE", value_enum)]
    role: Option<novelstream::config::Role>,
    /// Stop by itself after this long (e.g. `90s`), draining as on SIGTERM.
    #[arg(long, value_parser = humantime::parse_duration)]
    run_for: Option<Duration>,
}

/// Runs the daemon and prints what it processed once it drained.
pub async fn handle(args: RunArgs) -> anyhow::Result<()> {
    let mut config = args.kafka.load(args.config.as_deref())?;
    if let Some(role) = args.role {
        config.pipeline.role = role;
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone(), args.run_for));
    let stats = novelstream::pipeline::run(config, shutdown).await?;
    println!(
        "processed {} segments: {} windows assigned, {} dead letters",
        stats.segments, stats.windows, stats.dead_letters
    );
    Ok(())
}

/// Cancels `shutdown` on SIGINT, SIGTERM, or when `run_for` has passed.
async fn stop_on_signal(shutdown: CancellationToken, run_for: Option<Duration>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let deadline = async {
        match run_for {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = deadline => tracing::info!("--run-for elapsed: shutting down"),
    }
    shutdown.cancel();
}
