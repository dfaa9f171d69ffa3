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
    Run(RunArgs),
    /// Publish video files as segments (JSON references by default, or inline bytes).
    Produce(ProduceArgs),
    /// Read the assignment and dead-letter topics and print a summary.
    Summary(SummaryArgs),
    /// Train on a labelled data set (known classes labelled, novel ones not) and measure
    /// novel-class discovery on its test split against k-means baselines.
    Eval(EvalArgs),
    /// Score what the daemon published against the truth of the streamed clips: novel-class
    /// accuracy (Hungarian), NMI, ARI over the run and per time slice, known-class accuracy,
    /// and whether every window of every segment was published.
    Score(ScoreArgs),
    /// Write a self-contained HTML report of what the daemon discovered: per cluster its size
    /// over time and a contact sheet of exemplar frames with their audio; with --truth, the
    /// accuracy-over-time curve and each cluster's majority class.
    Report(ReportArgs),
    /// Time the product's stages against their reference tools (see BENCHMARKS.md).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Build a data set from the real data `make setup` fetched.
    #[command(subcommand)]
    Dataset(DatasetCommand),
}

#[derive(Args)]
struct ScoreArgs {
    /// Bootstrap servers.
    #[arg(long, env = "NOVELSTREAM_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// The assignments topic.
    #[arg(long, default_value = "novelstream.assignments")]
    topic: String,
    /// The segments topic: each segment's publish time there gives the assignment latency.
    #[arg(long, default_value = "novelstream.segments")]
    input_topic: String,
    /// The av-digits manifest the streamed clips came from (`produce --manifest`).
    #[arg(long)]
    truth: PathBuf,
    /// Only clips of this split count as expected (for the missing-segment count).
    #[arg(long)]
    split: Option<String>,
    /// Only the segments listed here (first word of each line, as `produce` prints them) count
    /// as expected.
    #[arg(long)]
    segments: Option<PathBuf>,
    /// Time slices of the accuracy-over-time curve.
    #[arg(long, default_value_t = 10)]
    slices: usize,
    /// Wait until at least this many assignments are there (or --timeout).
    #[arg(long, default_value_t = 0)]
    expect: usize,
    /// How long to wait for --expect assignments.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Where the full report (JSON) goes.
    #[arg(long, default_value = "score.json")]
    out: PathBuf,
    /// Where the accuracy-over-time curve (SVG) goes.
    #[arg(long, default_value = "accuracy.svg")]
    svg: PathBuf,
}

