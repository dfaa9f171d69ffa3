//! `[kafka]`: broker connection, topic names, delivery guarantee and librdkafka properties.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::time::Duration;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

/// Broker connection and topic names.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma separated (`host:port,host:port`).
    pub brokers: String,
    /// Topic the video segments arrive on.
    pub input_topic: String,
    /// Topic one assignment per window is published to.
    pub output_topic: String,
    /// Topic every unusable input is reported to, with the reason.
    pub dead_letter_topic: String,
    /// Compacted topic with one record per cluster (keyed by cluster id), updated as clusters change.
    pub clusters_topic: String,
    /// Compacted topic of one partition through which the trainer (`--role train`) hands its
    /// model versions to the assigners (`--role assign`), and trainers agree which is active.
    pub models_topic: String,
    /// Largest piece of a model version on the models topic, in bytes; keep it under the
    /// broker's `message.max.bytes` (1 MB by default).
    pub models_chunk_bytes: usize,
    /// Consumer group of the daemon; offsets are committed under it.
    pub group_id: String,
    /// Create missing topics at start-up (needs the broker's permission to create topics).
    pub create_topics: bool,
    /// Partitions of topics the daemon creates.
    pub topic_partitions: i32,
    /// Replication factor of topics the daemon creates (-1: the broker's default).
    pub topic_replication_factor: i32,
    /// `at-least-once` (default): outputs are acknowledged before input offsets are committed, so
    /// a crash can repeat some. `exactly-once`: outputs and input offsets commit in one Kafka
    /// transaction; consumers read with `isolation.level=read_committed`.
    pub delivery: Delivery,
    /// Transactional id of this instance under `exactly-once`: stable across its restarts and
    /// unique among running instances. Empty: `<group_id>-<host name>`.
    pub transactional_id: String,
    /// Under `exactly-once`, how long outputs wait to be committed together in one transaction.
    #[serde(with = "humantime_serde")]
    pub transaction_interval: Duration,
    /// Extra librdkafka properties passed through unchanged, e.g. `"security.protocol" = "SASL_SSL"`.
    /// A value `env:NAME` is read from the environment variable `NAME` (keep secrets out of files).
    pub properties: Properties,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            input_topic: "novelstream.segments".into(),
            output_topic: "novelstream.assignments".into(),
            dead_letter_topic: "novelstream.dead-letters".into(),
            clusters_topic: "novelstream.clusters".into(),
            models_topic: "novelstream.models".into(),
            models_chunk_bytes: 512 * 1024,
            group_id: "novelstream".into(),
            create_topics: true,
            topic_partitions: 3,
            topic_replication_factor: -1,
            delivery: Delivery::AtLeastOnce,
            transactional_id: String::new(),
            transaction_interval: Duration::from_millis(100),
            properties: Properties::default(),
        }
    }
}

/// What downstream consumers can count on when the daemon or the broker fails.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Every window's assignment is published at least once; after a crash some twice.
    AtLeastOnce,
    /// Every window's assignment is visible to `read_committed` consumers exactly once (Kafka
    /// transactions).
    ExactlyOnce,
}

/// This machine's host name (`localhost` when it has none), naming the instance in transactional
/// ids and trainer claims.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Whether a librdkafka property holds a secret: its value is never printed.
pub fn is_secret_property(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "jaas", "token", "key.pem", "private"].iter().any(|s| key.contains(s))
}

/// librdkafka properties by name. Its Debug output replaces the values of secret properties, so
/// a logged config never leaks them while `KafkaConfig` derives Debug for every other field.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct Properties(pub BTreeMap<String, String>);

impl Deref for Properties {
    type Target = BTreeMap<String, String>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::fmt::Debug for Properties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = self.0.iter().map(|(k, v)| (k, if is_secret_property(k) { "<redacted>" } else { v.as_str() }));
        f.debug_map().entries(shown).finish()
    }
}

impl KafkaConfig {
    /// The transactional id this instance uses under exactly-once delivery.
    pub fn transactional_id(&self) -> String {
        if !self.transactional_id.is_empty() {
            return self.transactional_id.clone();
        }
        format!("{}-{}", self.group_id, host_name())
    }

    /// The librdkafka client settings shared by every consumer, producer and admin client.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in self.properties.iter() {
            match value.strip_prefix("env:") {
                // Validated at load time: the variable exists.
                Some(name) => config.set(key, std::env::var(name).unwrap_or_default()),
                None => config.set(key, value),
            };
        }
        config
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in self.properties.iter() {
            if let Some(name) = value.strip_prefix("env:") {
                if std::env::var(name).is_err() {
                    return Err(ConfigError::Invalid {
                        key: "kafka.properties",
                        problem: format!("`{key}` reads the environment variable {name}, which is not set"),
                    });
                }
            }
        }
        for (key, value) in [
            ("kafka.input_topic", &self.input_topic),
            ("kafka.output_topic", &self.output_topic),
            ("kafka.dead_letter_topic", &self.dead_letter_topic),
            ("kafka.clusters_topic", &self.clusters_topic),
            ("kafka.models_topic", &self.models_topic),
            ("kafka.group_id", &self.group_id),
            ("kafka.brokers", &self.brokers),
        ] {
            if value.trim().is_empty() {
                return invalid(key, "must not be empty");
            }
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.models_chunk_bytes) {
            return invalid("kafka.models_chunk_bytes", "must be between 1 KiB and 64 MiB");
        }
        Ok(())
    }
}
