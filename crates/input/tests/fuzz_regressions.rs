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