#[derive(Args)]
struct ReportArgs {
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

#[derive(Subcommand)]
enum BenchCommand {
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

#[derive(Args)]
struct BenchTrainArgs {
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

#[derive(Args)]
struct BenchAssignArgs {
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

#[derive(Args)]
struct BenchDecodeArgs {
    /// The clip (any container and codecs FFmpeg reads; H.264 + AAC for the recorded numbers).
    clip: PathBuf,
    /// Windowing and frame size as in the daemon's config (default: the built-in defaults).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Passes of each decoder; the best one counts.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
}

#[derive(Subcommand)]
enum DatasetCommand {
    /// Audio-visual digit clips: MNIST digits drifting across the frame while a person says the
    /// digit (Tux Paint recordings), MP4 (H.264 + AAC) plus manifest.json. Test clips use MNIST
    /// test images and speakers (languages) never heard in training.
    AvDigits(AvDigitsArgs),
}

#[derive(Args)]
struct AvDigitsArgs {
    /// Folder of MNIST IDX files.
    #[arg(long, default_value = "data/mnist")]
    mnist: PathBuf,
    /// Folder of spoken digits, `<digit>[_<language>].ogg`.
    #[arg(long, default_value = "data/spoken-digits")]
    speech: PathBuf,
    /// Output folder (clips under train/ and test/, plus manifest.json).
    #[arg(long, default_value = "data/av-digits")]
    out: PathBuf,
    /// Seed of every random choice: same seed, same bytes.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Training clips per digit.
    #[arg(long, default_value_t = 300)]
    train_per_class: usize,
    /// Test clips per digit.
    #[arg(long, default_value_t = 100)]
    test_per_class: usize,
    /// Languages (one speaker each) held out for the test split.
    #[arg(long, default_value_t = 6)]
    test_languages: usize,
    /// Side of the square frames, in pixels (even).
    #[arg(long, default_value_t = 64)]
    size: u32,
    /// Frames per second of the clips.
    #[arg(long, default_value_t = 10)]
    fps: u32,
    /// Clip length, e.g. `1s` or `1500ms`.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    clip: Duration,
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
    /// Stream the clips of an av-digits manifest instead of files: interleaved over --streams
    /// streams (av-0, av-1, …), each clip's segment id its path in the manifest.
    #[arg(long, conflicts_with_all = ["paths", "label", "stream_id", "first_seq"])]
    manifest: Option<PathBuf>,
    /// With --manifest: only clips of this split (train or test).
    #[arg(long, requires = "manifest")]
    split: Option<String>,
    /// With --manifest: classes whose clips carry their label, e.g. `0-4` (others go unlabelled).
    #[arg(long, requires = "manifest")]
    known: Option<String>,
    /// With --manifest: number of interleaved streams.
    #[arg(long, default_value_t = 4, requires = "manifest")]
    streams: usize,
    /// With --manifest: seed of the clips' random order.
    #[arg(long, default_value_t = 0, requires = "manifest")]
    seed: u64,
    /// With --manifest: segments per second over all streams (0: as fast as acknowledged).
    #[arg(long, default_value_t = 0.0, requires = "manifest")]
    rate: f64,
    /// With --manifest: at most this many clips (0: all).
    #[arg(long, default_value_t = 0, requires = "manifest")]
    limit: usize,
    /// Video files, or directories of them (taken in name order).
    #[arg(required_unless_present = "manifest")]
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

#[derive(Args)]
struct EvalArgs {
    /// Data set: an audio-visual manifest (manifest.json, or its folder; see `novelstream dataset
    /// av-digits`), a folder of IDX files (MNIST layout, plain or .gz), or a folder with train/
    /// and test/ folders holding one sub-folder of images per class.
    #[arg(long)]
    dataset: PathBuf,
    /// Known classes (labelled during training), e.g. `0-4`.
    #[arg(long, default_value = "0-4")]
    known: String,
    /// Novel classes (unlabelled during training, to be discovered), e.g. `5-9`.
    #[arg(long, default_value = "5-9")]
    novel: String,
    /// Seed of the weights, the sampling and the WTA permutations.
    #[arg(long, default_value_t = 0)]
    seed: i64,
    /// Training steps of the method.
    #[arg(long, default_value_t = 3000)]
    steps: u64,
    /// Training steps of the supervised encoder of the k-means baseline.
    #[arg(long, default_value_t = 300)]
    baseline_steps: u64,
    /// Also measure the test split every this many steps: the learning curve in results.json
    /// (0: only at the end).
    #[arg(long, default_value_t = 0)]
    curve_every: u64,
    /// Where results.json goes.
    #[arg(long, default_value = "results.json")]
    out: PathBuf,
    /// Where predictions.csv goes (index,true_label,cluster per test sample).
    #[arg(long, default_value = "predictions.csv")]
    predictions: PathBuf,
    /// Config file whose [model] and [train] sections are used (defaults otherwise).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Pairwise pseudo labels: the method's WTA hash, or an ablation.
    #[arg(long, value_enum)]
    pseudo_labels: Option<novelstream::train::PseudoLabelKind>,
    /// Pairs in the same k-means cluster of the memory bank's unlabelled keys join the pseudo
    /// labels: off (the paper's method), union or agree (default: train.cluster_pairs).
    #[arg(long, value_enum)]
    cluster_pairs: Option<novelstream::train::ClusterPairs>,
    /// Ablation: no instance discrimination (two views of a window as the positive pair).
    #[arg(long)]
    no_instance: bool,
    /// Ablation: no category discrimination (labelled windows of one class as positives).
    #[arg(long)]
    no_category: bool,
    /// Ablation: no pairwise BCE through the unlabelled head (the pseudo labels go unused).
    #[arg(long)]
    no_bce: bool,
    /// Ablation: no consistency between the heads' outputs on two views.
    #[arg(long)]
    no_consistency: bool,
    /// Ablation: contrast against the batch only, without the memory bank of momentum keys.
    #[arg(long)]
    no_memory_bank: bool,
    /// Which encoders make `z` (default: model.modality of the config, else visual); audio and
    /// both need an audio-visual data set.
    #[arg(long, value_enum)]
    modality: Option<novelstream::config::Modality>,
    /// Contrastive pairs: within-modal, cross-modal (visual against audio keys and back) or both
    /// (default: train.contrast of the config, else both).
    #[arg(long, value_enum)]
    contrast: Option<novelstream::config::Contrast>,
    /// Side length images of folder data sets and clip frames are scaled to.
    #[arg(long, default_value_t = 32)]
    image_size: u32,
    /// Frames per window of an audio-visual clip.
    #[arg(long, default_value_t = 2)]
    frames: usize,
    /// Where the model runs: auto, cpu or cuda.
    #[arg(long, default_value = "auto")]
    device: String,
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
        Command::Eval(args) => eval(args),
        Command::Dataset(DatasetCommand::AvDigits(args)) => av_digits(args),
        Command::Score(args) => score(args),
        Command::Report(args) => report(args),
        Command::Bench(BenchCommand::Decode(args)) => bench_decode(args),
        Command::Bench(BenchCommand::Assign(args)) => bench_assign(args),
        Command::Bench(BenchCommand::Train(args)) => bench_train(args),
    }
}

fn bench_assign(args: BenchAssignArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
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
    for run in novelstream::bench::assign(&config, device, &args.batch, args.batches) {
        println!("| {} | {:.1} | {:.1} | {:.1} |", run.batch, run.windows_per_s, 1e3 * run.p50_s, 1e3 * run.p99_s);
    }
    Ok(())
}

fn bench_train(args: BenchTrainArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    config.validate()?;
    let device = novelstream::model::select_device(config.model.device)?;
    let (m, d, t) = (&config.model, &config.decode, &config.train);
    let run = novelstream::bench::train(&config, device, args.steps, args.warmup)
        .map_err(|e| anyhow::anyhow!("bench train: {e}"))?;
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

fn bench_decode(args: BenchDecodeArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let d = &config.decode;
    let (product, cli) =
        novelstream::bench::decode(&args.clip, d, args.repeat).map_err(|e| anyhow::anyhow!("bench decode: {e}"))?;
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

fn read_manifest(path: &std::path::Path) -> anyhow::Result<novelstream::eval::av_digits::AvManifest> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not an av-digits manifest", path.display()))
}

fn report(args: ReportArgs) -> anyhow::Result<()> {
    use novelstream::report::{render, ReportInput, ReportOptions};
    use novelstream::sink::{ModelRecord, MODEL_KEY};
    use novelstream::source::{parse_segment, Media, UriPolicy};
    let started = std::time::Instant::now();
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    args.kafka.apply(&mut config.kafka);
    config.validate()?;
    let k = &config.kafka;
    let records = novelstream::summary::read_topic_timed(k, &k.output_topic, args.expect, args.timeout)?;
    if records.is_empty() {
        bail!("no assignments on topic {} at {}", k.output_topic, k.brokers);
    }
    let records: Vec<(Vec<u8>, i64)> = records.into_iter().map(|(_, p, t)| (p, t)).collect();
    let model: Option<ModelRecord> = read_topic(k, &k.clusters_topic, 0, Duration::from_secs(5))?
        .into_iter()
        .rev()
        .filter(|(key, _)| key == MODEL_KEY)
        .find_map(|(_, payload)| serde_json::from_slice(&payload).ok());
    // The segments, to find each exemplar's media; unusable ones are skipped, as the daemon did.
    let mut segments = std::collections::HashMap::new();
    for r in novelstream::summary::read_records(k, &k.input_topic, 0, Duration::from_secs(10))? {
        let headers: Vec<(&str, &[u8])> = r.headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
        if let Ok(segment) =
            parse_segment(Some(&r.payload), &headers, &config.model.known_classes, config.source.max_segment_bytes)
        {
            segments.insert(segment.segment_id.clone(), segment.media);
        }
    }
    let policy = UriPolicy::new(&config.source)?;
    let media = |segment_id: &str| -> Result<Vec<u8>, String> {
        match segments.get(segment_id) {
            Some(Media::Inline(bytes)) => Ok(bytes.clone()),
            Some(Media::Uri(uri)) => policy.fetch(uri).map_err(|e| e.to_string()),
            None => Err(format!("segment {segment_id} is no longer on topic {}", k.input_topic)),
        }
    };
    let (score, truth) = match &args.truth {
        Some(path) => {
            let manifest = read_manifest(path)?;
            let score = novelstream::score::score(&records, &manifest, args.split.as_deref(), args.slices, None);
            let truth: std::collections::HashMap<String, String> = manifest
                .clips
                .iter()
                .filter(|c| args.split.as_deref().is_none_or(|s| c.split == s))
                .map(|c| (c.path.to_string_lossy().into_owned(), c.label.clone()))
                .collect();
            (Some(score), Some(truth))
        }
        None => (None, None),
    };
    let input = ReportInput {
        records: &records,
        model: model.as_ref(),
        score: score.as_ref(),
        truth: truth.as_ref(),
        decode: &config.decode,
    };
    let options = ReportOptions {
        exemplars: args.exemplars,
        frames: args.frames,
        thumb_height: args.thumb,
        title: format!("novelstream report: {}", k.output_topic),
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ..Default::default()
    };
    let (html, stats) = render(&input, &options, &media);
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

fn score(args: ScoreArgs) -> anyhow::Result<()> {
    use novelstream::score::{accuracy_svg, score};
    let mut truth = read_manifest(&args.truth)?;
    if let Some(list) = &args.segments {
        let text = std::fs::read_to_string(list).with_context(|| format!("reading {}", list.display()))?;
        let sent: std::collections::HashSet<&str> = text.lines().filter_map(|l| l.split_whitespace().next()).collect();
        truth.clips.retain(|c| sent.contains(c.path.to_string_lossy().as_ref()));
    }
    let kafka = KafkaConfig { brokers: args.brokers, ..Default::default() };
    let records = novelstream::summary::read_topic_timed(&kafka, &args.topic, args.expect, args.timeout)?;
    let records: Vec<(Vec<u8>, i64)> = records.into_iter().map(|(_, p, t)| (p, t)).collect();
    let segments = novelstream::summary::read_records(&kafka, &args.input_topic, 0, Duration::from_secs(10))?;
    let sent = novelstream::score::segment_times(&segments);
    let report = score(&records, &truth, args.split.as_deref(), args.slices, Some(&sent));
    std::fs::write(&args.out, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    std::fs::write(&args.svg, accuracy_svg(&report)).with_context(|| format!("writing {}", args.svg.display()))?;
    println!(
        "{} windows of {} segments: novel accuracy {:.1}% (last half {:.1}%), NMI {:.3}, ARI {:.3} over {} windows; known accuracy {:.1}% over {}",
        report.windows,
        report.segments,
        100.0 * report.novel_accuracy,
        100.0 * report.last_half_novel_accuracy,
        report.novel_nmi,
        report.novel_ari,
        report.novel_windows,
        100.0 * report.known_accuracy,
        report.known_windows
    );
    let curve: Vec<String> =
        report.slices.iter().map(|s| s.novel_accuracy.map_or("-".into(), |a| format!("{:.0}%", 100.0 * a))).collect();
    println!("accuracy over time: {}", curve.join(" "));
    println!(
        "completeness: windows per segment {:?}, {} duplicate windows, {} segments missing, {} not in the truth",
        report.windows_per_segment, report.duplicate_windows, report.missing_segments, report.unknown_segments
    );
    if let Some(l) = &report.latency {
        println!(
            "latency from segment published to assignment published: p50 {} ms, p95 {} ms, p99 {} ms, max {} ms over {} windows",
            l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms, l.windows
        );
    }
    println!("wrote {} and {}", args.out.display(), args.svg.display());
    Ok(())
}

fn av_digits(args: AvDigitsArgs) -> anyhow::Result<()> {
    use novelstream::eval::av_digits::{build_av_digits, AvDigitsOptions};
    let started = std::time::Instant::now();
    let options = AvDigitsOptions {
        mnist: args.mnist,
        speech: args.speech,
        out: args.out,
        seed: args.seed,
        train_per_class: args.train_per_class,
        test_per_class: args.test_per_class,
        test_languages: args.test_languages,
        size: args.size,
        fps: args.fps,
        clip_ms: args.clip.as_millis() as u64,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ..Default::default()
    };
    let manifest = build_av_digits(&options)?;
    let count = |split: &str| manifest.clips.iter().filter(|c| c.split == split).count();
    println!(
        "wrote {} train and {} test clips to {} in {}; test speakers: {}",
        count("train"),
        count("test"),
        options.out.join("manifest.json").display(),
        humantime::format_duration(Duration::from_secs(started.elapsed().as_secs())),
        manifest.test_languages.join(", ")
    );
    Ok(())
}

fn eval(args: EvalArgs) -> anyhow::Result<()> {
    use novelstream::config::DevicePreference;
    use novelstream::eval::{evaluate, parse_classes, write_outputs, EvalOptions};
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let mut train = config.train.clone();
    if let Some(mode) = args.cluster_pairs {
        train.cluster_pairs = mode;
    }
    if let Some(kind) = args.pseudo_labels {
        train.pseudo_labels = kind;
    }
    train.instance_contrast &= !args.no_instance;
    train.category_contrast &= !args.no_category;
    train.pairwise_bce &= !args.no_bce;
    train.consistency &= !args.no_consistency;
    train.memory_bank &= !args.no_memory_bank;
    let mut model = config.model.clone();
    if let Some(modality) = args.modality {
        model.modality = modality;
    }
    if let Some(contrast) = args.contrast {
        train.contrast = contrast;
    }
    if train.contrast == novelstream::config::Contrast::Cross && model.modality != novelstream::config::Modality::Both {
        bail!("--contrast cross compares visual with audio keys: it needs --modality both");
    }
    if args.frames == 0 {
        bail!("--frames must be at least 1");
    }
    let preference = match args.device.as_str() {
        "auto" => DevicePreference::Auto,
        "cpu" => DevicePreference::Cpu,
        "cuda" => DevicePreference::Cuda,
        other => bail!("--device must be auto, cpu or cuda, not `{other}`"),
    };
    let options = EvalOptions {
        dataset: args.dataset,
        known: parse_classes(&args.known).map_err(|e| anyhow::anyhow!("--known: {e}"))?,
        novel: parse_classes(&args.novel).map_err(|e| anyhow::anyhow!("--novel: {e}"))?,
        seed: args.seed,
        steps: args.steps,
        baseline_steps: args.baseline_steps,
        image_size: args.image_size,
        frames: args.frames,
        model,
        train,
        device: novelstream::model::select_device(preference)?,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        curve_every: args.curve_every,
    };
    let (results, rows) = evaluate(&options)?;
    write_outputs(&results, &rows, &args.out, &args.predictions)?;
    let m = &results.method;
    let b = &results.baselines;
    println!(
        "novel classes {:?}: accuracy {:.2}%  NMI {:.3}  ARI {:.3}  (known-class accuracy {:.2}%)",
        results.novel_classes,
        100.0 * m.novel.accuracy,
        m.novel.nmi,
        m.novel.ari,
        100.0 * m.known_accuracy
    );
    println!(
        "baselines: k-means on pixels {:.2}%, k-means on supervised features {:.2}%",
        100.0 * b.kmeans_raw_pixels.accuracy,
        100.0 * b.kmeans_supervised_features.accuracy
    );
    println!(
        "k-means on the trained features {:.2}%; trained {} steps in {} ({} in all); wrote {} and {}",
        100.0 * m.kmeans_on_features.accuracy,
        results.steps,
        humantime::format_duration(Duration::from_secs(m.train_seconds.round() as u64)),
        humantime::format_duration(Duration::from_secs(results.wall_seconds.round() as u64)),
        args.out.display(),
        args.predictions.display()
    );
    Ok(())
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
    if let Some(manifest) = args.manifest {
        let known = match &args.known {
            Some(text) => novelstream::eval::parse_classes(text)
                .map_err(|e| anyhow::anyhow!("--known: {e}"))?
                .into_iter()
                .map(|c| c.to_string())
                .collect(),
            None => Vec::new(),
        };
        let options = novelstream::produce::ManifestOptions {
            topic: args.topic,
            manifest,
            split: args.split,
            known,
            streams: args.streams,
            seed: args.seed,
            rate: args.rate,
            limit: args.limit,
            inline: args.inline,
        };
        let produced = novelstream::produce::produce_manifest(&kafka, &options).await?;
        for p in &produced {
            println!("{} {} partition {} offset {}", p.segment_id, p.path.display(), p.partition, p.offset);
        }
        eprintln!("published {} clips on {} streams to {}", produced.len(), options.streams, options.topic);
        return Ok(());
    }
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
