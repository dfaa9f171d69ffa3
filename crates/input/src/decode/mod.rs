//! FFmpeg demux/decode of one segment into windows of frames and audio.

mod media;
mod open;
mod window;

pub use media::{decode_segment, DecodeError};
pub use open::{demuxer_exists, format_allowed, probed_format};
pub use window::{frame_at, frame_times, sample_range, sampled_between, spans, Span};

/// One window of a segment: the unit that is embedded, assigned and published.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// Position of the window within its segment, from 0.
    pub index: u32,
    /// Start and end within the segment's media time, in milliseconds.
    pub start_ms: u64,
    pub end_ms: u64,
    /// `T` frames of `H × W` RGB, frame after frame, row after row (`T·H·W·3` bytes).
    pub frames: Vec<u8>,
    /// Mono audio at the configured rate, zero where the media has none.
    pub audio: Vec<f32>,
}
