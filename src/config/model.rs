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

/// How many novel clusters the unlabelled head uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NovelClusters {
    /// Estimated from the data while training, up to `model.max_novel_clusters`.
    Auto,
    /// This many, given.
    Fixed(i64),
}

impl Serialize for NovelClusters {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Auto => serializer.serialize_str("auto"),
            Self::Fixed(n) => serializer.serialize_i64(*n),
        }
    }
}

impl<'de> Deserialize<'de> for NovelClusters {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Given {
            Count(i64),
            Word(String),
        }
        match Given::deserialize(deserializer)? {
            Given::Count(n) => Ok(Self::Fixed(n)),
            Given::Word(w) => w.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl std::str::FromStr for NovelClusters {
    type Err = String;

    /// `auto` or a number of clusters.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "auto" => Ok(Self::Auto),
            n => n.parse().map(Self::Fixed).map_err(|_| format!("`{s}` is neither `auto` nor a number of clusters")),
        }
    }
}

/// The model that embeds and assigns windows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Names of the known classes (C_l); a segment label must be one of them.
    pub known_classes: Vec<String>,
    /// Novel clusters (C_u) the unlabelled head partitions windows into: `auto` (estimated from
    /// the data) or a number.
    pub novel_clusters: NovelClusters,
    /// With `auto`, the most novel clusters the estimate may reach: the unlabelled head's width.
    pub max_novel_clusters: i64,
    /// The open world (DESIGN.md 3a): unlabelled windows may be of the known classes too, and
    /// one decision over known classes and novel clusters (a joint head) names each window.
    /// `false`: the paper's task-aware setting, where every unlabelled window is novel.
    pub open_world: bool,
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
            novel_clusters: NovelClusters::Auto,
            max_novel_clusters: 20,
            open_world: true,
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
    /// Outputs of the unlabelled head: the given number, or the capacity with `auto`.
    pub fn novel_outputs(&self) -> i64 {
        match self.novel_clusters {
            NovelClusters::Auto => self.max_novel_clusters,
            NovelClusters::Fixed(n) => n,
        }
    }

    /// Width of the features `z` the pseudo labels compare: the last visual block's channels.
    pub(super) fn feature_width(&self) -> i64 {
        *self.channels.last().unwrap_or(&0)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        match self.novel_clusters {
            NovelClusters::Fixed(n) if n < 1 => return invalid("model.novel_clusters", "must be `auto` or at least 1"),
            NovelClusters::Auto if self.max_novel_clusters < 2 => {
                return invalid("model.max_novel_clusters", "must be at least 2 with `novel_clusters = \"auto\"`")
            }
            _ => {}
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
