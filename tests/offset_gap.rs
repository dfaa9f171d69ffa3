//! A group that resumes from a committed offset the broker does not serve from. tansu 0.6.0's
//! memory storage answers a fetch from the middle of a stored record batch with the next batch,
//! and a fetch from the middle of the last batch with nothing (RESULTS.md, "Delivery"), so the
//! offsets between would never be delivered. The daemon reads such a partition again from before
//! its committed offset, skips what was committed, and so processes every offset after it.

mod common;

use std::time::Duration;

use common::{metric, wait_for_metrics, Broker, Daemon};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const INPUT: &str = "gap.segments";
const GROUP: &str = "gap-group";

#[test]
fn offsets_after_a_committed_position_inside_a_stored_batch_are_all_processed() {
    let broker = Broker::start();
    broker.with_topics(2, &[INPUT]);
    let runtime = tokio::runtime::Runtime::new().unwrap();

    // Two stored batches of ten messages (offsets 0-9 and 10-19) in each partition: a linger
    // longer than it takes to send ten makes each send round one batch. The payloads are not
    // segments, so every one that is processed is a dead letter.
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", &broker.address).set("linger.ms", "200").create().unwrap();
    for batch in 0..2 {
        let sends: Vec<_> = (0..20)
            .map(|i| {
                let key = format!("{batch}-{i}");
                let record = FutureRecord::to(INPUT).key(&key).payload("not a segment").partition(i % 2);
                producer.send_result(record).unwrap()
            })
            .collect();
        for send in sends {
            runtime.block_on(send).unwrap().unwrap();
        }
    }

    // The group committed offset 5 of partition 0, inside its first batch, and 15 of partition 1,
    // inside its last batch, as a killed daemon may have left them.
    let committer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", &broker.address).set("group.id", GROUP).create().unwrap();
    let mut position = TopicPartitionList::new();
    position.add_partition_offset(INPUT, 0, Offset::Offset(5)).unwrap();
    position.add_partition_offset(INPUT, 1, Offset::Offset(15)).unwrap();
    committer.commit(&position, CommitMode::Sync).unwrap();
    drop(committer);

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("daemon.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"{}\"\ninput_topic = \"{INPUT}\"\noutput_topic = \"gap.assignments\"\n\
             dead_letter_topic = \"gap.dead\"\nclusters_topic = \"gap.clusters\"\ngroup_id = \"{GROUP}\"\n\
             topic_partitions = 2\ntopic_replication_factor = 1\n[model]\nchannels = [8]\ndevice = \"cpu\"\n\
             [online]\nenabled = false\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
            broker.address
        ),
    )
    .unwrap();
    let mut daemon = Daemon::start(&["run", "--config", config.to_str().unwrap()]);
    let port = daemon.metrics_port();
    // Offsets 5-19 of partition 0 and 15-19 of partition 1: 20 dead letters.
    let body = wait_for_metrics(port, "every offset after the committed ones", Duration::from_secs(90), |body| {
        metric(body, "novelstream_dead_letters_total").unwrap_or(0.0) >= 20.0
    });
    // Nothing more comes: offsets before the committed ones were skipped, not processed again.
    std::thread::sleep(Duration::from_secs(3));
    let last = common::http_get(port, "/metrics").map(|(_, body)| body).unwrap_or(body);
    assert!(daemon.terminate(Duration::from_secs(30)).success());
    let value = |name: &str| metric(&last, name).unwrap_or_else(|| panic!("{name} missing"));
    assert_eq!(value("novelstream_dead_letters_total"), 20.0, "offsets 5-19 and 15-19, each once");
    assert_eq!(value("novelstream_input_offset_gaps_total"), 0.0);
    assert_eq!(value("novelstream_input_offsets_skipped_total"), 0.0);
    let rereads = value("novelstream_input_rereads_total");
    assert!(rereads >= 2.0, "both partitions had to be read from earlier on tansu 0.6.0, read again {rereads} times");
}
