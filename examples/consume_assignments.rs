//! A downstream consumer of novelstream's assignments: at-least-once consumption with
//! deduplication by (`segment_id`, `window`), the idempotency key of every assignment.
//!
//! The daemon delivers at least once, so after a restart a window may be published again. This
//! consumer handles each window once: it remembers the keys it has handled (a bounded window of
//! the most recent ones), skips repeats, and commits its offsets only after handling, so a crash
//! of the consumer itself re-reads rather than loses.
//!
//!   cargo run --release --example consume_assignments -- --brokers 127.0.0.1:9092 \
//!       --topic novelstream.assignments --group-id my-app
//!
//! Each new window is printed as one line: `stream segment window kind cluster confidence version`.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use clap::Parser;
use novelstream::sink::Assignment;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;

#[derive(Parser)]
#[command(about = "Print novelstream assignments once each, deduplicated by (segment_id, window)")]
struct Args {
    /// Bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// The assignments topic.
    #[arg(long, default_value = "novelstream.assignments")]
    topic: String,
    /// Consumer group: its committed offsets are where a restarted consumer resumes.
    #[arg(long, default_value = "novelstream-example-consumer")]
    group_id: String,
    /// Most recent (segment, window) keys remembered for deduplication.
    #[arg(long, default_value_t = 1_000_000)]
    dedup_capacity: usize,
    /// Exit after this long without a message (default: run until killed).
    #[arg(long, value_parser = humantime::parse_duration)]
    idle_exit: Option<Duration>,
}

/// Keys seen recently; forgets the oldest beyond `capacity`.
struct Seen {
    keys: HashSet<(String, u32)>,
    order: VecDeque<(String, u32)>,
    capacity: usize,
}

impl Seen {
    /// True the first time a key is offered.
    fn first_time(&mut self, key: (String, u32)) -> bool {
        if !self.keys.insert(key.clone()) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.keys.remove(&old);
            }
        }
        true
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("group.id", &args.group_id)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .create()?;
    consumer.subscribe(&[&args.topic])?;
    let mut seen = Seen { keys: HashSet::new(), order: VecDeque::new(), capacity: args.dedup_capacity.max(1) };
    let (mut new, mut repeats) = (0u64, 0u64);
    let mut idle = Duration::ZERO;
    let step = Duration::from_millis(500);
    loop {
        let Some(message) = consumer.poll(step) else {
            idle += step;
            if args.idle_exit.is_some_and(|limit| idle >= limit) {
                break;
            }
            continue;
        };
        idle = Duration::ZERO;
        let message = message?;
        match serde_json::from_slice::<Assignment>(message.payload().unwrap_or_default()) {
            Ok(a) if seen.first_time((a.segment_id.clone(), a.window)) => {
                new += 1;
                println!(
                    "{} {} {} {:?} {} {:.3} v{}",
                    a.stream_id, a.segment_id, a.window, a.kind, a.cluster, a.confidence, a.model_version
                );
            }
            Ok(_) => repeats += 1,
            Err(e) => eprintln!("skipping a record that is not an assignment: {e}"),
        }
        // Handled: only now is the offset committed (at-least-once on this side too).
        consumer.commit_message(&message, CommitMode::Sync)?;
    }
    eprintln!("{new} windows handled, {repeats} repeats skipped");
    Ok(())
}
