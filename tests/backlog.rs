//! At-least-once with a backlog: every segment is on the input topic before the daemon starts,
//! written in batches as an ordinary upstream producer writes them, and the daemon is killed
//! (SIGKILL) three times while it works through them, restarting each time from its group's
//! committed offsets. Every segment must be published. On tansu 0.6.0 a restart from an offset
//! inside a stored batch used to skip the rest of that batch (issue 26).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{http_get, make_clip, metric, Broker, Daemon};
use novelstream::config::KafkaConfig;
use novelstream::sink::Assignment;
use novelstream::tools::read_topic;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

const INPUT: &str = "backlog.segments";
const OUTPUT: &str = "backlog.assignments";
const SEGMENTS: usize = 300;
const STREAMS: usize = 8;

/// Publishes the segments in rounds of 25 sent together: the producer's linger makes each round
/// one stored batch per partition, so offsets committed later mostly lie inside a batch.
fn publish_backlog(runtime: &tokio::runtime::Runtime, brokers: &str, clips: &[&Path]) {
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", brokers).set("linger.ms", "100").create().unwrap();
    for round in 0..SEGMENTS / 25 {
        let sends: Vec<_> = (round * 25..(round + 1) * 25)
            .map(|i| {
                let stream = format!("s-{}", i % STREAMS);
                let body = format!(
                    r#"{{"stream_id":"{stream}","segment_id":"seg-{i}","seq":{},"uri":"file://{}"}}"#,
                    i / STREAMS,
                    clips[i % clips.len()].display()
                );
                producer.send_result(FutureRecord::to(INPUT).key(&stream).payload(&body)).unwrap()
            })
            .collect();
        for send in sends {
            runtime.block_on(send).unwrap().unwrap();
        }
    }
}

/// Kills the daemon once it has published `windows` windows.
fn kill_after(mut daemon: Daemon, windows: f64) {
    let port = daemon.metrics_port();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let published = http_get(port, "/metrics")
            .and_then(|(_, body)| metric(&body, "novelstream_windows_published_total"))
            .unwrap_or(0.0);
        if published >= windows {
            break;
        }
        assert!(Instant::now() < deadline, "the daemon published {published} windows in 120 s");
        assert!(daemon.child.try_wait().unwrap().is_none(), "the daemon exited on its own");
        std::thread::sleep(Duration::from_millis(20));
    }
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
}

/// Segment ids published on the output topic, with how many windows of each, once every one of
/// the backlog's segments is there or at the deadline.
fn published(kafka: &KafkaConfig, within: Duration) -> BTreeMap<String, usize> {
    let deadline = Instant::now() + within;
    loop {
        let mut windows = BTreeMap::new();
        for record in read_topic(kafka, OUTPUT, 0, Duration::from_secs(10)).unwrap() {
            let a: Assignment = serde_json::from_slice(&record.payload).unwrap();
            *windows.entry(a.segment_id).or_insert(0) += 1;
        }
        if windows.len() >= SEGMENTS || Instant::now() > deadline {
            return windows;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

#[test]
fn a_daemon_killed_three_times_in_a_backlog_publishes_every_segment() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("media");
    std::fs::create_dir(&media).unwrap();
    let (a, b) = (media.join("a.mp4"), media.join("b.mp4"));
    make_clip(&a, "testsrc", 1.0, 10, false);
    make_clip(&b, "smptebars", 1.0, 10, false);
    let kafka = broker.with_topics(4, &[INPUT]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    publish_backlog(&runtime, &broker.address, &[&a, &b]);

    let config = dir.path().join("daemon.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[kafka]
brokers = "{brokers}"
input_topic = "{INPUT}"
output_topic = "{OUTPUT}"
dead_letter_topic = "backlog.dead"
clusters_topic = "backlog.clusters"
group_id = "backlog"
topic_partitions = 4
topic_replication_factor = 1
[source]
file_roots = ["{media}"]
[decode]
frames = 1
height = 16
width = 16
[model]
channels = [8]
device = "cpu"
[online]
enabled = false
[metrics]
listen = "127.0.0.1:0"
"#,
            brokers = broker.address,
            media = media.display()
        ),
    )
    .unwrap();
    let run = || Daemon::start(&["run", "--config", config.to_str().unwrap()]);
    // Each instance is killed after publishing 40 windows of its own: a third of the backlog
    // goes through killed instances, whose last commits lie wherever their last segment ended.
    for _ in 0..3 {
        kill_after(run(), 40.0);
    }
    let last = run();
    let windows = published(&kafka, Duration::from_secs(240));
    assert!(last.terminate(Duration::from_secs(30)).success());

    let expected: BTreeSet<String> = (0..SEGMENTS).map(|i| format!("seg-{i}")).collect();
    let missing: Vec<_> = expected.iter().filter(|id| !windows.contains_key(*id)).collect();
    let per_segment = windows.values().copied().min().unwrap_or(0);
    let duplicates: usize = windows.values().map(|&n| n - per_segment).sum();
    eprintln!("{} of {SEGMENTS} segments published, {duplicates} windows twice", windows.len());
    assert!(missing.is_empty(), "{} segments never published: {missing:?}", missing.len());
}
