//! One segment's fetch and decode, as a decode worker runs it: failures of the machine rather
//! than of the segment (a decode deadline missed under CPU starvation, no file descriptor left)
//! are tried again with backoff before the segment becomes a dead letter.

use std::time::{Duration, Instant};

use super::{decode_segment, DecodeConfig, Window};
use crate::source::{Media, Segment, UriPolicy};

/// Tries of one segment before a retriable failure becomes a dead letter.
pub const ATTEMPTS: u32 = 3;

/// Why a segment gives no windows: its dead letter's reason, detail and whether trying the
/// message again later might work.
#[derive(Debug, Clone, PartialEq)]
pub struct JobError {
    pub reason: &'static str,
    pub detail: String,
    pub retriable: bool,
}

/// Fetches and decodes `segment`, trying retriable failures up to `ATTEMPTS` times, `backoff`
/// apart at first and twice as long each time after.
pub fn fetch_and_decode(
    segment: &Segment,
    policy: &UriPolicy,
    decode: &DecodeConfig,
    backoff: Duration,
) -> Result<Vec<Window>, JobError> {
    let mut wait = backoff;
    for attempt in 1.. {
        match attempt_once(segment, policy, decode) {
            Err(e) if e.retriable && attempt < ATTEMPTS => {
                tracing::debug!(reason = e.reason, attempt, "retriable failure; trying the segment again");
                std::thread::sleep(wait);
                wait *= 2;
            }
            Err(mut e) if e.retriable => {
                e.detail = format!("{} ({attempt} attempts)", e.detail);
                return Err(e);
            }
            result => return result,
        }
    }
    unreachable!("the loop returns by its last attempt")
}

fn attempt_once(segment: &Segment, policy: &UriPolicy, decode: &DecodeConfig) -> Result<Vec<Window>, JobError> {
    // One deadline for fetching and decoding: what the fetch takes, the decoder has less of.
    let deadline = Instant::now() + decode.timeout;
    let bytes = match &segment.media {
        Media::Inline(bytes) => bytes.clone(),
        Media::Uri(uri) => policy.fetch(uri, deadline).map_err(|e| JobError {
            reason: e.reason(),
            detail: e.to_string(),
            retriable: e.retriable(),
        })?,
    };
    let decode = &DecodeConfig { timeout: deadline.saturating_duration_since(Instant::now()), ..decode.clone() };
    // FFmpeg is fed hostile bytes: a panic in the decoding path fails this segment, not the daemon.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode_segment(bytes, decode)))
        .map_err(|_| JobError { reason: "undecodable", detail: "decoder panicked".to_owned(), retriable: false })?;
    decoded.map_err(|e| JobError {
        reason: e.reason(),
        detail: e.to_string(),
        // A missed deadline is as often a starved CPU as slow media: worth another try.
        retriable: e.reason() == "decode_timeout",
    })
}
