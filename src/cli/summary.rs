//! `novelstream summary`: counts of what the daemon published.

use std::time::Duration;

use anyhow::bail;
use clap::Args;
use novelstream::config::KafkaConfig;
use novelstream::tools::read_topic;
use novelstream::tools::summary::Summary;

/// Arguments of `summary`.
#[derive(Args)]
pub struct SummaryArgs {
    /// Bootstrap servers.
    #[arg(long, env = "NOVELSTREAM_BROKERS", default_value_t = KafkaConfig::default().brokers)]
    brokers: String,
    /// Assignment topic.
    #[arg(long, default_value_t = KafkaConfig::default().output_topic)]
    topic: String,
    /// Dead-letter topic.
    #[arg(long, default_value_t = KafkaConfig::default().dead_letter_topic)]
    dead_letter_topic: String,
    /// Wait until at least this many assignments are published (or the timeout passes).
    #[arg(long, default_value_t = 0)]
    expect: usize,
    /// Longest wait for the expected assignments.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// Prints the summary; fails when fewer than `--expect` assignments were published in time.
pub fn handle(args: SummaryArgs) -> anyhow::Result<()> {
    let kafka = KafkaConfig { brokers: args.brokers, ..Default::default() };
    let assignments = read_topic(&kafka, &args.topic, args.expect, args.timeout)?;
    let dead_letters = read_topic(&kafka, &args.dead_letter_topic, 0, Duration::from_secs(5))?;
    print!("{}", Summary::new(&assignments, &dead_letters).render());
    if assignments.len() < args.expect {
        bail!("expected {} assignments within {:?}, found {}", args.expect, args.timeout, assignments.len());
    }
    Ok(())
}
