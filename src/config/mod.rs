//! Typed configuration: a TOML file whose every key has a default, then overrides from the
//! command line (each of which also reads an environment variable, see `main.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use novelstream_input::DecodeConfig;
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

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
    /// The trainer publishes a new model version for the assigner every this many steps.
    pub snapshot_every: u64,
    /// The first this many unlabelled windows form a fixed replay set: at every new version the
    /// share whose novel cluster changed is the cluster-stability metric.
    pub replay_size: usize,
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
            snapshot_every: 50,
            replay_size: 256,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `host:port` of `/metrics` (Prometheus text), `/healthz` and `/readyz`; empty: no endpoint.
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { listen: "127.0.0.1:9464".into() }
    }
}

#[derive(Clone, Serialize, Deserialize, PartialEq)]
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
    pub properties: BTreeMap<String, String>,
}

/// Whether a librdkafka property holds a secret: its value is never printed.
pub fn is_secret_property(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "jaas", "token", "key.pem", "private"].iter().any(|s| key.contains(s))
}

/// Debug output with the values of secret properties replaced, so a logged config never leaks them.
impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let properties: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), if is_secret_property(k) { "<redacted>" } else { v.as_str() }))
            .collect();
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("input_topic", &self.input_topic)
            .field("output_topic", &self.output_topic)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("clusters_topic", &self.clusters_topic)
            .field("group_id", &self.group_id)
            .field("create_topics", &self.create_topics)
            .field("topic_partitions", &self.topic_partitions)
            .field("topic_replication_factor", &self.topic_replication_factor)
            .field("delivery", &self.delivery)
            .field("transactional_id", &self.transactional_id)
            .field("transaction_interval", &self.transaction_interval)
            .field("properties", &properties)
            .finish()
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            input_topic: "novelstream.segments".into(),
            output_topic: "novelstream.assignments".into(),
            dead_letter_topic: "novelstream.dead-letters".into(),
            clusters_topic: "novelstream.clusters".into(),
            group_id: "novelstream".into(),
            create_topics: true,
            topic_partitions: 3,
            topic_replication_factor: -1,
            delivery: Delivery::AtLeastOnce,
            transactional_id: String::new(),
            transaction_interval: Duration::from_millis(100),
            properties: BTreeMap::new(),
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

impl KafkaConfig {
    /// The transactional id this instance uses under exactly-once delivery.
    pub fn transactional_id(&self) -> String {
        if !self.transactional_id.is_empty() {
            return self.transactional_id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        format!("{}-{host}", self.group_id)
    }

    /// The librdkafka client settings shared by every consumer, producer and admin client.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in &self.properties {
            match value.strip_prefix("env:") {
                // Validated at load time: the variable exists.
                Some(name) => config.set(key, std::env::var(name).unwrap_or_default()),
                None => config.set(key, value),
            };
        }
        config
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// URI schemes a segment reference may use. Supported: `file`.
    pub allowed_schemes: Vec<String>,
    /// Directories `file://` URIs must resolve into (after following links).
    pub file_roots: Vec<PathBuf>,
    /// Largest segment accepted, inline or referenced, in bytes.
    pub max_segment_bytes: u64,
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self { allowed_schemes: vec!["file".into()], file_roots: Vec::new(), max_segment_bytes: 64 * 1024 * 1024 }
    }
}

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
    pub fn visual(self) -> bool {
        matches!(self, Self::Visual | Self::Both)
    }

    pub fn audio(self) -> bool {
        matches!(self, Self::Audio | Self::Both)
    }
}

