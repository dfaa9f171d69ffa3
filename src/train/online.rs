//! Learning while serving (docs/ARCHITECTURE.md, "The trainer beside the path"): the assigner
//! offers every window it has assigned to a trainer on its own thread, which keeps bounded buffers
//! of recent labelled and unlabelled windows, samples mini-batches from them, steps at its own
//! pace, and every `online.snapshot_every` steps publishes the weights as a new model version.
//! Offering never blocks: when the trainer is behind, windows skip training (and are counted),
//! assignment goes on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tch::{Device, Tensor};

use super::checkpoint;
use super::fingerprint::{fingerprint, Fingerprint};
use super::identity::{ClusterIds, IdentitySet};
use super::ring::Ring;
use super::{Encoder, Learner, LossReport, WtaHash};
use crate::config::{CheckpointConfig, DecodeConfig, ModelConfig, OnlineConfig, PublishedWeights, TrainConfig};
use crate::decode::Window;
use crate::metrics::{Metrics, KEPT_OVER_VERSIONS};
use crate::model::{window_input, Input, LogMel};
use crate::rng::SplitMix64;

/// A window offered for training, and its known-class index when its segment carried a label.
/// The trainer thread turns it into model input, so the assigner does no extra work for it.
pub struct Sample {
    window: Window,
    label: Option<i64>,
}

/// Weights for the assigner, with the version they become.
pub struct Snapshot {
    pub version: u64,
    pub weights: Vec<(String, Tensor)>,
    /// Fraction of the replay windows whose novel cluster differs from the previous version's
    /// (`None` for the first version measured).
    pub changed_fraction: Option<f64>,
    /// The published id of each novel output of these weights.
    pub cluster_ids: ClusterIds,
    /// The learner's step and WTA permutations at these weights (a trainer taking over from
    /// this version pseudo-labels with the same permutations).
    pub step: u64,
    pub wta: WtaHash,
    /// The unlabelled head's outputs in use.
    pub novel_outputs: Vec<i64>,
}

impl Snapshot {
    /// The published names of the novel clusters in use (`novel-<id>`).
    pub fn novel_clusters(&self) -> Vec<String> {
        self.novel_outputs.iter().map(|&k| format!("novel-{}", self.cluster_ids.published(k))).collect()
    }
}

/// The configuration sections a trainer reads.
#[derive(Clone, Copy)]
pub struct TrainerConfigs<'a> {
    pub model: &'a ModelConfig,
    pub train: &'a TrainConfig,
    pub online: &'a OnlineConfig,
    pub checkpoint: &'a CheckpointConfig,
    pub decode: &'a DecodeConfig,
}

/// A model version another trainer published (read from the models topic): its metadata and
/// weights (the online model's, by snapshot name).
pub struct Inherited {
    pub meta: checkpoint::CheckpointMeta,
    pub weights: Vec<(String, Tensor)>,
    /// Where it came from, for errors.
    pub origin: std::path::PathBuf,
}

/// The assigner's end: offers windows, picks up new versions, stops the trainer.
pub struct OnlineTrainer {
    offers: flume::Sender<Sample>,
    latest: Arc<Mutex<Option<Snapshot>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    train_fraction: f64,
    rng: SplitMix64,
    metrics: Arc<Metrics>,
}

impl OnlineTrainer {
    /// Starts the trainer thread. Its learner resumes from the checkpoint when there is a usable
    /// one (and the first snapshot hands its weights and version to the assigner at once), else
    /// starts from `model`'s seed (the assigner's version 0).
    pub fn start(
        model: &ModelConfig,
        train: &TrainConfig,
        online: &OnlineConfig,
        checkpoint: &CheckpointConfig,
        decode: &DecodeConfig,
        device: Device,
        metrics: Arc<Metrics>,
    ) -> crate::Result<Self> {
        let configs = TrainerConfigs { model, train, online, checkpoint, decode };
        Self::start_with(configs, None, device, metrics)
    }

