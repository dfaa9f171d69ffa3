//! The walking skeleton end to end: a real broker, real clips, the real binary.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::{ffmpeg, http_get, make_clip, metric, novelstream, wait_for_metrics, Broker, Daemon};
use novelstream::config::KafkaConfig;
use novelstream::decode::spans;
use novelstream::sink::{
    Assignment, ClusterRecord, DeadLetter, Kind, ModelRecord, ASSIGNMENT_SCHEMA, CLUSTER_SCHEMA, MODEL_KEY,
    MODEL_SCHEMA,
};
use novelstream::tools::{read_topic, TopicRecord};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

const INPUT: &str = "e2e.segments";
const OUTPUT: &str = "e2e.assignments";
const DEAD: &str = "e2e.dead-letters";
const CLUSTERS: &str = "e2e.clusters";
const GROUP: &str = "e2e-daemon";

/// The daemon's config; its metrics endpoint on a port the system picks (see
/// [`Daemon::metrics_port`]).
fn config(broker: &Broker, roots: &std::path::Path) -> String {
    format!(
        r#"
[kafka]
brokers = "{brokers}"
input_topic = "{INPUT}"
output_topic = "{OUTPUT}"
dead_letter_topic = "{DEAD}"
clusters_topic = "{CLUSTERS}"
group_id = "{GROUP}"
topic_partitions = 2
topic_replication_factor = 1

[source]
file_roots = ["{roots}"]

[decode]
window = "1s"
hop = "500ms"
frames = 2
height = 32
width = 32

[model]
known_classes = ["pattern"]
novel_clusters = 3
# The pipeline's answers are checked here, in the task-aware setting: every window of an
# unlabelled segment goes to a novel cluster (tests/av.rs runs the open world).
open_world = false
channels = [8, 16]
device = "cpu"

[metrics]
listen = "127.0.0.1:0"
"#,
        brokers = broker.address,
        roots = roots.display()
    )
}

/// A broker with the three topics, a scratch folder and its `clips/` (the allowed root).
fn start() -> (Broker, tempfile::TempDir, std::path::PathBuf, KafkaConfig) {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let clips = dir.path().join("clips");
    std::fs::create_dir(&clips).unwrap();
    let kafka = broker.with_topics(2, &[INPUT, OUTPUT, DEAD]);
    (broker, dir, clips, kafka)
}

