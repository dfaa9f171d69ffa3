//! Replays everything the fuzz targets keep — hand-made seeds, the minimised corpus and every
//! crash input found so far — through the same case functions, on stable Rust, so a fixed crash
//! stays fixed.

use std::path::{Path, PathBuf};

use novelstream_input::fuzz::{decode_case, parse_case};

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
