//! Decoding segment bytes (MPEG-TS, MP4, anything FFmpeg demuxes) with ffmpeg-next: video frames
//! scaled to `H × W` RGB, audio resampled to mono f32, then cut into windows.

use std::sync::Once;
use std::time::Instant;

use ffmpeg::format::{sample, Pixel, Sample};
use ffmpeg::media::Type;
use ffmpeg::software::{resampling, scaling};
use ffmpeg::util::frame;
use ffmpeg::{ChannelLayout, Rational};
use ffmpeg_next as ffmpeg;

use super::open::open_input;
use super::window::{frame_at, frame_times, sample_range, sampled_between, spans, Span};
use super::Window;
use crate::DecodeConfig;

/// Why a segment's media could not be turned into windows.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("cannot decode media: {0}")]
    Undecodable(String),
    #[error("media has no video stream")]
    NoVideo,
    #[error("video stream has no decodable frames")]
    NoFrames,
    #[error("frame size {width}x{height} is over the limit of {max_pixels} pixels")]
    TooLarge { width: u32, height: u32, max_pixels: u64 },
    #[error("media is longer than the limit of {max_ms} ms")]
    TooLong { max_ms: u64 },
    #[error("decoding took longer than {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    #[error("container format `{0}` is not in decode.formats")]
    FormatNotAllowed(String),
    #[error("more than {max} video frames: over 1,000 a second for the longest segment accepted")]
    TooManyFrames { max: u64 },
}

impl DecodeError {
    /// Stable machine-readable reason for dead-letter records.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Undecodable(_) | DecodeError::NoFrames => "undecodable",
            DecodeError::NoVideo => "no_video",
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::TooLong { .. } => "too_long",
            DecodeError::Timeout { .. } => "decode_timeout",
            DecodeError::FormatNotAllowed(_) => "format_not_allowed",
            DecodeError::TooManyFrames { .. } => "too_many_frames",
        }
    }
}

/// Corrupt packets skipped one after another before the rest of the media is given up on.
const MAX_CORRUPT_PACKETS_IN_A_ROW: u32 = 1000;

pub(super) fn undecodable(e: ffmpeg::Error) -> DecodeError {
    DecodeError::Undecodable(e.to_string())
}

pub(super) fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        ffmpeg::init().expect("FFmpeg libraries failed to initialise");
        // FFmpeg's own log lines would duplicate our dead-letter reasons on stderr.
        ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Fatal);
    });
}

