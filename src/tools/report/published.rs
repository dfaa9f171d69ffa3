//! What a report is made from, read back from the daemon's topics: the assignments, the latest
//! model record, and the segments whose media the exemplars are decoded from.

use std::collections::HashMap;
use std::time::Duration;

use super::exemplars::MediaError;
use crate::config::Config;
use crate::sink::{ModelRecord, MODEL_KEY};
use crate::source::{parse_segment, Media, UriPolicy};
use crate::tools::score::{sent_segments, Sent};
use crate::tools::{read_topic, ToolError, TopicRecord};

/// What the daemon published, read back for a report.
pub struct Published {
    /// The assignments topic's records (never empty).
    pub records: Vec<TopicRecord>,
    /// The latest model record of the clusters topic, if any.
    pub model: Option<ModelRecord>,
    /// The media of the segments on the input topic.
    pub media: SegmentMedia,
    /// What the input topic said of each segment (its label, if any, and its stream), for the
    /// open world's All / Old / New over the unlabelled windows.
    pub sent: HashMap<String, Sent>,
}

/// Reads the topics of `config.kafka`: the assignments (waiting for `expect` of them, at most
/// `timeout`), then the clusters and the input topic.
pub fn read_published(config: &Config, expect: usize, timeout: Duration) -> Result<Published, ToolError> {
    let k = &config.kafka;
    let records = read_topic(k, &k.output_topic, expect, timeout)?;
    if records.is_empty() {
        return Err(ToolError::NoAssignments { topic: k.output_topic.clone(), brokers: k.brokers.clone() });
    }
    let model = read_topic(k, &k.clusters_topic, 0, Duration::from_secs(5))?
        .into_iter()
        .rev()
        .filter(|r| r.key == MODEL_KEY)
        .find_map(|r| serde_json::from_slice(&r.payload).ok());
    let segments = read_topic(k, &k.input_topic, 0, Duration::from_secs(10))?;
    Ok(Published { records, model, sent: sent_segments(&segments), media: SegmentMedia::read(config, &segments)? })
}

/// Each segment's media, as the daemon fetched it: inline bytes, or a URI the source policy
/// allows.
pub struct SegmentMedia {
    segments: HashMap<String, Media>,
    policy: UriPolicy,
    topic: String,
    /// How long one fetch may take: the daemon's decode deadline.
    timeout: Duration,
}

impl SegmentMedia {
    /// The media of the input topic's `records`; unusable segments are skipped, as the daemon
    /// did.
    pub fn read(config: &Config, records: &[TopicRecord]) -> Result<Self, ToolError> {
        let k = &config.kafka;
        let mut segments = HashMap::new();
        for r in records {
            let headers: Vec<(&str, &[u8])> = r.headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
            let (known, max_bytes) = (&config.model.known_classes, config.source.max_segment_bytes);
            if let Ok(segment) = parse_segment(Some(&r.payload), &headers, known, max_bytes) {
                segments.insert(segment.segment_id.clone(), segment.media);
            }
        }
        Ok(SegmentMedia {
            segments,
            policy: UriPolicy::new(&config.source)?,
            topic: k.input_topic.clone(),
            timeout: config.decode.timeout,
        })
    }

    /// The bytes of a segment's media.
    pub fn fetch(&self, segment_id: &str) -> Result<Vec<u8>, MediaError> {
        match self.segments.get(segment_id) {
            Some(Media::Inline(bytes)) => Ok(bytes.clone()),
            Some(Media::Uri(uri)) => Ok(self.policy.fetch(uri, std::time::Instant::now() + self.timeout)?),
            None => Err(MediaError::NotOnTopic { segment_id: segment_id.to_owned(), topic: self.topic.clone() }),
        }
    }
}
