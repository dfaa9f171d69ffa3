//! Failures of the machine rather than of the segment are tried again before a dead letter, and
//! the dead letter says so; failures of the segment are not retried.

mod common;

use std::time::{Duration, Instant};

use common::make_clip;
use novelstream::config::{DecodeConfig, SourceConfig};
use novelstream::decode::{fetch_and_decode, ATTEMPTS};
use novelstream::source::{parse_segment, Segment, UriPolicy};

fn reference(path: &std::path::Path) -> Segment {
    let json = format!(r#"{{"stream_id":"s","segment_id":"a","seq":0,"uri":"file://{}"}}"#, path.display());
    parse_segment(Some(json.as_bytes()), &[], &[], 1 << 24).unwrap()
}

/// Opens `/dev/null` until the process has no descriptor left (under a lowered soft limit).
fn exhaust_descriptors() -> Vec<std::fs::File> {
    let limit = libc::rlimit { rlim_cur: 512, rlim_max: libc::RLIM_INFINITY };
    let mut current = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain calls with valid pointers to `rlimit` values.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut current), 0);
        let limit = libc::rlimit { rlim_max: current.rlim_max, ..limit };
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    let mut held = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        held.push(f);
    }
    held
}

// One test, so that running out of descriptors cannot touch another test's thread.
#[test]
fn machine_failures_are_retried_segment_failures_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    make_clip(&root.join("good.mp4"), "testsrc", 2.0, 10, false);
    let policy = UriPolicy::new(&SourceConfig {
        allowed_schemes: vec!["file".into()],
        file_roots: vec![root.clone()],
        max_segment_bytes: 1 << 24,
    })
    .unwrap();
    let decode = DecodeConfig { frames: 1, height: 8, width: 8, ..Default::default() };
    let backoff = Duration::from_millis(300);

    // No descriptor left for the fetch: the first try fails, a later one after they free up works.
    let held = exhaust_descriptors();
    assert!(!held.is_empty());
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        drop(held);
    });
    let started = Instant::now();
    let windows = fetch_and_decode(&reference(&root.join("good.mp4")), &policy, &decode, backoff).unwrap();
    assert_eq!(windows.len(), 2);
    assert!(started.elapsed() >= backoff, "the first try cannot have succeeded: {:?}", started.elapsed());
    release.join().unwrap();

    // A deadline missed every time: tried ATTEMPTS times, then a retriable dead letter.
    let hasty = DecodeConfig { timeout: Duration::ZERO, ..decode.clone() };
    let headers: [(&str, &[u8]); 3] = [("stream_id", b"s"), ("segment_id", b"b"), ("seq", b"0")];
    let inline = parse_segment(Some(&std::fs::read(root.join("good.mp4")).unwrap()), &headers, &[], 1 << 24).unwrap();
    let started = Instant::now();
    let err = fetch_and_decode(&inline, &policy, &hasty, backoff).unwrap_err();
    assert_eq!((err.reason, err.retriable), ("decode_timeout", true));
    assert!(err.detail.contains(&format!("({ATTEMPTS} attempts)")), "{}", err.detail);
    assert!(started.elapsed() >= backoff * 3, "backoff of 300 ms then 600 ms: {:?}", started.elapsed());
    // The fetch shares the deadline, and missing it there is retriable too.
    let err = fetch_and_decode(&reference(&root.join("good.mp4")), &policy, &hasty, backoff).unwrap_err();
    assert_eq!((err.reason, err.retriable), ("resources_exhausted", true), "{}", err.detail);

    // What is wrong with the segment itself is not tried again.
    std::fs::write(root.join("noise.mp4"), vec![7u8; 5000]).unwrap();
    let started = Instant::now();
    let err = fetch_and_decode(&reference(&root.join("noise.mp4")), &policy, &decode, backoff).unwrap_err();
    assert_eq!((err.reason, err.retriable), ("undecodable", false));
    let err = fetch_and_decode(&reference(&root.join("missing.mp4")), &policy, &decode, backoff).unwrap_err();
    assert_eq!((err.reason, err.retriable), ("unreadable_uri", false));
    assert!(started.elapsed() < backoff, "{:?}", started.elapsed());
}
