//! The `novelstream` command line: the daemon (`run`) and its client tools.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use novelstream::config::{Config, KafkaConfig};
use novelstream::produce::{produce, ProduceOptions};
use novelstream::summary::{read_topic, Summary};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "novelstream", version, about = "Discovers new categories in live video: segments in from Kafka, one cluster assignment per window out")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: consume segments, assign every window, publish assignments.
    Run(RunArgs),
    /// Publish video files as segments (JSON references by default, or inline bytes).
    Produce(ProduceArgs),
    /// Read the assignment and dead-letter topics and print a summary.
    Summary(SummaryArgs),
}

/// Overrides of the config file's [kafka] section; each also reads an environment variable.
#[derive(Args, Default)]
struct KafkaOverrides {
    /// Bootstrap servers, `host:port[,host:port]` (overrides kafka.brokers).
    #[arg(long, env = "NOVELSTREAM_BROKERS")]
    brokers: Option<String>,
    /// Topic segments are read from (overrides kafka.input_topic).
    #[arg(long, env = "NOVELSTREAM_INPUT_TOPIC")]
    input_topic: Option<String>,
    /// Topic assignments are written to (overrides kafka.output_topic).
    #[arg(long, env = "NOVELSTREAM_OUTPUT_TOPIC")]
    output_topic: Option<String>,
    /// Topic unusable inputs are reported to (overrides kafka.dead_letter_topic).
    #[arg(long, env = "NOVELSTREAM_DEAD_LETTER_TOPIC")]
    dead_letter_topic: Option<String>,
    /// Consumer group (overrides kafka.group_id).
    #[arg(long, env = "NOVELSTREAM_GROUP_ID")]
    group_id: Option<String>,
}

impl KafkaOverrides {
    fn apply(self, kafka: &mut KafkaConfig) {
        let fields = [
            (self.brokers, &mut kafka.brokers),
            (self.input_topic, &mut kafka.input_topic),
            (self.output_topic, &mut kafka.output_topic),
            (self.dead_letter_topic, &mut kafka.dead_letter_topic),
            (self.group_id, &mut kafka.group_id),
        ];
        for (value, field) in fields {
            if let Some(value) = value {
                *field = value;
            }
        }
    }
}

#[derive(Args)]
struct RunArgs {
    /// Configuration file (TOML); see config/novelstream.toml for every key.
    #[arg(long, short, env = "NOVELSTREAM_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    kafka: KafkaOverrides,
    /// Stop by itself after this long (e.g. `90s`), draining as on SIGTERM.
    #[arg(long, value_parser = humantime::parse_duration)]
    run_for: Option<Duration>,
}

#[derive(Args)]
struct ProduceArgs {
    /// Bootstrap servers.
    #[arg(long, env = "NOVELSTREAM_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Topic to publish segments to.
    #[arg(long, default_value = "novelstream.segments")]
    topic: String,
    /// Stream the segments belong to (the message key).
    #[arg(long, default_value = "default")]
    stream_id: String,
    /// Sequence number of the first segment; later files count up from it.
    #[arg(long, default_value_t = 0)]
    first_seq: u64,
    /// Known class every published segment is labelled with.
    #[arg(long)]
    label: Option<String>,
    /// Send the media bytes in the message (fields as headers) instead of a file:// reference.
    #[arg(long)]
    inline: bool,
    /// Video files, or directories of them (taken in name order).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

#[derive(Args)]
struct SummaryArgs {
    /// Bootstrap servers.
    #[arg(long, env = "NOVELSTREAM_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Assignment topic.
    #[arg(long, default_value = "novelstream.assignments")]
    topic: String,
    /// Dead-letter topic.
    #[arg(long, default_value = "novelstream.dead-letters")]
    dead_letter_topic: String,
    /// Wait until at least this many assignments are published (or the timeout passes).
    #[arg(long, default_value_t = 0)]
    expect: usize,
    /// Longest wait for the expected assignments.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,librdkafka=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    match cli.command {
        Command::Run(args) => runtime.block_on(run(args)),
        Command::Produce(args) => runtime.block_on(produce_files(args)),
        Command::Summary(args) => summary(args),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    args.kafka.apply(&mut config.kafka);
    config.validate()?;
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

async fn produce_files(args: ProduceArgs) -> anyhow::Result<()> {
    let kafka = KafkaConfig { brokers: args.brokers, ..Default::default() };
    let options = ProduceOptions {
        topic: args.topic,
        paths: args.paths,
        stream_id: args.stream_id,
        first_seq: args.first_seq,
        label: args.label,
        inline: args.inline,
    };
    let produced = produce(&kafka, &options).await?;
    for p in &produced {
        println!("{} {} partition {} offset {}", p.segment_id, p.path.display(), p.partition, p.offset);
    }
    if produced.is_empty() {
        bail!("no files to publish");
    }
    Ok(())
}

fn summary(args: SummaryArgs) -> anyhow::Result<()> {
    let kafka = KafkaConfig { brokers: args.brokers, ..Default::default() };
    let assignments = read_topic(&kafka, &args.topic, args.expect, args.timeout)?;
    let dead_letters = read_topic(&kafka, &args.dead_letter_topic, 0, Duration::from_secs(5))?;
    print!("{}", Summary::new(&assignments, &dead_letters).render());
    if assignments.len() < args.expect {
        bail!("expected {} assignments within {:?}, found {}", args.expect, args.timeout, assignments.len());
    }
    Ok(())
}
