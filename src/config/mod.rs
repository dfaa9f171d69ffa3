//! Typed configuration: a TOML file whose every key has a default, then overrides from the
//! command line (each of which also reads an environment variable, see `cli/`).
//!
//! One file per section (`[kafka]` in `kafka.rs`, …), each with its defaults and its own checks;
//! the checks that span sections are `Config::validate`'s.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod augment;
mod checkpoint;
mod decode;
mod kafka;
mod metrics;
mod model;
mod online;
mod pipeline;
mod source;
mod train;

pub use augment::AugmentConfig;
pub use checkpoint::CheckpointConfig;
pub use decode::DecodeConfig;
pub use kafka::{host_name, is_secret_property, Delivery, KafkaConfig, Properties};
pub use metrics::MetricsConfig;
pub use model::{
    AssignWith, DevicePreference, EncoderInput, EncoderSource, EncoderTraining, Modality, ModelConfig, NovelClusters,
};
pub use online::{OnlineConfig, PublishedWeights};
pub use pipeline::{PipelineConfig, Role};
pub use source::SourceConfig;
pub use train::{
    Ambiguous, ClusterPairs, ClusterStart, ClustersConfig, Contrast, LossesConfig, PseudoConfig, PseudoLabelKind,
    ScheduleConfig, TrainConfig,
};

/// Everything the daemon reads from its configuration file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Broker connection and topic names.
    pub kafka: KafkaConfig,
    /// Where segment media may come from, and how large it may be.
    pub source: SourceConfig,
    /// How media is cut into windows, and the limits decoding enforces.
    pub decode: DecodeConfig,
    /// The model that embeds and assigns windows.
    pub model: ModelConfig,
    /// Queue sizes and worker counts between the stages.
    pub pipeline: PipelineConfig,
    /// How the model learns: losses, their weights, pseudo labels, augmentations.
    pub train: TrainConfig,
    /// Learning while serving: buffers, snapshots, the stability replay set.
    pub online: OnlineConfig,
    /// The HTTP endpoint with Prometheus metrics and health checks.
    pub metrics: MetricsConfig,
    /// Where and how often the learner's state is saved.
    pub checkpoint: CheckpointConfig,
}

/// Why a configuration cannot be used; each names the file or the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What reading it reported.
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML of the expected shape (an unknown key, a wrong type).
    #[error("config file {path}: {message}")]
    Parse {
        /// The file, or `<text>` for text parsed without one.
        path: PathBuf,
        /// The parser's message, with the line and the key.
        message: String,
    },
    /// A value its type allows but the daemon cannot use.
    #[error("config: `{key}` {problem}")]
    Invalid {
        /// The key, with its section (`train.pseudo.rank_k`).
        key: &'static str,
        /// What is wrong with its value.
        problem: String,
    },
}

/// The error for a value of `key` that types alone cannot rule out.
fn invalid(key: &'static str, problem: &str) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid { key, problem: problem.to_owned() })
}

/// A parse error about a `[train]` key of the old flat layout, with where that key is now.
fn with_moved_key_hint(message: String) -> String {
    let moved = train::MOVED_KEYS.iter().find(|(old, _, _)| message.contains(&format!("unknown field `{old}`")));
    match moved {
        Some((old, table, key)) => {
            format!("{}\n`{old}` has moved: it is now `{key}` under `[{table}]`", message.trim_end())
        }
        None => message,
    }
}

impl Config {
    /// Reads and validates a TOML config file; unknown keys are errors that name the line.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse { path: path.to_owned(), message },
            other => other,
        })
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<text>"),
            message: with_moved_key_hint(e.to_string()),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot, section by section, then what spans sections; call again
    /// after applying overrides.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.kafka.validate()?;
        self.source.validate()?;
        decode::validate(&self.decode)?;
        self.model.validate()?;
        self.pipeline.validate()?;
        self.online.validate()?;
        self.metrics.validate()?;
        self.checkpoint.validate()?;
        self.train.validate()?;
        if self.pipeline.role == Role::Train && !self.online.enabled {
            return invalid("pipeline.role", "`train` is the trainer: it needs online.enabled = true");
        }
        self.validate_online_against_train()?;
        self.validate_train_against_model()
    }

    /// The trainer of `pipeline.role = "train"` decodes two batches of windows per step: a step
    /// limit below one step per two batches would stop it waiting for windows it never decodes.
    fn validate_online_against_train(&self) -> Result<(), ConfigError> {
        let limit = self.online.steps_per_window;
        if limit > 0.0 && limit * 2.0 * (self.train.batch_size as f64) < 1.0 {
            return invalid(
                "online.steps_per_window",
                "must be 0 (no limit) or at least one step per two batches of windows (1 / (2 × train.batch_size))",
            );
        }
        Ok(())
    }

    /// The train settings that depend on the model: its modalities and its feature width.
    fn validate_train_against_model(&self) -> Result<(), ConfigError> {
        if self.train.contrast == Contrast::Cross && self.model.modality != Modality::Both {
            return invalid(
                "train.contrast",
                "`cross` compares visual with audio keys: it needs model.modality = \"both\"",
            );
        }
        let pseudo = self.train.pseudo.modality;
        if pseudo != Modality::Both && self.model.modality != Modality::Both && pseudo != self.model.modality {
            return invalid("train.pseudo.modality", "must be one of the model's modalities (model.modality), or both");
        }
        if self.train.modality_dropout > 0.0 && self.model.modality != Modality::Both {
            return invalid(
                "train.modality_dropout",
                "withholds one modality of two from the heads: it needs model.modality = \"both\"",
            );
        }
        let stack = self.model.visual_input.stack_frames;
        if self.model.visual_encoder.torchscript().is_some() && stack != 0 && stack != self.decode.frames as i64 {
            return invalid(
                "model.visual_input.stack_frames",
                "must be 0 (frames averaged) or decode.frames (the frames of a window, stacked)",
            );
        }
        let Some(width) = self.model.feature_width() else {
            return Ok(());
        };
        if self.train.pseudo.wta_window as i64 > width {
            return invalid(
                "train.pseudo.wta_window",
                "must not exceed the feature width (the last of model.channels)",
            );
        }
        if self.train.pseudo.rank_k > width {
            return invalid("train.pseudo.rank_k", "must be between 1 and the feature width");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
