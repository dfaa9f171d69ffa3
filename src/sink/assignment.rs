//! The assignment message: one per window, keyed by stream id. Its JSON Schema is
//! `schema/assignment.v1.json`.

use serde::{Deserialize, Serialize};

/// Schema version written into every assignment.
pub const ASSIGNMENT_SCHEMA: &str = "novelstream.assignment.v1";

/// Whether a window was matched to a known class or to a discovered cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Known,
    Novel,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub schema: String,
    pub stream_id: String,
    pub segment_id: String,
    /// The segment's position in its stream.
    pub seq: u64,
    /// Window index within the segment; with `segment_id` the idempotency key.
    pub window: u32,
    /// The window's span within the segment's media time.
    pub start_ms: u64,
    pub end_ms: u64,
    pub kind: Kind,
    /// Known class name, or `novel-<k>`.
    pub cluster: String,
    pub confidence: f64,
    /// The model version that made this assignment (0: untrained initial weights).
    pub model_version: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON Schema in `schema/` and the struct must name the same fields.
    #[test]
    fn matches_its_json_schema() {
        let schema: serde_json::Value = serde_json::from_str(include_str!("../../schema/assignment.v1.json")).unwrap();
        let a = Assignment {
            schema: ASSIGNMENT_SCHEMA.into(),
            stream_id: "cam".into(),
            segment_id: "s".into(),
            seq: 1,
            window: 2,
            start_ms: 500,
            end_ms: 1500,
            kind: Kind::Novel,
            cluster: "novel-3".into(),
            confidence: 0.5,
            model_version: 0,
        };
        let value = serde_json::to_value(&a).unwrap();
        let mut fields: Vec<&String> = value.as_object().unwrap().keys().collect();
        let mut declared: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
        let mut required: Vec<&str> =
            schema["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        fields.sort();
        declared.sort();
        required.sort();
        assert_eq!(fields, declared);
        assert_eq!(fields.iter().map(|s| s.as_str()).collect::<Vec<_>>(), required);
        assert_eq!(schema["properties"]["schema"]["const"], ASSIGNMENT_SCHEMA);
        assert_eq!(value["kind"], "novel");
    }
}
