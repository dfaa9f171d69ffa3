//! `[model]`: the model that embeds and assigns windows.

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

/// The encoders a model has.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Modality {
    /// Frames only.
    Visual,
    /// The log-mel spectrogram of the window's audio only.
    Audio,
    /// Both, `z = [z_v; z_a]`.
    Both,
}

impl Modality {
    /// Whether the model has a visual encoder.
    pub fn visual(self) -> bool {
        matches!(self, Self::Visual | Self::Both)
    }

    /// Whether the model has an audio encoder.
    pub fn audio(self) -> bool {
        matches!(self, Self::Audio | Self::Both)
    }
}

/// Where the model runs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DevicePreference {
    /// CUDA when libtorch finds a GPU, else CPU.
    Auto,
    /// The CPU, even when a GPU is present.
    Cpu,
    /// A CUDA GPU; start-up fails without one.
    Cuda,
}

/// The model that embeds and assigns windows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Names of the known classes (C_l); a segment label must be one of them.
    pub known_classes: Vec<String>,
    /// Number of novel clusters (C_u) the unlabelled head partitions windows into.
    pub novel_clusters: i64,
    /// Which encoders make `z`: frames, audio, or both (`z = [z_v; z_a]`).
    pub modality: Modality,
    /// Channels of the visual encoder's residual blocks (each halves the resolution).
    pub channels: Vec<i64>,
    /// Channels of the audio encoder's residual blocks over the log-mel spectrogram.
    pub audio_channels: Vec<i64>,
    /// Width of the contrastive projection `ẑ`.
    pub projection_dim: i64,
    /// Seed of the initial weights.
    pub seed: i64,
    /// Where the model runs.
    pub device: DevicePreference,
    /// Windows per forward pass at most.
    pub max_batch: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            known_classes: Vec::new(),
            novel_clusters: 5,
            modality: Modality::Visual,
            channels: vec![16, 32, 64],
            audio_channels: vec![16, 32, 64],
            projection_dim: 64,
            seed: 0,
            device: DevicePreference::Auto,
            max_batch: 64,
        }
    }
}

impl ModelConfig {
    /// Width of the features `z` the pseudo labels compare: the last visual block's channels.
    pub(super) fn feature_width(&self) -> i64 {
        *self.channels.last().unwrap_or(&0)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.novel_clusters < 1 {
            return invalid("model.novel_clusters", "must be at least 1");
        }
        if self.channels.is_empty() || self.channels.iter().any(|&c| c < 1) {
            return invalid("model.channels", "must list at least one positive channel count");
        }
        if self.modality.audio() && (self.audio_channels.is_empty() || self.audio_channels.iter().any(|&c| c < 1)) {
            return invalid("model.audio_channels", "must list at least one positive channel count");
        }
        if self.projection_dim < 1 {
            return invalid("model.projection_dim", "must be at least 1");
        }
        if self.max_batch == 0 {
            return invalid("model.max_batch", "must be at least 1");
        }
        let mut names = self.known_classes.clone();
        names.sort();
        names.dedup();
        if names.len() != self.known_classes.len() {
            return invalid("model.known_classes", "must not repeat a class name");
        }
        if self.known_classes.iter().any(|c| c.starts_with("novel-") || c.starts_with('_')) {
            return invalid(
                "model.known_classes",
                "must not use the `novel-` prefix of cluster ids or start with `_` (reserved for the `_model` record)",
            );
        }
        Ok(())
    }
}