/// Decodes a whole segment held in memory and cuts it into windows as `config` says.
pub fn decode_segment(bytes: Vec<u8>, config: &DecodeConfig) -> Result<Vec<Window>, DecodeError> {
    init();
    if bytes.is_empty() {
        return Err(DecodeError::Undecodable("no bytes".into()));
    }
    let started = Instant::now();
    let deadline = started + config.timeout;
    let timeout_ms = config.timeout.as_millis() as u64;
    let mut input = open_input(bytes, &config.formats, deadline, timeout_ms)?;

    let video = input.streams().best(Type::Video).ok_or(DecodeError::NoVideo)?;
    let video_index = video.index();
    let mut frames = VideoFrames::open(&video, config)?;
    let mut audio = match input.streams().best(Type::Audio) {
        Some(stream) => Some(AudioSamples::open(&stream, config)?),
        None => None,
    };
    let audio_index = input.streams().best(Type::Audio).map(|s| s.index());

    let max_ms = config.max_duration.as_millis() as f64;
    // Not `input.packets()`: it retries corrupt packets inside one `next()` call, and a 94-byte
    // MP4 claiming 350,000 samples kept it there past any deadline (the decode_segment fuzz
    // target). Here every read attempt, good or corrupt, is checked against the deadline.
    let mut corrupt_in_a_row = 0;
    loop {
        if Instant::now() > deadline {
            return Err(DecodeError::Timeout { timeout_ms });
        }
        // A fresh packet each time: reading into one that still holds data would leak it.
        let mut packet = ffmpeg::Packet::empty();
        match packet.read(&mut input) {
            Ok(()) => corrupt_in_a_row = 0,
            // A corrupt packet is skipped, as the ffmpeg CLI does; the demuxer can resync. Media
            // that is corrupt for this long is not going to: what was read so far is used.
            Err(ffmpeg::Error::InvalidData) if corrupt_in_a_row < MAX_CORRUPT_PACKETS_IN_A_ROW => {
                corrupt_in_a_row += 1;
                continue;
            }
            Err(ffmpeg::Error::InvalidData) => break,
            Err(ffmpeg::Error::Exit) => return Err(DecodeError::Timeout { timeout_ms }),
            // End of input, or an I/O error FFmpeg latches and repeats: what was read is used.
            Err(_) => break,
        }
        let stream = packet.stream();
        if stream == video_index {
            frames.send(&packet)?;
        } else if Some(stream) == audio_index {
            if let Some(a) = audio.as_mut() {
                a.send(&packet)?;
            }
        }
        if frames.last_ms().is_some_and(|t| t > max_ms) {
            return Err(DecodeError::TooLong { max_ms: max_ms as u64 });
        }
    }
    if Instant::now() > deadline {
        return Err(DecodeError::Timeout { timeout_ms });
    }
    frames.finish()?;
    if let Some(a) = audio.as_mut() {
        a.finish()?;
    }
    if frames.pts_ms.is_empty() {
        return Err(DecodeError::NoFrames);
    }
    let duration_ms = frames.duration_ms();
    if duration_ms as f64 > max_ms {
        return Err(DecodeError::TooLong { max_ms: max_ms as u64 });
    }
    let samples = audio.map(|a| a.aligned_to(frames.origin_ms, config.sample_rate, duration_ms)).unwrap_or_default();
    tracing::debug!(
        frames = frames.pts_ms.len(),
        samples = samples.len(),
        duration_ms,
        seconds = started.elapsed().as_secs_f64(),
        "decoded segment"
    );
    let windows = cut_windows(&frames, &samples, duration_ms, config);
    if windows.is_empty() {
        // Publishing nothing for a segment would lose it silently.
        return Err(DecodeError::NoFrames);
    }
    Ok(windows)
}

/// Cuts decoded frames and samples into the configured windows.
fn cut_windows(frames: &VideoFrames, samples: &[f32], duration_ms: u64, config: &DecodeConfig) -> Vec<Window> {
    let frame_bytes = (config.height * config.width * 3) as usize;
    spans(duration_ms, config.window.as_millis() as u64, config.hop.as_millis() as u64)
        .into_iter()
        .map(|span| {
            let mut rgb = Vec::with_capacity(frame_bytes * config.frames);
            for t in frame_times(&span, config.frames) {
                rgb.extend_from_slice(&frames.rgb[frame_at(&frames.pts_ms, t)]);
            }
            let range = sample_range(&span, config.sample_rate);
            // A segment shorter than a window still gives a whole window of audio, silent past
            // its end, so every window's spectrogram has the same shape.
            let whole = Span { end_ms: span.start_ms + config.window.as_millis() as u64, ..span };
            let mut audio = vec![0.0f32; range.len().max(sample_range(&whole, config.sample_rate).len())];
            if range.start < samples.len() {
                let end = range.end.min(samples.len());
                audio[..end - range.start].copy_from_slice(&samples[range.start..end]);
            }
            Window { index: span.index, start_ms: span.start_ms, end_ms: span.end_ms, frames: rgb, audio }
        })
        .collect()
}

fn to_ms(ts: i64, time_base: Rational) -> f64 {
    ts as f64 * f64::from(time_base.numerator()) * 1000.0 / f64::from(time_base.denominator())
}

