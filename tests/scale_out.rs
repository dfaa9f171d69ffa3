//! Scaling out (`--role train` and `--role assign`): one trainer, a standby, three assigners, a
//! real broker and the real binary.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{make_clip, metric, novelstream, wait_for_metrics, Broker, Daemon};
use novelstream::sink::{Assignment, ClusterRecord, ModelRecord, MODEL_KEY};
use novelstream::tools::read_topic;
use novelstream::versions::{parse, TopicRecord as ModelsRecord};

const INPUT: &str = "so.segments";
const OUTPUT: &str = "so.assignments";
const DEAD: &str = "so.dead-letters";
const CLUSTERS: &str = "so.clusters";
const MODELS: &str = "so.models";

/// Windows of the 4-second clip (1 s windows every 500 ms).
const CLIP_WINDOWS: usize = 7;

fn config(broker: &Broker, roots: &Path, checkpoint: Option<&Path>) -> String {
    let checkpoint = checkpoint.map_or(String::new(), |p| format!("[checkpoint]\npath = \"{}\"\n", p.display()));
    format!(
        r#"
[kafka]
brokers = "{brokers}"
input_topic = "{INPUT}"
output_topic = "{OUTPUT}"
dead_letter_topic = "{DEAD}"
clusters_topic = "{CLUSTERS}"
models_topic = "{MODELS}"
group_id = "so"
topic_partitions = 3
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
channels = [8, 16]
device = "cpu"

[pipeline]
trainer_lease = "3s"
clusters_interval = "1s"

[online]
min_unlabelled = 8
snapshot_every = 40
# A few dozen windows have to make several versions of 40 steps: no limit by the stream.
steps_per_window = 0
replay_size = 8

[train]
batch_size = 4
bank_size = 32

[metrics]
listen = "127.0.0.1:0"

{checkpoint}"#,
        brokers = broker.address,
        roots = roots.display()
    )
}

fn gauge(port: u16, name: &str) -> f64 {
    let body = common::http_get(port, "/metrics").map(|r| r.1).unwrap_or_default();
    metric(&body, name).unwrap_or(-1.0)
}

/// (epoch, version) of every whole version on the models topic.
fn published_versions(kafka: &novelstream::config::KafkaConfig) -> Vec<(u64, u64)> {
    let mut whole = BTreeSet::new();
    for record in read_topic(kafka, MODELS, 0, Duration::from_secs(10)).unwrap() {
        if let Ok(ModelsRecord::Chunk(c)) = parse(&record.payload) {
            if c.header.chunk + 1 == c.header.chunks {
                whole.insert((c.header.epoch, c.header.version));
            }
        }
    }
    whole.into_iter().collect()
}

fn assignments(kafka: &novelstream::config::KafkaConfig, at_least: usize) -> Vec<(i32, Assignment)> {
    read_topic(kafka, OUTPUT, at_least, Duration::from_secs(120))
        .unwrap()
        .into_iter()
        .map(|r| (r.partition, serde_json::from_slice(&r.payload).unwrap()))
        .collect()
}

