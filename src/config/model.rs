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

/// What decides unlabelled windows (`model.assign_with`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AssignWith {
    /// Every modality the model has.
    Both,
    /// The picture alone; the audio encoder does not run.
    Visual,
    /// The audio alone; the visual encoder does not run.
    Audio,
    /// A model of both modalities: both, or the picture alone where labelled windows show the
    /// picture alone naming their classes more often (the audio is unlike the training audio).
    Auto,
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

/// Which network makes a modality's representation `z_m`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum EncoderSource {
    /// The small residual encoder of `src/model/encoder.rs`, trained from scratch.
    #[default]
    Builtin,
    /// A TorchScript module (`torchscript:PATH`) whose output `[N, D]` is `z_m`.
    TorchScript(std::path::PathBuf),
}

impl EncoderSource {
    /// The module's file, for a TorchScript encoder.
    pub fn torchscript(&self) -> Option<&std::path::Path> {
        match self {
            Self::Builtin => None,
            Self::TorchScript(path) => Some(path),
        }
    }
}

impl std::str::FromStr for EncoderSource {
    type Err = String;

    /// `builtin` or `torchscript:PATH`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.strip_prefix("torchscript:") {
            Some("") => Err("`torchscript:` needs the module's path after the colon".into()),
            Some(path) => Ok(Self::TorchScript(path.into())),
            None if s == "builtin" => Ok(Self::Builtin),
            None => Err(format!("`{s}` is neither `builtin` nor `torchscript:PATH`")),
        }
    }
}

impl std::fmt::Display for EncoderSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Builtin => f.write_str("builtin"),
            Self::TorchScript(path) => write!(f, "torchscript:{}", path.display()),
        }
    }
}

impl Serialize for EncoderSource {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EncoderSource {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

/// What of a TorchScript encoder trains (the heads and projections always do; a built-in
/// encoder always trains whole).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum EncoderTraining {
    /// Nothing of the module: its forward pass runs without gradients.
    #[default]
    Frozen,
    /// The module's parameters whose names start with one of `model.fine_tune_prefix`.
    LastBlock,
    /// Every parameter of the module.
    Full,
}

/// How windows are prepared for a TorchScript encoder, which reads `[N, C, H, W]` images:
/// each frame (`C` = 3, RGB in [0, 1]; a window's features are averaged over its frames) or
/// the log-mel spectrogram (`C` = 1, `[mel bands, frames]`), resized to `size` and normalised
/// per channel as `(x − mean) / std`; or, with `stack_frames`, a window's frames as one clip
/// `[N, 3, T, H, W]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EncoderInput {
    /// `[H, W]` the module reads; required with a TorchScript encoder.
    pub size: Vec<i64>,
    /// Per channel (one value for all channels, or one per channel).
    pub mean: Vec<f64>,
    /// Per channel, each above 0.
    pub std: Vec<f64>,
    /// Visual only: 0, each frame through the module and the features averaged; or
    /// `decode.frames`, a window's frames stacked as one clip `[N, 3, T, H, W]` (video backbones).
    pub stack_frames: i64,
    /// Visual only: frames become one luminance channel (`C` = 1) for a module trained on
    /// grayscale images.
    pub grayscale: bool,
}

impl Default for EncoderInput {
    fn default() -> Self {
        Self { size: Vec::new(), mean: vec![0.0], std: vec![1.0], stack_frames: 0, grayscale: false }
    }
}

impl EncoderInput {
    /// Channels of the images the module reads: 3 (RGB frames), 1 (grayscale frames, or the
    /// log-mel spectrogram).
    pub fn channels(&self, visual: bool) -> i64 {
        if visual && !self.grayscale {
            3
        } else {
            1
        }
    }
}

