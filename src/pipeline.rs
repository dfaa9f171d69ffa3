//! Wiring of the daemon: Kafka → parse → decode (threads) → model (thread) → produce → commit.
//!
//! Every edge is a bounded queue whose policy when full is to wait: nothing is dropped, so a
//! slow stage slows consumption instead of losing input. An input offset is committed only
//! after every record made from it (assignments or one dead letter) was acknowledged.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{ensure_compacted_topics, ensure_topics};
use crate::assign::Assigner;
use crate::config::{Config, Delivery};
use crate::decode::{fetch_and_decode, CrashMarkers, JobError, Window};
use crate::metrics::Metrics;
use crate::model::select_device;
use crate::sink::{
    Assignment, ClusterTable, DeadLetter, OutRecord, Publisher, StreamOrder, TransactionalPublisher, ASSIGNMENT_SCHEMA,
    MODEL_KEY,
};
use crate::source::{
    consumer, parse_segment, Arrival, Coordinates, Gap, OffsetTracker, Segment, SegmentConsumer, UriPolicy,
};
use crate::train::OnlineTrainer;
use crate::{Error, Result};

/// A segment on its way to a decoder.
struct Job {
    coordinates: Coordinates,
    segment: Segment,
}

/// A decoded segment on its way to the model.
struct Decoded {
    coordinates: Coordinates,
    segment: Segment,
    windows: Vec<Window>,
}

/// Everything one input message turned into, ready to produce.
struct Outcome {
    coordinates: Coordinates,
    records: Vec<OutRecord>,
}

/// Counts of one run, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunStats {
    pub segments: u64,
    pub windows: u64,
    pub dead_letters: u64,
}