/// One trainer trains and publishes versions that every assigner serves within seconds; the
/// same clip on streams of different partitions gets the same clusters under the same version;
/// a killed trainer's standby takes over and versions go on; a killed assigner loses no window;
/// the clusters topic is written by the trainer alone, from every assigner's assignments.
#[test]
fn one_trainer_many_assigners() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let clips = dir.path().join("clips");
    std::fs::create_dir(&clips).unwrap();
    make_clip(&clips.join("long.ts"), "testsrc", 8.0, 10, true);
    make_clip(&clips.join("clip.ts"), "mandelbrot", 4.0, 10, true);
    let kafka = broker.with_topics(3, &[INPUT, OUTPUT, DEAD]);
    let write = |name: &str, checkpoint: Option<&Path>| {
        let path = dir.path().join(name);
        std::fs::write(&path, config(&broker, &clips, checkpoint)).unwrap();
        path
    };
    let trainer_config = write("trainer.toml", Some(&dir.path().join("trainer.ckpt")));
    let shared_config = write("novelstream.toml", None);
    let start = |role: &str, config: &Path| {
        let mut daemon = Daemon::start(&["run", "--role", role, "--config", config.to_str().unwrap()]);
        let port = daemon.metrics_port();
        (daemon, port)
    };
    let produce = |stream: &str, flags: &[&str]| {
        let mut args = vec!["produce", "--brokers", &broker.address, "--topic", INPUT, "--stream-id", stream];
        args.extend_from_slice(flags);
        novelstream(&args)
    };
    let clip = clips.join("clip.ts");
    let clip = clip.to_str().unwrap();

    // The first trainer holds the lease; the second stands by.
    let (trainer, trainer_port) = start("train", &trainer_config);
    wait_for_metrics(trainer_port, "the first trainer active", Duration::from_secs(60), |b| {
        metric(b, "novelstream_trainer_active") == Some(1.0)
    });
    let (_standby, standby_port) = start("train", &shared_config);
    let mut assigners: Vec<(Daemon, u16)> = (0..3).map(|_| start("assign", &shared_config)).collect();
    for (_, port) in &assigners {
        wait_for_metrics(*port, "an assigner ready", Duration::from_secs(60), |b| {
            metric(b, "novelstream_ready") == Some(1.0)
        });
    }
    assert_eq!(gauge(standby_port, "novelstream_trainer_active"), 0.0, "the second trainer stands by");

    // Training data; every assigner serves each new version within 10 s of its publication.
    produce("train-1", &[clips.join("long.ts").to_str().unwrap()]);
    produce("train-2", &["--label", "pattern", clip]);
    wait_for_metrics(trainer_port, "two versions published", Duration::from_secs(120), |b| {
        metric(b, "novelstream_models_published_total").unwrap_or(0.0) >= 2.0
    });
    let version = gauge(trainer_port, "novelstream_model_version");
    let published = Instant::now();
    for (_, port) in &assigners {
        wait_for_metrics(*port, "the trainer's version", Duration::from_secs(10), |b| {
            metric(b, "novelstream_model_version").unwrap_or(0.0) >= version
        });
    }
    assert!(published.elapsed() <= Duration::from_secs(10));

    // The same clip on six streams, spread over the partitions and so over the assigners.
    for i in 0..6 {
        produce(&format!("same-{i}"), &[clip]);
    }
    let training_windows = 15 + CLIP_WINDOWS;
    let records = assignments(&kafka, training_windows + 6 * CLIP_WINDOWS);
    let mut decisions: BTreeMap<(u64, u32), BTreeMap<String, (i32, String)>> = BTreeMap::new();
    for (partition, a) in records.iter().filter(|(_, a)| a.stream_id.starts_with("same-")) {
        decisions
            .entry((a.model_version, a.window))
            .or_default()
            .insert(a.stream_id.clone(), (*partition, a.cluster.clone()));
    }
    let mut compared_across_partitions = 0;
    for ((version, window), by_stream) in &decisions {
        let clusters: BTreeSet<&String> = by_stream.values().map(|(_, c)| c).collect();
        assert_eq!(clusters.len(), 1, "window {window} under version {version}: {by_stream:?}");
        let partitions: BTreeSet<i32> = by_stream.values().map(|(p, _)| *p).collect();
        compared_across_partitions += usize::from(partitions.len() > 1);
    }
    assert!(compared_across_partitions > 0, "no window was served under one version on two partitions");
    for (_, port) in &assigners {
        assert!(gauge(*port, "novelstream_windows_published_total") > 0.0, "every assigner served windows");
    }

    // kill -9 the trainer: the assigners serve on, the standby takes over, versions go on.
    let mut trainer = trainer;
    trainer.child.kill().unwrap();
    trainer.child.wait().unwrap();
    let before = published_versions(&kafka);
    let (first_epoch, last_version) = *before.last().unwrap();
    produce("after-trainer", &[clip]);
    wait_for_metrics(standby_port, "the standby active", Duration::from_secs(30), |b| {
        metric(b, "novelstream_trainer_active") == Some(1.0)
    });
    produce("train-3", &[clips.join("long.ts").to_str().unwrap()]);
    wait_for_metrics(standby_port, "a version from the standby", Duration::from_secs(120), |b| {
        metric(b, "novelstream_models_published_total").unwrap_or(0.0) >= 1.0
            && metric(b, "novelstream_model_version").unwrap_or(0.0) > last_version as f64
    });
    let after = published_versions(&kafka);
    let taken_over: Vec<&(u64, u64)> = after.iter().filter(|(epoch, _)| *epoch > first_epoch).collect();
    assert!(!taken_over.is_empty(), "{after:?}");
    assert!(taken_over.iter().all(|(_, v)| *v > last_version), "versions go on from {last_version}: {after:?}");
    let served = assignments(&kafka, training_windows + 7 * CLIP_WINDOWS + 15);
    let after_trainer: Vec<u64> =
        served.iter().filter(|(_, a)| a.stream_id == "after-trainer").map(|(_, a)| a.model_version).collect();
    assert_eq!(after_trainer.len(), CLIP_WINDOWS);
    assert!(after_trainer.iter().all(|&v| v >= version as u64), "served on with the last version: {after_trainer:?}");

    // kill -9 an assigner mid-stream. This broker (tansu 0.6) does not hand a dead member's
    // partitions to the surviving members (measured), so a new assigner is started, as a
    // supervisor would; its uncommitted input is read again: every window is published.
    for i in 0..6 {
        produce(&format!("late-{i}"), &[clip]);
    }
    let (mut killed, _) = assigners.remove(0);
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    assigners.push(start("assign", &shared_config));
    let expected = training_windows + 7 * CLIP_WINDOWS + 15 + 6 * CLIP_WINDOWS;
    let deadline = Instant::now() + Duration::from_secs(120);
    let late = loop {
        let late: BTreeSet<(String, u64, u32)> = assignments(&kafka, expected)
            .into_iter()
            .filter(|(_, a)| a.stream_id.starts_with("late-"))
            .map(|(_, a)| (a.stream_id, a.seq, a.window))
            .collect();
        if late.len() == 6 * CLIP_WINDOWS || Instant::now() > deadline {
            break late;
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    assert_eq!(late.len(), 6 * CLIP_WINDOWS, "every window of the late streams is published at least once");

    // The clusters topic: the trainer's, counted over every assignment whichever assigner made it
    // (assigners writing it would each count their own share).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let served = assignments(&kafka, expected);
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for (_, a) in &served {
            *counts.entry(a.cluster.clone()).or_default() += 1;
        }
        let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
        let mut model = None;
        for record in read_topic(&kafka, CLUSTERS, 0, Duration::from_secs(10)).unwrap() {
            if record.key == MODEL_KEY {
                model = Some(serde_json::from_slice::<ModelRecord>(&record.payload).unwrap());
            } else {
                let cluster: ClusterRecord = serde_json::from_slice(&record.payload).unwrap();
                sizes.insert(cluster.cluster, cluster.size);
            }
        }
        // The model record is the trainer's that took over, no older than any version served.
        let served_version = served.iter().map(|(_, a)| a.model_version).max().unwrap();
        let current = |m: &ModelRecord| m.model_version > last_version && m.model_version >= served_version;
        if sizes == counts && model.as_ref().is_some_and(current) {
            break;
        }
        assert!(Instant::now() < deadline, "clusters topic {sizes:?} (model {model:?}) against assignments {counts:?}");
        std::thread::sleep(Duration::from_secs(1));
    }
    for (daemon, _) in assigners {
        assert!(daemon.terminate(Duration::from_secs(30)).success());
    }
}

