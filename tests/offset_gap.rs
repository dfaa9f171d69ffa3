//! A group that resumes from a committed offset the broker does not serve from: the daemon must
//! say so. tansu 0.6.0's memory storage answers a fetch from the middle of a stored record batch
//! with the next batch (RESULTS.md, "Delivery"), so the offsets between are never delivered; the
//! daemon counts them as a gap instead of committing past them in silence.

mod common;

use std::time::Duration;

use common::{metric, wait_for_metrics, Broker, Daemon};
use novelstream::config::KafkaConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const INPUT: &str = "gap.segments";
const GROUP: &str = "gap-group";

#[test]
fn offsets_the_broker_skips_after_a_restart_are_counted_as_a_gap() {
    let broker = Broker::start();
    let kafka = KafkaConfig {
        brokers: broker.address.clone(),
        topic_partitions: 1,
        topic_replication_factor: 1,
        ..Default::default()
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(novelstream::admin::ensure_topics(&kafka, &[INPUT])).unwrap();

    // Two stored batches of ten messages (offsets 0-9 and 10-19): a linger longer than it takes
    // to send ten makes each send round one batch. The payloads are not segments, so every one
    // that arrives is a dead letter; what matters here is which offsets arrive.
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", &broker.address).set("linger.ms", "200").create().unwrap();
    for batch in 0..2 {
        let sends: Vec<_> = (0..10)
            .map(|i| {
                let key = format!("{batch}-{i}");
                producer.send_result(FutureRecord::to(INPUT).key(&key).payload("not a segment").partition(0)).unwrap()
            })
            .collect();
        for send in sends {
            runtime.block_on(send).unwrap().unwrap();
        }
    }

    // The group committed offset 5, inside the first batch, as a killed daemon may have left it.
    let committer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", &broker.address).set("group.id", GROUP).create().unwrap();
    let mut position = TopicPartitionList::new();
    position.add_partition_offset(INPUT, 0, Offset::Offset(5)).unwrap();
    committer.commit(&position, CommitMode::Sync).unwrap();
    drop(committer);

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("daemon.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"{}\"\ninput_topic = \"{INPUT}\"\noutput_topic = \"gap.assignments\"\n\
             dead_letter_topic = \"gap.dead\"\nclusters_topic = \"gap.clusters\"\ngroup_id = \"{GROUP}\"\n\
             topic_partitions = 1\ntopic_replication_factor = 1\n[model]\nchannels = [8]\ndevice = \"cpu\"\n\
             [online]\nenabled = false\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
            broker.address
        ),
    )
    .unwrap();
    let mut daemon = Daemon::start(&["run", "--config", config.to_str().unwrap()]);
    let port = daemon.metrics_port();
    let body = wait_for_metrics(port, "the input to be consumed", Duration::from_secs(90), |body| {
        metric(body, "novelstream_dead_letters_total").unwrap_or(0.0) >= 10.0
    });
    let gaps = metric(&body, "novelstream_input_offset_gaps_total").unwrap();
    let skipped = metric(&body, "novelstream_input_offsets_skipped_total").unwrap();
    let dead = metric(&body, "novelstream_dead_letters_total").unwrap();
    assert!(daemon.terminate(Duration::from_secs(30)).success());
    // A broker that serves from offset 5 delivers 15 messages and no gap; one that skips to the
    // next batch delivers 10 and a gap of 5. Either way the two counts account for every offset.
    assert_eq!(dead + skipped, 15.0, "dead letters {dead} and skipped offsets {skipped} must cover offsets 5-19");
    assert_eq!(gaps, f64::from(u8::from(skipped > 0.0)), "one gap exactly when offsets were skipped");
    assert_eq!(skipped, 5.0, "tansu 0.6.0 skips the rest of the batch the committed offset lies in");
}