/// Runs the daemon until `shutdown` is cancelled, then drains what is in flight.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<RunStats> {
    config.validate()?;
    let metrics = Arc::new(Metrics::default());
    let endpoint = CancellationToken::new();
    if !config.metrics.listen.is_empty() {
        let listener = tokio::net::TcpListener::bind(&config.metrics.listen)
            .await
            .map_err(Error::io(format!("listening for metrics on {}", config.metrics.listen)))?;
        tracing::info!(listen = %config.metrics.listen, "metrics on /metrics, health on /healthz and /readyz");
        tokio::spawn(crate::metrics::serve(listener, metrics.clone(), endpoint.clone()));
    }
    let _endpoint_guard = endpoint.drop_guard();
    let policy = UriPolicy::new(&config.source)?;
    let device = select_device(config.model.device)?;
    let k = &config.kafka;
    if k.create_topics {
        ensure_topics(k, &[&k.input_topic, &k.output_topic, &k.dead_letter_topic]).await?;
        ensure_compacted_topics(k, &[&k.clusters_topic]).await?;
    }
    let offsets = Arc::new(OffsetTracker::new());
    let consumer = Arc::new(consumer(&config.kafka, offsets.clone(), metrics.clone())?);
    consumer.subscribe(&[&config.kafka.input_topic]).map_err(Error::kafka("subscribing to the input topic"))?;
    let publisher = Publisher::new(&config.kafka)?;
    // Under exactly-once, assignments and dead letters go through the transactional producer;
    // cluster records (a compacted topic of current state) stay on the plain one.
    let transactions = match config.kafka.delivery {
        Delivery::AtLeastOnce => None,
        Delivery::ExactlyOnce => Some(Arc::new(TransactionalPublisher::new(&config.kafka)?)),
    };
    let exactly_once = transactions.is_some();
    let cluster_publisher = publisher.clone();
    let p = &config.pipeline;
    let (decode_tx, decode_rx) = flume::bounded::<Job>(p.decode_queue);
    let (embed_tx, embed_rx) = flume::bounded::<Decoded>(p.embed_queue);
    let (publish_tx, publish_rx) = flume::bounded::<Outcome>(p.publish_queue);
    let stats = Arc::new(Mutex::new(RunStats::default()));
    let failure: Arc<Mutex<Option<Error>>> = Arc::default();
    let order: Arc<Mutex<StreamOrder<Outcome>>> = Arc::default();

    let markers = Arc::new(
        CrashMarkers::new(&p.crash_markers)
            .map_err(Error::io(format!("pipeline.crash_markers: {}", p.crash_markers.display())))?,
    );
    // Decoders: FFmpeg work stays on its own threads, off the async runtime.
    let mut threads = Vec::new();
    for i in 0..p.decode_workers {
        let (rx, embed_tx, publish_tx) = (decode_rx.clone(), embed_tx.clone(), publish_tx.clone());
        let (policy, decode, metrics, markers) =
            (policy.clone(), config.decode.clone(), metrics.clone(), markers.clone());
        let dead_letter_topic = config.kafka.dead_letter_topic.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("decode-{i}"))
                .spawn(move || {
                    for job in rx.iter() {
                        let Job { coordinates, segment } = job;
                        let started = Instant::now();
                        let decoded = markers
                            .guard(&coordinates, || fetch_and_decode(&segment, &policy, &decode, RETRY_BACKOFF))
                            .unwrap_or_else(|deaths| {
                                let detail = format!("the daemon died {deaths} times while decoding this message");
                                Err(JobError { reason: "crashed_decoder", detail, retriable: false })
                            });
                        metrics.decode_seconds.observe(started.elapsed().as_secs_f64());
                        let sent = match decoded {
                            Ok(windows) => embed_tx.send(Decoded { coordinates, segment, windows }).is_ok(),
                            Err(e) => {
                                let letter = (e.reason, e.detail, e.retriable);
                                let record =
                                    dead_letter_record(&dead_letter_topic, &coordinates, Some(&segment), letter);
                                publish_tx.send(Outcome { coordinates, records: vec![record] }).is_ok()
                            }
                        };
                        if !sent {
                            break;
                        }
                    }
                })
                .map_err(Error::io("starting a decoder thread"))?,
        );
    }
    drop(embed_tx);
    let depths = (decode_rx, embed_rx.clone(), publish_rx.clone());

    // The model: one thread owns the assigner's tch state; it assigns each decoded segment in
    // batches, then offers its windows to the online trainer (its own thread), and switches to
    // each new model version the trainer publishes.
    let (model_config, decode_config, output_topic) =
        (config.model.clone(), config.decode.clone(), config.kafka.output_topic.clone());
    let mut trainer = if config.online.enabled {
        Some(OnlineTrainer::start(
            &config.model,
            &config.train,
            &config.online,
            &config.checkpoint,
            &config.decode,
            device,
            metrics.clone(),
        )?)
    } else {
        None
    };
    let model_publish_tx = publish_tx.clone();
    let model_metrics = metrics.clone();
    let clusters = Arc::new(Mutex::new(ClusterTable::default()));
    let model_clusters = clusters.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    threads.push(
        std::thread::Builder::new()
            .name("model".into())
            .spawn(move || {
                let mut assigner = match Assigner::untrained(&model_config, &decode_config, device) {
                    Ok(assigner) => assigner,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(assigner.version()));
                loop {
                    // New versions are picked up between segments, and while idle.
                    if let Some(snapshot) = trainer.as_ref().and_then(|t| t.take_snapshot()) {
                        assigner.apply(snapshot.version, &snapshot.weights, snapshot.cluster_ids);
                        model_metrics.model_version.set(snapshot.version as f64);
                        tracing::info!(version = snapshot.version, changed_fraction = snapshot.changed_fraction,
                            novel_clusters = ?assigner.novel_clusters(), "assigning with a new model version");
                        model_clusters.lock().expect("cluster table lock").observe_version(
                            snapshot.version,
                            assigner.novel_clusters(),
                            snapshot.changed_fraction,
                            now_ms(),
                        );
                    }
                    let decoded = match embed_rx.recv_timeout(Duration::from_millis(200)) {
                        Ok(decoded) => decoded,
                        Err(flume::RecvTimeoutError::Timeout) => continue,
                        Err(flume::RecvTimeoutError::Disconnected) => break,
                    };
                    let started = Instant::now();
                    let records = assignment_records(&assigner, &decoded, &output_topic, &model_clusters);
                    model_metrics.assign_seconds.observe(started.elapsed().as_secs_f64());
                    model_metrics.windows_assigned.fetch_add(decoded.windows.len() as u64, Ordering::Relaxed);
                    if let Some(trainer) = trainer.as_mut() {
                        let label = decoded.segment.label.as_deref().and_then(|l| assigner.known_index(l));
                        trainer.offer(&decoded.windows, label);
                    }
                    let outcome = Outcome { coordinates: decoded.coordinates, records };
                    if model_publish_tx.send(outcome).is_err() {
                        break;
                    }
                }
                // Dropping the trainer stops its thread.
                drop(trainer);
            })
            .map_err(Error::io("starting the model thread"))?,
    );
    let version = ready_rx.recv().map_err(|_| Error::ModelThreadStart)??;
    metrics.ready.store(true, Ordering::Relaxed);
    tracing::info!(
        model_version = version,
        online_training = config.online.enabled,
        input = %config.kafka.input_topic,
        output = %config.kafka.output_topic,
        "serving with model version {version} (initial weights)"
    );

    // Queue depths and consumer lag, every few seconds.
    {
        let (metrics, consumer, shutdown) = (metrics.clone(), consumer.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                metrics.decode_queue.set(depths.0.len() as f64);
                metrics.embed_queue.set(depths.1.len() as f64);
                metrics.publish_queue.set(depths.2.len() as f64);
                let consumer = consumer.clone();
                if let Ok(Some(lag)) = tokio::task::spawn_blocking(move || consumer_lag(&consumer)).await {
                    metrics.broker_reachable();
                    metrics.consumer_lag.set(lag as f64);
                }
            }
        });
    }

    // The clusters topic: changed clusters' records, every `clusters_interval` and once more at
    // the end of the drain.
    let clusters_task = {
        let (clusters, shutdown, topic) = (clusters.clone(), shutdown.clone(), config.kafka.clusters_topic.clone());
        let publisher = publisher.clone();
        let interval = config.pipeline.clusters_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                let stopping = tokio::select! {
                    _ = shutdown.cancelled() => true,
                    _ = tick.tick() => false,
                };
                publish_clusters(&clusters, &publisher, &topic).await;
                if stopping {
                    break;
                }
            }
        })
    };

    // Producing and committing: each outcome's records are awaited on their own task, so slow
    // acknowledgements of one segment do not hold up the next.
    let acks = TaskTracker::new();
    let unacknowledged = Arc::new(Semaphore::new(p.max_unacknowledged));
    let counter = PublishCounter {
        stats: stats.clone(),
        metrics: metrics.clone(),
        dead_letter_topic: config.kafka.dead_letter_topic.clone(),
    };
    // Decoders finish out of order; each stream's outcomes are put back in input order.
    let (ordered_tx, ordered_rx) = flume::bounded::<Outcome>(p.publish_queue);
    let ordering = {
        let order = order.clone();
        tokio::spawn(async move {
            while let Ok(outcome) = publish_rx.recv_async().await {
                let coordinates = outcome.coordinates.clone();
                let ready = order.lock().expect("stream order lock").release(&coordinates, outcome);
                for outcome in ready {
                    if ordered_tx.send_async(outcome).await.is_err() {
                        return;
                    }
                }
            }
        })
    };
    let publishing = match transactions {
        Some(transactions) => tokio::spawn(publish_transactions(
            ordered_rx,
            transactions,
            consumer.clone(),
            offsets.clone(),
            counter,
            config.kafka.transaction_interval,
            (failure.clone(), shutdown.clone()),
        )),
        None => {
            let (acks, consumer, offsets, failure, shutdown) =
                (acks.clone(), consumer.clone(), offsets.clone(), failure.clone(), shutdown.clone());
            tokio::spawn(async move {
                while let Ok(outcome) = ordered_rx.recv_async().await {
                    let permit = unacknowledged.clone().acquire_owned().await.expect("semaphore is never closed");
                    // Enqueued here, one outcome after another, so a stream's records keep their order.
                    let Outcome { coordinates: c, records } = outcome;
                    let pending = match publisher.enqueue_all(&records).await {
                        Ok(pending) => pending,
                        Err(e) => {
                            failure.lock().expect("failure lock").get_or_insert(e);
                            shutdown.cancel();
                            break;
                        }
                    };
                    let (publisher, consumer, offsets, counter, failure, shutdown) = (
                        publisher.clone(),
                        consumer.clone(),
                        offsets.clone(),
                        counter.clone(),
                        failure.clone(),
                        shutdown.clone(),
                    );
                    acks.spawn(async move {
                        let _permit = permit;
                        let counts = counter.counts(&records);
                        match publisher.settle(records, pending).await {
                            Ok(()) => {
                                counter.add(counts);
                                if let Some(position) = offsets.finish(&c.topic, c.partition, c.offset) {
                                    commit(&consumer, &c.topic, c.partition, position, CommitMode::Async);
                                }
                            }
                            Err(e) => {
                                tracing::error!(error = %e, topic = %c.topic, partition = c.partition, offset = c.offset,
                                    "records not acknowledged; stopping with the offset uncommitted");
                                failure.lock().expect("failure lock").get_or_insert(e);
                                shutdown.cancel();
                            }
                        }
                    });
                }
            })
        }
    };

    // Consuming: parse each message; usable segments go to the decoders, the rest straight to
    // the dead-letter topic.
    let known = config.model.known_classes.clone();
    let max_bytes = config.source.max_segment_bytes;
    let mut quiet_check = tokio::time::interval(Duration::from_secs(1));
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => break,
            message = consumer.recv() => message,
            _ = quiet_check.tick() => {
                for (topic, partition, at) in offsets.quiet(std::time::Instant::now()) {
                    read_again(&consumer, &metrics, &topic, partition, at, "nothing came after the committed offset");
                }
                continue;
            }
        };
        let message = match message {
            Ok(m) => {
                metrics.broker_reachable();
                m
            }
            Err(e) => {
                tracing::warn!(error = %e, "consumer error");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let coordinates = Coordinates {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        };
        let headers: Vec<(&str, &[u8])> = message
            .headers()
            .map(|h| h.iter().map(|h| (h.key, h.value.unwrap_or_default())).collect())
            .unwrap_or_default();
        match offsets.arrive(&coordinates.topic, coordinates.partition, coordinates.offset) {
            Arrival::Skip => continue,
            Arrival::Seek(at) => {
                read_again(
                    &consumer,
                    &metrics,
                    &coordinates.topic,
                    coordinates.partition,
                    at,
                    "the first message read lay beyond the committed offset",
                );
                continue;
            }
            Arrival::Take(gap) => {
                if let Some(gap) = gap {
                    report_gap(&metrics, &coordinates, gap);
                }
            }
        }
        order.lock().expect("stream order lock").admit(&coordinates);
        metrics.segments_in.fetch_add(1, Ordering::Relaxed);
        let sent = match parse_segment(message.payload(), &headers, &known, max_bytes) {
            Ok(segment) => decode_tx.send_async(Job { coordinates, segment }).await.is_ok(),
            Err(e) => {
                let record = dead_letter_record(
                    &config.kafka.dead_letter_topic,
                    &coordinates,
                    None,
                    (e.reason(), e.to_string(), false),
                );
                publish_tx.send_async(Outcome { coordinates, records: vec![record] }).await.is_ok()
            }
        };
        if !sent {
            break;
        }
    }

    // Drain: stop feeding, let every stage empty its queue, wait for the broker's acks.
    tracing::info!("draining in-flight segments");
    metrics.ready.store(false, Ordering::Relaxed);
    drop((decode_tx, publish_tx));
    let joined =
        tokio::task::spawn_blocking(move || threads.into_iter().all(|t| t.join().is_ok())).await.unwrap_or(false);
    let _ = ordering.await;
    let _ = publishing.await;
    acks.close();
    if tokio::time::timeout(p.drain_timeout, acks.wait()).await.is_err() {
        tracing::warn!(unacknowledged = offsets.in_flight(), "drain timed out; those offsets stay uncommitted");
    }
    if !exactly_once {
        for (topic, partition, position) in offsets.positions() {
            commit(&consumer, &topic, partition, position, CommitMode::Sync);
        }
    }
    let _ = clusters_task.await;
    publish_clusters(&clusters, &cluster_publisher, &config.kafka.clusters_topic).await;
    consumer.unsubscribe();
    if let Some(e) = failure.lock().expect("failure lock").take() {
        return Err(e);
    }
    if !joined {
        return Err(Error::WorkerPanicked);
    }
    let stats = stats.lock().expect("stats lock").clone();
    tracing::info!(segments = stats.segments, windows = stats.windows, dead_letters = stats.dead_letters, "stopped");
    Ok(stats)
}

