//! The dead-letter record: one per unusable input, with the reason and where it came from.

use serde::{Deserialize, Serialize};

use crate::source::Coordinates;

/// Schema version written into every dead-letter record.
pub const DEAD_LETTER_SCHEMA: &str = "novelstream.dead-letter.v1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub schema: String,
    /// Stable machine-readable cause, e.g. `bad_message`, `undecodable`, `refused_uri`.
    pub reason: String,
    /// Human-readable explanation.
    pub detail: String,
    /// Whether the input might be usable when tried again (the machine was short of time, file
    /// descriptors or memory), after the daemon's own retries failed; `false` when it is the
    /// input itself that is unusable.
    #[serde(default)]
    pub retriable: bool,
    /// Coordinates of the original input message.
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Known when the message parsed far enough to tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_id: Option<String>,
}

impl DeadLetter {
    pub fn new(coordinates: &Coordinates, reason: &str, detail: String) -> Self {
        Self {
            schema: DEAD_LETTER_SCHEMA.to_owned(),
            reason: reason.to_owned(),
            detail,
            retriable: false,
            topic: coordinates.topic.clone(),
            partition: coordinates.partition,
            offset: coordinates.offset,
            key: coordinates.key.clone(),
            stream_id: None,
            segment_id: None,
        }
    }
}
