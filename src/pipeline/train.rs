//! `--role train`: the one trainer. It waits for the trainer lease ([`crate::versions::Leases`]),
//! then reads the input topic under its own consumer group, decodes what its trainer can take,
//! trains, publishes every model version to the models topic, and writes the clusters topic,
//! aggregated from the assignments topic. A second trainer stands by and takes over when the
//! active one is silent for `pipeline.trainer_lease`; versions go on from the newest published.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::clusters::{publish_clusters, spawn_publisher};
use super::decoders::Decoders;
use super::{Decoded, Job, RunStats};
use crate::admin::{ensure_compacted_topics, ensure_models_topic, ensure_topics};
use crate::config::{Config, KafkaConfig};
use crate::decode::CrashMarkers;
use crate::metrics::Metrics;
use crate::model::select_device;
use crate::sink::{Assignment, ClusterTable, Publisher};
use crate::source::{parse_segment, Coordinates, UriPolicy};
use crate::train::checkpoint::{self, CheckpointMeta};
use crate::train::fingerprint::{fingerprint, Fingerprint};
use crate::train::{OnlineTrainer, Snapshot, TrainerConfigs};
use crate::versions::{chunk_records, now_ms, Control, ModelFeed};
use crate::{Error, Result};

/// Trains until `shutdown` is cancelled (or another trainer fences this one off).
pub(super) async fn run(config: Config, metrics: Arc<Metrics>, shutdown: CancellationToken) -> Result<RunStats> {
    let k = &config.kafka;
    if k.create_topics {
        ensure_topics(k, &[&k.input_topic, &k.output_topic, &k.dead_letter_topic]).await?;
        ensure_compacted_topics(k, &[&k.clusters_topic]).await?;
        ensure_models_topic(k).await?;
    }
    let fingerprint = fingerprint(&config.model, &config.train, &config.decode);
    let feed = Arc::new(ModelFeed::start(&config.kafka, fingerprint.clone(), metrics.clone())?);
    {
        let feed = feed.clone();
        tokio::task::spawn_blocking(move || feed.wait_caught_up(Duration::from_secs(1), Duration::from_secs(30)))
            .await
            .map_err(|source| Error::Task { task: "models topic reader", source })?;
    }
    metrics.ready.store(true, Ordering::Relaxed);
    let publisher = Publisher::new(&config.kafka)?;
    let owner = owner_id();
    let lease =
        Lease { feed: feed.clone(), publisher: publisher.clone(), topic: config.kafka.models_topic.clone(), owner };
    let lease_ms = config.pipeline.trainer_lease.as_millis() as i64;
    let Some(epoch) = lease.acquire(lease_ms, &shutdown).await? else {
        return Ok(RunStats::default());
    };
    let failure: Arc<Mutex<Option<Error>>> = Arc::default();
    let heartbeat =
        tokio::spawn(lease.clone().keep(epoch, config.pipeline.trainer_lease / 4, (failure.clone(), shutdown.clone())));

    // The trainer, from its own checkpoint or the newest published version, whichever is newer.
    let inherited = feed.take().map(|published| published.inherited());
    let published_before = feed.newest_version();
    let device = select_device(config.model.device)?;
    let configs = TrainerConfigs {
        model: &config.model,
        train: &config.train,
        online: &config.online,
        checkpoint: &config.checkpoint,
        decode: &config.decode,
    };
    let trainer = OnlineTrainer::start_with(configs, inherited, device, metrics.clone())?;

    // The clusters topic: this process is its one writer.
    let clusters = Arc::new(Mutex::new(ClusterTable::default()));
    let aggregating = tokio::spawn(aggregate_assignments(config.kafka.clone(), clusters.clone(), shutdown.clone()));
    let clusters_task = spawn_publisher(
        clusters.clone(),
        publisher.clone(),
        config.kafka.clusters_topic.clone(),
        config.pipeline.clusters_interval,
        shutdown.clone(),
    );

    // Input → decoders → the trainer; its versions → the models topic.
    let p = &config.pipeline;
    let (decode_tx, decode_rx) = flume::bounded::<Job>(p.decode_queue);
    let (embed_tx, embed_rx) = flume::bounded::<Decoded>(p.embed_queue);
    let markers = Arc::new(
        CrashMarkers::new(&p.crash_markers)
            .map_err(Error::io(format!("pipeline.crash_markers: {}", p.crash_markers.display())))?,
    );
    let decoders = Decoders {
        policy: UriPolicy::new(&config.source)?,
        decode: config.decode.clone(),
        metrics: metrics.clone(),
        markers,
        dead_letters: None,
    };
    let mut threads = decoders.start(p.decode_workers, &decode_rx, &embed_tx)?;
    drop((embed_tx, decode_rx));
    let (versions_tx, versions_rx) = flume::bounded::<(Snapshot, Vec<u8>)>(2);
    let stats = Arc::new(Mutex::new(RunStats::default()));
    let feeder = Feeder { trainer, known: config.model.known_classes.clone(), fingerprint, stats: stats.clone() };
    threads.push(
        std::thread::Builder::new()
            .name("trainer-feed".into())
            .spawn(move || feeder.run(&embed_rx, &versions_tx))
            .map_err(Error::io("starting the trainer's feed"))?,
    );
    let publishing = tokio::spawn(publish_versions(
        versions_rx,
        (publisher.clone(), config.kafka.clone()),
        (epoch, lease.owner.clone(), published_before),
        clusters.clone(),
        metrics.clone(),
        (failure.clone(), shutdown.clone()),
    ));
    let input = reader(&config.kafka, &config.kafka.input_topic, Offset::End).await?;
    metrics.trainer_active.set(1.0);
    read_input(input, &config, (&metrics, &stats), decode_tx, &shutdown).await;

    tracing::info!("trainer stopping");
    metrics.trainer_active.set(0.0);
    let joined =
        tokio::task::spawn_blocking(move || threads.into_iter().all(|t| t.join().is_ok())).await.unwrap_or(false);
    let _ = publishing.await;
    heartbeat.abort();
    let _ = aggregating.await;
    let _ = clusters_task.await;
    publish_clusters(&clusters, &publisher, &config.kafka.clusters_topic).await;
    if let Some(e) = failure.lock().expect("failure lock").take() {
        return Err(e);
    }
    if !joined {
        return Err(Error::WorkerPanicked);
    }
    let stats = stats.lock().expect("stats lock").clone();
    Ok(stats)
}