/// Sends the consumer of a partition back to `at`, before its committed offset, so offsets a
/// broker did not serve from where reading resumed are read (`OffsetTracker::arrive` skips what
/// was committed).
fn read_again(consumer: &SegmentConsumer, metrics: &Metrics, topic: &str, partition: i32, at: i64, why: &str) {
    tracing::info!(topic, partition, from = at, why, "reading the partition again from before its committed offset");
    metrics.input_rereads.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = consumer.seek(topic, partition, Offset::Offset(at), Duration::from_secs(5)) {
        tracing::warn!(topic, partition, error = %e, "seeking back failed; the partition reads on where it is");
    }
}

/// Makes offsets the broker never delivered visible: a log line and two counters.
fn report_gap(metrics: &Metrics, c: &Coordinates, gap: Gap) {
    tracing::warn!(topic = %c.topic, partition = c.partition, committed = gap.from, first_received = gap.to,
        skipped = gap.skipped(), "input offsets skipped: the first message read lies beyond the committed offset");
    metrics.input_offset_gaps.fetch_add(1, Ordering::Relaxed);
    metrics.input_offsets_skipped.fetch_add(gap.skipped(), Ordering::Relaxed);
}

/// Wall-clock milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn assignment_records(
    assigner: &Assigner,
    decoded: &Decoded,
    topic: &str,
    clusters: &Mutex<ClusterTable>,
) -> Vec<OutRecord> {
    let segment = &decoded.segment;
    let decisions = assigner.assign(&decoded.windows, segment.label.as_deref());
    let now_ms = now_ms();
    let mut clusters = clusters.lock().expect("cluster table lock");
    decoded
        .windows
        .iter()
        .zip(decisions)
        .map(|(window, decision)| {
            let assignment = Assignment {
                schema: ASSIGNMENT_SCHEMA.to_owned(),
                stream_id: segment.stream_id.clone(),
                segment_id: segment.segment_id.clone(),
                seq: segment.seq,
                window: window.index,
                start_ms: window.start_ms,
                end_ms: window.end_ms,
                kind: decision.kind,
                cluster: decision.cluster,
                confidence: decision.confidence,
                model_version: assigner.version(),
            };
            clusters.observe(&assignment, now_ms);
            OutRecord {
                topic: topic.to_owned(),
                key: segment.stream_id.clone(),
                payload: serde_json::to_vec(&assignment).expect("assignments serialize"),
            }
        })
        .collect()
}