/// Which (query, key) modality pairs the contrastive terms compare.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Contrast {
    /// Visual queries against visual keys, audio against audio.
    Within,
    /// Visual queries against audio keys and back (needs both modalities).
    Cross,
    /// Both kinds of pairs.
    Both,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DevicePreference {
    /// CUDA when libtorch finds a GPU, else CPU.
    Auto,
    Cpu,
    Cuda,
}

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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
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
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            decode_workers: 2,
            decode_queue: 8,
            embed_queue: 8,
            publish_queue: 16,
            max_unacknowledged: 64,
            drain_timeout: Duration::from_secs(30),
            clusters_interval: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Labelled windows per training step (and as many unlabelled ones).
    pub batch_size: usize,
    /// Adam learning rate.
    pub learning_rate: f64,
    /// Adam weight decay.
    pub weight_decay: f64,
    /// Temperature τ of the contrastive losses.
    pub temperature: f64,
    /// Keys in the memory bank (negatives for contrast).
    pub bank_size: i64,
    /// EMA momentum of the key encoder.
    pub momentum: f64,
    /// How pairwise pseudo labels are made.
    pub pseudo_labels: crate::train::PseudoLabelKind,
    /// WTA: number of permutations H.
    pub wta_permutations: usize,
    /// WTA: entries k compared per permutation.
    pub wta_window: usize,
    /// WTA: share of equal codes μ that makes a positive pair.
    pub wta_threshold: f64,
    /// When above 0, WTA and cosine pairs whose similarity lies between this and the positive
    /// threshold are left out of the BCE (uncertain pairs teach nothing); 0 counts every pair.
    pub negative_threshold: f64,
    /// When above 0, the WTA and cosine thresholds follow each batch's similarity quantile so
    /// that this share of unlabelled pairs is positive (about 1 / novel_clusters when the
    /// clusters are balanced); 0 keeps the fixed thresholds.
    pub pair_positive_rate: f64,
    /// Make pseudo labels from the momentum encoder's features (else the online encoder's).
    pub pseudo_labels_from_momentum: bool,
    /// Ramp the pairwise BCE up like the consistency term, so clusters form once features do.
    pub bce_rampup: bool,
    /// Ablation `cosine`: similarity that makes a positive pair.
    pub cosine_threshold: f64,
    /// Ablation `rank-stats`: top-k dimensions compared.
    pub rank_k: i64,
    /// Weight λ of the consistency loss once ramped up.
    pub consistency_weight: f64,
    /// Steps over which the learning rate decays to 0 along a half cosine (0: constant). For
    /// offline runs with a known budget; a daemon that decays stops learning after this many.
    pub lr_decay_steps: u64,
    /// Steps over which the consistency weight ramps up, `T` in `exp(−5(1−t/T)²)`.
    pub rampup_steps: u64,
    /// Weight of the cluster-balance term `ln C_u − H(mean_i p_i)` on the unlabelled head's
    /// batch-mean prediction (0: off); keeps clusters from merging when classes are about
    /// equally frequent.
    pub balance_weight: f64,
    /// Weight of swapped prediction on the unlabelled head (0: off): each view's head predicts
    /// the other view's balanced (Sinkhorn–Knopp) cluster assignment, as in UNO.
    pub swap_weight: f64,
    /// ε of the Sinkhorn–Knopp assignments (smaller: sharper targets than the head's softmax).
    pub swap_epsilon: f64,
    /// Whether pairs of windows in the same spherical k-means cluster of the memory bank's
    /// unlabelled keys join the WTA pseudo labels (`off` is the paper's method).
    pub cluster_pairs: crate::train::ClusterPairs,
    /// Where each refresh of those clusters starts: the previous centroids, or the groups the
    /// momentum encoder's unlabelled head makes of the batch.
    pub cluster_start: crate::train::ClusterStart,
    /// Steps between refreshes of the bank's clusters.
    pub cluster_every: u64,
    /// k-means++ restarts per refresh competing with the previous clusters (0: refine those).
    pub cluster_restarts: usize,
    /// A bank cluster holding less than this fraction of an even share (`1 / C_u`) of the
    /// unlabelled keys is moved into the largest cluster to split it (0: never).
    pub cluster_min_share: f64,
    /// An unlabelled-head output given less than this fraction of an even share (`1 / C_u`) of
    /// the unlabelled windows (moving average over about 50 steps) is re-initialised to split
    /// the head's largest output in two (0: never): a dead output beside two classes merged
    /// under one is a state the pairwise loss alone rarely leaves, since a dead output's softmax
    /// passes it almost no gradient.
    pub head_min_share: f64,
    /// Loss terms, each switchable for ablations.
    pub instance_contrast: bool,
    pub category_contrast: bool,
    pub pairwise_bce: bool,
    pub cross_entropy: bool,
    pub consistency: bool,
    /// Contrast against the memory bank (else only against the batch).
    pub memory_bank: bool,
    /// Within-modal, cross-modal or both kinds of contrast (single-modal models: within).
    pub contrast: Contrast,
    /// Augmentations that make the two views of a window.
    pub augment: AugmentConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            batch_size: 64,
            learning_rate: 1e-3,
            weight_decay: 1e-5,
            temperature: 0.2,
            bank_size: 4096,
            momentum: 0.99,
            pseudo_labels: crate::train::PseudoLabelKind::Wta,
            wta_permutations: 64,
            wta_window: 4,
            wta_threshold: 0.4,
            negative_threshold: 0.0,
            pair_positive_rate: 0.0,
            pseudo_labels_from_momentum: true,
            bce_rampup: true,
            cosine_threshold: 0.9,
            rank_k: 5,
            consistency_weight: 5.0,
            rampup_steps: 400,
            lr_decay_steps: 0,
            balance_weight: 0.0,
            swap_weight: 0.0,
            swap_epsilon: 0.5,
            cluster_pairs: crate::train::ClusterPairs::Agree,
            cluster_start: crate::train::ClusterStart::Head,
            cluster_every: 20,
            cluster_restarts: 0,
            cluster_min_share: 0.25,
            head_min_share: 0.25,
            instance_contrast: true,
            category_contrast: true,
            pairwise_bce: true,
            cross_entropy: true,
            consistency: true,
            memory_bank: true,
            contrast: Contrast::Both,
            augment: AugmentConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// Random resized crop: smallest side kept, as a share of the frame.
    pub min_crop_scale: f64,
    /// Largest rotation either way, in degrees.
    pub rotation_degrees: f64,
    /// Largest translation, as a share of half the frame.
    pub translate: f64,
    /// Largest brightness shift (frames are in [0, 1]).
    pub brightness: f64,
    /// Largest contrast change, as a factor around 1.
    pub contrast: f64,
    /// Standard deviation of added Gaussian noise.
    pub noise: f64,
    /// Random erasing: a square of up to this share of the frame's side, placed at random, is
    /// set to the window's mean (0: off); teaches features to look past one stroke or blemish.
    pub erase: f64,
    /// Audio: largest shift of the spectrogram in time, in frames (10 ms each), either way.
    pub audio_shift_frames: i64,
    /// Audio: largest gain change either way, in decibels.
    pub audio_gain_db: f64,
    /// Audio: widest band of mel bins and of frames masked out (SpecAugment), 0 for none.
    pub audio_mask: i64,
}

