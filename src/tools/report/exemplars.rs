//! A cluster's contact sheet: its most confident windows, decoded again from the segments'
//! media at thumbnail size, each as a PNG strip of frames with its audio as WAV, embedded as
//! data URIs.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use super::page::{escape, ReportOptions, ReportStats};
use crate::config::DecodeConfig;
use crate::decode::{decode_segment, DecodeError, Window};
use crate::sink::Assignment;
use crate::source::InputError;

/// Why an exemplar shows no frames (the page says so in its place).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MediaError {
    /// The input topic no longer holds the segment (retention), so its media is unknown.
    #[error("segment {segment_id} is no longer on topic {topic}")]
    NotOnTopic { segment_id: String, topic: String },
    /// The segment's URI is refused by the source policy or cannot be read.
    #[error(transparent)]
    Fetch(#[from] InputError),
    /// The media does not decode (any more).
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// Where a report gets a segment's media bytes from, by segment id.
pub type MediaSource<'a> = &'a dyn Fn(&str) -> Result<Vec<u8>, MediaError>;

/// Draws contact sheets, decoding each segment's media once however many exemplars it holds.
pub(super) struct Sheets<'a> {
    thumb: DecodeConfig,
    exemplars: usize,
    media: MediaSource<'a>,
    decoded: HashMap<String, Result<Vec<Window>, MediaError>>,
}

impl<'a> Sheets<'a> {
    pub(super) fn new(decode: &DecodeConfig, options: &ReportOptions, media: MediaSource<'a>) -> Self {
        Sheets { thumb: thumb_config(decode, options), exemplars: options.exemplars, media, decoded: HashMap::new() }
    }

    /// Appends the sheet of a cluster: the most confident windows of the newest model version
    /// that made any, one per segment.
    pub(super) fn draw(&mut self, html: &mut String, windows: &[(&Assignment, i64)], stats: &mut ReportStats) {
        let mut candidates = windows.to_vec();
        candidates.sort_by(|(x, _), (y, _)| {
            y.model_version.cmp(&x.model_version).then(y.confidence.total_cmp(&x.confidence))
        });
        let mut used = HashSet::new();
        html.push_str("<div class=\"sheet\">");
        for (a, _) in candidates.into_iter().filter(|(a, _)| used.insert(a.segment_id.clone())).take(self.exemplars) {
            self.exemplar(html, a, stats);
        }
        html.push_str("</div>");
    }

    /// One exemplar: its frames and audio, or why they are missing, and its caption.
    fn exemplar(&mut self, html: &mut String, a: &Assignment, stats: &mut ReportStats) {
        let (thumb, media) = (&self.thumb, self.media);
        let windows = self
            .decoded
            .entry(a.segment_id.clone())
            .or_insert_with(|| media(&a.segment_id).and_then(|bytes| Ok(decode_segment(bytes, thumb)?)));
        let caption = format!(
            "{} · {} · {:.1}–{:.1} s · confidence {:.2} · v{}",
            a.stream_id,
            a.segment_id,
            a.start_ms as f64 / 1000.0,
            a.end_ms as f64 / 1000.0,
            a.confidence,
            a.model_version
        );
        html.push_str("<div class=\"exemplar\">");
        match windows.as_ref().map(|w| w.iter().find(|w| w.index == a.window)) {
            Ok(Some(window)) => embed_window(html, a, window, thumb, &caption, stats),
            Ok(None) => {
                stats.missing_media += 1;
                let _ = write!(html, "<p class=\"missing\">window {} is not in the decoded media</p>", a.window);
            }
            Err(why) => {
                stats.missing_media += 1;
                let _ = write!(html, "<p class=\"missing\">media unavailable: {}</p>", escape(&why.to_string()));
            }
        }
        let _ = write!(html, "<p class=\"caption\">{}</p></div>", escape(&caption));
    }
}