fn dead_letter_record(
    topic: &str,
    coordinates: &Coordinates,
    segment: Option<&Segment>,
    (reason, detail, retriable): (&str, String, bool),
) -> OutRecord {
    // The detail quotes the input (a label, a URI): escaped, it cannot forge log lines.
    tracing::warn!(reason, detail = %detail.escape_debug(), topic = %coordinates.topic, partition = coordinates.partition,
        offset = coordinates.offset, "dead letter");
    let mut letter = DeadLetter::new(coordinates, reason, detail);
    letter.retriable = retriable;
    letter.stream_id = segment.map(|s| s.stream_id.clone());
    letter.segment_id = segment.map(|s| s.segment_id.clone());
    OutRecord {
        topic: topic.to_owned(),
        key: coordinates.key.clone().unwrap_or_default(),
        payload: serde_json::to_vec(&letter).expect("dead letters serialize"),
    }
}

/// Publishes the records of clusters that changed; on failure they stay marked for next time.
/// The model record (key `_model`) goes with them when the model version changed.
async fn publish_clusters(clusters: &Mutex<ClusterTable>, publisher: &Publisher, topic: &str) {
    let (changed, model) = {
        let mut table = clusters.lock().expect("cluster table lock");
        (table.take_changed(), table.take_model())
    };
    if changed.is_empty() && model.is_none() {
        return;
    }
    let names: Vec<String> = changed.iter().map(|c| c.cluster.clone()).collect();
    let mut records: Vec<OutRecord> = changed
        .iter()
        .map(|c| OutRecord {
            topic: topic.to_owned(),
            key: c.cluster.clone(),
            payload: serde_json::to_vec(c).expect("cluster records serialize"),
        })
        .collect();
    if let Some(model) = &model {
        records.push(OutRecord {
            topic: topic.to_owned(),
            key: MODEL_KEY.to_owned(),
            payload: serde_json::to_vec(model).expect("model records serialize"),
        });
    }
    if let Err(e) = publisher.send_all(records).await {
        tracing::warn!(error = %e, "cluster records not published; retrying with the next update");
        let mut table = clusters.lock().expect("cluster table lock");
        table.mark_changed(names);
        if model.is_some() {
            table.mark_model_changed();
        }
    }
}

