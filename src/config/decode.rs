//! `[decode]`: how media is cut into windows. The type lives in the input crate, which the fuzz
//! targets build without libtorch and Kafka; its checks live here with the other sections'.

pub use novelstream_input::DecodeConfig;

use super::{invalid, ConfigError};

/// Checks what the types of `[decode]` alone cannot.
pub(super) fn validate(d: &DecodeConfig) -> Result<(), ConfigError> {
    if d.window.is_zero() {
        return invalid("decode.window", "must be longer than zero");
    }
    if d.hop.is_zero() {
        return invalid("decode.hop", "must be longer than zero");
    }
    if d.frames == 0 {
        return invalid("decode.frames", "must be at least 1");
    }
    if d.height < 8 || d.width < 8 || d.height > 1024 || d.width > 1024 {
        return invalid("decode.height/width", "must be between 8 and 1024 pixels");
    }
    if !(1000..=192_000).contains(&d.sample_rate) {
        return invalid("decode.sample_rate", "must be between 1000 and 192000 Hz");
    }
    if d.audio_silence_dbfs.is_nan() || d.audio_silence_dbfs > 0.0 {
        return invalid("decode.audio_silence_dbfs", "must be a level at or below full scale (0 dBFS or less)");
    }
    if d.formats.is_empty() {
        return invalid("decode.formats", "must name at least one container format");
    }
    if let Some(unknown) = d.formats.iter().find(|f| !novelstream_input::decode::demuxer_exists(f)) {
        return invalid(
            "decode.formats",
            &format!("FFmpeg has no demuxer called `{unknown}` (see `ffmpeg -demuxers`)"),
        );
    }
    Ok(())
}
