//! Exactly-once delivery through Kafka transactions, against librdkafka's mock cluster: it speaks
//! the transaction protocol (producer ids, AddPartitionsToTxn, TxnOffsetCommit, EndTxn), which
//! tansu refuses. The mock does not hide aborted records from `read_committed` readers nor keep
//! transactional offset commits, so what these tests can show is the daemon's side: outputs go
//! out in committed transactions, each window once, and a fenced instance stops instead of
//! writing outside its transaction.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{make_clip, novelstream, Daemon};
use novelstream::config::KafkaConfig;
use novelstream::sink::{Assignment, DeadLetter};
use novelstream::tools::{read_topic, TopicRecord};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

const INPUT: &str = "eos.segments";
const OUTPUT: &str = "eos.assignments";
const DEAD: &str = "eos.dead-letters";
const CLUSTERS: &str = "eos.clusters";

fn config(brokers: &str) -> String {
    format!(
        r#"
[kafka]
brokers = "{brokers}"
input_topic = "{INPUT}"
output_topic = "{OUTPUT}"
dead_letter_topic = "{DEAD}"
clusters_topic = "{CLUSTERS}"
group_id = "eos-daemon"
create_topics = false
delivery = "exactly-once"
transactional_id = "eos-test-instance"
transaction_interval = "50ms"

[decode]
window = "1s"
hop = "1s"
frames = 2
height = 16
width = 16

[model]
novel_clusters = 3
channels = [8, 16]
device = "cpu"

[metrics]
listen = ""
"#
    )
}

/// A mock cluster with the daemon's four topics, and three 2-second inline clips plus one
/// undecodable segment on the input.
fn cluster_with_input(dir: &Path) -> (MockCluster<'static, rdkafka::producer::DefaultProducerContext>, String) {
    let mock = MockCluster::new(1).unwrap();
    for topic in [INPUT, OUTPUT, DEAD, CLUSTERS] {
        mock.create_topic(topic, 1, 1).unwrap();
    }
    let brokers = mock.bootstrap_servers();
    let mut clips = Vec::new();
    for (i, source) in ["testsrc", "mandelbrot", "testsrc2"].iter().enumerate() {
        let path = dir.join(format!("c{i}.ts"));
        make_clip(&path, source, 2.0, 10, true);
        clips.push(path.to_str().unwrap().to_owned());
    }
    std::fs::write(dir.join("junk.ts"), vec![0x47u8; 4000]).unwrap();
    clips.push(dir.join("junk.ts").to_str().unwrap().to_owned());
    let mut args = vec!["produce", "--brokers", &brokers, "--topic", INPUT, "--stream-id", "cam", "--inline"];
    args.extend(clips.iter().map(String::as_str));
    novelstream(&args);
    (mock, brokers)
}

/// Runs the daemon until it exits by itself or `until` holds, then stops it; returns its exit
/// status (None when it was stopped) and its log.
fn run_daemon(dir: &Path, brokers: &str, until: impl Fn() -> bool) -> (Option<std::process::ExitStatus>, String) {
    let config_path = dir.join("novelstream.toml");
    std::fs::write(&config_path, config(brokers)).unwrap();
    let log_path = dir.join("daemon.log");
    let mut daemon = Daemon::start_logging_to(&["run", "--config", config_path.to_str().unwrap()], &log_path);
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = daemon.child.try_wait().unwrap() {
            break Some(status);
        }
        if until() || Instant::now() > deadline {
            daemon.terminate(Duration::from_secs(60));
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    (status, std::fs::read_to_string(&log_path).unwrap())
}

fn kafka(brokers: &str) -> KafkaConfig {
    KafkaConfig { brokers: brokers.to_owned(), ..Default::default() }
}

#[test]
fn every_window_once_through_committed_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let (_mock, brokers) = cluster_with_input(dir.path());
    let kafka = kafka(&brokers);
    let published = || read_topic(&kafka, OUTPUT, 6, Duration::from_secs(1)).unwrap().len() >= 6;
    let (status, log) = run_daemon(dir.path(), &brokers, published);
    assert!(status.is_none(), "daemon exited early:\n{log}");
    assert!(log.contains("exactly-once delivery"), "{log}");
    assert!(!log.contains("transaction failed"), "{log}");

    // Three 2-second clips at 1-second windows: six windows, each exactly once; one dead letter.
    let assignments = read_topic(&kafka, OUTPUT, 7, Duration::from_secs(3)).unwrap();
    let mut windows = BTreeSet::new();
    for TopicRecord { payload, .. } in &assignments {
        let a: Assignment = serde_json::from_slice(payload).unwrap();
        assert!(windows.insert((a.segment_id, a.window)), "window published twice");
    }
    assert_eq!(windows.len(), 6, "{log}");
    let dead = read_topic(&kafka, DEAD, 2, Duration::from_secs(3)).unwrap();
    assert_eq!(dead.len(), 1);
    let letter: DeadLetter = serde_json::from_slice(&dead[0].payload).unwrap();
    assert_eq!(letter.reason, "undecodable");
}

#[test]
fn a_fenced_instance_stops_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (mock, brokers) = cluster_with_input(dir.path());
    // Every EndTxn answers that a newer instance took over this transactional id.
    mock.request_errors(RDKafkaApiKey::EndTxn, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED; 20]);
    let (status, log) = run_daemon(dir.path(), &brokers, || false);
    let status = status.unwrap_or_else(|| panic!("a fenced daemon kept running:\n{log}"));
    assert!(!status.success(), "{log}");
    assert!(log.contains("transaction not committed"), "{log}");
    assert!(log.contains("eos-test-instance"), "the error names the transactional id:\n{log}");
}
