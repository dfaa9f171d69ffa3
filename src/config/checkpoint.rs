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
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self { path: PathBuf::new(), interval: Duration::from_secs(300) }
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
