//! How the fuzz targets (`fuzz/fuzz_targets/`) turn raw bytes into inputs, and the properties they
//! check. It lives here, not in `fuzz/`, so that the regression test replaying the kept corpus and
//! crash inputs on stable Rust runs exactly what the fuzzer ran.

use std::time::Duration;

use crate::decode::{decode_segment, format_allowed, probed_format};
use crate::segment::{parse_segment, Media};
use crate::DecodeConfig;

/// Headers an inline case may carry, in the order their values appear in the input.
const HEADER_NAMES: [&str; 6] = ["stream_id", "segment_id", "seq", "label", "start_ms", "schema"];

/// Classes the parse case treats as known.
const KNOWN: [&str; 2] = ["cat", "dog"];

/// Largest media the parse case accepts inline.
const MAX_BYTES: u64 = 4096;

/// One segment message built from fuzz bytes: the first byte chooses which headers are present
/// (bit `i` for `HEADER_NAMES[i]`); their values come next, each ended by `\n`; the rest is the
/// payload. With no headers the payload is read as a JSON reference. Panics when the parser
/// breaks one of its promises; any `Err` is a fine answer.
pub fn parse_case(data: &[u8]) {
    let Some((&mask, mut rest)) = data.split_first() else { return };
    let mut headers: Vec<(&str, &[u8])> = Vec::new();
    for (i, name) in HEADER_NAMES.iter().enumerate() {
        if mask & (1 << i) != 0 {
            let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            headers.push((name, &rest[..end]));
            rest = rest.get(end + 1..).unwrap_or_default();
        }
    }
    let known: Vec<String> = KNOWN.iter().map(|k| k.to_string()).collect();
    let Ok(segment) = parse_segment(Some(rest), &headers, &known, MAX_BYTES) else { return };
    for id in [&segment.stream_id, &segment.segment_id] {
        assert!(!id.is_empty() && id.len() <= 256 && !id.chars().any(char::is_control), "accepted id {id:?}");
    }
    if let Some(label) = &segment.label {
        assert!(known.contains(label), "accepted unknown label {label:?}");
    }
    if let Media::Inline(bytes) = &segment.media {
        assert!(!bytes.is_empty() && bytes.len() as u64 <= MAX_BYTES, "accepted {} inline bytes", bytes.len());
    }
}

/// The decode settings of the decode case: small windows and tight limits, so a case costs
/// milliseconds and a hostile header cannot make it allocate gigabytes.
pub fn decode_case_config() -> DecodeConfig {
    DecodeConfig {
        window: Duration::from_millis(500),
        hop: Duration::from_millis(500),
        frames: 2,
        height: 16,
        width: 16,
        sample_rate: 8_000,
        max_pixels: 640 * 480,
        max_duration: Duration::from_secs(30),
        timeout: Duration::from_secs(5),
        ..DecodeConfig::default()
    }
}

/// Decodes fuzz bytes as a whole segment. Panics when decoding claims success with windows that
/// break their shape (every frame `H·W·3` bytes, a whole window of audio, windows in order)
/// or with no window at all, which would publish nothing for the segment.
pub fn decode_case(data: &[u8]) {
    let config = decode_case_config();
    let Ok(windows) = decode_segment(data.to_vec(), &config) else { return };
    check_windows(&windows, &config);
}

/// Decodes fuzz bytes, from playlists, scripts and session descriptions as seeds, under the
/// default container allow-list. Panics when media the probe names as off the list is decoded
/// or refused for another reason than its format (its header must not be read at all), or when
/// a decoded segment breaks the window shape of [`decode_case`].
pub fn demux_case(data: &[u8]) {
    let config = decode_case_config();
    let probed = probed_format(data);
    let off_list = probed.as_deref().filter(|name| !format_allowed(name, &config.formats));
    match decode_segment(data.to_vec(), &config) {
        Ok(windows) => {
            assert!(off_list.is_none(), "decoded media that probes as {off_list:?}");
            check_windows(&windows, &config);
        }
        Err(e) => {
            if let Some(name) = off_list {
                assert_eq!(e.reason(), "format_not_allowed", "{name} refused otherwise: {e}");
            }
        }
    }
}

/// The shape every decoded segment keeps, see [`decode_case`].
fn check_windows(windows: &[crate::decode::Window], config: &DecodeConfig) {
    assert!(!windows.is_empty(), "decoded without error into no windows");
    let frame_bytes = (config.height * config.width * 3) as usize;
    for (i, w) in windows.iter().enumerate() {
        assert_eq!(w.index as usize, i, "window indices out of order");
        assert!(w.start_ms < w.end_ms, "empty window {}..{}", w.start_ms, w.end_ms);
        assert_eq!(w.frames.len(), frame_bytes * config.frames, "frame bytes of window {i}");
        // A whole window of audio, also when the segment is shorter than a window.
        let samples = config.window.as_millis() as usize * 8;
        assert!(w.audio.len().abs_diff(samples) <= 1, "window {i} has {} samples, not {samples}", w.audio.len());
        assert!(w.audio.iter().all(|s| s.is_finite()), "window {i} has non-finite audio");
    }
}