/// Counts what was published, for the run's stats and the metrics.
#[derive(Clone)]
struct PublishCounter {
    stats: Arc<Mutex<RunStats>>,
    metrics: Arc<Metrics>,
    dead_letter_topic: String,
}

impl PublishCounter {
    /// (windows, dead letters) among `records`.
    fn counts(&self, records: &[OutRecord]) -> (u64, u64) {
        let dead = records.iter().filter(|r| r.topic == self.dead_letter_topic).count() as u64;
        (records.len() as u64 - dead, dead)
    }

    /// Records one input message's outputs as published.
    fn add(&self, (windows, dead): (u64, u64)) {
        {
            let mut s = self.stats.lock().expect("stats lock");
            s.segments += u64::from(windows > 0);
            s.windows += windows;
            s.dead_letters += dead;
        }
        self.metrics.windows_published.fetch_add(windows, Ordering::Relaxed);
        self.metrics.dead_letters.fetch_add(dead, Ordering::Relaxed);
    }
}

/// Most input messages whose outputs share one transaction.
const MAX_TRANSACTION_MESSAGES: usize = 256;

/// The first wait before a segment that failed for want of time or resources is tried again.
const RETRY_BACKOFF: Duration = Duration::from_secs(1);

/// Exactly-once publishing: outcomes arriving within `interval` of each other are written, with
/// the input positions past them, in one transaction. An outcome is written only once its input
/// position is committable (every earlier message of its partition finished), so that a crash
/// can never leave it published with its input uncommitted, to be published again after the
/// restart. A batch that cannot be committed stops the daemon; its input is read again after the
/// restart and nothing of it was visible.
async fn publish_transactions(
    rx: flume::Receiver<Outcome>,
    transactions: Arc<TransactionalPublisher>,
    consumer: Arc<SegmentConsumer>,
    offsets: Arc<OffsetTracker>,
    counter: PublishCounter,
    interval: Duration,
    (failure, shutdown): (Arc<Mutex<Option<Error>>>, CancellationToken),
) {
    // Finished outcomes waiting for an earlier message of their partition, with the partition's
    // incarnation when they finished.
    let mut waiting: Vec<(u64, Outcome)> = Vec::new();
    while let Ok(first) = rx.recv_async().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + interval;
        while batch.len() < MAX_TRANSACTION_MESSAGES {
            match tokio::time::timeout_at(deadline, rx.recv_async()).await {
                Ok(Ok(outcome)) => batch.push(outcome),
                _ => break,
            }
        }
        for outcome in batch {
            let c = &outcome.coordinates;
            // Input of partitions revoked since it was read belongs to their new owner now,
            // which reads it again from the last committed position.
            let Some((incarnation, _)) = offsets.position(&c.topic, c.partition) else { continue };
            if !offsets.is_in_flight(&c.topic, c.partition, c.offset) {
                continue;
            }
            offsets.finish(&c.topic, c.partition, c.offset);
            waiting.push((incarnation, outcome));
        }
        let ready = take_committable(&mut waiting, &offsets);
        if ready.is_empty() {
            continue;
        }
        // Every finished outcome below a partition's position is in `ready` now, so the
        // partitions' current positions are what this transaction commits.
        let partitions: BTreeSet<(&str, i32)> =
            ready.iter().map(|o| (o.coordinates.topic.as_str(), o.coordinates.partition)).collect();
        let mut positions = TopicPartitionList::new();
        for (topic, partition) in partitions {
            // A partition revoked this instant is left out: its new owner commits it.
            let Some((_, position)) = offsets.position(topic, partition) else { continue };
            positions.add_partition_offset(topic, partition, Offset::Offset(position)).expect("valid offset");
        }
        let counts: Vec<(u64, u64)> = ready.iter().map(|o| counter.counts(&o.records)).collect();
        let records: Vec<OutRecord> = ready.into_iter().flat_map(|o| o.records).collect();
        let Some(group) = consumer.group_metadata() else {
            failure.lock().expect("failure lock").get_or_insert(Error::NoGroupMetadata);
            shutdown.cancel();
            break;
        };
        let transactions = transactions.clone();
        let committed = tokio::task::spawn_blocking(move || transactions.commit(&records, &positions, &group))
            .await
            .unwrap_or_else(|source| Err(Error::Task { task: "transaction", source }));
        match committed {
            Ok(()) => counts.into_iter().for_each(|c| counter.add(c)),
            Err(e) => {
                tracing::error!(error = %e, "transaction not committed; stopping, its input will be read again");
                failure.lock().expect("failure lock").get_or_insert(e);
                shutdown.cancel();
                break;
            }
        }
    }
    if !waiting.is_empty() {
        tracing::warn!(
            outcomes = waiting.len(),
            "stopping with outputs whose input is not committable; they are read again"
        );
    }
}

