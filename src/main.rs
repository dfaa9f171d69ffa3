//! The `novelstream` command line: the daemon (`run`) and its client tools. Parses the
//! arguments and hands each command to its module under `cli/`.

mod cli;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cli::{bench, dataset, eval, export, produce, report, run, score, summary};

#[derive(Parser)]
#[command(
    name = "novelstream",
    version,
    about = "Discovers new categories in live video: segments in from Kafka, one cluster assignment per window out"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: consume segments, assign every window, publish assignments.
    Run(run::RunArgs),
    /// Publish video files as segments (JSON references by default, or inline bytes).
    Produce(produce::ProduceArgs),
    /// Read the assignment and dead-letter topics and print a summary.
    Summary(summary::SummaryArgs),
    /// Train on a labelled data set (known classes labelled, novel ones not) and measure
    /// novel-class discovery on its test split against k-means baselines.
    Eval(eval::EvalArgs),
    /// Score what the daemon published against the truth of the streamed clips: novel-class
    /// accuracy (Hungarian), NMI, ARI over the run and per time slice, known-class accuracy,
    /// and whether every window of every segment was published.
    Score(score::ScoreArgs),
    /// Write a self-contained HTML report of what the daemon discovered: per cluster its size
    /// over time and a contact sheet of exemplar frames with their audio; with --truth, the
    /// accuracy-over-time curve and each cluster's majority class.
    Report(report::ReportArgs),
    /// Time the product's stages against their reference tools (see BENCHMARKS.md).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Build a data set from the real data `make setup` fetched.
    #[command(subcommand)]
    Dataset(dataset::DatasetCommand),
    /// Write a checkpoint's trained encoder as a TorchScript module, for
    /// `model.visual_encoder = "torchscript:PATH"` in another deployment.
    ExportEncoder(export::ExportArgs),
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
        Command::Run(args) => runtime.block_on(run::handle(args)),
        Command::Produce(args) => runtime.block_on(produce::handle(args)),
        Command::Summary(args) => summary::handle(args),
        Command::Eval(args) => eval::handle(args),
        Command::Score(args) => score::handle(args),
        Command::Report(args) => report::handle(args),
        Command::Bench(command) => bench::handle(command),
        Command::Dataset(command) => dataset::handle(command),
        Command::ExportEncoder(args) => export::handle(args),
    }
}
