//! `novelstream produce`: publishes video files, or the clips of an av-digits manifest, as
//! segments.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use novelstream::config::KafkaConfig;
use novelstream::tools::produce::{produce, produce_manifest, ManifestOptions, ProduceOptions, Produced};

/// Arguments of `produce`.
#[derive(Args)]
pub struct ProduceArgs {
    /// Bootstrap servers.
    #[arg(long, env = "NOVELSTREAM_BROKERS", default_value_t = KafkaConfig::default().brokers)]
    brokers: String,
    /// Topic to publish segments to.
    #[arg(long, default_value_t = KafkaConfig::default().input_topic)]
    topic: String,
    /// Create the topic with this many partitions first when it does not exist (replication:
    /// the broker's default); without it a missing topic is created as the broker's settings say.
    #[arg(long)]
    partitions: Option<i32>,
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
    /// With --manifest: share of the known classes' clips sent without their label (the open
    /// world: most unlabelled windows are of known classes).
    #[arg(long, default_value_t = 0.0, requires = "manifest")]
    unlabelled_known_fraction: f64,
    /// With --manifest: novel classes entering in stages, e.g. `5,6:7,8:9`: the classes after
    /// the n-th `:` are sent only once the stages before have run --stage-time each (needs
    /// --rate).
    #[arg(long, requires = "manifest")]
    novel_stages: Option<String>,
    /// With --novel-stages: how long each stage runs before the next enters.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, requires = "novel_stages")]
    stage_time: std::time::Duration,
    /// With --manifest: number of interleaved streams.
    #[arg(long, default_value_t = 4, requires = "manifest")]
    streams: usize,
    /// With --manifest: seed of the clips' random order.
    #[arg(long, default_value_t = 0, requires = "manifest")]
    seed: u64,
    /// With --manifest: segments per second over all streams (0: as fast as acknowledged).
    #[arg(long, default_value_t = 0.0, requires = "manifest")]
    rate: f64,
    /// With --manifest: segments sent together before their acknowledgements are awaited; the
    /// broker then stores several per partition in one record batch, as most upstream producers
    /// write (1: one record per batch).
    #[arg(long, default_value_t = 1, requires = "manifest")]
    batch: usize,
    /// With --manifest: at most this many clips (0: all).
    #[arg(long, default_value_t = 0, requires = "manifest")]
    limit: usize,
    /// Video files, or directories of them (taken in name order).
    #[arg(required_unless_present = "manifest")]
    paths: Vec<PathBuf>,
}

/// Publishes, then prints each segment's id, file and place on the topic (one a line, for
/// `score --segments`).
pub async fn handle(args: ProduceArgs) -> anyhow::Result<()> {
    let kafka = KafkaConfig { brokers: args.brokers, ..Default::default() };
    if let Some(partitions) = args.partitions {
        let kafka = KafkaConfig { topic_partitions: partitions, ..kafka.clone() };
        novelstream::admin::ensure_topics(&kafka, &[&args.topic]).await?;
    }
    if let Some(manifest) = args.manifest {
        let known = match &args.known {
            Some(text) => novelstream::eval::parse_classes(text)
                .map_err(|e| anyhow::anyhow!("--known: {e}"))?
                .into_iter()
                .map(|c| c.to_string())
                .collect(),
            None => Vec::new(),
        };
        if !(0.0..=1.0).contains(&args.unlabelled_known_fraction) {
            bail!("--unlabelled-known-fraction must be between 0 and 1");
        }
        let novel_stages = match &args.novel_stages {
            Some(text) => parse_stages(text)?,
            None => Vec::new(),
        };
        if !novel_stages.is_empty() && args.rate <= 0.0 {
            bail!("--novel-stages needs --rate: a stage is --stage-time of clips at that rate");
        }
        let options = ManifestOptions {
            topic: args.topic,
            manifest,
            split: args.split,
            known,
            unlabelled_known_fraction: args.unlabelled_known_fraction,
            novel_stages,
            stage_time: args.stage_time,
            streams: args.streams,
            seed: args.seed,
            rate: args.rate,
            limit: args.limit,
            inline: args.inline,
            batch: args.batch,
        };
        let produced = produce_manifest(&kafka, &options).await?;
        print_produced(&produced);
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
    print_produced(&produced);
    if produced.is_empty() {
        bail!("no files to publish");
    }
    Ok(())
}

/// Stages like `5,6:7,8:9`: class lists separated by `:`.
pub fn parse_stages(text: &str) -> anyhow::Result<Vec<Vec<String>>> {
    text.split(':')
        .map(|stage| {
            let classes =
                novelstream::eval::parse_classes(stage).map_err(|e| anyhow::anyhow!("--novel-stages: {e}"))?;
            Ok(classes.into_iter().map(|c| c.to_string()).collect())
        })
        .collect()
}

fn print_produced(produced: &[Produced]) {
    for p in produced {
        println!("{} {} partition {} offset {}", p.segment_id, p.path.display(), p.partition, p.offset);
    }
}
