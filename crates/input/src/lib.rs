//! The input side of novelstream that needs neither libtorch nor Kafka: parsing segment messages
//! and decoding their media into windows. It is its own crate so the fuzz targets (`fuzz/`) build
//! it instrumented in a minute, without the model and broker libraries.

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod decode;
pub mod fuzz;
pub mod segment;

/// How media is cut into windows, and the limits decoding enforces (`[decode]` in the daemon's
/// configuration).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DecodeConfig {
    /// Length of one window of media.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Distance between the starts of consecutive windows.
    #[serde(with = "humantime_serde")]
    pub hop: Duration,
    /// Frames sampled per window (T), evenly spaced across it.
    pub frames: usize,
    /// Height of each frame after scaling (H).
    pub height: u32,
    /// Width of each frame after scaling (W).
    pub width: u32,
    /// Audio sample rate of windows (mono, f32).
    pub sample_rate: u32,
    /// A window whose audio is quieter than this (RMS, dB below full scale) carries no audio:
    /// the model decides it from the picture alone, as it does a window of a stream without
    /// an audio track.
    pub audio_silence_dbfs: f64,
    /// Largest source frame accepted, in pixels (width × height).
    pub max_pixels: u64,
    /// Longest segment accepted.
    #[serde(with = "humantime_serde")]
    pub max_duration: Duration,
    /// Decoding one segment longer than this fails it.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Container formats a segment may be in, as FFmpeg names its demuxers (`ffmpeg -demuxers`).
    /// Anything else, playlists (HLS, DASH), scripts (ffconcat) and session descriptions (SDP)
    /// among them, is refused before its header is read. Whatever the list, a demuxer can open
    /// nothing beyond the segment's own bytes: no protocol is allowed for nested opens.
    pub formats: Vec<String>,
}

impl DecodeConfig {
    /// Audio samples in one window.
    pub fn window_samples(&self) -> usize {
        (self.window.as_secs_f64() * f64::from(self.sample_rate)) as usize
    }
}

/// The containers of [`DecodeConfig::formats`] by default: the MP4/MOV family, MPEG-TS and
/// Matroska/WebM.
pub const DEFAULT_FORMATS: [&str; 3] = ["mp4", "mpegts", "matroska"];

impl Default for DecodeConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(1),
            hop: Duration::from_secs(1),
            frames: 4,
            height: 64,
            width: 64,
            sample_rate: 16_000,
            audio_silence_dbfs: -60.0,
            max_pixels: 3840 * 2160,
            max_duration: Duration::from_secs(600),
            timeout: Duration::from_secs(60),
            formats: DEFAULT_FORMATS.iter().map(|f| f.to_string()).collect(),
        }
    }
}