/// An assigner takes versions only whole, of its own configuration, from the newest epoch's
/// winner: a corrupt version, one of another configuration and one of a fenced-off trainer are
/// each refused or ignored, and the previous version stays in use.
#[test]
fn assigners_refuse_what_does_not_fit() {
    use novelstream::train::checkpoint::{to_bytes, CheckpointMeta};
    use novelstream::train::fingerprint::fingerprint;
    use novelstream::train::{ClusterIds, Learner};
    use novelstream::versions::{chunk_records, Control};
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let kafka = broker.with_topics(3, &[INPUT, OUTPUT, DEAD]);
    let path = dir.path().join("novelstream.toml");
    std::fs::write(&path, config(&broker, dir.path(), None)).unwrap();
    let config = novelstream::config::Config::load(&path).unwrap();
    let mut assigner = Daemon::start(&["run", "--role", "assign", "--config", path.to_str().unwrap()]);
    let port = assigner.metrics_port();
    wait_for_metrics(port, "the assigner ready", Duration::from_secs(60), |b| {
        metric(b, "novelstream_ready") == Some(1.0)
    });

    let learner = Learner::new(&config.model, &config.train, tch::Device::Cpu).unwrap();
    let mine = fingerprint(&config.model, &config.train, &config.decode);
    let blob = |version: u64, fingerprint: &novelstream::train::fingerprint::Fingerprint| {
        let meta = CheckpointMeta::new(version, 0, learner.wta(), fingerprint, &ClusterIds::default());
        to_bytes(&meta, &learner.snapshot(novelstream::train::Encoder::Momentum)).unwrap()
    };
    let producer: ThreadedProducer<DefaultProducerContext> = kafka.client_config().create().unwrap();
    let send = |records: Vec<novelstream::sink::OutRecord>| {
        for r in records {
            producer.send(BaseRecord::to(MODELS).key(&r.key).payload(&r.payload)).unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
    };
    let claim = |epoch: u64, owner: &str| Control::Claim { epoch, owner: owner.into(), at_ms: 0 }.record(MODELS);
    let version =
        |epoch: u64, owner: &str, version: u64, blob: &[u8]| chunk_records(MODELS, (epoch, owner), version, blob, 4096);
    let state = || (gauge(port, "novelstream_model_version"), gauge(port, "novelstream_models_refused_total"));
    let settle = |want: (f64, f64), what: &str| {
        wait_for_metrics(port, what, Duration::from_secs(15), |b| {
            (metric(b, "novelstream_model_version"), metric(b, "novelstream_models_refused_total"))
                == (Some(want.0), Some(want.1))
        });
    };

    send(vec![claim(1, "a")]);
    send(version(1, "a", 1, &blob(1, &mine)));
    settle((1.0, 0.0), "version 1 served");

    // A flipped byte in one piece: the checksum of the whole fails.
    let mut corrupt = version(1, "a", 2, &blob(2, &mine));
    assert!(corrupt.len() > 1, "the version is cut into pieces");
    let last = corrupt[1].payload.len() - 1;
    corrupt[1].payload[last] ^= 0x55;
    send(corrupt);
    settle((1.0, 1.0), "the corrupt version 2 refused");

    // Written under another configuration.
    let mut other = mine.clone();
    other.insert("model.channels".into(), "[99, 99]".into());
    send(version(1, "a", 3, &blob(3, &other)));
    settle((1.0, 2.0), "version 3 of another configuration refused");

    // Trainer b wins epoch 2; a, fenced off, writes on: ignored. b's version is served.
    send(vec![claim(2, "b"), claim(2, "a")]);
    send(version(1, "a", 4, &blob(4, &mine)));
    send(version(2, "a", 5, &blob(5, &mine)));
    send(version(2, "b", 6, &blob(6, &mine)));
    settle((6.0, 2.0), "version 6 of epoch 2's winner served");
    assert_eq!(state(), (6.0, 2.0));
    assert!(assigner.child.try_wait().unwrap().is_none(), "refusals do not stop the assigner");
}