#[test]
fn segments_in_assignments_out_dead_letters_and_commits() {
    let (broker, dir, clips, kafka) = start();

    // Stream "cam-a": two referenced MPEG-TS clips with audio. Stream "cam-b": one labelled
    // inline MP4 clip without audio. Durations are chosen for distinct window counts.
    make_clip(&clips.join("a0.ts"), "testsrc", 3.0, 25, true);
    make_clip(&clips.join("a1.ts"), "mandelbrot", 2.0, 25, true);
    make_clip(&dir.path().join("b0.mp4"), "testsrc2", 2.5, 20, false);
    let produce = |stream: &str, flags: &[&str], files: &[&Path]| {
        let mut args = vec!["produce", "--brokers", &broker.address, "--topic", INPUT, "--stream-id", stream];
        args.extend_from_slice(flags);
        args.extend(files.iter().map(|f| f.to_str().unwrap()));
        novelstream(&args)
    };
    let produced_a = produce("cam-a", &[], &[&clips.join("a0.ts"), &clips.join("a1.ts")]);
    let produced_b = produce("cam-b", &["--label", "pattern", "--inline"], &[&dir.path().join("b0.mp4")]);

    // Planted bad input: random bytes inline, a reference outside the allowed roots,
    // malformed JSON, and a label the daemon does not know.
    let garbage: Vec<u8> = (0..50_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(dir.path().join("garbage.ts"), garbage).unwrap();
    produce("cam-bad", &["--inline"], &[&dir.path().join("garbage.ts")]);
    produce("cam-bad", &[], &[&dir.path().join("b0.mp4")]);
    produce("cam-bad", &["--label", "giraffe"], &[&clips.join("a1.ts")]);
    let producer: ThreadedProducer<DefaultProducerContext> = kafka.client_config().create().unwrap();
    producer.send(BaseRecord::to(INPUT).key("cam-bad").payload("{\"stream_id\": 7,")).unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();

    let config_path = dir.path().join("novelstream.toml");
    std::fs::write(&config_path, config(&broker, &clips)).unwrap();
    let mut daemon = Daemon::start(&["run", "--config", config_path.to_str().unwrap()]);
    let port = daemon.metrics_port();

    let expected_windows = 5 + 3 + 4;
    let assignments = read_topic(&kafka, OUTPUT, expected_windows, Duration::from_secs(120)).unwrap();
    let dead_letters = read_topic(&kafka, DEAD, 4, Duration::from_secs(30)).unwrap();
    // The endpoint: health, readiness, and counts that match what was published. Fewer windows
    // than one training batch arrived, so the model is still version 0.
    assert_eq!(http_get(port, "/healthz").unwrap().0, 200);
    assert_eq!(http_get(port, "/readyz").unwrap().0, 200);
    assert_eq!(http_get(port, "/nothing").unwrap().0, 404);
    let published = format!("novelstream_windows_published_total {expected_windows}");
    let body = wait_for_metrics(port, &published, Duration::from_secs(10), |body| {
        metric(body, "novelstream_windows_published_total") == Some(expected_windows as f64)
    });
    for (name, value) in [
        ("novelstream_segments_in_total", 7.0),
        ("novelstream_windows_assigned_total", expected_windows as f64),
        ("novelstream_windows_published_total", expected_windows as f64),
        ("novelstream_dead_letters_total", 4.0),
        ("novelstream_model_version", 0.0),
        ("novelstream_ready", 1.0),
    ] {
        assert_eq!(metric(&body, name), Some(value), "{name} in\n{body}");
    }
    assert!(metric(&body, "novelstream_decode_seconds_count").unwrap() >= 5.0);
    let status = daemon.terminate(Duration::from_secs(30));
    assert!(status.success(), "daemon exited with {status}");

    // The clusters topic: the latest record per cluster accounts for every window, and the
    // labelled stream's class holds its 4 windows with exemplars from that stream.
    let mut latest: BTreeMap<String, ClusterRecord> = BTreeMap::new();
    for TopicRecord { key, payload, .. } in read_topic(&kafka, CLUSTERS, 1, Duration::from_secs(30)).unwrap() {
        if key == MODEL_KEY {
            let model: ModelRecord = serde_json::from_slice(&payload).unwrap();
            assert_eq!(model.schema, MODEL_SCHEMA);
            continue;
        }
        let record: ClusterRecord = serde_json::from_slice(&payload).unwrap();
        assert_eq!((record.schema.as_str(), record.cluster.as_str()), (CLUSTER_SCHEMA, key.as_str()));
        latest.insert(key, record);
    }
    assert_eq!(latest.values().map(|r| r.size).sum::<u64>(), expected_windows as u64, "{latest:?}");
    let pattern = &latest["pattern"];
    assert_eq!((pattern.kind, pattern.size), (Kind::Known, 4));
    assert!(!pattern.exemplars.is_empty() && pattern.exemplars.iter().all(|e| e.stream_id == "cam-b"));
    assert!(pattern.first_seen_ms <= pattern.last_seen_ms);

    // Exactly the expected windows, each once, with the right coordinates.
    let segment_ids = |out: &str| out.lines().map(|l| l.split(' ').next().unwrap().to_owned()).collect::<Vec<_>>();
    let (a_ids, b_ids) = (segment_ids(&produced_a), segment_ids(&produced_b));
    let mut expected = BTreeSet::new();
    for (segment_id, duration_ms) in [(&a_ids[0], 3000), (&a_ids[1], 2000), (&b_ids[0], 2500)] {
        for span in spans(duration_ms, 1000, 500) {
            expected.insert((segment_id.clone(), span.index, span.start_ms, span.end_ms));
        }
    }
    assert_eq!(expected.len(), expected_windows);
    let mut seen = BTreeSet::new();
    for TopicRecord { key, payload, .. } in &assignments {
        let a: Assignment = serde_json::from_slice(payload).unwrap();
        assert_eq!(a.schema, ASSIGNMENT_SCHEMA);
        assert_eq!(&a.stream_id, key, "assignments are keyed by stream id");
        assert_eq!(a.model_version, 0);
        assert!((0.0..=1.0).contains(&a.confidence));
        if a.stream_id == "cam-b" {
            assert_eq!((a.kind, a.cluster.as_str()), (Kind::Known, "pattern"));
        } else {
            assert_eq!(a.kind, Kind::Novel);
            let k: u32 = a.cluster.strip_prefix("novel-").unwrap().parse().unwrap();
            assert!(k < 3);
        }
        assert!(seen.insert((a.segment_id, a.window, a.start_ms, a.end_ms)), "duplicate window");
    }
    assert_eq!(seen, expected);

    // One dead letter per planted bad input, each with its reason and coordinates.
    let mut reasons = BTreeMap::new();
    for TopicRecord { payload, .. } in &dead_letters {
        let d: DeadLetter = serde_json::from_slice(payload).unwrap();
        assert_eq!(d.topic, INPUT);
        assert!(d.offset >= 0);
        *reasons.entry(d.reason).or_insert(0) += 1;
    }
    let expected_reasons: BTreeMap<String, i32> =
        [("undecodable", 1), ("refused_uri", 1), ("bad_message", 1), ("unknown_label", 1)]
            .into_iter()
            .map(|(r, n)| (r.to_owned(), n))
            .collect();
    assert_eq!(reasons, expected_reasons);

    // Every input offset is committed: the group's position is the end of each partition.
    let mut client = kafka.client_config();
    client.set("group.id", GROUP);
    let checker: BaseConsumer = client.create().unwrap();
    let mut list = TopicPartitionList::new();
    list.add_partition(INPUT, 0);
    list.add_partition(INPUT, 1);
    let committed = checker.committed_offsets(list, Duration::from_secs(10)).unwrap();
    let mut total = 0;
    for element in committed.elements() {
        let (low, high) = checker.fetch_watermarks(INPUT, element.partition(), Duration::from_secs(5)).unwrap();
        total += high - low;
        match element.offset() {
            Offset::Offset(o) => assert_eq!(o, high, "partition {} not committed to its end", element.partition()),
            Offset::Invalid if high == low => {}
            other => panic!("partition {} committed {other:?}, end {high}", element.partition()),
        }
    }
    assert_eq!(total, 7, "three clips and four bad inputs were produced");

    // The example downstream consumer handles each window once: a redelivered assignment is
    // skipped, and a restart of the consumer resumes after its committed offsets.
    producer.send(BaseRecord::to(OUTPUT).key(&assignments[0].key).payload(&assignments[0].payload)).unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    let example = Path::new(env!("CARGO_BIN_EXE_novelstream")).parent().unwrap().join("examples/consume_assignments");
    assert!(example.exists(), "{} missing: `cargo test` builds the examples", example.display());
    let consume = || {
        let out = std::process::Command::new(&example)
            .args(["--brokers", &broker.address, "--topic", OUTPUT, "--group-id", "e2e-example", "--idle-exit", "4s"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    let (first, summary) = consume();
    assert_eq!(first.lines().count(), expected_windows, "{first}");
    assert!(summary.contains("1 repeats skipped"), "{summary}");
    let (again, _) = consume();
    assert_eq!(again, "", "a restarted consumer resumes after its commits");
}

/// With enough windows the trainer steps and publishes new versions while the daemon serves:
/// windows assigned after a new version name it, and the stability metric is reported.
#[test]
fn the_daemon_learns_while_it_serves() {
    let (broker, dir, clips, kafka) = start();
    make_clip(&clips.join("long.ts"), "testsrc", 8.0, 10, true);
    make_clip(&clips.join("labelled.ts"), "mandelbrot", 4.0, 10, true);
    let produce = |stream: &str, flags: &[&str]| {
        let mut args = vec!["produce", "--brokers", &broker.address, "--topic", INPUT, "--stream-id", stream];
        args.extend_from_slice(flags);
        novelstream(&args)
    };
    let checkpoint = dir.path().join("state/learner.ckpt");
    let online = format!(
        "\n[online]\nmin_unlabelled = 8\nsnapshot_every = 2\nreplay_size = 8\n[train]\nbatch_size = 4\nbank_size = 32\n[checkpoint]\npath = \"{}\"\n",
        checkpoint.display()
    );
    let config_path = dir.path().join("novelstream.toml");
    std::fs::write(&config_path, config(&broker, &clips) + &online).unwrap();
    let mut daemon = Daemon::start(&["run", "--config", config_path.to_str().unwrap()]);
    let port = daemon.metrics_port();

    // First wave: 15 unlabelled and 7 labelled windows, enough to start training.
    produce("cam-1", &[clips.join("long.ts").to_str().unwrap()]);
    produce("cam-2", &["--label", "pattern", clips.join("labelled.ts").to_str().unwrap()]);
    // Version 2 compares the replay set's clusters with version 1's: stability is measured then
    // (the fraction alone reads 0 before that, so the count of measurements tells).
    // The trainer may reach version 2 on the unlabelled windows before the labelled segment is
    // decoded: the labelled buffer is waited for too, not read at that moment.
    let what = "model version 2 with a stability measurement, and labelled windows buffered";
    let body = wait_for_metrics(port, what, Duration::from_secs(120), |body| {
        metric(body, "novelstream_model_version").unwrap_or(0.0) >= 2.0
            && metric(body, "novelstream_cluster_changed_measurements_total").unwrap_or(0.0) >= 1.0
            && metric(body, "novelstream_buffered_labelled_windows").unwrap_or(0.0) > 0.0
    });
    assert!(metric(&body, "novelstream_train_steps_total").unwrap() >= 4.0);
    let changed = metric(&body, "novelstream_cluster_changed_fraction").unwrap();
    assert!((0.0..=1.0).contains(&changed));
    // Second wave, assigned by a trained version.
    produce("cam-3", &["--first-seq", "0", clips.join("labelled.ts").to_str().unwrap()]);
    let assignments = read_topic(&kafka, OUTPUT, 15 + 7 + 7, Duration::from_secs(120)).unwrap();
    let status = daemon.terminate(Duration::from_secs(30));
    assert!(status.success(), "daemon exited with {status}");
    let versions: Vec<(String, u64)> = assignments
        .iter()
        .map(|r| serde_json::from_slice::<Assignment>(&r.payload).unwrap())
        .map(|a| (a.stream_id, a.model_version))
        .collect();
    assert!(versions.iter().filter(|(s, _)| s == "cam-3").all(|(_, v)| *v >= 2), "{versions:?}");

    // Shutdown wrote a checkpoint; a restarted daemon resumes from it: its first assignments
    // carry a version no older than the last one before the restart.
    let (meta, _) = novelstream::train::checkpoint::load(&checkpoint).unwrap();
    let last = versions.iter().map(|(_, v)| *v).max().unwrap();
    assert!(meta.version >= last, "checkpoint version {} < {last}", meta.version);
    let daemon = Daemon::start(&["run", "--config", config_path.to_str().unwrap()]);
    produce("cam-4", &[clips.join("labelled.ts").to_str().unwrap()]);
    let assignments = read_topic(&kafka, OUTPUT, 15 + 7 + 7 + 7, Duration::from_secs(120)).unwrap();
    assert!(daemon.terminate(Duration::from_secs(30)).success());
    let resumed: Vec<u64> = assignments
        .iter()
        .map(|r| serde_json::from_slice::<Assignment>(&r.payload).unwrap())
        .filter(|a| a.stream_id == "cam-4")
        .map(|a| a.model_version)
        .collect();
    assert_eq!(resumed.len(), 7);
    assert!(resumed.iter().all(|&v| v >= meta.version), "{resumed:?} after checkpoint version {}", meta.version);
}

/// Decoders finish a stream's segments out of order (a long clip first, short ones after it, four
/// decoders); its windows are still published in `seq` order, window after window.
#[test]
fn a_streams_windows_are_published_in_seq_order() {
    let (broker, dir, clips, kafka) = start();
    let long = clips.join("long.ts");
    ffmpeg(
        &["-f", "lavfi", "-i", "testsrc=size=640x480:rate=25", "-t", "8", "-c:v", "libx264", "-preset", "ultrafast"]
            .into_iter()
            .chain([long.to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    let short = clips.join("short.ts");
    make_clip(&short, "mandelbrot", 1.0, 10, false);
    let mut args = vec!["produce", "--brokers", &broker.address, "--topic", INPUT, "--stream-id", "cam-o"];
    let files: Vec<String> =
        std::iter::once(long.display().to_string()).chain((0..6).map(|_| short.display().to_string())).collect();
    args.extend(files.iter().map(String::as_str));
    novelstream(&args);

    let config_path = dir.path().join("novelstream.toml");
    std::fs::write(&config_path, config(&broker, &clips) + "\n[pipeline]\ndecode_workers = 4\n").unwrap();
    let daemon = Daemon::start(&["run", "--config", config_path.to_str().unwrap()]);
    let windows = 15 + 6;
    let records = read_topic(&kafka, OUTPUT, windows, Duration::from_secs(120)).unwrap();
    let status = daemon.terminate(Duration::from_secs(30));
    assert!(status.success(), "daemon exited with {status}");
    let published: Vec<(u64, u32)> = records
        .iter()
        .map(|r| serde_json::from_slice::<Assignment>(&r.payload).unwrap())
        .map(|a| (a.seq, a.window))
        .collect();
    assert_eq!(published.len(), windows);
    let mut sorted = published.clone();
    sorted.sort();
    assert_eq!(published, sorted, "windows of one stream published out of seq order");
}
