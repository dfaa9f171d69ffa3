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
