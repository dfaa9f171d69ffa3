//! `[online]`: learning while serving.

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

/// Learning while serving: buffers, snapshots, the stability replay set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OnlineConfig {
    /// Train while serving (else the daemon assigns with its initial model only).
    pub enabled: bool,
    /// Most recent windows of labelled segments kept for training (oldest dropped first).
    pub labelled_buffer: usize,
    /// Most recent unlabelled windows kept for training.
    pub unlabelled_buffer: usize,
    /// Share of arriving windows that feed the buffers (1 = all, 0.25 = a random quarter).
    pub train_fraction: f64,
    /// Windows in flight from the assigner to the trainer; when full, windows skip training
    /// (assignment never waits for the trainer).
    pub trainer_queue: usize,
    /// Unlabelled windows buffered before the first step.
    pub min_unlabelled: usize,
    /// At most this many training steps per window that arrived in the buffers (0: no limit).
    /// Beyond it the trainer waits for the stream: a machine that steps faster than the stream
    /// brings windows would otherwise loop over the same buffered windows and memorise them,
    /// and what the daemon learns would depend on how fast its machine is.
    pub steps_per_window: f64,
    /// The trainer publishes a new model version for the assigner every this many steps.
    pub snapshot_every: u64,
    /// The first this many unlabelled windows form a fixed replay set: at every new version the
    /// share whose novel cluster changed is the cluster-stability metric.
    pub replay_size: usize,
    /// Which weights a version holds: the momentum encoder's (an average of the online model's
    /// over about `1 / (1 − train.momentum)` recent steps, so decisions move less from one
    /// version to the next) or the online model's as they are at that step.
    pub publish: PublishedWeights,
}

/// The weights the trainer hands to the assigner at each version (`online.publish`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PublishedWeights {
    /// The model being trained, as it is at the step the version is taken.
    Online,
    /// Its momentum encoder: the exponential moving average of the online weights.
    Momentum,
}

impl Default for OnlineConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            labelled_buffer: 2048,
            unlabelled_buffer: 4096,
            train_fraction: 1.0,
            trainer_queue: 256,
            min_unlabelled: 64,
            steps_per_window: 1.0,
            snapshot_every: 50,
            replay_size: 256,
            publish: PublishedWeights::Momentum,
        }
    }
}

impl OnlineConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.labelled_buffer < 2 || self.unlabelled_buffer < 2 {
            return invalid("online.labelled_buffer/unlabelled_buffer", "must hold at least 2 windows");
        }
        if !(0.0..=1.0).contains(&self.train_fraction) {
            return invalid("online.train_fraction", "must be between 0 and 1");
        }
        if !(self.steps_per_window >= 0.0 && self.steps_per_window.is_finite()) {
            return invalid("online.steps_per_window", "must be 0 (no limit) or a positive number");
        }
        if self.snapshot_every == 0 || self.trainer_queue == 0 {
            return invalid("online.snapshot_every/trainer_queue", "must be at least 1");
        }
        Ok(())
    }
}
