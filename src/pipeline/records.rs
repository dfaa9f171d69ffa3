//! The records one input message becomes: an assignment per window, or one dead letter.

use std::sync::Mutex;

use super::{now_ms, Decoded};
use crate::assign::{Assigner, Decision};
use crate::sink::{Assignment, ClusterTable, DeadLetter, OutRecord, ASSIGNMENT_SCHEMA};
use crate::source::{Coordinates, Segment};

/// The assignments of a decoded segment's windows, `decisions` (the assigner's, in window
/// order), on `topic`; each is also counted in `clusters` when this process writes the clusters
/// topic.
pub(super) fn assignment_records(
    assigner: &Assigner,
    decoded: &Decoded,
    decisions: Vec<Decision>,
    topic: &str,
    clusters: Option<&Mutex<ClusterTable>>,
) -> Vec<OutRecord> {
    let segment = &decoded.segment;
    let now_ms = now_ms();
    let mut clusters = clusters.map(|c| c.lock().expect("cluster table lock"));
    decoded
        .windows
        .iter()
        .zip(decisions)
        .map(|(window, decision)| {
            let assignment = Assignment {
                schema: ASSIGNMENT_SCHEMA.to_owned(),
                stream_id: segment.stream_id.clone(),
                segment_id: segment.segment_id.clone(),
                seq: segment.seq,
                window: window.index,
                start_ms: window.start_ms,
                end_ms: window.end_ms,
                kind: decision.kind,
                cluster: decision.cluster,
                confidence: decision.confidence,
                model_version: assigner.version(),
            };
            if let Some(clusters) = clusters.as_mut() {
                clusters.observe(&assignment, now_ms);
            }
            OutRecord {
                topic: topic.to_owned(),
                key: segment.stream_id.clone(),
                payload: serde_json::to_vec(&assignment).expect("assignments serialize"),
            }
        })
        .collect()
}

/// The dead letter of an input message, on `topic`.
pub(super) fn dead_letter_record(
    topic: &str,
    coordinates: &Coordinates,
    segment: Option<&Segment>,
    (reason, detail, retriable): (&str, String, bool),
) -> OutRecord {
    // The detail quotes the input (a label, a URI): escaped, it cannot forge log lines.
    tracing::warn!(reason, detail = %detail.escape_debug(), topic = %coordinates.topic, partition = coordinates.partition,
        offset = coordinates.offset, "dead letter");
    let mut letter = DeadLetter::new(coordinates, reason, detail);
    letter.retriable = retriable;
    letter.stream_id = segment.map(|s| s.stream_id.clone());
    letter.segment_id = segment.map(|s| s.segment_id.clone());
    OutRecord {
        topic: topic.to_owned(),
        key: coordinates.key.clone().unwrap_or_default(),
        payload: serde_json::to_vec(&letter).expect("dead letters serialize"),
    }
}