impl EncoderInput {
    /// `keys`: this table's `size`, `mean`, `std`, `stack_frames` and `grayscale` keys.
    fn validate(&self, keys: [&'static str; 5], visual: bool) -> Result<(), ConfigError> {
        let [size, mean, std, stack, grayscale] = keys;
        let channels = self.channels(visual) as usize;
        if self.size.len() != 2 || self.size.iter().any(|&s| s < 1) {
            return invalid(size, "must be [height, width], the size the TorchScript encoder reads");
        }
        for (key, values) in [(mean, &self.mean), (std, &self.std)] {
            if values.len() != 1 && values.len() != channels {
                return invalid(key, &format!("must hold 1 or {channels} values"));
            }
        }
        if self.mean.iter().any(|m| !m.is_finite()) {
            return invalid(mean, "must be finite");
        }
        if self.std.iter().any(|&s| !s.is_finite() || s <= 0.0) {
            return invalid(std, "must be above 0");
        }
        if self.stack_frames < 0 || (!visual && self.stack_frames != 0) {
            return invalid(stack, "must be 0, or decode.frames for a visual encoder that reads clips");
        }
        if !visual && self.grayscale {
            return invalid(grayscale, "applies to frames only");
        }
        Ok(())
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
    /// Which of the model's modalities the heads read when assigning (training reads all of
    /// them): `both` (all the model has), or `visual` (`audio`) to decide from the picture
    /// (the audio) alone, without running the other encoder. A model of both modalities that
    /// learns from its audio where the audio at assignment is unlike the training audio (other
    /// languages, another microphone) may assign better and cheaper from the picture alone;
    /// `auto` (the default) lets labelled windows as they arrive choose between both and the
    /// picture alone. For a model of one modality, that modality.
    pub assign_with: AssignWith,
    /// Open world: the share of known-class windows the assigner should name as known (0: off,
    /// the joint head's argmax alone). The assigner measures, on each labelled window as it
    /// arrives (before the trainer has seen it), how far the joint head's best novel cluster is
    /// above its best known class, and from each model version on calls an unlabelled window
    /// novel only when its novel cluster leads by more than that share of the recent labelled
    /// windows' leads (`KNOWN_RECALL_WINDOWS` of them) did: a margin towards the known classes,
    /// never against them.
    pub known_recall: f64,
    /// The visual encoder: `builtin` or `torchscript:PATH`.
    pub visual_encoder: EncoderSource,
    /// The audio encoder: `builtin` or `torchscript:PATH`.
    pub audio_encoder: EncoderSource,
    /// What of a TorchScript encoder trains: `frozen`, `last-block` or `full`.
    pub encoder_training: EncoderTraining,
    /// With `last-block`: the names of the module's parameters to train start with one of these.
    pub fine_tune_prefix: Vec<String>,
    /// How frames are prepared for a TorchScript visual encoder.
    pub visual_input: EncoderInput,
    /// How log-mel spectrograms are prepared for a TorchScript audio encoder.
    pub audio_input: EncoderInput,
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
            assign_with: AssignWith::Auto,
            known_recall: 0.0,
            visual_encoder: EncoderSource::Builtin,
            audio_encoder: EncoderSource::Builtin,
            encoder_training: EncoderTraining::Frozen,
            fine_tune_prefix: Vec::new(),
            visual_input: EncoderInput::default(),
            audio_input: EncoderInput::default(),
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
    /// The modalities the heads read when assigning: [`ModelConfig::assign_with`] of those the
    /// model has; `None` when labelled windows choose (`auto` with both modalities).
    pub fn assigned_modality(&self) -> Option<Modality> {
        match (self.modality, self.assign_with) {
            (Modality::Both, AssignWith::Both) => Some(Modality::Both),
            (Modality::Both, AssignWith::Visual) => Some(Modality::Visual),
            (Modality::Both, AssignWith::Audio) => Some(Modality::Audio),
            (Modality::Both, AssignWith::Auto) => None,
            (only, _) => Some(only),
        }
    }

    /// Outputs of the unlabelled head: the given number, or the capacity with `auto`.
    pub fn novel_outputs(&self) -> i64 {
        match self.novel_clusters {
            NovelClusters::Auto => self.max_novel_clusters,
            NovelClusters::Fixed(n) => n,
        }
    }

    /// Width of the features `z` the pseudo labels compare: the last visual block's channels;
    /// `None` when a TorchScript module decides it (read from the module at start).
    pub(super) fn feature_width(&self) -> Option<i64> {
        if self.visual_encoder.torchscript().is_some() {
            return None;
        }
        Some(*self.channels.last().unwrap_or(&0))
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        match self.novel_clusters {
            NovelClusters::Fixed(n) if n < 1 => return invalid("model.novel_clusters", "must be `auto` or at least 1"),
            NovelClusters::Auto if self.max_novel_clusters < 2 => {
                return invalid("model.max_novel_clusters", "must be at least 2 with `novel_clusters = \"auto\"`")
            }
            _ => {}
        }
        if !(0.0..1.0).contains(&self.known_recall) {
            return invalid("model.known_recall", "must be in [0, 1): a share of the known classes' windows");
        }
        let fits = match self.assign_with {
            AssignWith::Both | AssignWith::Auto => true,
            AssignWith::Visual => self.modality.visual(),
            AssignWith::Audio => self.modality.audio(),
        };
        if !fits {
            return invalid(
                "model.assign_with",
                "must be one of the model's modalities (model.modality), both or auto",
            );
        }
        if self.channels.is_empty() || self.channels.iter().any(|&c| c < 1) {
            return invalid("model.channels", "must list at least one positive channel count");
        }
        if self.modality.audio() && (self.audio_channels.is_empty() || self.audio_channels.iter().any(|&c| c < 1)) {
            return invalid("model.audio_channels", "must list at least one positive channel count");
        }
        if self.modality.visual() && self.visual_encoder.torchscript().is_some() {
            self.visual_input.validate(
                [
                    "model.visual_input.size",
                    "model.visual_input.mean",
                    "model.visual_input.std",
                    "model.visual_input.stack_frames",
                    "model.visual_input.grayscale",
                ],
                true,
            )?;
        }
        if self.modality.audio() && self.audio_encoder.torchscript().is_some() {
            self.audio_input.validate(
                [
                    "model.audio_input.size",
                    "model.audio_input.mean",
                    "model.audio_input.std",
                    "model.audio_input.stack_frames",
                    "model.audio_input.grayscale",
                ],
                false,
            )?;
        }
        if self.encoder_training == EncoderTraining::LastBlock
            && (self.fine_tune_prefix.is_empty() || self.fine_tune_prefix.iter().any(String::is_empty))
        {
            return invalid(
                "model.fine_tune_prefix",
                "must name at least one non-empty parameter prefix with encoder_training = \"last-block\"",
            );
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
