//! Records as the daemon publishes them, for the tools' unit tests.

use super::TopicRecord;
use crate::sink::{Assignment, Kind, ASSIGNMENT_SCHEMA};

/// The record of window 0 (0–1000 ms) of `segment` on stream `cam`, published at `time`.
pub(crate) fn assignment(
    segment: &str,
    kind: Kind,
    cluster: &str,
    confidence: f64,
    version: u64,
    time: i64,
) -> TopicRecord {
    let a = Assignment {
        schema: ASSIGNMENT_SCHEMA.into(),
        stream_id: "cam".into(),
        segment_id: segment.into(),
        seq: 0,
        window: 0,
        start_ms: 0,
        end_ms: 1000,
        kind,
        cluster: cluster.into(),
        confidence,
        model_version: version,
    };
    TopicRecord {
        key: a.stream_id.clone(),
        payload: serde_json::to_vec(&a).unwrap(),
        headers: vec![],
        timestamp_ms: time,
        partition: 0,
    }
}