/// Takes the waiting outcomes whose input position is committable (every earlier message of the
/// partition finished), and drops those of partitions revoked since.
fn take_committable(waiting: &mut Vec<(u64, Outcome)>, offsets: &OffsetTracker) -> Vec<Outcome> {
    let mut ready = Vec::new();
    let mut kept = Vec::new();
    for (incarnation, outcome) in waiting.drain(..) {
        let c = &outcome.coordinates;
        match offsets.position(&c.topic, c.partition) {
            Some((now, position)) if now == incarnation && c.offset < position => ready.push(outcome),
            Some((now, _)) if now == incarnation => kept.push((incarnation, outcome)),
            // Revoked (and maybe assigned again) meanwhile: not ours to publish.
            _ => {}
        }
    }
    *waiting = kept;
    ready
}

/// Messages between the consumer's positions and the ends of its assigned partitions.
/// `None` when the brokers did not answer (or no partition is assigned).
fn consumer_lag(consumer: &SegmentConsumer) -> Option<i64> {
    let positions = consumer.position().ok()?;
    if positions.count() == 0 {
        return None;
    }
    let mut lag = 0;
    for element in positions.elements() {
        let (_, high) = consumer.fetch_watermarks(element.topic(), element.partition(), Duration::from_secs(1)).ok()?;
        if let Offset::Offset(position) = element.offset() {
            lag += (high - position).max(0);
        }
    }
    Some(lag)
}