/// Decoded video, scaled to the window size, with timestamps relative to the first frame.
struct VideoFrames {
    decoder: ffmpeg::decoder::Video,
    time_base: Rational,
    /// Nominal frame duration, from the stream's average frame rate when it has one.
    frame_ms: Option<f64>,
    scaler: Option<(scaling::Context, Pixel, u32, u32)>,
    width: u32,
    height: u32,
    max_pixels: u64,
    /// Timestamp of the first frame, the segment's time zero.
    origin_ms: f64,
    /// Where windows are and how many frames each samples, to keep only the frames they use.
    window_ms: u64,
    hop_ms: u64,
    frames_per_window: usize,
    /// Frames decoded so far, and the most a segment may have.
    decoded: u64,
    max_frames: u64,
    /// Gaps between consecutive decoded frames, for the duration when the stream has no rate.
    gaps_ms: Vec<f64>,
    /// The kept frames: every one a window samples, and the newest.
    pts_ms: Vec<f64>,
    rgb: Vec<Vec<u8>>,
}

impl VideoFrames {
    fn open(stream: &ffmpeg::format::stream::Stream<'_>, config: &DecodeConfig) -> Result<Self, DecodeError> {
        let context = ffmpeg::codec::context::Context::from_parameters(stream.parameters()).map_err(undecodable)?;
        let decoder = context.decoder().video().map_err(undecodable)?;
        check_size(decoder.width(), decoder.height(), config.max_pixels)?;
        let rate = stream.avg_frame_rate();
        let frame_ms = (rate.numerator() > 0 && rate.denominator() > 0)
            .then(|| 1000.0 * f64::from(rate.denominator()) / f64::from(rate.numerator()));
        Ok(Self {
            decoder,
            time_base: stream.time_base(),
            frame_ms,
            scaler: None,
            width: config.width,
            height: config.height,
            max_pixels: config.max_pixels,
            origin_ms: 0.0,
            window_ms: config.window.as_millis() as u64,
            hop_ms: config.hop.as_millis() as u64,
            frames_per_window: config.frames,
            decoded: 0,
            // One frame a millisecond: beyond any camera, and a bound on the work per segment.
            max_frames: (config.max_duration.as_millis() as u64).max(1000),
            gaps_ms: Vec::new(),
            pts_ms: Vec::new(),
            rgb: Vec::new(),
        })
    }

    fn send(&mut self, packet: &ffmpeg::Packet) -> Result<(), DecodeError> {
        // A damaged packet is skipped, as the ffmpeg CLI does; the frames around it still count.
        if self.decoder.send_packet(packet).is_ok() {
            self.receive()?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), DecodeError> {
        let _ = self.decoder.send_eof();
        self.receive()
    }

    fn last_ms(&self) -> Option<f64> {
        self.pts_ms.last().copied()
    }

    fn receive(&mut self) -> Result<(), DecodeError> {
        let mut decoded = frame::Video::empty();
        while self.decoder.receive_frame(&mut decoded).is_ok() {
            let Some(ts) = decoded.timestamp().or(decoded.pts()) else {
                continue;
            };
            let t = to_ms(ts, self.time_base);
            if self.pts_ms.is_empty() {
                self.origin_ms = t;
            }
            let t = t - self.origin_ms;
            // Frames must move forward in time; a repeated or backwards stamp is dropped.
            if self.pts_ms.last().is_some_and(|&last| t <= last) {
                continue;
            }
            self.decoded += 1;
            if self.decoded > self.max_frames {
                return Err(DecodeError::TooManyFrames { max: self.max_frames });
            }
            let rgb = self.scale(&decoded)?;
            if let Some(&last) = self.pts_ms.last() {
                self.gaps_ms.push(t - last);
                // The newest frame shows until this one: no window looks then, so it goes.
                // The first frame stays, for sample times before every frame.
                let (window, hop, t_frames) = (self.window_ms, self.hop_ms, self.frames_per_window);
                if self.pts_ms.len() > 1 && !sampled_between(last, t, window, hop, t_frames) {
                    self.pts_ms.pop();
                    self.rgb.pop();
                }
            }
            self.pts_ms.push(t);
            self.rgb.push(rgb);
        }
        Ok(())
    }

    fn scale(&mut self, decoded: &frame::Video) -> Result<Vec<u8>, DecodeError> {
        let (format, w, h) = (decoded.format(), decoded.width(), decoded.height());
        check_size(w, h, self.max_pixels)?;
        // A scaler built from an unknown pixel format aborts the process: refuse it first.
        if format == Pixel::None || w == 0 || h == 0 {
            return Err(DecodeError::Undecodable(format!("frame with unusable format {format:?} {w}x{h}")));
        }
        let stale = !matches!(&self.scaler, Some((_, f, sw, sh)) if (*f, *sw, *sh) == (format, w, h));
        if stale {
            let context =
                scaling::Context::get(format, w, h, Pixel::RGB24, self.width, self.height, scaling::Flags::BILINEAR)
                    .map_err(undecodable)?;
            self.scaler = Some((context, format, w, h));
        }
        let (scaler, ..) = self.scaler.as_mut().expect("scaler was just set");
        let mut rgb = frame::Video::empty();
        scaler.run(decoded, &mut rgb).map_err(undecodable)?;
        // Rows of the scaled frame are padded to its stride: copy the pixels row by row.
        let row = (self.width * 3) as usize;
        let stride = rgb.stride(0);
        let data = rgb.data(0);
        let mut out = Vec::with_capacity(row * self.height as usize);
        for y in 0..self.height as usize {
            out.extend_from_slice(&data[y * stride..y * stride + row]);
        }
        Ok(out)
    }

    /// From the first frame to the end of the last one.
    fn duration_ms(&self) -> u64 {
        let last = self.pts_ms.last().copied().unwrap_or(0.0);
        let step = self.frame_ms.unwrap_or_else(|| {
            // No nominal rate: use the median gap between frames, or 40 ms for a single frame.
            let mut gaps = self.gaps_ms.clone();
            gaps.sort_by(f64::total_cmp);
            gaps.get(gaps.len() / 2).copied().unwrap_or(40.0)
        });
        // At least 1 ms: a single frame with an absurd nominal rate (a millionth of a second)
        // still lasts, and yields its one window.
        (last + step).round().max(1.0) as u64
    }
}

fn check_size(width: u32, height: u32, max_pixels: u64) -> Result<(), DecodeError> {
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(DecodeError::TooLarge { width, height, max_pixels });
    }
    Ok(())
}

