//! `novelstream bench`: the daemon's stages timed against their reference tools (BENCHMARKS.md).

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Subcommand};
use novelstream::tools::bench;

use super::load_config;

/// The stages `bench` times.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Decode a clip with the product's decoder and with the ffmpeg CLI producing the same raw
    /// frames and audio, one decoding thread each; prints windows/s and the ratio.
    Decode(BenchDecodeArgs),
    /// Assign batches of windows with the daemon's model (inference only): windows/s and
    /// latency per batch, for each batch size.
    Assign(BenchAssignArgs),
    /// Time training steps of the daemon's learner (every loss term, both views): windows/s.
    /// `bench/train_step.py` is the same model and step in PyTorch, for comparison.
    Train(BenchTrainArgs),
}

/// Arguments of `bench train`.
#[derive(Args)]
pub struct BenchTrainArgs {
    /// Model, training and windowing as in the daemon's config (default: the built-in defaults).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Timed steps.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
}

/// Arguments of `bench assign`.
#[derive(Args)]
pub struct BenchAssignArgs {
    /// Model and windowing as in the daemon's config (default: the built-in defaults).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Batch sizes, comma-separated.
    #[arg(long, default_value = "1,8,32,64", value_delimiter = ',')]
    batch: Vec<usize>,
    /// Timed batches per size.
    #[arg(long, default_value_t = 30)]
    batches: usize,
}

/// Arguments of `bench decode`.
#[derive(Args)]
pub struct BenchDecodeArgs {
    /// The clip (any container and codecs FFmpeg reads; H.264 + AAC for the recorded numbers).
    clip: PathBuf,
    /// Windowing and frame size as in the daemon's config (default: the built-in defaults).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Passes of each decoder; the best one counts.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
}

/// Runs one benchmark and prints its table.
pub fn handle(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Decode(args) => decode(args),
        BenchCommand::Assign(args) => assign(args),
        BenchCommand::Train(args) => train(args),
    }
}

fn assign(args: BenchAssignArgs) -> anyhow::Result<()> {
    let config = load_config(args.config.as_deref())?;
    config.validate()?;
    if args.batch.contains(&0) {
        bail!("--batch: sizes must be at least 1");
    }
    let device = novelstream::model::select_device(config.model.device)?;
    let (m, d) = (&config.model, &config.decode);
    println!(
        "assign on {device:?} ({} torch threads): modality {:?}, {} frames of {}x{} + {} s of audio per window",
        tch::get_num_threads(),
        m.modality,
        d.frames,
        d.height,
        d.width,
        d.window.as_secs_f64()
    );
    println!("| batch | windows/s | p50 ms per batch | p99 ms per batch |\n|---|---|---|---|");
    for run in bench::assign(&config, device, &args.batch, args.batches)? {
        println!("| {} | {:.1} | {:.1} | {:.1} |", run.batch, run.windows_per_s, 1e3 * run.p50_s, 1e3 * run.p99_s);
    }
    Ok(())
}

fn train(args: BenchTrainArgs) -> anyhow::Result<()> {
    let config = load_config(args.config.as_deref())?;
    config.validate()?;
    let device = novelstream::model::select_device(config.model.device)?;
    let (m, d, t) = (&config.model, &config.decode, &config.train);
    let run =
        bench::train(&config, device, args.steps, args.warmup).map_err(|e| anyhow::anyhow!("bench train: {e}"))?;
    println!(
        "train step on {device:?} ({} torch threads): modality {:?}, contrast {:?}, {} + {} windows of {} frames {}x{} + {} s audio",
        tch::get_num_threads(),
        m.modality,
        t.contrast,
        t.batch_size,
        t.batch_size,
        d.frames,
        d.height,
        d.width,
        d.window.as_secs_f64()
    );
    println!(
        "novelstream: {:.1} windows/s, {:.1} ms per step (p50 {:.1}, p90 {:.1}) over {} steps",
        run.windows_per_s,
        1e3 * run.mean_s,
        1e3 * run.p50_s,
        1e3 * run.p90_s,
        run.steps
    );
    Ok(())
}

fn decode(args: BenchDecodeArgs) -> anyhow::Result<()> {
    let config = load_config(args.config.as_deref())?;
    let d = &config.decode;
    let (product, cli) = bench::decode(&args.clip, d, args.repeat).map_err(|e| anyhow::anyhow!("bench decode: {e}"))?;
    println!(
        "decode {} to {}x{} RGB24 + mono f32 at {} Hz, one thread, best of {}:",
        args.clip.display(),
        d.width,
        d.height,
        d.sample_rate,
        args.repeat
    );
    println!("| decoder | seconds | windows/s | × real time |\n|---|---|---|---|");
    for run in [&product, &cli] {
        println!("| {} | {:.2} | {:.1} | {:.1} |", run.name, run.seconds, run.windows_per_s, run.realtime);
    }
    println!("ratio (novelstream / ffmpeg CLI): {:.2}", product.windows_per_s / cli.windows_per_s);
    Ok(())
}
