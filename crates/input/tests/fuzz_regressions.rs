//! Replays everything the fuzz targets keep — hand-made seeds, the minimised corpus and every
//! crash input found so far — through the same case functions, on stable Rust, so a fixed crash
//! stays fixed.

use std::path::{Path, PathBuf};

use novelstream_input::fuzz::{decode_case, demux_case, parse_case};

fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut files = Vec::new();
    for kind in ["seeds", "corpus", "regressions"] {
        let Ok(dir) = std::fs::read_dir(fuzz.join(kind).join(target)) else { continue };
        files.extend(dir.map(|e| e.unwrap().path()).filter(|p| p.is_file()));
    }
    files.sort();
    files
}

fn replay(target: &str, case: fn(&[u8])) {
    let files = inputs(target);
    assert!(!files.is_empty(), "no kept inputs for {target}");
    for path in files {
        let data = std::fs::read(&path).unwrap();
        if std::panic::catch_unwind(|| case(&data)).is_err() {
            panic!("{target} fails on {}", path.display());
        }
    }
}

#[test]
fn parse_segment_inputs() {
    replay("parse_segment", parse_case);
}

#[test]
fn decode_segment_inputs() {
    replay("decode_segment", decode_case);
}

#[test]
fn demux_allow_list_inputs() {
    replay("demux_allow_list", demux_case);
}

/// Every playlist, script and session description among the seeds is refused for its format.
#[test]
fn seeded_playlists_and_scripts_are_refused_for_their_format() {
    let config = novelstream_input::fuzz::decode_case_config();
    let mut refused = 0;
    for path in inputs("demux_allow_list") {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if [".ffconcat", ".m3u8", ".m3u", ".sdp", ".mpd"].iter().any(|ext| name.ends_with(ext))
            && path.starts_with(seeds())
        {
            let err = novelstream_input::decode::decode_segment(std::fs::read(&path).unwrap(), &config).unwrap_err();
            assert!(matches!(err.reason(), "format_not_allowed" | "undecodable"), "{name}: {err}");
            refused += usize::from(err.reason() == "format_not_allowed");
        }
    }
    assert!(refused >= 4, "only {refused} seeds were refused for their format");
}

fn seeds() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds")
}

/// The MP4 of 350,000 corrupt samples is given up on for its corruption, well inside the
/// decode deadline, instead of being read to its end (which outlasted the deadline).
#[test]
fn endless_corrupt_packets_are_given_up_on() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/regressions/decode_segment/timeout-f36865070aafa5fb0451c99e1990e738f4dba7d1");
    let config = novelstream_input::fuzz::decode_case_config();
    let err = novelstream_input::decode::decode_segment(std::fs::read(path).unwrap(), &config).unwrap_err();
    assert_ne!(err.reason(), "decode_timeout", "{err}");
}