fn commit(consumer: &SegmentConsumer, topic: &str, partition: i32, position: i64, mode: CommitMode) {
    let mut list = TopicPartitionList::new();
    if list.add_partition_offset(topic, partition, Offset::Offset(position)).is_ok() {
        if let Err(e) = consumer.commit(&list, mode) {
            tracing::warn!(error = %e, topic, partition, position, "commit failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(partition: i32, offset: i64) -> Outcome {
        let coordinates = Coordinates { topic: "in".into(), partition, offset, key: None };
        let record = OutRecord { topic: "out".into(), key: format!("{partition}/{offset}"), payload: Vec::new() };
        Outcome { coordinates, records: vec![record] }
    }

    /// Finishes `offset` and queues its outcome as the transactional publisher does.
    fn finish(offsets: &OffsetTracker, waiting: &mut Vec<(u64, Outcome)>, partition: i32, offset: i64) {
        let (incarnation, _) = offsets.position("in", partition).unwrap();
        offsets.finish("in", partition, offset);
        waiting.push((incarnation, outcome(partition, offset)));
    }

    fn keys(ready: Vec<Outcome>) -> Vec<String> {
        ready.into_iter().flat_map(|o| o.records).map(|r| r.key).collect()
    }

    /// Under exactly-once an output may only be written once its input position can be
    /// committed with it: one finished ahead of an earlier message waits for it.
    #[test]
    fn outputs_wait_for_earlier_input_of_their_partition() {
        let offsets = OffsetTracker::new();
        for o in 0..3 {
            offsets.begin("in", 0, o);
        }
        offsets.begin("in", 1, 7);
        let mut waiting = Vec::new();
        finish(&offsets, &mut waiting, 0, 1);
        finish(&offsets, &mut waiting, 1, 7);
        assert_eq!(keys(take_committable(&mut waiting, &offsets)), ["1/7"], "0/1 waits for 0/0");
        finish(&offsets, &mut waiting, 0, 0);
        assert_eq!(keys(take_committable(&mut waiting, &offsets)), ["0/1", "0/0"]);
        assert!(waiting.is_empty());
    }

    /// Outputs of a partition revoked meanwhile are dropped, even when it comes back: its new
    /// incarnation reads that input again from the committed position.
    #[test]
    fn outputs_of_revoked_partitions_are_dropped() {
        let offsets = OffsetTracker::new();
        for o in 0..2 {
            offsets.begin("in", 0, o);
        }
        let mut waiting = Vec::new();
        finish(&offsets, &mut waiting, 0, 1);
        offsets.forget("in", 0);
        offsets.begin("in", 0, 0);
        offsets.finish("in", 0, 0);
        assert!(take_committable(&mut waiting, &offsets).is_empty());
        assert!(waiting.is_empty());
    }
}