    /// [`OnlineTrainer::start`], taking over from `inherited`, the newest version another
    /// trainer published, when it is newer than this trainer's own checkpoint: its weights
    /// become the online and momentum models' (memory banks and optimiser moments start empty),
    /// and versions go on from its number.
    pub fn start_with(
        configs: TrainerConfigs<'_>,
        inherited: Option<Inherited>,
        device: Device,
        metrics: Arc<Metrics>,
    ) -> crate::Result<Self> {
        let TrainerConfigs { model, train, online, checkpoint, decode } = configs;
        let mut learner = Learner::new(model, train, device)?;
        let mut version = 0;
        let mut ids = ClusterIds::default();
        let fingerprint = fingerprint(model, train, decode);
        // Whether the state came from a checkpoint, and whether the assigner takes these weights
        // at once (as a version of their own) rather than start from its own initial ones.
        let (mut restored, mut hand_over) = (false, false);
        if !checkpoint.path.as_os_str().is_empty() {
            match checkpoint::resume(&checkpoint.path, &mut learner, &fingerprint) {
                Ok(Some(meta)) => {
                    version = meta.version;
                    ids = meta.cluster_ids;
                    (restored, hand_over) = (true, true);
                }
                Ok(None) => {}
                Err(e) => match e.mismatched_version() {
                    Some(old) if checkpoint.discard_mismatched => {
                        tracing::warn!(error = %e, "checkpoint.discard_mismatched: starting over from initial weights");
                        // Versions go on from the old ones, so none is published twice.
                        version = old + 1;
                        hand_over = true;
                    }
                    Some(_) => return Err(crate::Error::Checkpoint(e)),
                    None => tracing::error!(error = %e, "no usable checkpoint; starting from initial weights"),
                },
            }
        }
        if !restored && !checkpoint.start.as_os_str().is_empty() {
            // A starting model the user chose: anything but a usable one stops the daemon.
            let start = &checkpoint.start;
            let meta = match checkpoint::resume(start, &mut learner, &fingerprint) {
                Ok(Some(meta)) => meta,
                Ok(None) => {
                    return Err(crate::Error::StartCheckpoint(format!(
                        "{}: no usable checkpoint there (missing, torn or corrupt: the log says which)",
                        start.display()
                    )))
                }
                Err(checkpoint::CheckpointError::ConfigChanged { keys, .. }) => {
                    return Err(crate::Error::StartCheckpoint(format!(
                        "{}: written under another configuration ({})",
                        start.display(),
                        keys.join("; ")
                    )))
                }
                Err(e) => return Err(crate::Error::StartCheckpoint(e.to_string())),
            };
            version = version.max(meta.version);
            ids = meta.cluster_ids;
            tracing::info!(path = %checkpoint.start.display(), version, step = meta.step,
                "started from checkpoint.start");
            hand_over = true;
        }
        if let Some(inherited) = inherited.filter(|i| i.meta.version > version) {
            // Both the online and the momentum model start from the published weights.
            let tensors: Vec<(String, Tensor)> = ["online", "ema"]
                .iter()
                .flat_map(|prefix| {
                    inherited.weights.iter().map(move |(n, t)| (format!("{prefix}.{n}"), t.shallow_clone()))
                })
                .collect();
            let meta = checkpoint::restore(&inherited.origin, &mut learner, &fingerprint, inherited.meta, &tensors)?;
            tracing::info!(version = meta.version, step = meta.step, "took over from the newest published version");
            version = meta.version;
            ids = meta.cluster_ids;
            hand_over = true;
        }
        let latest = Arc::new(Mutex::new(hand_over.then(|| Snapshot {
            version,
            weights: learner.snapshot(published(online)),
            changed_fraction: None,
            cluster_ids: ids.clone(),
            step: learner.step_count(),
            wta: learner.wta().clone(),
            novel_outputs: learner.novel_clusters_in_use(),
        })));
        let (offers, rx) = flume::bounded(online.trainer_queue);
        let stop = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            learner,
            rx,
            labelled: Ring::new(online.labelled_buffer),
            unlabelled: Ring::new(online.unlabelled_buffer),
            replay: Vec::new(),
            replay_decisions: ReplayDecisions::default(),
            arrived: 0,
            steps: 0,
            identity: IdentitySet::new(online.replay_size),
            ids,
            config: online.clone(),
            batch: train.batch_size,
            latest: latest.clone(),
            stop: stop.clone(),
            metrics: metrics.clone(),
            rng: SplitMix64::new(model.seed as u64 ^ 0x4f4e_4c49_4e45),
            version,
            checkpoint: checkpoint.clone(),
            fingerprint,
            last_checkpoint: Instant::now(),
            decode: decode.clone(),
            modality: model.modality,
            mel: LogMel::new(decode.sample_rate),
        };
        let thread = std::thread::Builder::new()
            .name("trainer".into())
            .spawn(move || worker.run())
            .map_err(crate::Error::io("starting the trainer thread"))?;
        Ok(Self {
            offers,
            latest,
            stop,
            thread: Some(thread),
            train_fraction: online.train_fraction,
            rng: SplitMix64::new(model.seed as u64 ^ 0x004f_4646_4552),
            metrics,
        })
    }

    /// Offers a segment's windows to training (a `train_fraction` share of them); `label` is the
    /// known-class index of a labelled segment. Never waits.
    pub fn offer(&mut self, windows: &[Window], label: Option<i64>) {
        for window in windows {
            if self.train_fraction < 1.0 && self.rng.uniform(0.0, 1.0) >= self.train_fraction {
                continue;
            }
            if self.offers.try_send(Sample { window: window.clone(), label }).is_err() {
                self.metrics.train_skipped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The newest snapshot, if one arrived since the last call.
    pub fn take_snapshot(&self) -> Option<Snapshot> {
        self.latest.lock().expect("snapshot lock").take()
    }
}

impl Drop for OnlineTrainer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The replay windows' published decisions from version to version: the last version's, and
/// the version since which each window has had its present one.
#[derive(Debug, Default)]
struct ReplayDecisions {
    last: Option<Vec<i64>>,
    since: Vec<u64>,
}

impl ReplayDecisions {
    /// Takes the decisions of `version`. Returns the share of the windows whose decision changed
    /// since the version before (`None` at the first), and, once the set has been followed for
    /// [`KEPT_OVER_VERSIONS`] versions, the share whose decision stayed the same through all of
    /// them; a window that joined the set later counts as not kept until it has.
    fn observe(&mut self, version: u64, now: Vec<i64>) -> (Option<f64>, Option<f64>) {
        let before = self.last.as_deref().unwrap_or(&[]);
        let mut changed = 0;
        for (i, decision) in now.iter().enumerate() {
            match (before.get(i), self.since.get_mut(i)) {
                (Some(was), Some(since)) if was != decision => {
                    *since = version;
                    changed += 1;
                }
                (_, Some(_)) => {}
                (_, None) => self.since.push(version),
            }
        }
        let changed = self.last.is_some().then(|| changed as f64 / now.len().max(1) as f64);
        self.last = Some(now);
        let first = self.since.iter().copied().min().unwrap_or(version);
        let kept = self.since.iter().filter(|&&since| since + KEPT_OVER_VERSIONS <= version).count();
        let kept = (version >= first + KEPT_OVER_VERSIONS).then(|| kept as f64 / self.since.len().max(1) as f64);
        (changed, kept)
    }
}

/// The weights a version holds (`online.publish`).
fn published(online: &OnlineConfig) -> Encoder {
    match online.publish {
        PublishedWeights::Online => Encoder::Online,
        PublishedWeights::Momentum => Encoder::Momentum,
    }
}

/// The trainer thread's state.
struct Worker {
    learner: Learner,
    rx: flume::Receiver<Sample>,
    labelled: Ring,
    unlabelled: Ring,
    /// The first unlabelled windows, kept for the stability metrics, and their decisions from
    /// version to version.
    replay: Vec<Input>,
    replay_decisions: ReplayDecisions,
    /// Windows kept in the buffers, and steps taken, since this process started
    /// (`online.steps_per_window`).
    arrived: u64,
    steps: u64,
    /// The windows published cluster ids are carried on from version to version, and the ids.
    identity: IdentitySet,
    ids: ClusterIds,
    config: OnlineConfig,
    batch: usize,
    latest: Arc<Mutex<Option<Snapshot>>>,
    stop: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    rng: SplitMix64,
    version: u64,
    checkpoint: CheckpointConfig,
    /// The configuration checkpoints are written under.
    fingerprint: Fingerprint,
    last_checkpoint: Instant,
    decode: DecodeConfig,
    modality: crate::config::Modality,
    mel: LogMel,
}

impl Worker {
    fn run(mut self) {
        while !self.stop.load(Ordering::Relaxed) {
            // Take what arrived; wait briefly when there is nothing to train on yet, or when the
            // steps already taken used up what the windows so far allow.
            if !self.may_step() {
                match self.rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(sample) => self.keep(sample),
                    Err(flume::RecvTimeoutError::Timeout) => continue,
                    Err(flume::RecvTimeoutError::Disconnected) => break,
                }
            }
            while let Ok(sample) = self.rx.try_recv() {
                self.keep(sample);
            }
            self.metrics.buffered_labelled.set(self.labelled.len() as f64);
            self.metrics.buffered_unlabelled.set(self.unlabelled.len() as f64);
            if self.may_step() {
                self.step();
            }
            if self.last_checkpoint.elapsed() >= self.checkpoint.interval {
                self.save_checkpoint();
            }
        }
        self.save_checkpoint();
    }

    /// Whether enough unlabelled windows are buffered, and another step stays within
    /// `online.steps_per_window` of the windows that arrived.
    fn may_step(&self) -> bool {
        let limit = self.config.steps_per_window;
        self.unlabelled.len() >= self.config.min_unlabelled.max(2)
            && (limit == 0.0 || ((self.steps + 1) as f64) <= self.arrived as f64 * limit)
    }

    /// Saves the learner's state (when a path is configured and it has trained since start).
    fn save_checkpoint(&mut self) {
        self.last_checkpoint = Instant::now();
        if self.checkpoint.path.as_os_str().is_empty() || self.learner.step_count() == 0 {
            return;
        }
        let started = Instant::now();
        let saved =
            checkpoint::save_learner(&self.checkpoint.path, self.version, &self.learner, &self.fingerprint, &self.ids);
        match saved {
            Ok(step) => tracing::info!(path = %self.checkpoint.path.display(), version = self.version, step,
                seconds = started.elapsed().as_secs_f64(), "checkpoint written"),
            Err(e) => tracing::error!(error = %e, "checkpoint not written; the previous one stays"),
        }
    }

    fn keep(&mut self, sample: Sample) {
        let input = window_input(&[&sample.window], &self.decode, self.modality, &self.mel);
        self.arrived += 1;
        match sample.label {
            Some(label) => self.labelled.push(input, label),
            None => {
                if self.replay.len() < self.config.replay_size {
                    self.replay.push(input.narrow(1));
                }
                self.unlabelled.push(input, -1)
            }
        }
    }

    fn step(&mut self) {
        let started = Instant::now();
        let (unlabelled, _) = self.unlabelled.sample(self.batch, &mut self.rng);
        // Too few labelled windows yet: the step gets an empty labelled batch.
        let labelled = (self.labelled.len() >= 2).then(|| self.labelled.sample(self.batch, &mut self.rng));
        let report = self.learner.step_on(labelled, Some(unlabelled));
        self.steps += 1;
        self.metrics.train_step_seconds.observe(started.elapsed().as_secs_f64());
        self.metrics.train_steps.fetch_add(1, Ordering::Relaxed);
        self.metrics.head_splits.store(self.learner.head_splits(), Ordering::Relaxed);
        self.metrics.novel_clusters_estimated.set(self.learner.novel_clusters_in_use().len() as f64);
        self.record(&report);
        if self.learner.step_count() % self.config.snapshot_every == 0 {
            self.publish();
        }
    }

    fn record(&self, r: &LossReport) {
        let m = &self.metrics;
        m.loss_total.set(r.total);
        m.loss_instance.set(r.instance);
        m.loss_category.set(r.category);
        m.loss_bce.set(r.bce);
        m.loss_cross_entropy.set(r.cross_entropy);
        m.loss_consistency.set(r.consistency);
        m.wta_positive_rate.set(r.positive_pair_rate);
    }

    /// Publishes the weights as the next version: carries the published cluster ids over to it
    /// and measures how many replay windows changed published cluster since the previous one.
    fn publish(&mut self) {
        self.version += 1;
        self.carry_ids();
        let mut changed_fraction = None;
        if !self.replay.is_empty() {
            // The replay windows are kept one by one; they are predicted 256 at a time.
            let batches = self.replay.chunks(256).map(|chunk| {
                let first = chunk[0].narrow(chunk[0].len());
                chunk[1..].iter().fold(first, |batch, x| batch.cat(x))
            });
            // Compared as published: known classes by name, novel clusters by published id.
            let known = self.learner.known_count();
            let as_published = |c: i64| if c < known { c } else { known + self.ids.published(c - known) as i64 };
            let clusters: Vec<i64> = self.decisions(batches).into_iter().map(as_published).collect();
            let (changed, kept) = self.replay_decisions.observe(self.version, clusters);
            if let Some(fraction) = changed {
                self.metrics.cluster_changed_fraction.set(fraction);
                changed_fraction = Some(fraction);
            }
            if let Some(kept) = kept {
                self.metrics.replay_kept_fraction.set(kept);
            }
        }
        let snapshot = Snapshot {
            version: self.version,
            weights: self.learner.snapshot(published(&self.config)),
            changed_fraction,
            cluster_ids: self.ids.clone(),
            step: self.learner.step_count(),
            wta: self.learner.wta().clone(),
            novel_outputs: self.learner.novel_clusters_in_use(),
        };
        *self.latest.lock().expect("snapshot lock") = Some(snapshot);
        tracing::debug!(version = self.version, steps = self.learner.step_count(), "new model version");
        crate::allocator::release_free_memory();
    }

    /// Refreshes the identity set from the unlabelled buffer and moves the published ids to the
    /// outputs that now hold their windows.
    fn carry_ids(&mut self) {
        if self.unlabelled.len() > 0 {
            let (fresh, _) = self.unlabelled.sample(self.identity.wanted(), &mut self.rng);
            self.identity.refresh(fresh, &mut self.rng);
        }
        let active = self.learner.novel_clusters_in_use();
        let Some(windows) = self.identity.windows() else {
            self.ids.cover(&active);
            return;
        };
        let known = self.learner.known_count();
        let decided = self.decisions(std::iter::once(windows));
        let outputs: Vec<Option<i64>> = decided.into_iter().map(|c| (c >= known).then(|| c - known)).collect();
        self.identity.advance(&mut self.ids, &outputs, &active);
    }

    /// What the assigner decides for each unlabelled window: a known class `c` as `c`, novel
    /// output `k` as `C_l + k` (the joint head's decision in the open world, else the unlabelled
    /// head's cluster).
    fn decisions(&self, batches: impl IntoIterator<Item = Input>) -> Vec<i64> {
        let predicted = self.learner.predict_all(published(&self.config), batches);
        let known = self.learner.known_count();
        if self.learner.open_world() {
            predicted.joint
        } else {
            predicted.clusters.into_iter().map(|k| known + k).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model, batch and window small enough to train in milliseconds: one known class, two
    /// novel clusters, 8×8 single frames.
    fn tiny() -> (ModelConfig, TrainConfig, DecodeConfig) {
        let model = ModelConfig {
            known_classes: vec!["a".into()],
            novel_clusters: crate::config::NovelClusters::Fixed(2),
            channels: vec![8],
            projection_dim: 8,
            ..Default::default()
        };
        let train = TrainConfig { batch_size: 4, bank_size: 16, ..Default::default() };
        (model, train, DecodeConfig { frames: 1, height: 8, width: 8, ..Default::default() })
    }

    /// Buffers of 8 windows, training once 4 unlabelled ones arrived, a replay set of 4.
    fn small_buffers() -> OnlineConfig {
        OnlineConfig {
            labelled_buffer: 8,
            unlabelled_buffer: 8,
            min_unlabelled: 4,
            replay_size: 4,
            ..Default::default()
        }
    }

    /// A window of `tiny`'s size, all of one grey level.
    fn grey(level: u8) -> Window {
        Window { index: 0, start_ms: 0, end_ms: 1000, frames: vec![level; 8 * 8 * 3], audio: vec![] }
    }

    /// A replay window counts as kept once its decision has stayed the same through the last
    /// ten versions; one that changed, or joined the set, less than ten versions ago does not.
    #[test]
    fn kept_decisions_are_those_unchanged_through_the_last_ten_versions() {
        let mut replay = ReplayDecisions::default();
        let mut seen = Vec::new();
        for version in 1..=14u64 {
            // Window 0 never changes; window 1 changes at version 3; window 2 flips at every
            // version up to 6; window 3 joins the set at version 2.
            let mut now = vec![7, if version < 3 { 1 } else { 2 }, if version < 6 { (version % 2) as i64 } else { 0 }];
            if version >= 2 {
                now.push(4);
            }
            seen.push(replay.observe(version, now).1);
        }
        assert_eq!(&seen[..10], &[None; 10], "not yet followed for ten versions");
        assert_eq!(seen[10], Some(1.0 / 4.0), "version 11: window 0 alone");
        assert_eq!(seen[11], Some(2.0 / 4.0), "version 12: and window 3, there since 2");
        assert_eq!(seen[12], Some(3.0 / 4.0), "version 13: and window 1, changed at 3");
        assert_eq!(seen[13], Some(3.0 / 4.0), "version 14: not window 2, last changed at 6");
    }

    /// The changed share compares each version's decisions with the version before's, over
    /// the windows of the new version (one that just joined the set counts as unchanged).
    #[test]
    fn the_changed_share_is_that_of_the_version_before() {
        let mut replay = ReplayDecisions::default();
        assert_eq!(replay.observe(1, vec![7, 1, 1]).0, None, "nothing to compare with");
        assert_eq!(replay.observe(2, vec![7, 1, 0, 4]).0, Some(1.0 / 4.0), "window 2; window 3 joined");
        assert_eq!(replay.observe(3, vec![7, 2, 1, 4]).0, Some(2.0 / 4.0));
        assert_eq!(replay.observe(4, vec![7, 2, 1, 4]).0, Some(0.0));
        assert_eq!(replay.observe(5, vec![7, 2, 1, 5]).0, Some(1.0 / 4.0), "against version 4, not 2");
    }

    /// The trainer learns from offered windows, publishes versions every `snapshot_every` steps,
    /// and reports the stability of its replay set.
    #[test]
    fn trains_from_offers_and_publishes_versions() {
        let _rng = crate::rng_lock();
        let (model, train, decode) = tiny();
        let online = OnlineConfig { snapshot_every: 2, ..small_buffers() };
        let metrics = Arc::new(Metrics::default());
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = CheckpointConfig { path: dir.path().join("learner.ckpt"), ..Default::default() };
        let mut trainer =
            OnlineTrainer::start(&model, &train, &online, &checkpoint, &decode, Device::Cpu, metrics.clone()).unwrap();
        let windows: Vec<Window> = (0..12).map(|i| grey(i * 20)).collect();
        trainer.offer(&windows[..6], None);
        trainer.offer(&windows[6..], Some(0));
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut versions = Vec::new();
        while versions.len() < 2 && Instant::now() < deadline {
            if let Some(s) = trainer.take_snapshot() {
                assert!(s.weights.iter().any(|(name, _)| name.starts_with("novel.")));
                assert!(s.cluster_ids.id(0).is_some() && s.cluster_ids.id(1).is_some(), "both outputs in use have ids");
                versions.push(s.version);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(trainer);
        assert!(versions.len() >= 2 && versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
        assert!(metrics.train_steps.load(Ordering::Relaxed) >= 4);
        assert_eq!(metrics.buffered_unlabelled.get(), 6.0);
        // The second version measured the replay set against the first's clusters.
        let changed = metrics.cluster_changed_fraction.get().expect("stability measured at the second version");
        assert!((0.0..=1.0).contains(&changed));

        // Stopping wrote a checkpoint; a new trainer resumes from it: its first snapshot is the
        // last version, with the same weights.
        let (meta, _) = checkpoint::load(&checkpoint.path).unwrap();
        assert!(meta.version >= *versions.last().unwrap());
        let resumed =
            OnlineTrainer::start(&model, &train, &online, &checkpoint, &decode, Device::Cpu, metrics.clone()).unwrap();
        let first = resumed.take_snapshot().expect("a restored trainer hands over its weights at once");
        assert_eq!(first.version, meta.version);
        assert_eq!(first.cluster_ids, meta.cluster_ids, "published ids survive the restart");
        assert!(meta.cluster_ids.id(0).is_some(), "the checkpoint holds the ids");
        drop(resumed);

        // Another class list (same count: the tensors would fit) and another bank size: the
        // start is refused naming both keys, and the checkpoint is left as it was.
        let (meta, _) = checkpoint::load(&checkpoint.path).unwrap();
        let renamed = ModelConfig { known_classes: vec!["dog".into()], ..model.clone() };
        let bigger = TrainConfig { bank_size: 32, ..train.clone() };
        let start = |checkpoint: &CheckpointConfig| {
            OnlineTrainer::start(&renamed, &bigger, &online, checkpoint, &decode, Device::Cpu, metrics.clone())
        };
        let error = start(&checkpoint).err().expect("a checkpoint of another configuration is refused").to_string();
        assert!(error.contains("model.known_classes") && error.contains("train.bank_size"), "{error}");
        assert!(error.contains("discard_mismatched"), "{error}");
        assert_eq!(checkpoint::load(&checkpoint.path).unwrap().0, meta);
        // Told to discard it, the trainer starts over at the next version.
        let discard = CheckpointConfig { discard_mismatched: true, ..checkpoint.clone() };
        let fresh = start(&discard).unwrap().take_snapshot().expect("the fresh weights are handed over at once");
        assert_eq!(fresh.version, meta.version + 1);
    }

    /// `checkpoint.start`: with no state of its own the trainer starts from that checkpoint's
    /// weights and version, and its own checkpoints go to `path`; a missing start file or one of
    /// another configuration stops it at start.
    #[test]
    fn starts_from_the_start_checkpoint_when_it_has_none() {
        let _rng = crate::rng_lock();
        let (model, train, decode) = tiny();
        let dir = tempfile::tempdir().unwrap();
        let start_path = dir.path().join("known-only.ckpt");
        let mut learner = Learner::new(&ModelConfig { seed: 11, ..model.clone() }, &train, Device::Cpu).unwrap();
        // One step apart: the online weights and their moving average differ.
        let windows: Vec<Window> = (0..4).map(|i| grey(i * 60)).collect();
        let refs: Vec<&Window> = windows.iter().collect();
        let input = window_input(&refs, &decode, model.modality, &LogMel::new(decode.sample_rate));
        learner.step(&input, &Tensor::from_slice(&[0i64; 4]), &input);
        checkpoint::save_learner(
            &start_path,
            3,
            &learner,
            &fingerprint(&model, &train, &decode),
            &ClusterIds::default(),
        )
        .unwrap();
        // As if trained 7 steps: a trainer that trained since its start checkpoints at shutdown.
        let (mut meta, tensors) = checkpoint::load(&start_path).unwrap();
        meta.step = 7;
        checkpoint::save(&start_path, &meta, &tensors).unwrap();
        let metrics = Arc::new(Metrics::default());
        let online = OnlineConfig::default();
        let own = dir.path().join("own.ckpt");
        let config = CheckpointConfig { path: own.clone(), start: start_path.clone(), ..Default::default() };
        let trainer =
            OnlineTrainer::start(&model, &train, &online, &config, &decode, Device::Cpu, metrics.clone()).unwrap();
        let first = trainer.take_snapshot().expect("the start checkpoint's weights are handed over at once");
        assert_eq!(first.version, 3);
        // A version holds the momentum encoder's weights (`online.publish`'s default).
        let saved = learner.snapshot(Encoder::Momentum);
        assert_eq!(first.weights.len(), saved.len());
        for ((name, is), (_, was)) in first.weights.iter().zip(&saved) {
            assert!(is.equal(was), "{name} is not the start checkpoint's momentum encoder's");
        }
        let online_weights = learner.snapshot(Encoder::Online);
        assert!(
            first.weights.iter().zip(&online_weights).any(|((_, is), (_, online))| !is.equal(online)),
            "the online weights are not what a version holds"
        );
        let publish_online = OnlineConfig { publish: PublishedWeights::Online, ..online.clone() };
        let other = dir.path().join("other.ckpt");
        let by_online = CheckpointConfig { path: other, ..config.clone() };
        let second =
            OnlineTrainer::start(&model, &train, &publish_online, &by_online, &decode, Device::Cpu, metrics.clone())
                .unwrap()
                .take_snapshot()
                .unwrap();
        for ((name, is), (_, was)) in second.weights.iter().zip(&online_weights) {
            assert!(is.equal(was), "{name}: `publish = \"online\"` hands over the online weights");
        }
        drop(trainer);
        assert!(own.exists(), "the trainer's own checkpoint goes to checkpoint.path");
        assert!(start_path.exists());
        let (meta, _) = checkpoint::load(&own).unwrap();
        assert_eq!((meta.version, meta.step), (3, 7), "nothing was offered, so nothing was trained");

        // Once `path` holds state, the start checkpoint is not read: a start file that is gone
        // (both generations) does not matter.
        std::fs::remove_file(&start_path).unwrap();
        std::fs::remove_file(checkpoint::previous(&start_path)).unwrap();
        let resumed = OnlineTrainer::start(&model, &train, &online, &config, &decode, Device::Cpu, metrics.clone());
        assert_eq!(resumed.unwrap().take_snapshot().unwrap().version, 3);

        let fresh = CheckpointConfig { path: dir.path().join("none.ckpt"), ..config.clone() };
        let error = OnlineTrainer::start(&model, &train, &online, &fresh, &decode, Device::Cpu, metrics.clone())
            .err()
            .expect("a missing start checkpoint stops the start")
            .to_string();
        assert!(error.contains("checkpoint.start") && error.contains("known-only.ckpt"), "{error}");
        let other = CheckpointConfig { start: own.clone(), ..fresh };
        let renamed = ModelConfig { known_classes: vec!["dog".into()], ..model };
        let error = OnlineTrainer::start(&renamed, &train, &online, &other, &decode, Device::Cpu, metrics)
            .err()
            .expect("a start checkpoint of another configuration stops the start")
            .to_string();
        assert!(error.contains("checkpoint.start") && error.contains("model.known_classes"), "{error}");
    }

    /// `online.steps_per_window`: the trainer takes no more steps than the windows that arrived
    /// allow, waits while the stream brings none, and goes on when more arrive.
    #[test]
    fn steps_wait_for_windows_beyond_the_limit() {
        let _rng = crate::rng_lock();
        let (model, train, decode) = tiny();
        let online = OnlineConfig { steps_per_window: 0.5, ..small_buffers() };
        let metrics = Arc::new(Metrics::default());
        let trainer = OnlineTrainer::start(
            &model,
            &train,
            &online,
            &CheckpointConfig::default(),
            &decode,
            Device::Cpu,
            metrics.clone(),
        );
        let mut trainer = trainer.unwrap();
        let steps = || metrics.train_steps.load(Ordering::Relaxed);
        let settle = |want: u64| {
            let deadline = Instant::now() + Duration::from_secs(60);
            while steps() < want && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            // Long enough for an unlimited trainer to take dozens of steps more.
            std::thread::sleep(Duration::from_millis(1500));
            steps()
        };
        trainer.offer(&(0..12).map(|i| grey(i * 20)).collect::<Vec<_>>(), None);
        assert_eq!(settle(6), 6, "12 windows allow 6 steps at 0.5 a window");
        trainer.offer(&(0..4).map(|i| grey(i * 30 + 5)).collect::<Vec<_>>(), Some(0));
        assert_eq!(settle(8), 8, "4 more windows allow 2 more steps");
    }
}
