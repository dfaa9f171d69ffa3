//! `[pipeline]`: queue sizes and worker counts between the stages.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

/// What one process does (`novelstream run --role`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Everything in one process: assign, publish, train (`online.enabled`), write the clusters
    /// topic.
    #[default]
    All,
    /// A stateless worker of the input group: decode, assign with the newest version on the
    /// models topic, publish assignments and dead letters.
    Assign,
    /// The one trainer (others stand by): trains on the input topic, publishes model versions to
    /// the models topic and writes the clusters topic.
    Train,
}

/// Queue sizes and worker counts between the stages.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// What this process does: `all`, `assign` or `train` (see README, "Scaling out").
    pub role: Role,
    /// A standby trainer takes over once the active one was not heard of for this long.
    #[serde(with = "humantime_serde")]
    pub trainer_lease: Duration,
    /// Decoder threads (each decodes one segment at a time).
    pub decode_workers: usize,
    /// Segments waiting for a decoder; when full, consuming waits.
    pub decode_queue: usize,
    /// Decoded segments waiting for the model; when full, decoders wait.
    pub embed_queue: usize,
    /// Assigned segments waiting to be produced; when full, the model waits.
    pub publish_queue: usize,
    /// Segments whose records may await the broker's acknowledgement at once; when reached,
    /// producing waits.
    pub max_unacknowledged: usize,
    /// How long shutdown waits for the broker to acknowledge what is in flight.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// How often records of changed clusters are published to the clusters topic.
    #[serde(with = "humantime_serde")]
    pub clusters_interval: Duration,
    /// Directory of the markers that catch a message whose decoding kills the process, so it
    /// becomes a dead letter (`crashed_decoder`) instead of a crash loop; empty: none.
    pub crash_markers: PathBuf,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            role: Role::All,
            trainer_lease: Duration::from_secs(10),
            decode_workers: 2,
            decode_queue: 8,
            embed_queue: 8,
            publish_queue: 16,
            max_unacknowledged: 64,
            drain_timeout: Duration::from_secs(30),
            clusters_interval: Duration::from_secs(5),
            crash_markers: PathBuf::new(),
        }
    }
}

impl PipelineConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.trainer_lease < Duration::from_secs(1) {
            return invalid("pipeline.trainer_lease", "must be at least 1s");
        }
        if self.clusters_interval.is_zero() {
            return invalid("pipeline.clusters_interval", "must be longer than zero");
        }
        let sizes =
            [self.decode_workers, self.decode_queue, self.embed_queue, self.publish_queue, self.max_unacknowledged];
        if sizes.contains(&0) {
            return invalid("pipeline", "workers and queue sizes must be at least 1");
        }
        Ok(())
    }
}
