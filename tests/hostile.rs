//! Hostile and broken input against the running daemon: each bad message yields exactly one
//! dead letter with its reason, and a good segment sent after them all is still served (no crash,
//! no stall).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{ffmpeg, make_clip, Broker, Daemon};
use novelstream::config::KafkaConfig;
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
    let kafka = KafkaConfig {
        brokers: broker.address.clone(),
        topic_partitions: 1,
        topic_replication_factor: 1,
        ..Default::default()
    };
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

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(novelstream::admin::ensure_topics(&kafka, &[INPUT])).unwrap();
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
    // After all of that, a good segment.
    json(reference("good", &good_uri, r#","label":"cat""#));
    producer.flush(Duration::from_secs(10)).unwrap();
    let total: usize = expected.values().sum();

    let daemon = Daemon::start(&["run", "--config", config.to_str().unwrap()]);
    let dead = read_topic(&kafka, "hostile.dead", total, Duration::from_secs(120)).unwrap();
    let served = read_topic(&kafka, "hostile.assignments", 2, Duration::from_secs(60)).unwrap();
    let status = daemon.terminate(Duration::from_secs(30));
    assert!(status.success(), "daemon exited with {status}");

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
