//! Decoding real media made by the `ffmpeg` CLI into windows, and refusing what is unusable.

mod common;

use std::time::Duration;

use common::{ffmpeg, make_clip};
use novelstream::config::DecodeConfig;
use novelstream::decode::decode_segment;

fn config() -> DecodeConfig {
    DecodeConfig {
        window: Duration::from_secs(1),
        hop: Duration::from_millis(500),
        frames: 3,
        height: 24,
        width: 32,
        ..Default::default()
    }
}

#[test]
fn mpegts_with_audio_gives_expected_windows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clip.ts");
    make_clip(&path, "testsrc", 3.0, 25, true);
    let windows = decode_segment(std::fs::read(&path).unwrap(), &config()).unwrap();
    let spans: Vec<_> = windows.iter().map(|w| (w.index, w.start_ms, w.end_ms)).collect();
    assert_eq!(spans, vec![(0, 0, 1000), (1, 500, 1500), (2, 1000, 2000), (3, 1500, 2500), (4, 2000, 3000)]);
    for w in &windows {
        assert_eq!(w.frames.len(), 3 * 24 * 32 * 3);
        assert_eq!(w.audio.len(), 16_000);
    }
    // A 440 Hz sine: real audio, not the zero padding (RMS of a full-scale-ish sine is large).
    let rms = (windows[1].audio.iter().map(|s| s * s).sum::<f32>() / 16_000.0).sqrt();
    assert!(rms > 0.05, "audio RMS {rms}");
    // testsrc moves: windows differ in their pixels.
    assert_ne!(windows[0].frames, windows[4].frames);
}

#[test]
fn mp4_without_audio_pads_silence_and_keeps_frame_rate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clip.mp4");
    make_clip(&path, "testsrc2", 2.5, 10, false);
    let windows = decode_segment(std::fs::read(&path).unwrap(), &config()).unwrap();
    assert_eq!(windows.len(), 4);
    assert_eq!(windows.last().unwrap().end_ms, 2500);
    assert!(windows.iter().all(|w| w.audio.len() == 16_000 && w.audio.iter().all(|&s| s == 0.0)));
}

#[test]
fn unusable_media_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let reason = |bytes: Vec<u8>, config: &DecodeConfig| decode_segment(bytes, config).unwrap_err().reason();

    assert_eq!(reason(Vec::new(), &config()), "undecodable");
    let noise: Vec<u8> = (0..20_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    assert_eq!(reason(noise, &config()), "undecodable");

    let audio_only = dir.path().join("audio.ts");
    ffmpeg(&["-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", audio_only.to_str().unwrap()]);
    assert_eq!(reason(std::fs::read(&audio_only).unwrap(), &config()), "no_video");

    let clip = dir.path().join("clip.ts");
    make_clip(&clip, "testsrc", 3.0, 25, true);
    let bytes = std::fs::read(&clip).unwrap();
    let small = DecodeConfig { max_pixels: 100 * 100, ..config() };
    assert_eq!(reason(bytes.clone(), &small), "too_large");
    let short = DecodeConfig { max_duration: Duration::from_secs(1), ..config() };
    assert_eq!(reason(bytes.clone(), &short), "too_long");
    let hasty = DecodeConfig { timeout: Duration::ZERO, ..config() };
    assert_eq!(reason(bytes.clone(), &hasty), "decode_timeout");

    // A clip cut in half still decodes what it holds.
    let half = bytes[..bytes.len() / 2].to_vec();
    let windows = decode_segment(half, &config()).unwrap();
    assert!(!windows.is_empty() && windows.len() < 5, "{} windows", windows.len());
}

/// Runs the `ffmpeg` CLI and returns its stdout (raw output written to `-`).
fn ffmpeg_stdout(args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("ffmpeg").args(["-loglevel", "error"]).args(args).output().unwrap();
    assert!(out.status.success(), "ffmpeg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// The product's decoder and the `ffmpeg` CLI agree on an H.264 + AAC clip: one window spanning
/// the clip with one sampled frame per source frame gives the CLI's frames (same count, RGB values
/// within colour-conversion rounding), and its audio is the CLI's 16 kHz mono samples.
#[test]
fn decoding_matches_the_ffmpeg_cli() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clip.mp4");
    make_clip(&path, "testsrc", 2.0, 10, true);
    let config = DecodeConfig {
        window: Duration::from_secs(2),
        hop: Duration::from_secs(2),
        frames: 20,
        height: 120,
        width: 160,
        sample_rate: 16_000,
        ..Default::default()
    };
    let windows = decode_segment(std::fs::read(&path).unwrap(), &config).unwrap();
    assert_eq!(windows.len(), 1);
    let file = path.to_str().unwrap();

    let rgb = ffmpeg_stdout(&["-i", file, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]);
    let frame_bytes = 160 * 120 * 3;
    assert_eq!(rgb.len() % frame_bytes, 0);
    assert_eq!(rgb.len() / frame_bytes, 20, "the CLI decodes 20 frames");
    let ours = &windows[0].frames;
    assert_eq!(ours.len(), rgb.len(), "one sampled frame per source frame");
    let diffs: Vec<u32> = ours.iter().zip(&rgb).map(|(&a, &b)| u32::from(a.abs_diff(b))).collect();
    let mean = diffs.iter().sum::<u32>() as f64 / diffs.len() as f64;
    let max = *diffs.iter().max().unwrap();
    assert!(mean < 1.0 && max <= 8, "pixels differ: mean {mean:.3}, max {max}");

    let pcm = ffmpeg_stdout(&["-i", file, "-f", "f32le", "-ac", "1", "-ar", "16000", "-"]);
    let cli: Vec<f32> = pcm.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let audio = &windows[0].audio;
    assert_eq!(audio.len(), 32_000);
    assert!(cli.len().abs_diff(32_000) <= 1024, "the CLI gives {} samples for 2 s", cli.len());
    let n = cli.len().min(audio.len());
    let max = cli[..n].iter().zip(&audio[..n]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(max < 1e-3, "samples differ by up to {max}");
}
