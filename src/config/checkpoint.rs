//! `[checkpoint]`: where and how often the learner's state is saved.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

/// Where and how often the learner's state is saved.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// The checkpoint file (its previous generation is kept as `<path>.prev`); empty: none.
    pub path: PathBuf,
    /// Time between checkpoints while training (one is also written at shutdown).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A checkpoint to start from when `path` holds no usable state (none yet, or one discarded
    /// as mismatched): its weights, memory banks, step and cluster ids; model versions go on
    /// from its version. E.g. a model trained offline on the known classes alone by `eval
    /// --known-only --save-checkpoint`. Empty: start from initial weights. One that is missing,
    /// unusable or of another configuration stops the daemon at start.
    pub start: PathBuf,
    /// A checkpoint written under another configuration (other classes, decode geometry, model
    /// shape or bank size) stops the daemon at start, naming the keys. `true` starts over from
    /// initial weights instead; model versions go on from the old checkpoint's.
    pub discard_mismatched: bool,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::new(),
            start: PathBuf::new(),
            interval: Duration::from_secs(300),
            discard_mismatched: false,
        }
    }
}

impl CheckpointConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.interval.is_zero() {
            return invalid("checkpoint.interval", "must be longer than zero");
        }
        Ok(())
    }
}
