//! `novelstream score`: what the daemon published against the truth of the streamed clips.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use novelstream::config::KafkaConfig;
use novelstream::tools::charts::accuracy_svg;
use novelstream::tools::manifest::read_manifest;
use novelstream::tools::read_topic;
use novelstream::tools::score::{first_publications, predictions_csv, score, sent_segments, ScoreReport};

/// Arguments of `score`.
#[derive(Args)]
pub struct ScoreArgs {
    /// Bootstrap servers.
    #[arg(long, env = "NOVELSTREAM_BROKERS", default_value_t = KafkaConfig::default().brokers)]
    brokers: String,
    /// The assignments topic.
    #[arg(long, default_value_t = KafkaConfig::default().output_topic)]
    topic: String,
    /// The segments topic: each segment's publish time there gives the assignment latency.
    #[arg(long, default_value_t = KafkaConfig::default().input_topic)]
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
    /// The novel classes' stages as `produce --novel-stages` sent them (e.g. `5,6:7,8:9`): All /
    /// Old / New are also reported per stage, each from the first window of one of its classes.
    #[arg(long)]
    novel_stages: Option<String>,
    /// Wait until at least this many distinct windows (segment, window) are published (or
    /// --timeout); redeliveries of a window count once.
    #[arg(long, default_value_t = 0)]
    expect: usize,
    /// How long to wait for --expect assignments.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Where the full report (JSON) goes.
    #[arg(long, default_value = "score.json")]
    out: PathBuf,
    /// Also write every window's first publication, with its truth and the label its segment
    /// carried, as CSV (`published_ms,segment_id,window,true_label,sent_label,prediction,
    /// model_version`), to recompute any number of the report from.
    #[arg(long)]
    predictions: Option<PathBuf>,
    /// Where the accuracy-over-time curve (SVG) goes.
    #[arg(long, default_value = "accuracy.svg")]
    svg: PathBuf,
}

/// Scores the assignments topic, writes the report and the curve, and prints the gist.
pub fn handle(args: ScoreArgs) -> anyhow::Result<()> {
    let mut truth = read_manifest(&args.truth)?;
    if let Some(list) = &args.segments {
        let text = std::fs::read_to_string(list).with_context(|| format!("reading {}", list.display()))?;
        let sent: std::collections::HashSet<&str> = text.lines().filter_map(|l| l.split_whitespace().next()).collect();
        truth.clips.retain(|c| sent.contains(c.path.to_string_lossy().as_ref()));
    }
    let kafka = KafkaConfig { brokers: args.brokers, ..Default::default() };
    let records = read_distinct(&kafka, &args.topic, args.expect, args.timeout)?;
    let segments = read_topic(&kafka, &args.input_topic, 0, Duration::from_secs(10))?;
    let sent = sent_segments(&segments);
    let stages = match &args.novel_stages {
        Some(text) => super::produce::parse_stages(text)?,
        None => Vec::new(),
    };
    let report = score(&records, &truth, args.split.as_deref(), args.slices, Some(&sent), &stages);
    if let Some(path) = &args.predictions {
        let csv = predictions_csv(&records, &truth, args.split.as_deref(), Some(&sent));
        std::fs::write(path, csv).with_context(|| format!("writing {}", path.display()))?;
    }
    std::fs::write(&args.out, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    std::fs::write(&args.svg, accuracy_svg(&report)).with_context(|| format!("writing {}", args.svg.display()))?;
    print_report(&report);
    println!("wrote {} and {}", args.out.display(), args.svg.display());
    Ok(())
}

/// The topic's records once they hold `expect` distinct windows, or at the deadline: after
/// crashes, redelivered windows can make the record count reach `expect` before every window is
/// there.
fn read_distinct(
    kafka: &KafkaConfig,
    topic: &str,
    expect: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<novelstream::tools::TopicRecord>> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        // Each read gets at least 10 s, so that the last one still reads the whole topic.
        let left = deadline.saturating_duration_since(std::time::Instant::now()).max(Duration::from_secs(10));
        let records = read_topic(kafka, topic, expect, left)?;
        let distinct = first_publications(&records).0.len();
        if distinct >= expect || std::time::Instant::now() >= deadline {
            return Ok(records);
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn print_report(report: &ScoreReport) {
    if let Some(w) = &report.open_world {
        let pct = |a: f64| 100.0 * a;
        println!(
            "open world, {} unlabelled windows (known classes {:?}): all {:.1}%, old {:.1}%, new {:.1}%; last third all {:.1}%, old {:.1}%, new {:.1}%, {} novel classes under {} novel ids",
            w.windows,
            w.known_classes,
            pct(w.accuracy.all),
            pct(w.accuracy.old),
            pct(w.accuracy.new),
            pct(w.last_third.all),
            pct(w.last_third.old),
            pct(w.last_third.new),
            w.novel_classes_last_third,
            w.novel_ids_last_third
        );
        let curve: Vec<String> = w.slices.iter().map(|s| format!("{:.0}%", pct(s.accuracy.all))).collect();
        println!("all over time: {}", curve.join(" "));
        for s in &w.stages {
            println!(
                "stage {} (enter {:?}): {} windows, all {:.1}%, old {:.1}%, new {:.1}%, {} novel classes under {} novel ids",
                s.index,
                s.classes,
                s.windows,
                pct(s.accuracy.all),
                pct(s.accuracy.old),
                pct(s.accuracy.new),
                s.novel_classes,
                s.novel_ids
            );
        }
        let arrivals: Vec<String> = w
            .arrivals
            .iter()
            .map(|a| match (a.own_cluster_after_s, &a.cluster) {
                (Some(s), Some(id)) => format!("{} -> {id} after {s:.0} s", a.class),
                _ => format!("{} -> no cluster of its own", a.class),
            })
            .collect();
        println!("novel classes, time from arrival to a cluster of their own: {}", arrivals.join(", "));
    }
    println!(
        "task-aware: {} windows of {} segments: novel accuracy {:.1}% (last half {:.1}%), NMI {:.3}, ARI {:.3} over {} windows; known accuracy {:.1}% over {}",
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
}