/// Whether swresample can convert `frame`'s audio to mono f32 at `rate`. ffmpeg-next's
/// `resampling::Context::get` leaks its context (about 86 KB) when initialisation fails, which
/// hostile audio parameters make it do (found by the `decode_segment` fuzz target); this tries
/// the same parameters on a context that is always freed, so `get` is only called to succeed.
fn resampler_accepts(frame: &frame::Audio, rate: u32) -> bool {
    use ffmpeg::ffi;
    // SAFETY: the context is allocated, initialised and freed here and never escapes; every
    // argument is a plain value.
    unsafe {
        let mut context = ffi::swr_alloc_set_opts(
            std::ptr::null_mut(),
            ChannelLayout::MONO.bits() as i64,
            MONO_F32.into(),
            rate as std::os::raw::c_int,
            frame.channel_layout().bits() as i64,
            frame.format().into(),
            frame.rate() as std::os::raw::c_int,
            0,
            std::ptr::null_mut(),
        );
        if context.is_null() {
            return false;
        }
        let initialised = ffi::swr_init(context) >= 0;
        ffi::swr_free(&mut context);
        initialised
    }
}

/// Decoded audio, resampled to mono f32 at the window rate.
struct AudioSamples {
    decoder: ffmpeg::decoder::Audio,
    time_base: Rational,
    rate: u32,
    resampler: Option<resampling::Context>,
    /// Timestamp of the first decoded audio frame.
    origin_ms: Option<f64>,
    samples: Vec<f32>,
    /// Most samples kept.
    max_samples: usize,
}

const MONO_F32: Sample = Sample::F32(sample::Type::Packed);

