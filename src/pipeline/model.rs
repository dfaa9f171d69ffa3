//! The model stage: one thread owns the assigner's tch state. It assigns the decoded segments in
//! batches of windows (a backlog's segments together) and switches to each new model version
//! between batches; versions come from the trainer beside it (`--role all`, which is also
//! offered every assigned window) or from the models topic (`--role assign`).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tch::Device;

use super::records::assignment_records;
use super::{now_ms, Decoded, Outcome};
use crate::assign::Assigner;
use crate::config::{DecodeConfig, ModelConfig};
use crate::metrics::Metrics;
use crate::sink::ClusterTable;
use crate::train::OnlineTrainer;
use crate::versions::ModelFeed;
use crate::{Error, Result};

/// Where new model versions come from.
pub(super) enum Versions {
    /// Initial weights only (`online.enabled = false`).
    Fixed,
    /// The trainer of this process.
    Trainer(OnlineTrainer),
    /// The models topic.
    Feed(ModelFeed),
}

/// What the model thread needs.
pub(super) struct ModelStage {
    pub model: ModelConfig,
    pub decode: DecodeConfig,
    pub device: Device,
    pub output_topic: String,
    pub versions: Versions,
    /// The cluster table of a process that writes the clusters topic.
    pub clusters: Option<Arc<Mutex<ClusterTable>>>,
    pub metrics: Arc<Metrics>,
}

impl ModelStage {
    /// Starts the thread; returns it once its model is loaded, with the version it serves.
    pub fn start(
        self,
        decoded: flume::Receiver<Decoded>,
        outcomes: flume::Sender<Outcome>,
    ) -> Result<(std::thread::JoinHandle<()>, u64)> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("model".into())
            .spawn(move || {
                let assigner = match Assigner::untrained(&self.model, &self.decode, self.device) {
                    Ok(assigner) => assigner,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(assigner.version()));
                self.serve(assigner, &decoded, &outcomes);
            })
            .map_err(Error::io("starting the model thread"))?;
        let version = ready_rx.recv().map_err(|_| Error::ModelThreadStart)??;
        Ok((thread, version))
    }

    fn serve(mut self, mut assigner: Assigner, decoded: &flume::Receiver<Decoded>, outcomes: &flume::Sender<Outcome>) {
        self.show_modality(&assigner);
        loop {
            // New versions are picked up between batches, and while idle.
            self.switch_version(&mut assigner);
            let first = match decoded.recv_timeout(Duration::from_millis(200)) {
                Ok(decoded) => decoded,
                Err(flume::RecvTimeoutError::Timeout) => continue,
                Err(flume::RecvTimeoutError::Disconnected) => break,
            };
            // The segments already decoded join it, up to a batch of windows: one forward pass
            // for a backlog of short segments, where a GPU would idle on one segment's windows.
            let mut batch = vec![first];
            let mut windows = batch[0].windows.len();
            while windows < self.model.max_batch {
                let Ok(next) = decoded.try_recv() else { break };
                windows += next.windows.len();
                batch.push(next);
            }
            let started = Instant::now();
            let segments: Vec<_> = batch.iter().map(|d| (d.windows.as_slice(), d.segment.label.as_deref())).collect();
            let decisions = assigner.assign_segments(&segments);
            self.show_modality(&assigner);
            let records: Vec<_> = batch
                .iter()
                .zip(decisions)
                .map(|(d, decisions)| {
                    assignment_records(&assigner, d, decisions, &self.output_topic, self.clusters.as_deref())
                })
                .collect();
            self.metrics.assign_seconds.observe(started.elapsed().as_secs_f64());
            self.metrics.windows_assigned.fetch_add(windows as u64, Ordering::Relaxed);
            for (decoded, records) in batch.into_iter().zip(records) {
                if let Versions::Trainer(trainer) = &mut self.versions {
                    let label = decoded.segment.label.as_deref().and_then(|l| assigner.known_index(l));
                    trainer.offer(&decoded.windows, label);
                }
                if outcomes.send(Outcome { coordinates: decoded.coordinates, records }).is_err() {
                    return;
                }
            }
        }
        // Dropping the versions stops the trainer's or the reader's thread.
    }

    fn switch_version(&mut self, assigner: &mut Assigner) {
        match &self.versions {
            Versions::Fixed => {}
            Versions::Trainer(trainer) => {
                let Some(snapshot) = trainer.take_snapshot() else { return };
                assigner.apply(snapshot.version, &snapshot.weights, snapshot.cluster_ids);
                self.switched(assigner, snapshot.changed_fraction);
            }
            Versions::Feed(feed) => {
                let Some(published) = feed.take() else { return };
                let version = published.version();
                if let Err(e) = assigner.try_apply(version, &published.weights, published.meta.cluster_ids) {
                    self.metrics.models_refused.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(version, error = %e, "models topic: version refused; the previous one stays in use");
                    return;
                }
                self.switched(assigner, None);
            }
        }
    }

    /// The gauge of what decides unlabelled windows, and a line in the log when labelled windows
    /// change it (`model.assign_with = "auto"`).
    fn show_modality(&self, assigner: &Assigner) {
        let modality = assigner.assigned_modality();
        let gauge = f64::from(u8::from(modality.visual()) + 2 * u8::from(modality.audio()));
        if self.metrics.assign_modalities.get() != gauge {
            self.metrics.assign_modalities.set(gauge);
            tracing::info!(
                ?modality,
                version = assigner.version(),
                "unlabelled windows are decided from a new choice of modalities"
            );
        }
    }

    fn switched(&self, assigner: &Assigner, changed_fraction: Option<f64>) {
        let version = assigner.version();
        self.metrics.model_version.set(version as f64);
        let known_margin = assigner.known_margin();
        self.metrics.known_margin.set(f64::from(known_margin));
        tracing::info!(version, changed_fraction, novel_clusters = ?assigner.novel_clusters(), known_margin,
            "assigning with a new model version");
        if let Some(clusters) = &self.clusters {
            clusters.lock().expect("cluster table lock").observe_version(
                version,
                assigner.novel_clusters(),
                changed_fraction,
                now_ms(),
            );
        }
    }
}
