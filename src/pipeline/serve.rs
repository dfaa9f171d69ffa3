//! `--role all` and `--role assign`: consume → decode → assign → publish → commit. `all` trains
//! beside the model stage and writes the clusters topic; `assign` takes model versions from the
//! models topic and leaves the clusters topic to the trainer.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use tokio_util::sync::CancellationToken;

use super::clusters::{publish_clusters, spawn_publisher};
use super::consume::{watch, Intake};
use super::decoders::Decoders;
use super::model::{ModelStage, Versions};
use super::publish::{commit, PublishCounter, Publishing, Running};
use super::{Decoded, Job, Outcome, RunStats};
use crate::admin::{ensure_compacted_topics, ensure_models_topic, ensure_topics};
use crate::config::{Config, Delivery, Role};
use crate::decode::CrashMarkers;
use crate::metrics::Metrics;
use crate::model::select_device;
use crate::sink::{ClusterTable, Publisher, StreamOrder, TransactionalPublisher};
use crate::source::{consumer, OffsetTracker, UriPolicy};
use crate::train::fingerprint::fingerprint;
use crate::train::OnlineTrainer;
use crate::versions::ModelFeed;
use crate::{Error, Result};

/// Serves until `shutdown` is cancelled, then drains what is in flight.
pub(super) async fn run(config: Config, metrics: Arc<Metrics>, shutdown: CancellationToken) -> Result<RunStats> {
    let assign_only = config.pipeline.role == Role::Assign;
    let policy = UriPolicy::new(&config.source)?;
    let device = select_device(config.model.device)?;
    let k = &config.kafka;
    if k.create_topics {
        ensure_topics(k, &[&k.input_topic, &k.output_topic, &k.dead_letter_topic]).await?;
        ensure_compacted_topics(k, &[&k.clusters_topic]).await?;
        if assign_only {
            ensure_models_topic(k).await?;
        }
    }
    // The versions to serve: the newest on the models topic before consuming anything, or the
    // trainer of this process.
    let versions = if assign_only {
        let fingerprint = fingerprint(&config.model, &config.train, &config.decode);
        let feed = ModelFeed::start(&config.kafka, fingerprint, metrics.clone())?;
        let caught_up = tokio::task::spawn_blocking(move || {
            feed.wait_caught_up(Duration::from_secs(1), Duration::from_secs(30));
            feed
        });
        Versions::Feed(caught_up.await.map_err(|source| Error::Task { task: "models topic reader", source })?)
    } else if config.online.enabled {
        Versions::Trainer(OnlineTrainer::start(
            &config.model,
            &config.train,
            &config.online,
            &config.checkpoint,
            &config.decode,
            device,
            metrics.clone(),
        )?)
    } else {
        Versions::Fixed
    };
    let offsets = Arc::new(OffsetTracker::new());
    let consumer = Arc::new(consumer(&config.kafka, offsets.clone(), metrics.clone())?);
    consumer.subscribe(&[&config.kafka.input_topic]).map_err(Error::kafka("subscribing to the input topic"))?;
    let publisher = Publisher::new(&config.kafka)?;
    let transactions = match config.kafka.delivery {
        Delivery::AtLeastOnce => None,
        Delivery::ExactlyOnce => Some(Arc::new(TransactionalPublisher::new(&config.kafka)?)),
    };
    let exactly_once = transactions.is_some();
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
    let decoders = Decoders {
        policy,
        decode: config.decode.clone(),
        metrics: metrics.clone(),
        markers,
        dead_letters: Some((config.kafka.dead_letter_topic.clone(), publish_tx.clone())),
    };
    let mut threads = decoders.start(p.decode_workers, &decode_rx, &embed_tx)?;
    drop(embed_tx);
    let queues = (decode_rx, embed_rx.clone(), publish_rx.clone());

    // The clusters topic has one writer: this process unless it is one assigner among many.
    let clusters = (!assign_only).then(|| Arc::new(Mutex::new(ClusterTable::default())));
    let model = ModelStage {
        model: config.model.clone(),
        decode: config.decode.clone(),
        device,
        output_topic: config.kafka.output_topic.clone(),
        versions,
        clusters: clusters.clone(),
        metrics: metrics.clone(),
    };
    let (model_thread, version) = model.start(embed_rx, publish_tx.clone())?;
    threads.push(model_thread);
    metrics.ready.store(true, Ordering::Relaxed);
    tracing::info!(
        role = ?config.pipeline.role,
        model_version = version,
        online_training = config.online.enabled && !assign_only,
        input = %config.kafka.input_topic,
        output = %config.kafka.output_topic,
        "serving with model version {version}"
    );
    watch(metrics.clone(), consumer.clone(), queues, shutdown.clone());
    let clusters_task = clusters.clone().map(|table| {
        let topic = config.kafka.clusters_topic.clone();
        spawn_publisher(table, publisher.clone(), topic, config.pipeline.clusters_interval, shutdown.clone())
    });

    let publishing = Publishing {
        publisher: publisher.clone(),
        transactions,
        consumer: consumer.clone(),
        offsets: offsets.clone(),
        counter: PublishCounter {
            stats: stats.clone(),
            metrics: metrics.clone(),
            dead_letter_topic: config.kafka.dead_letter_topic.clone(),
        },
        max_unacknowledged: p.max_unacknowledged,
        transaction_interval: config.kafka.transaction_interval,
        failure: (failure.clone(), shutdown.clone()),
    };
    let Running { ordering, publishing, acks } = publishing.start(publish_rx, order.clone(), p.publish_queue);

    let intake = Intake {
        consumer: consumer.clone(),
        offsets: offsets.clone(),
        order,
        metrics: metrics.clone(),
        known: config.model.known_classes.clone(),
        max_bytes: config.source.max_segment_bytes,
        dead_letter_topic: config.kafka.dead_letter_topic.clone(),
    };
    intake.run(shutdown.clone(), decode_tx, publish_tx).await;

    // Drain: stop feeding, let every stage empty its queue, wait for the broker's acks.
    tracing::info!("draining in-flight segments");
    metrics.ready.store(false, Ordering::Relaxed);
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
    if let (Some(task), Some(table)) = (clusters_task, &clusters) {
        let _ = task.await;
        publish_clusters(table, &publisher, &config.kafka.clusters_topic).await;
    }
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
