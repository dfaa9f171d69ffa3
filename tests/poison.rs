//! A message that kills the daemon while it is decoded (here: SIGKILL whenever its crash marker
//! shows it in decoding, as an abort inside libav* would) stops being a crash loop: after the
//! second death with it in flight, the restarted daemon dead-letters it as `crashed_decoder` and
//! serves the segment after it.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{ffmpeg, make_clip, Broker, Daemon};
use novelstream::sink::{Assignment, DeadLetter};
use novelstream::tools::read_topic;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

const INPUT: &str = "poison.segments";

/// Waits until the marker of the message at offset 0 shows it in decoding, then kills the daemon.
fn kill_while_decoding(mut daemon: Daemon, markers: &Path, deaths: &str) {
    let marker = markers.join(format!("{INPUT}.0.0"));
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::read_to_string(&marker).map(|s| s.trim() != deaths).unwrap_or(true) {
        assert!(Instant::now() < deadline, "the poison message was never decoded (attempt {deaths})");
        assert!(daemon.child.try_wait().unwrap().is_none(), "the daemon exited on its own");
        std::thread::sleep(Duration::from_millis(2));
    }
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
}

#[test]
fn a_message_that_kills_the_decoder_twice_becomes_a_dead_letter() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let (roots, markers) = (dir.path().join("media"), dir.path().join("markers"));
    std::fs::create_dir(&roots).unwrap();
    // The "poison": a clip slow enough to decode (a second or so) to be caught in decoding.
    let slow = roots.join("slow.ts");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=1280x720:rate=25",
        "-t",
        "5",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        slow.to_str().unwrap(),
    ]);
    let good = roots.join("good.mp4");
    make_clip(&good, "testsrc", 2.0, 10, false);
    let kafka = broker.with_topics(1, &[INPUT]);
    let config = dir.path().join("daemon.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[kafka]
brokers = "{brokers}"
input_topic = "{INPUT}"
output_topic = "poison.assignments"
dead_letter_topic = "poison.dead"
clusters_topic = "poison.clusters"
topic_partitions = 1
topic_replication_factor = 1
[kafka.properties]
"session.timeout.ms" = "6000"
[source]
file_roots = ["{roots}"]
[decode]
frames = 1
height = 16
width = 16
max_pixels = 1000000
[model]
known_classes = ["cat"]
channels = [8]
device = "cpu"
[pipeline]
crash_markers = "{markers}"
"#,
            brokers = broker.address,
            roots = roots.display(),
            markers = markers.display()
        ),
    )
    .unwrap();
    let producer: ThreadedProducer<DefaultProducerContext> = kafka.client_config().create().unwrap();
    for (id, path) in [("slow", &slow), ("good", &good)] {
        let body = format!(r#"{{"stream_id":"s-{id}","segment_id":"{id}","seq":0,"uri":"file://{}"}}"#, path.display());
        producer.send(BaseRecord::to(INPUT).key(id).payload(&body)).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    let run = || Daemon::start(&["run", "--config", config.to_str().unwrap()]);
    // First death: the message was in flight (with whatever else was). Second: decoded alone.
    kill_while_decoding(run(), &markers, "1");
    kill_while_decoding(run(), &markers, "2");
    let daemon = run();
    let dead = read_topic(&kafka, "poison.dead", 1, Duration::from_secs(120)).unwrap();
    let served = read_topic(&kafka, "poison.assignments", 2, Duration::from_secs(60)).unwrap();
    let status = daemon.terminate(Duration::from_secs(30));
    assert!(status.success(), "daemon exited with {status}");

    let letter: DeadLetter = serde_json::from_slice(&dead[0].payload).unwrap();
    assert_eq!((letter.reason.as_str(), letter.offset, letter.retriable), ("crashed_decoder", 0, false), "{letter:?}");
    assert_eq!(dead.len(), 1);
    let windows: Vec<Assignment> = served.iter().map(|r| serde_json::from_slice(&r.payload).unwrap()).collect();
    assert!(windows.len() >= 2 && windows.iter().all(|a| a.segment_id == "good"), "{windows:?}");
    assert!(std::fs::read_dir(&markers).unwrap().next().is_none(), "markers left behind");
}
