//! `novelstream report`: a self-contained HTML page of what the daemon discovered.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use novelstream::tools::manifest::{read_manifest, truth_labels};
use novelstream::tools::report::{read_published, render, ReportInput, ReportOptions};
use novelstream::tools::score::score;

use super::KafkaOverrides;

/// Arguments of `report`.
#[derive(Args)]
pub struct ReportArgs {
    /// The daemon's config file: brokers, topics and Kafka settings, the media roots segments
    /// may refer to, and how windows were cut (exemplar frames are decoded from the media again).
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    kafka: KafkaOverrides,
    /// An av-digits manifest with the truth of the streamed clips (`produce --manifest`): adds
    /// accuracy, the accuracy-over-time curve and each cluster's majority class.
    #[arg(long)]
    truth: Option<PathBuf>,
    /// With --truth: only clips of this split count.
    #[arg(long)]
    split: Option<String>,
    /// Wait until at least this many assignments are there (or --timeout).
    #[arg(long, default_value_t = 0)]
    expect: usize,
    /// How long to wait for --expect assignments.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Exemplar windows shown per cluster (its most confident, one per segment).
    #[arg(long, default_value_t = 6)]
    exemplars: usize,
    /// Frames shown per exemplar window.
    #[arg(long, default_value_t = 3)]
    frames: usize,
    /// Height of exemplar frames in pixels.
    #[arg(long, default_value_t = 96)]
    thumb: u32,
    /// Time slices of the accuracy-over-time curve (with --truth).
    #[arg(long, default_value_t = 10)]
    slices: usize,
    /// Where the HTML goes.
    #[arg(long, default_value = "report.html")]
    out: PathBuf,
}

/// Reads the daemon's topics, renders the page, writes it and prints what went in.
pub fn handle(args: ReportArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let config = args.kafka.load(args.config.as_deref())?;
    let published = read_published(&config, args.expect, args.timeout)?;
    let manifest = args.truth.as_deref().map(read_manifest).transpose()?;
    let split = args.split.as_deref();
    let score = manifest.as_ref().map(|m| score(&published.records, m, split, args.slices, Some(&published.sent), &[]));
    let truth = manifest.as_ref().map(|m| truth_labels(m, split));
    let input = ReportInput {
        records: &published.records,
        model: published.model.as_ref(),
        score: score.as_ref(),
        truth: truth.as_ref(),
        decode: &config.decode,
    };
    let options = ReportOptions {
        exemplars: args.exemplars,
        frames: args.frames,
        thumb_height: args.thumb,
        title: format!("novelstream report: {}", config.kafka.output_topic),
        progress: super::progress(),
        ..Default::default()
    };
    let (html, stats) = render(&input, &options, &|segment_id| published.media.fetch(segment_id));
    std::fs::write(&args.out, html).with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "{} windows in {} clusters: {} exemplar images, {} audio clips, {} exemplars without media; wrote {} in {}",
        stats.windows,
        stats.clusters,
        stats.images,
        stats.audio_clips,
        stats.missing_media,
        args.out.display(),
        humantime::format_duration(Duration::from_secs(started.elapsed().as_secs()))
    );
    Ok(())
}