impl AugmentConfig {
    /// Every visual augmentation off: a view is the window itself.
    pub fn visual_off() -> Self {
        Self {
            min_crop_scale: 1.0,
            rotation_degrees: 0.0,
            translate: 0.0,
            brightness: 0.0,
            contrast: 0.0,
            noise: 0.0,
            erase: 0.0,
            ..Self::default()
        }
    }
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            min_crop_scale: 0.75,
            rotation_degrees: 12.0,
            translate: 0.1,
            brightness: 0.1,
            contrast: 0.2,
            noise: 0.03,
            erase: 0.5,
            audio_shift_frames: 10,
            audio_gain_db: 6.0,
            audio_mask: 8,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config: `{key}` {problem}")]
    Invalid { key: &'static str, problem: String },
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
        let config: Config = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: PathBuf::from("<text>"), message: e.to_string() })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot; call again after applying overrides.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| Err(ConfigError::Invalid { key, problem: problem.to_owned() });
        let d = &self.decode;
        if d.window.is_zero() {
            return invalid("decode.window", "must be longer than zero");
        }
        if d.hop.is_zero() {
            return invalid("decode.hop", "must be longer than zero");
        }
        if d.frames == 0 {
            return invalid("decode.frames", "must be at least 1");
        }
        if d.height < 8 || d.width < 8 || d.height > 1024 || d.width > 1024 {
            return invalid("decode.height/width", "must be between 8 and 1024 pixels");
        }
        if !(1000..=192_000).contains(&d.sample_rate) {
            return invalid("decode.sample_rate", "must be between 1000 and 192000 Hz");
        }
        if self.model.novel_clusters < 1 {
            return invalid("model.novel_clusters", "must be at least 1");
        }
        if self.model.channels.is_empty() || self.model.channels.iter().any(|&c| c < 1) {
            return invalid("model.channels", "must list at least one positive channel count");
        }
        if self.model.modality.audio()
            && (self.model.audio_channels.is_empty() || self.model.audio_channels.iter().any(|&c| c < 1))
        {
            return invalid("model.audio_channels", "must list at least one positive channel count");
        }
        if self.train.contrast == Contrast::Cross && self.model.modality != Modality::Both {
            return invalid(
                "train.contrast",
                "`cross` compares visual with audio keys: it needs model.modality = \"both\"",
            );
        }
        if self.model.projection_dim < 1 {
            return invalid("model.projection_dim", "must be at least 1");
        }
        for (key, value) in &self.kafka.properties {
            if let Some(name) = value.strip_prefix("env:") {
                if std::env::var(name).is_err() {
                    return Err(ConfigError::Invalid {
                        key: "kafka.properties",
                        problem: format!("`{key}` reads the environment variable {name}, which is not set"),
                    });
                }
            }
        }
        if self.checkpoint.interval.is_zero() {
            return invalid("checkpoint.interval", "must be longer than zero");
        }
        let o = &self.online;
        if o.labelled_buffer < 2 || o.unlabelled_buffer < 2 {
            return invalid("online.labelled_buffer/unlabelled_buffer", "must hold at least 2 windows");
        }
        if !(0.0..=1.0).contains(&o.train_fraction) {
            return invalid("online.train_fraction", "must be between 0 and 1");
        }
        if o.snapshot_every == 0 || o.trainer_queue == 0 {
            return invalid("online.snapshot_every/trainer_queue", "must be at least 1");
        }
        if !self.metrics.listen.is_empty() && self.metrics.listen.parse::<std::net::SocketAddr>().is_err() {
            return invalid("metrics.listen", "must be `ip:port` (or empty for no endpoint)");
        }
        let t = &self.train;
        if t.batch_size < 2 {
            return invalid("train.batch_size", "must be at least 2");
        }
        if t.temperature <= 0.0 {
            return invalid("train.temperature", "must be positive");
        }
        if !(0.0..1.0).contains(&t.momentum) {
            return invalid("train.momentum", "must be in [0, 1)");
        }
        if t.bank_size < 1 {
            return invalid("train.bank_size", "must be at least 1");
        }
        if t.wta_permutations == 0 || t.wta_window < 2 {
            return invalid(
                "train.wta_permutations/wta_window",
                "need at least 1 permutation and a window of at least 2",
            );
        }
        if t.wta_window as i64 > *self.model.channels.last().unwrap_or(&0) {
            return invalid("train.wta_window", "must not exceed the feature width (the last of model.channels)");
        }
        if !(0.0..1.0).contains(&t.pair_positive_rate) {
            return invalid("train.pair_positive_rate", "must be in [0, 1)");
        }
        if t.rank_k < 1 || t.rank_k > *self.model.channels.last().unwrap_or(&0) {
            return invalid("train.rank_k", "must be between 1 and the feature width");
        }
        if t.cluster_every == 0 {
            return invalid("train.cluster_every", "must be at least 1");
        }
        for (key, share) in
            [("train.cluster_min_share", t.cluster_min_share), ("train.head_min_share", t.head_min_share)]
        {
            if !(0.0..1.0).contains(&share) {
                return invalid(key, "must be in [0, 1): a fraction of an even share of the clusters");
            }
        }
        if t.swap_epsilon.is_nan() || t.swap_epsilon <= 0.0 {
            return invalid("train.swap_epsilon", "must be positive");
        }
        if !(t.swap_weight >= 0.0 && t.balance_weight >= 0.0) {
            return invalid("train.swap_weight/balance_weight", "must be 0 or more");
        }
        if !(0.0..=1.0).contains(&t.augment.min_crop_scale) || t.augment.min_crop_scale == 0.0 {
            return invalid("train.augment.min_crop_scale", "must be in (0, 1]");
        }
        if !(0.0..1.0).contains(&t.augment.erase) {
            return invalid("train.augment.erase", "must be in [0, 1)");
        }
        if self.model.max_batch == 0 {
            return invalid("model.max_batch", "must be at least 1");
        }
        let mut names = self.model.known_classes.clone();
        names.sort();
        names.dedup();
        if names.len() != self.model.known_classes.len() {
            return invalid("model.known_classes", "must not repeat a class name");
        }
        if self.model.known_classes.iter().any(|c| c.starts_with("novel-") || c.starts_with('_')) {
            return invalid(
                "model.known_classes",
                "must not use the `novel-` prefix of cluster ids or start with `_` (reserved for the `_model` record)",
            );
        }
        for scheme in &self.source.allowed_schemes {
            if scheme != "file" {
                return invalid("source.allowed_schemes", &format!("lists `{scheme}`, but only `file` is supported"));
            }
        }
        let p = &self.pipeline;
        if p.clusters_interval.is_zero() {
            return invalid("pipeline.clusters_interval", "must be longer than zero");
        }
        if [p.decode_workers, p.decode_queue, p.embed_queue, p.publish_queue, p.max_unacknowledged].contains(&0) {
            return invalid("pipeline", "workers and queue sizes must be at least 1");
        }
        for (key, value) in [
            ("kafka.input_topic", &self.kafka.input_topic),
            ("kafka.output_topic", &self.kafka.output_topic),
            ("kafka.dead_letter_topic", &self.kafka.dead_letter_topic),
            ("kafka.clusters_topic", &self.kafka.clusters_topic),
            ("kafka.group_id", &self.kafka.group_id),
            ("kafka.brokers", &self.kafka.brokers),
        ] {
            if value.trim().is_empty() {
                return invalid(key, "must not be empty");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn shipped_config_parses() {
        let text = include_str!("../config/novelstream.toml");
        let config = Config::parse(text).unwrap();
        // The shipped file documents the defaults: parsing it changes nothing.
        assert_eq!(config, Config::default());
    }

    /// The configs that pin earlier defaults for RESULTS.md's older rows keep parsing, and each
    /// differs from today's defaults (else it would pin nothing).
    #[test]
    fn pinned_result_configs_parse_and_differ_from_the_defaults() {
        for (name, text) in [
            ("before-head-split", include_str!("../results/configs/before-head-split.toml")),
            ("before-erase", include_str!("../results/configs/before-erase.toml")),
        ] {
            let config = Config::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            config.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_ne!(config.train, Config::default().train, "{name}");
        }
    }

    /// Secret properties never show in Debug output (what logs would print); `env:` values come
    /// from the environment, and a missing variable is a config error naming the key, not a value.
    #[test]
    fn secrets_are_redacted_and_read_from_the_environment() {
        let text = "[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.password\" = \"hunter2\"\n\"sasl.oauthbearer.client.secret\" = \"env:NOVELSTREAM_TEST_SECRET\"\n";
        std::env::set_var("NOVELSTREAM_TEST_SECRET", "s3cr3t-value");
        let config = Config::parse(text).unwrap();
        config.validate().unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2") && printed.contains("<redacted>") && printed.contains("SASL_SSL"));
        let client = config.kafka.client_config();
        assert_eq!(client.get("sasl.oauthbearer.client.secret"), Some("s3cr3t-value"));
        assert_eq!(client.get("sasl.password"), Some("hunter2"));
        let err = Config::parse("[kafka.properties]\n\"sasl.password\" = \"env:NOVELSTREAM_TEST_UNSET\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sasl.password") && err.contains("NOVELSTREAM_TEST_UNSET"), "{err}");
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = Config::parse("[decode]\nframes = 4\nframez = 5\n").unwrap_err().to_string();
        assert!(err.contains("framez"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn durations_are_human() {
        let config = Config::parse("[decode]\nwindow = \"1500ms\"\nhop = \"1s\"\n").unwrap();
        assert_eq!(config.decode.window, Duration::from_millis(1500));
        assert_eq!(config.decode.hop, Duration::from_secs(1));
    }

    #[test]
    fn invalid_values_name_their_key() {
        let err = Config::parse("[decode]\nframes = 0\n").unwrap_err().to_string();
        assert!(err.contains("decode.frames"), "{err}");
        let err = Config::parse("[source]\nallowed_schemes = [\"http\"]\n").unwrap_err().to_string();
        assert!(err.contains("source.allowed_schemes"), "{err}");
        for (line, key) in [
            ("swap_epsilon = 0.0", "train.swap_epsilon"),
            ("cluster_every = 0", "train.cluster_every"),
            ("cluster_min_share = 1.0", "train.cluster_min_share"),
            ("head_min_share = -0.1", "train.head_min_share"),
            ("balance_weight = -1.0", "train.swap_weight/balance_weight"),
        ] {
            let err = Config::parse(&format!("[train]\n{line}\n")).unwrap_err().to_string();
            assert!(err.contains(key), "{line}: {err}");
        }
        for value in ["1.0", "-0.5"] {
            let err = Config::parse(&format!("[train.augment]\nerase = {value}\n")).unwrap_err().to_string();
            assert!(err.contains("train.augment.erase"), "{value}: {err}");
        }
        let err = Config::parse("[train]\ncluster_pairs = \"sometimes\"\n").unwrap_err().to_string();
        assert!(err.contains("cluster_pairs"), "{err}");
    }
}
