//! The segment message: a JSON reference to media, or the media bytes with the same fields as
//! Kafka headers.

use serde::{Deserialize, Serialize};

/// Schema version of segment messages this build reads (and `produce` writes).
pub const SEGMENT_SCHEMA: &str = "novelstream.segment.v1";

/// Longest stream or segment id accepted.
const MAX_ID_LEN: usize = 256;

/// The JSON form of a segment that refers to its media by URI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentRef {
    /// Schema version; absent means the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    pub stream_id: String,
    /// Unique per segment; (`segment_id`, window) is the idempotency key of assignments.
    pub segment_id: String,
    /// Position of the segment within its stream.
    pub seq: u64,
    pub uri: String,
    /// A known class, for labelled segments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Wall-clock start of the segment, milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ms: Option<i64>,
}

/// Where a segment's media is.
#[derive(Debug, Clone, PartialEq)]
pub enum Media {
    Uri(String),
    Inline(Vec<u8>),
}

/// A parsed, validated segment, ready for decoding.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub stream_id: String,
    pub segment_id: String,
    pub seq: u64,
    pub label: Option<String>,
    pub start_ms: Option<i64>,
    pub media: Media,
}

/// Why an input could not be used; each becomes one dead-letter record.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum InputError {
    #[error("malformed segment message: {0}")]
    BadMessage(String),
    #[error("unsupported schema version `{0}` (this build reads {SEGMENT_SCHEMA})")]
    UnsupportedSchema(String),
    #[error("unknown label `{label}` (known: {known})")]
    UnknownLabel { label: String, known: String },
    #[error("refused uri `{uri}`: {why}")]
    RefusedUri { uri: String, why: String },
    #[error("cannot read uri `{uri}`: {why}")]
    UnreadableUri { uri: String, why: String },
    #[error("segment is {bytes} bytes, over the limit of {max}")]
    Oversize { bytes: u64, max: u64 },
    /// The machine, not the segment, is short of something (file descriptors, memory): trying
    /// again later may work.
    #[error("cannot read uri `{uri}` now: {why}")]
    Exhausted { uri: String, why: String },
}

impl InputError {
    /// Stable machine-readable reason for dead-letter records.
    pub fn reason(&self) -> &'static str {
        match self {
            InputError::BadMessage(_) => "bad_message",
            InputError::UnsupportedSchema(_) => "unsupported_schema",
            InputError::UnknownLabel { .. } => "unknown_label",
            InputError::RefusedUri { .. } => "refused_uri",
            InputError::UnreadableUri { .. } => "unreadable_uri",
            InputError::Oversize { .. } => "oversize",
            InputError::Exhausted { .. } => "resources_exhausted",
        }
    }

    /// Whether the same message may succeed when tried again.
    pub fn retriable(&self) -> bool {
        matches!(self, InputError::Exhausted { .. })
    }
}

/// Turns one Kafka message into a segment. A message with a `segment_id` header carries its
/// media inline (the payload); any other is a JSON [`SegmentRef`].
pub fn parse_segment(
    payload: Option<&[u8]>,
    headers: &[(&str, &[u8])],
    known_classes: &[String],
    max_bytes: u64,
) -> Result<Segment, InputError> {
    let payload = payload.unwrap_or_default();
    let segment = if headers.iter().any(|(k, _)| *k == "segment_id") {
        parse_inline(payload, headers)?
    } else {
        parse_reference(payload)?
    };
    check_ids(&segment)?;
    if let Media::Inline(bytes) = &segment.media {
        if bytes.len() as u64 > max_bytes {
            return Err(InputError::Oversize { bytes: bytes.len() as u64, max: max_bytes });
        }
        if bytes.is_empty() {
            return Err(InputError::BadMessage("inline segment has no media bytes".into()));
        }
    }
    if let Some(label) = &segment.label {
        if !known_classes.contains(label) {
            return Err(InputError::UnknownLabel {
                label: label.clone(),
                known: if known_classes.is_empty() { "none".into() } else { known_classes.join(", ") },
            });
        }
    }
    Ok(segment)
}

fn parse_reference(payload: &[u8]) -> Result<Segment, InputError> {
    if payload.is_empty() {
        return Err(InputError::BadMessage("empty message".into()));
    }
    let r: SegmentRef = serde_json::from_slice(payload).map_err(|e| InputError::BadMessage(e.to_string()))?;
    check_schema(r.schema.as_deref())?;
    Ok(Segment {
        stream_id: r.stream_id,
        segment_id: r.segment_id,
        seq: r.seq,
        label: r.label,
        start_ms: r.start_ms,
        media: Media::Uri(r.uri),
    })
}