/// This process among trainers: host, process id and a random part (a restarted process is
/// another trainer).
fn owner_id() -> String {
    let host = crate::config::host_name();
    let salt = crate::rng::SplitMix64::new(now_ms() as u64 ^ u64::from(std::process::id())).next_u64() & 0xffff_ffff;
    format!("{host}-{}-{salt:08x}", std::process::id())
}

/// The trainer lease on the models topic.
#[derive(Clone)]
struct Lease {
    feed: Arc<ModelFeed>,
    publisher: Publisher,
    topic: String,
    owner: String,
}

impl Lease {
    /// Waits while another trainer holds a live lease, then claims the next epoch; the epoch
    /// once this trainer won it, `None` when `shutdown` came first.
    async fn acquire(&self, lease_ms: i64, shutdown: &CancellationToken) -> Result<Option<u64>> {
        let mut standing_by_for = None;
        loop {
            if shutdown.is_cancelled() {
                return Ok(None);
            }
            let leases = self.feed.leases();
            if leases.holder_alive(now_ms(), lease_ms) {
                let holder = leases.holder().map(|(epoch, owner)| (epoch, owner.to_owned()));
                if standing_by_for != holder {
                    tracing::info!(holder = ?holder, "standing by: another trainer holds the lease");
                    standing_by_for = holder;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                }
            }
            let epoch = leases.next_epoch();
            let claim = Control::Claim { epoch, owner: self.owner.clone(), at_ms: now_ms() };
            self.publisher.send_all(vec![claim.record(&self.topic)]).await?;
            // The claim is read back: whichever claim of the epoch the log holds first won it.
            let winner = loop {
                if let Some(winner) = self.feed.leases().winner(epoch) {
                    break winner.to_owned();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            if winner == self.owner {
                tracing::info!(epoch, owner = %self.owner, "this process is the trainer now");
                return Ok(Some(epoch));
            }
            tracing::info!(epoch, winner, "another trainer claimed the epoch first");
        }
    }

    /// Heartbeats every `every`; stops the process once a later epoch was claimed (this trainer
    /// was fenced off, its versions would be refused).
    async fn keep(self, epoch: u64, every: Duration, (failure, shutdown): super::publish::Failure) {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Some((newest, holder)) = self.feed.leases().holder().filter(|(newest, _)| *newest > epoch) {
                tracing::error!(epoch, newest, holder, "fenced off: another trainer claimed a later epoch; stopping");
                failure.lock().expect("failure lock").get_or_insert(Error::Fenced { epoch, newest });
                shutdown.cancel();
                return;
            }
            let beat = Control::Heartbeat { epoch, owner: self.owner.clone(), at_ms: now_ms() };
            if let Err(e) = self.publisher.send_all(vec![beat.record(&self.topic)]).await {
                tracing::warn!(error = %e, "trainer heartbeat not published");
            }
        }
    }
}

/// The trainer's thread end: offers decoded windows, hands each new version out as bytes.
struct Feeder {
    trainer: OnlineTrainer,
    known: Vec<String>,
    fingerprint: Fingerprint,
    stats: Arc<Mutex<RunStats>>,
}

impl Feeder {
    fn run(mut self, decoded: &flume::Receiver<Decoded>, versions: &flume::Sender<(Snapshot, Vec<u8>)>) {
        loop {
            if let Some(snapshot) = self.trainer.take_snapshot() {
                let meta = CheckpointMeta::new(
                    snapshot.version,
                    snapshot.step,
                    &snapshot.wta,
                    &self.fingerprint,
                    &snapshot.cluster_ids,
                );
                match checkpoint::to_bytes(&meta, &snapshot.weights) {
                    Ok(blob) => {
                        if versions.send((snapshot, blob)).is_err() {
                            break;
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "model version not serialized; not published"),
                }
            }
            let decoded = match decoded.recv_timeout(Duration::from_millis(200)) {
                Ok(decoded) => decoded,
                Err(flume::RecvTimeoutError::Timeout) => continue,
                Err(flume::RecvTimeoutError::Disconnected) => break,
            };
            let label =
                decoded.segment.label.as_deref().and_then(|l| self.known.iter().position(|c| c == l)).map(|i| i as i64);
            self.trainer.offer(&decoded.windows, label);
            let mut stats = self.stats.lock().expect("stats lock");
            stats.segments += 1;
            stats.windows += decoded.windows.len() as u64;
        }
        // Dropping the trainer stops it (and writes its checkpoint).
    }
}

/// Publishes each version newer than `published_before` to the models topic, and its cluster
/// names to the clusters table.
async fn publish_versions(
    versions: flume::Receiver<(Snapshot, Vec<u8>)>,
    (publisher, kafka): (Publisher, KafkaConfig),
    (epoch, owner, published_before): (u64, String, u64),
    clusters: Arc<Mutex<ClusterTable>>,
    metrics: Arc<Metrics>,
    (failure, shutdown): super::publish::Failure,
) {
    while let Ok((snapshot, blob)) = versions.recv_async().await {
        let version = snapshot.version;
        // The version taken over from the topic is there already.
        if version <= published_before {
            continue;
        }
        let records = chunk_records(&kafka.models_topic, (epoch, &owner), version, &blob, kafka.models_chunk_bytes);
        let chunks = records.len();
        if let Err(e) = publisher.send_all(records).await {
            tracing::error!(version, error = %e, "model version not published; stopping");
            failure.lock().expect("failure lock").get_or_insert(e);
            shutdown.cancel();
            return;
        }
        metrics.models_published.fetch_add(1, Ordering::Relaxed);
        metrics.model_version.set(version as f64);
        let changed_fraction = snapshot.changed_fraction;
        tracing::info!(version, changed_fraction, bytes = blob.len(), chunks, novel_clusters = ?snapshot.novel_clusters(),
            "published a model version");
        clusters.lock().expect("cluster table lock").observe_version(
            version,
            snapshot.novel_clusters(),
            snapshot.changed_fraction,
            now_ms(),
        );
    }
}

/// Reads the input topic (`consumer` reads every partition from its end: a trainer trains on the
/// traffic from when it became active) and queues segments for the decoders while they have
/// room and the trainer needs windows: it decodes its own copy of what it trains on, so it
/// decodes no more than [`DecodeBudget`] allows. Other segments are skipped: training samples
/// the stream.
async fn read_input(
    consumer: StreamConsumer,
    config: &Config,
    (metrics, decoded): (&Metrics, &Mutex<RunStats>),
    jobs: flume::Sender<Job>,
    shutdown: &CancellationToken,
) {
    let budget = DecodeBudget::new(config);
    let (known, max_bytes) = (&config.model.known_classes, config.source.max_segment_bytes);
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => break,
            message = consumer.recv() => message,
        };
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "consumer error");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let headers = super::consume::headers(&message);
        metrics.segments_in.fetch_add(1, Ordering::Relaxed);
        // Unusable input is the assigners' to report; the trainer only skips it.
        let Ok(segment) = parse_segment(message.payload(), &headers, known, max_bytes) else { continue };
        let coordinates = Coordinates {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            key: None,
        };
        let windows = decoded.lock().expect("stats lock").windows;
        if !budget.allows(windows, metrics.train_steps.load(Ordering::Relaxed))
            || jobs.try_send(Job { coordinates, segment }).is_err()
        {
            metrics.train_skipped_segments.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// How many windows the trainer decodes: enough to start (`online.min_unlabelled` and a batch of
/// labelled ones), then as many per training step as the step reads (a batch of labelled and one
/// of unlabelled windows). Decoding more would cost the CPU the assigners need, for windows the
/// trainer's buffers would mostly drop unread.
struct DecodeBudget {
    start: u64,
    per_step: u64,
}

impl DecodeBudget {
    fn new(config: &Config) -> Self {
        let batch = config.train.batch_size as u64;
        Self { start: config.online.min_unlabelled as u64 + batch, per_step: 2 * batch }
    }

    /// Whether another segment may be decoded, `decoded` windows and `steps` steps in.
    fn allows(&self, decoded: u64, steps: u64) -> bool {
        decoded < self.start + steps * self.per_step
    }
}

/// A consumer of every partition of `topic` from `from`, outside any consumer group: one
/// trainer is active at a time, and a group would keep a killed trainer's partitions from the
/// one that takes over until the broker expires it. Partitions added later are not read.
async fn reader(kafka: &KafkaConfig, topic: &str, from: Offset) -> Result<StreamConsumer> {
    let mut client = kafka.client_config();
    // No offset is committed: the group id only satisfies the client.
    client.set("group.id", format!("{}-trainer", kafka.group_id)).set("enable.auto.commit", "false");
    let consumer: StreamConsumer = client.create().map_err(Error::kafka(format!("creating a reader of {topic}")))?;
    let name = topic.to_owned();
    let (consumer, metadata) = tokio::task::spawn_blocking(move || {
        let metadata = consumer.fetch_metadata(Some(&name), Duration::from_secs(10));
        (consumer, metadata)
    })
    .await
    .map_err(|source| Error::Task { task: "reading topic metadata", source })?;
    let metadata = metadata.map_err(Error::kafka(format!("reading the partitions of {topic}")))?;
    let mut partitions = TopicPartitionList::new();
    for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
        partitions.add_partition_offset(topic, partition.id(), from).expect("valid offset");
    }
    consumer.assign(&partitions).map_err(Error::kafka(format!("reading {topic}")))?;
    Ok(consumer)
}

/// Counts every assignment of the assignments topic into `clusters`, from the topic's beginning
/// (a trainer that takes over rebuilds the table from what is retained), at the time each was
/// published.
async fn aggregate_assignments(kafka: KafkaConfig, clusters: Arc<Mutex<ClusterTable>>, shutdown: CancellationToken) {
    let consumer = match reader(&kafka, &kafka.output_topic, Offset::Beginning).await {
        Ok(consumer) => consumer,
        Err(e) => return tracing::error!(error = %e, "clusters topic not aggregated"),
    };
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => break,
            message = consumer.recv() => message,
        };
        let Ok(message) = message else { continue };
        let Some(assignment) = message.payload().and_then(|payload| serde_json::from_slice::<Assignment>(payload).ok())
        else {
            continue;
        };
        let at = message.timestamp().to_millis().unwrap_or_else(now_ms);
        clusters.lock().expect("cluster table lock").observe(&assignment, at);
    }
}
