//! FFmpeg demux/decode of one segment into windows of frames and audio (the `novelstream-input`
//! crate, re-exported), and the decode workers' job around it.

mod crash;
mod job;

pub use crate::config::DecodeConfig;
pub use crash::{CrashMarkers, MAX_CRASHES};
pub use job::{fetch_and_decode, JobError, ATTEMPTS};

pub use novelstream_input::decode::{
    decode_segment, demuxer_exists, frame_at, frame_times, sample_range, spans, DecodeError, Span, Window,
};
