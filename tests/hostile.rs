//! Hostile and broken input against the running daemon: each bad message yields exactly one
//! dead letter with its reason, and a good segment sent after them all is still served (no crash,
//! no stall).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{ffmpeg, make_clip, Broker, Daemon};
use novelstream::sink::{Assignment, DeadLetter};
use novelstream::tools::{read_topic, TopicRecord};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

const INPUT: &str = "hostile.segments";

#[test]
fn every_hostile_input_gives_one_dead_letter_and_the_daemon_keeps_serving() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let roots = dir.path().join("media");
    std::fs::create_dir(&roots).unwrap();
    let kafka = broker.with_topics(1, &[INPUT]);
    let config = dir.path().join("daemon.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[kafka]
brokers = "{brokers}"
input_topic = "{INPUT}"
output_topic = "hostile.assignments"
dead_letter_topic = "hostile.dead"
clusters_topic = "hostile.clusters"
topic_partitions = 1
topic_replication_factor = 1
[source]
file_roots = ["{roots}"]
max_segment_bytes = 400000
[decode]
window = "1s"
hop = "1s"
frames = 1
height = 16
width = 16
max_pixels = 100000
max_duration = "5s"
[model]
known_classes = ["cat"]
channels = [8]
device = "cpu"
[metrics]
listen = "127.0.0.1:0"
"#,
            brokers = broker.address,
            roots = roots.display()
        ),
    )
    .unwrap();

    // Media: a good clip, one too large, one too long, audio only, and a truncated copy.
    let good = roots.join("good.mp4");
    make_clip(&good, "testsrc", 2.0, 10, true);
    let large = dir.path().join("large.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=640x480:rate=5",
        "-t",
        "0.4",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        large.to_str().unwrap(),
    ]);
    let long = dir.path().join("long.ts");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=64x48:rate=5",
        "-t",
        "6",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        long.to_str().unwrap(),
    ]);
    let audio_only = dir.path().join("audio.m4a");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=300:sample_rate=16000",
        "-t",
        "1",
        "-c:a",
        "aac",
        audio_only.to_str().unwrap(),
    ]);
    let good_bytes = std::fs::read(&good).unwrap();
    let noise: Vec<u8> = (0..30_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8).collect();
    let huge: Vec<u8> = (0..500_000u32).map(|i| (i.wrapping_mul(40_503) >> 7) as u8).collect();

    let producer: ThreadedProducer<DefaultProducerContext> = kafka.client_config().create().unwrap();
    let inline = |id: &str, payload: &[u8]| {
        let headers = OwnedHeaders::new()
            .insert(Header { key: "stream_id", value: Some("bad") })
            .insert(Header { key: "segment_id", value: Some(id) })
            .insert(Header { key: "seq", value: Some("0") });
        producer.send(BaseRecord::to(INPUT).key("bad").payload(payload).headers(headers)).unwrap();
    };
    let json = |body: String| producer.send(BaseRecord::to(INPUT).key("bad").payload(&body)).unwrap();
    let reference = |id: &str, uri: &str, extra: &str| {
        format!(r#"{{"stream_id":"bad","segment_id":"{id}","seq":0,"uri":"{uri}"{extra}}}"#)
    };
    let good_uri = format!("file://{}", good.display());
    let mut expected: BTreeMap<&str, usize> = BTreeMap::new();
    let mut expect = |reason: &'static str| *expected.entry(reason).or_default() += 1;

    inline("noise", &noise);
    expect("undecodable");
    inline("truncated", &good_bytes[..good_bytes.len() / 3]);
    expect("undecodable");
    inline("empty-inline", b"");
    expect("bad_message");
    producer.send(BaseRecord::<str, [u8]>::to(INPUT).key("bad")).unwrap();
    expect("bad_message");
    json("{\"stream_id\": \"bad\", \"segment_id\": ".into());
    expect("bad_message");
    json(reference(&"x".repeat(5000), &good_uri, ""));
    expect("bad_message");
    json(reference("schema", &good_uri, r#","schema":"novelstream.segment.v9""#));
    expect("unsupported_schema");
    json(reference("label", &good_uri, r#","label":"giraffe""#));
    expect("unknown_label");
    json(reference("forged-log", &good_uri, r#","label":"x\nINJECTED dead letter""#));
    expect("unknown_label");
    json(reference("metadata", "http://169.254.169.254/latest/meta-data", ""));
    expect("refused_uri");
    json(reference("passwd", "file:///etc/passwd", ""));
    expect("refused_uri");
    json(reference("host", &format!("file://otherhost{}", good.display()), ""));
    expect("refused_uri");
    json(reference("escape", &format!("file://{}/../daemon.toml", roots.display()), ""));
    expect("refused_uri");
    json(reference("missing", &format!("file://{}/missing.mp4", roots.display()), ""));
    expect("unreadable_uri");
    inline("huge", &huge);
    expect("oversize");
    inline("large", &std::fs::read(&large).unwrap());
    expect("too_large");
    inline("long", &std::fs::read(&long).unwrap());
    expect("too_long");
    inline("audio-only", &std::fs::read(&audio_only).unwrap());
    expect("no_video");
    // Nothing a segment says may make the daemon connect anywhere: this listener must stay idle.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    for (id, bytes, reason) in beyond_the_segment(dir.path(), port) {
        inline(id, &bytes);
        expect(reason);
    }
    for (id, name, reason) in special_files(&roots, dir.path()) {
        json(reference(id, &format!("file://{}", roots.join(name).display()), ""));
        expect(reason);
    }
    let bomb = dir.path().join("bomb.mp4");
    // 10,000 frames 10 µs apart: more frames than a 5 s segment may have.
    let timescale = ["-video_track_timescale", "100000", bomb.to_str().unwrap()];
    ffmpeg(
        &[&["-f", "lavfi", "-i", "testsrc=size=16x16:rate=100000", "-t", "0.1", "-c:v", "libx264"][..], &timescale]
            .concat(),
    );
    inline("frame-rate-bomb", &std::fs::read(&bomb).unwrap());
    expect("too_many_frames");
    // After all of that, a good segment.
    json(reference("good", &good_uri, r#","label":"cat""#));
    producer.flush(Duration::from_secs(10)).unwrap();
    let total: usize = expected.values().sum();

    let started = std::time::Instant::now();
    let log = dir.path().join("daemon.log");
    let daemon = Daemon::start_logging_to(&["run", "--config", config.to_str().unwrap()], &log);
    let dead = read_topic(&kafka, "hostile.dead", total, Duration::from_secs(120)).unwrap();
    let served = read_topic(&kafka, "hostile.assignments", 2, Duration::from_secs(60)).unwrap();
    let status = daemon.terminate(Duration::from_secs(30));
    assert!(status.success(), "daemon exited with {status}");
    assert!(started.elapsed() < Duration::from_secs(150), "the daemon stalled: {:?}", started.elapsed());
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("INJECTED dead letter"), "the dead letter was not logged");
    assert!(!log.lines().any(|l| l.starts_with("INJECTED")), "input text forged a log line");
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("a segment made the daemon connect to 127.0.0.1:{port}: {other:?}"),
    }

    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for TopicRecord { payload, .. } in &dead {
        let letter: DeadLetter = serde_json::from_slice(payload).unwrap();
        assert!(!letter.detail.is_empty());
        *reasons.entry(letter.reason).or_default() += 1;
    }
    let expected: BTreeMap<String, usize> = expected.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    assert_eq!(reasons, expected);
    let windows: Vec<Assignment> = served.iter().map(|r| serde_json::from_slice(&r.payload).unwrap()).collect();
    assert_eq!(windows.len(), 2, "the good 2 s clip is served after the hostile ones");
    assert!(windows.iter().all(|a| a.segment_id == "good" && a.cluster == "cat"));
}

/// Inline media that names other media: scripts, playlists and session descriptions pointing at
/// a clip outside every root (relative and absolute), at the loopback listener on `port`, at a
/// `file:` and a `data:` URL. Each must be refused before FFmpeg reads its header.
fn beyond_the_segment(dir: &Path, port: u16) -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let secret = dir.join("secret.mp4");
    make_clip(&secret, "testsrc", 3.0, 10, false);
    let http = format!("http://127.0.0.1:{port}/a.ts");
    let hls = |url: &str| format!("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n{url}\n#EXT-X-ENDLIST\n");
    let dash = format!(
        r#"<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT2S" minBufferTime="PT1S" profiles="urn:mpeg:dash:profile:isoff-on-demand:2011"><BaseURL>http://127.0.0.1:{port}/</BaseURL><Period><AdaptationSet mimeType="video/mp4"><Representation id="1" bandwidth="1000" width="16" height="16"><BaseURL>a.mp4</BaseURL></Representation></AdaptationSet></Period></MPD>"#
    );
    // Without libxml2 FFmpeg has no DASH demuxer, and the manifest is just undecodable.
    let dash_reason = if novelstream::decode::demuxer_exists("dash") { "format_not_allowed" } else { "undecodable" };
    let sdp = format!(
        "v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\nm=video {port} RTP/AVP 96\na=rtpmap:96 H264/90000\n"
    );
    vec![
        ("ffconcat-relative", b"ffconcat version 1.0\nfile 'secret.mp4'\n".to_vec(), "format_not_allowed"),
        (
            "ffconcat-absolute",
            format!("ffconcat version 1.0\nfile '{}'\n", secret.display()).into_bytes(),
            "format_not_allowed",
        ),
        ("hls-http", hls(&http).into_bytes(), "format_not_allowed"),
        ("hls-file", hls(&format!("file://{}", secret.display())).into_bytes(), "format_not_allowed"),
        ("hls-data", hls("data:video/mp2t;base64,R0FBQUFB").into_bytes(), "format_not_allowed"),
        ("dash", dash.into_bytes(), dash_reason),
        ("sdp", sdp.into_bytes(), "format_not_allowed"),
    ]
}

/// Files inside the root that are not media files: three FIFOs (opening one blocks until a writer
/// comes), a device node (when the test runs as root, which may make one), a link to a device
/// and a link out of the root; and an ffconcat script stored as a file.
fn special_files(roots: &Path, dir: &Path) -> Vec<(&'static str, &'static str, &'static str)> {
    let c = |p: PathBuf| std::ffi::CString::new(p.into_os_string().into_encoded_bytes()).unwrap();
    let mut cases = Vec::new();
    for (id, name) in [("fifo-1", "fifo-1"), ("fifo-2", "fifo-2"), ("fifo-3", "fifo-3")] {
        assert_eq!(unsafe { libc::mkfifo(c(roots.join(name)).as_ptr(), 0o600) }, 0);
        cases.push((id, name, "unreadable_uri"));
    }
    // SAFETY: plain calls on valid C strings.
    if unsafe { libc::geteuid() } == 0 {
        let zero = libc::makedev(1, 5);
        assert_eq!(unsafe { libc::mknod(c(roots.join("zero")).as_ptr(), libc::S_IFCHR | 0o600, zero) }, 0);
        cases.push(("device", "zero", "unreadable_uri"));
    } else {
        eprintln!("not root: the device-node case is left out (the link to /dev/zero stays)");
    }
    std::os::unix::fs::symlink("/dev/zero", roots.join("dev-link")).unwrap();
    cases.push(("device-link", "dev-link", "refused_uri"));
    std::os::unix::fs::symlink(dir.join("secret.mp4"), roots.join("out-link")).unwrap();
    cases.push(("link-out", "out-link", "refused_uri"));
    std::fs::write(
        roots.join("script.ffconcat"),
        format!("ffconcat version 1.0\nfile '{}'\n", dir.join("secret.mp4").display()),
    )
    .unwrap();
    cases.push(("ffconcat-file", "script.ffconcat", "format_not_allowed"));
    cases
}