impl AudioSamples {
    fn open(stream: &ffmpeg::format::stream::Stream<'_>, config: &DecodeConfig) -> Result<Self, DecodeError> {
        let context = ffmpeg::codec::context::Context::from_parameters(stream.parameters()).map_err(undecodable)?;
        let decoder = context.decoder().audio().map_err(undecodable)?;
        let rate = config.sample_rate;
        // Audio past the longest accepted segment is never used; an audio stream far longer than
        // its video must not fill memory.
        let max_samples = ((config.max_duration.as_millis() + 1000) * u128::from(rate) / 1000) as usize;
        Ok(Self {
            decoder,
            time_base: stream.time_base(),
            rate,
            max_samples,
            resampler: None,
            origin_ms: None,
            samples: Vec::new(),
        })
    }

    fn send(&mut self, packet: &ffmpeg::Packet) -> Result<(), DecodeError> {
        if self.decoder.send_packet(packet).is_ok() {
            self.receive()?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), DecodeError> {
        let _ = self.decoder.send_eof();
        self.receive()?;
        if let Some(resampler) = self.resampler.as_mut() {
            loop {
                let mut out = frame::Audio::new(MONO_F32, 4096, ChannelLayout::MONO);
                resampler.flush(&mut out).map_err(undecodable)?;
                if out.samples() == 0 {
                    break;
                }
                self.samples.extend_from_slice(&out.plane::<f32>(0)[..out.samples()]);
            }
        }
        Ok(())
    }

    fn receive(&mut self) -> Result<(), DecodeError> {
        let mut decoded = frame::Audio::empty();
        while self.decoder.receive_frame(&mut decoded).is_ok() {
            if decoded.samples() == 0 || decoded.format() == Sample::None || decoded.rate() == 0 {
                continue;
            }
            if self.origin_ms.is_none() {
                self.origin_ms = decoded.timestamp().or(decoded.pts()).map(|ts| to_ms(ts, self.time_base));
            }
            if decoded.channel_layout().is_empty() {
                decoded.set_channel_layout(ChannelLayout::default(i32::from(decoded.channels())));
            }
            if self.resampler.is_none() {
                if !resampler_accepts(&decoded, self.rate) {
                    return Err(DecodeError::Undecodable(format!(
                        "audio of {} channels at {} Hz cannot be resampled",
                        decoded.channels(),
                        decoded.rate()
                    )));
                }
                self.resampler = Some(
                    resampling::Context::get(
                        decoded.format(),
                        decoded.channel_layout(),
                        decoded.rate(),
                        MONO_F32,
                        ChannelLayout::MONO,
                        self.rate,
                    )
                    .map_err(undecodable)?,
                );
            }
            let resampler = self.resampler.as_mut().expect("resampler was just set");
            // Room for every output sample of this frame, so nothing piles up inside swresample.
            let capacity = decoded.samples() * self.rate as usize / decoded.rate() as usize + 256;
            let mut out = frame::Audio::new(MONO_F32, capacity, ChannelLayout::MONO);
            if resampler.run(&decoded, &mut out).is_err() {
                // The input's format changed mid-stream; such audio is dropped, not guessed at.
                continue;
            }
            let room = self.max_samples.saturating_sub(self.samples.len());
            self.samples.extend_from_slice(&out.plane::<f32>(0)[..out.samples().min(room)]);
        }
        Ok(())
    }

    /// Samples placed on the video's time line: padded or trimmed at the front so that sample 0
    /// plays with the first video frame, and cut at the video's end. Only what the windows can
    /// use is kept, so a hostile timestamp far from the video's cannot make the padding huge.
    fn aligned_to(mut self, video_origin_ms: f64, rate: u32, duration_ms: u64) -> Vec<f32> {
        let wanted = (u128::from(duration_ms) * u128::from(rate) / 1000) as usize;
        let offset_ms = self.origin_ms.unwrap_or(video_origin_ms) - video_origin_ms;
        let offset = (offset_ms.abs() * f64::from(rate) / 1000.0).round().min(wanted as f64) as usize;
        let mut aligned = if offset_ms >= 0.0 {
            let mut padded = vec![0.0; offset];
            padded.extend_from_slice(&self.samples[..self.samples.len().min(wanted - offset)]);
            padded
        } else {
            self.samples.split_off(offset.min(self.samples.len()))
        };
        aligned.truncate(wanted);
        aligned
    }
}
