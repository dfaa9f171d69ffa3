//! Reading a topic back: what the daemon published, for `novelstream summary`, the demo and tests.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::KafkaConfig;
use crate::sink::{Assignment, DeadLetter, Kind};
use crate::{Error, Result};

/// Every record of `topic` from the beginning, as (key, payload), once at least `expect`
/// records are there or `timeout` passed (whichever is first; `expect = 0` reads what is there).
pub fn read_topic(
    kafka: &KafkaConfig,
    topic: &str,
    expect: usize,
    timeout: Duration,
) -> Result<Vec<(String, Vec<u8>)>> {
    Ok(read_topic_timed(kafka, topic, expect, timeout)?.into_iter().map(|(k, p, _)| (k, p)).collect())
}

/// Like [`read_topic`], with each record's timestamp (milliseconds since the epoch, 0 if none).
pub fn read_topic_timed(
    kafka: &KafkaConfig,
    topic: &str,
    expect: usize,
    timeout: Duration,
) -> Result<Vec<(String, Vec<u8>, i64)>> {
    Ok(read_records(kafka, topic, expect, timeout)?.into_iter().map(|r| (r.key, r.payload, r.timestamp_ms)).collect())
}

/// One record read back from a topic.
#[derive(Debug, Clone)]
pub struct TopicRecord {
    pub key: String,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Milliseconds since the epoch, 0 if the record has none.
    pub timestamp_ms: i64,
}

/// Like [`read_topic`], with each record's headers and timestamp.
pub fn read_records(kafka: &KafkaConfig, topic: &str, expect: usize, timeout: Duration) -> Result<Vec<TopicRecord>> {
    let mut client = kafka.client_config();
    client
        .set("group.id", format!("novelstream-reader-{}", uuid::Uuid::new_v4().simple()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = client.create().map_err(Error::kafka("creating reader"))?;
    let deadline = Instant::now() + timeout;
    let partitions: Vec<i32> = loop {
        let found = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .ok()
            .and_then(|m| m.topics().first().map(|t| t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>()))
            .unwrap_or_default();
        if !found.is_empty() || Instant::now() > deadline {
            break found;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut list = TopicPartitionList::new();
    for &p in &partitions {
        list.add_partition_offset(topic, p, Offset::Beginning).map_err(Error::kafka("assigning partitions"))?;
    }
    consumer.assign(&list).map_err(Error::kafka("assigning partitions"))?;
    let mut records = Vec::new();
    loop {
        let idle = match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|h| h.iter().map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec())).collect())
                    .unwrap_or_default();
                records.push(TopicRecord {
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default(),
                    payload: m.payload().unwrap_or_default().to_vec(),
                    headers,
                    timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
                });
                false
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "reader error");
                true
            }
            None => true,
        };
        let timed_out = Instant::now() >= deadline;
        if timed_out || (idle && records.len() >= expect) {
            // Done once caught up with everything the topic holds now.
            let end: i64 = partitions
                .iter()
                .filter_map(|&p| consumer.fetch_watermarks(topic, p, Duration::from_secs(5)).ok())
                .map(|(low, high)| high - low)
                .sum();
            if timed_out || records.len() as i64 >= end {
                return Ok(records);
            }
        }
    }
}

/// Counts per stream and cluster of published assignments, and dead letters by reason.
#[derive(Debug, Default)]
pub struct Summary {
    pub assignments: usize,
    pub unreadable: usize,
    pub by_stream: BTreeMap<String, usize>,
    pub by_cluster: BTreeMap<(String, String), usize>,
    pub model_versions: BTreeMap<u64, usize>,
    pub dead_letters: BTreeMap<String, usize>,
}

impl Summary {
    pub fn new(assignments: &[(String, Vec<u8>)], dead_letters: &[(String, Vec<u8>)]) -> Self {
        let mut s = Summary::default();
        for (_, payload) in assignments {
            match serde_json::from_slice::<Assignment>(payload) {
                Ok(a) => {
                    s.assignments += 1;
                    *s.by_stream.entry(a.stream_id).or_default() += 1;
                    let kind = match a.kind {
                        Kind::Known => "known",
                        Kind::Novel => "novel",
                    };
                    *s.by_cluster.entry((kind.to_owned(), a.cluster)).or_default() += 1;
                    *s.model_versions.entry(a.model_version).or_default() += 1;
                }
                Err(_) => s.unreadable += 1,
            }
        }
        for (_, payload) in dead_letters {
            let reason =
                serde_json::from_slice::<DeadLetter>(payload).map(|d| d.reason).unwrap_or_else(|_| "unreadable".into());
            *s.dead_letters.entry(reason).or_default() += 1;
        }
        s
    }

    /// A readable report for a terminal.
    pub fn render(&self) -> String {
        let mut out = format!("{} window assignments", self.assignments);
        if self.unreadable > 0 {
            out += &format!(" ({} unreadable records)", self.unreadable);
        }
        out += "\n\nper stream:\n";
        for (stream, n) in &self.by_stream {
            out += &format!("  {stream:<24} {n:>6} windows\n");
        }
        out += "\nper cluster:\n";
        for ((kind, cluster), n) in &self.by_cluster {
            out += &format!("  {kind:<6} {cluster:<17} {n:>6} windows\n");
        }
        out += "\nmodel versions: ";
        out += &self.model_versions.iter().map(|(v, n)| format!("v{v} ({n} windows)")).collect::<Vec<_>>().join(", ");
        let dead: usize = self.dead_letters.values().sum();
        out += &format!("\n\n{dead} dead letters");
        for (reason, n) in &self.dead_letters {
            out += &format!("\n  {reason:<24} {n:>6}");
        }
        out + "\n"
    }
}