/// The window's frames as an image and, unless it is silent, its audio as a player and a link.
fn embed_window(
    html: &mut String,
    a: &Assignment,
    window: &Window,
    thumb: &DecodeConfig,
    caption: &str,
    stats: &mut ReportStats,
) {
    let png = strip_png(window, thumb);
    let _ = write!(
        html,
        "<img alt=\"{alt}\" width=\"{w}\" height=\"{h}\" src=\"data:image/png;base64,{data}\">",
        alt = escape(caption),
        w = png.1,
        h = png.2,
        data = BASE64.encode(&png.0)
    );
    stats.images += 1;
    if window.audio.iter().any(|s| *s != 0.0) {
        let wav = BASE64.encode(wav(&window.audio, thumb.sample_rate));
        let _ = write!(
            html,
            "<div><audio controls preload=\"none\" src=\"data:audio/wav;base64,{wav}\"></audio> <a download=\"{name}.wav\" href=\"data:audio/wav;base64,{wav}\">audio</a></div>",
            name = escape(&format!("{}-{}", a.segment_id.replace('/', "_"), a.window))
        );
        stats.audio_clips += 1;
    }
}

/// The decode settings for exemplar frames: the daemon's windows, at thumbnail size.
fn thumb_config(decode: &DecodeConfig, options: &ReportOptions) -> DecodeConfig {
    let height = options.thumb_height.max(8) & !1;
    let width = ((u64::from(height) * u64::from(decode.width) / u64::from(decode.height.max(1))) as u32).max(8) & !1;
    DecodeConfig { frames: options.frames.max(1), height, width, ..decode.clone() }
}

/// The window's frames side by side, 2 pixels apart, as PNG bytes (with its width and height).
fn strip_png(window: &Window, config: &DecodeConfig) -> (Vec<u8>, u32, u32) {
    let (h, w, t) = (config.height as usize, config.width as usize, config.frames);
    let gap = 2;
    let width = t * w + (t - 1) * gap;
    let mut pixels = vec![255u8; width * h * 3];
    for f in 0..t {
        for y in 0..h {
            let from = (f * h + y) * w * 3;
            let to = (y * width + f * (w + gap)) * 3;
            pixels[to..to + w * 3].copy_from_slice(&window.frames[from..from + w * 3]);
        }
    }
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, width as u32, h as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().expect("PNG header into memory");
        writer.write_image_data(&pixels).expect("PNG data into memory");
    }
    (bytes, width as u32, h as u32)
}

/// Mono f32 samples as a 16-bit PCM WAV file.
fn wav(samples: &[f32], rate: u32) -> Vec<u8> {
    let data = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + data as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&((s.clamp(-1.0, 1.0) * 32767.0).round() as i16).to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wav_header_and_samples() {
        let bytes = wav(&[0.0, 1.0, -1.0, 2.0], 16_000);
        assert_eq!(&bytes[..4], b"RIFF");
        assert_eq!(u32::from_le_bytes(bytes[4..8].try_into().unwrap()), 36 + 8);
        assert_eq!(u32::from_le_bytes(bytes[24..28].try_into().unwrap()), 16_000);
        let samples: Vec<i16> = bytes[44..].chunks(2).map(|c| i16::from_le_bytes([c[0], c[1]])).collect();
        assert_eq!(samples, vec![0, 32767, -32767, 32767]);
    }

    #[test]
    fn strip_places_frames_side_by_side() {
        let config = DecodeConfig { frames: 2, height: 2, width: 2, ..Default::default() };
        let frames: Vec<u8> = (0..24).collect();
        let window = Window { index: 0, start_ms: 0, end_ms: 1000, frames, audio: Vec::new() };
        let (bytes, width, height) = strip_png(&window, &config);
        assert_eq!((width, height), (6, 2));
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size()];
        reader.next_frame(&mut pixels).unwrap();
        // Row 0: frame 0's first row, the white gap, frame 1's first row.
        assert_eq!(&pixels[..18], &[0, 1, 2, 3, 4, 5, 255, 255, 255, 255, 255, 255, 12, 13, 14, 15, 16, 17]);
    }
}
