//! Reading a topic back from its beginning: what the daemon published, for `summary`, `score`,
//! `report`, the demo and the tests.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::ToolError;
use crate::config::KafkaConfig;

/// One record read back from a topic.
#[derive(Debug, Clone)]
pub struct TopicRecord {
    /// The record's key as text (empty if none).
    pub key: String,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Milliseconds since the epoch, 0 if the record has none.
    pub timestamp_ms: i64,
    /// The partition it was read from.
    pub partition: i32,
}

impl TopicRecord {
    fn of(m: &BorrowedMessage) -> Self {
        let headers = m
            .headers()
            .map(|h| h.iter().map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec())).collect())
            .unwrap_or_default();
        TopicRecord {
            key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default(),
            payload: m.payload().unwrap_or_default().to_vec(),
            headers,
            timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
            partition: m.partition(),
        }
    }
}

/// Every record of `topic` from the beginning, once at least `expect` records are there or
/// `timeout` passed (whichever is first; `expect = 0` reads what is there).
pub fn read_topic(
    kafka: &KafkaConfig,
    topic: &str,
    expect: usize,
    timeout: Duration,
) -> Result<Vec<TopicRecord>, ToolError> {
    let mut client = kafka.client_config();
    client
        .set("group.id", format!("novelstream-reader-{}", uuid::Uuid::new_v4().simple()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = client.create().map_err(ToolError::kafka("creating reader"))?;
    let deadline = Instant::now() + timeout;
    let partitions = wait_for_partitions(&consumer, topic, deadline);
    let mut list = TopicPartitionList::new();
    for &p in &partitions {
        list.add_partition_offset(topic, p, Offset::Beginning).map_err(ToolError::kafka("assigning partitions"))?;
    }
    consumer.assign(&list).map_err(ToolError::kafka("assigning partitions"))?;
    let mut records = Vec::new();
    loop {
        let idle = match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                records.push(TopicRecord::of(&m));
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

/// The topic's partitions, once the broker knows the topic (or none at the deadline: a topic
/// not created yet reads as empty).
fn wait_for_partitions(consumer: &BaseConsumer, topic: &str, deadline: Instant) -> Vec<i32> {
    loop {
        let found = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .ok()
            .and_then(|m| m.topics().first().map(|t| t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>()))
            .unwrap_or_default();
        if !found.is_empty() || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