fn parse_inline(payload: &[u8], headers: &[(&str, &[u8])]) -> Result<Segment, InputError> {
    let header = |name: &str| -> Result<Option<String>, InputError> {
        match headers.iter().rev().find(|(k, _)| *k == name) {
            None => Ok(None),
            Some((_, v)) => String::from_utf8(v.to_vec())
                .map(Some)
                .map_err(|_| InputError::BadMessage(format!("header `{name}` is not UTF-8"))),
        }
    };
    let required = |name: &str| {
        header(name)?.ok_or_else(|| InputError::BadMessage(format!("inline segment lacks header `{name}`")))
    };
    check_schema(header("schema")?.as_deref())?;
    Ok(Segment {
        stream_id: required("stream_id")?,
        segment_id: required("segment_id")?,
        seq: number("seq", required("seq")?)?,
        label: header("label")?,
        start_ms: header("start_ms")?.map(|t| number("start_ms", t)).transpose()?,
        media: Media::Inline(payload.to_vec()),
    })
}

fn number<T: std::str::FromStr>(name: &str, text: String) -> Result<T, InputError> {
    text.trim().parse().map_err(|_| InputError::BadMessage(format!("header `{name}` is not an integer: `{text}`")))
}

fn check_schema(schema: Option<&str>) -> Result<(), InputError> {
    match schema {
        None => Ok(()),
        Some(s) if s == SEGMENT_SCHEMA => Ok(()),
        Some(other) => Err(InputError::UnsupportedSchema(other.to_owned())),
    }
}

fn check_ids(segment: &Segment) -> Result<(), InputError> {
    for (name, value) in [("stream_id", &segment.stream_id), ("segment_id", &segment.segment_id)] {
        if value.is_empty() || value.len() > MAX_ID_LEN || value.chars().any(char::is_control) {
            return Err(InputError::BadMessage(format!("`{name}` must be 1 to {MAX_ID_LEN} printable characters")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Vec<String> {
        vec!["cat".into(), "dog".into()]
    }

    #[test]
    fn reference_round_trips() {
        let json = br#"{"stream_id":"cam-1","segment_id":"s-9","seq":9,"uri":"file:///x.mp4","label":"cat"}"#;
        let s = parse_segment(Some(json), &[], &known(), 100).unwrap();
        assert_eq!(s.stream_id, "cam-1");
        assert_eq!(s.seq, 9);
        assert_eq!(s.label.as_deref(), Some("cat"));
        assert_eq!(s.media, Media::Uri("file:///x.mp4".into()));
    }

    #[test]
    fn inline_reads_headers() {
        let headers: [(&str, &[u8]); 4] =
            [("stream_id", b"cam-2"), ("segment_id", b"s-1"), ("seq", b"3"), ("start_ms", b"1700000000000")];
        let s = parse_segment(Some(b"media"), &headers, &known(), 100).unwrap();
        assert_eq!((s.stream_id.as_str(), s.seq, s.start_ms), ("cam-2", 3, Some(1_700_000_000_000)));
        assert_eq!(s.media, Media::Inline(b"media".to_vec()));
    }

    #[test]
    fn bad_inputs_have_reasons() {
        let reason = |payload: &[u8], headers: &[(&str, &[u8])]| {
            parse_segment(Some(payload), headers, &known(), 10).unwrap_err().reason()
        };
        assert_eq!(reason(b"{not json", &[]), "bad_message");
        assert_eq!(reason(b"", &[]), "bad_message");
        assert_eq!(
            reason(br#"{"stream_id":"a","segment_id":"b","seq":1,"uri":"file:///x","lable":"cat"}"#, &[]),
            "bad_message"
        );
        assert_eq!(
            reason(br#"{"schema":"novelstream.segment.v9","stream_id":"a","segment_id":"b","seq":1,"uri":"u"}"#, &[]),
            "unsupported_schema"
        );
        assert_eq!(
            reason(br#"{"stream_id":"a","segment_id":"b","seq":1,"uri":"u","label":"cow"}"#, &[]),
            "unknown_label"
        );
        assert_eq!(reason(br#"{"stream_id":"","segment_id":"b","seq":1,"uri":"u"}"#, &[]), "bad_message");
        let inline: [(&str, &[u8]); 3] = [("stream_id", b"a"), ("segment_id", b"b"), ("seq", b"1")];
        assert_eq!(reason(b"0123456789abc", &inline), "oversize");
        assert_eq!(reason(b"", &inline), "bad_message");
        let no_seq: [(&str, &[u8]); 2] = [("stream_id", b"a"), ("segment_id", b"b")];
        assert_eq!(reason(b"x", &no_seq), "bad_message");
    }
}
