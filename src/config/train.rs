//! `[train]`: how the model learns. The optimiser, the memory bank and the contrast sit at the
//! top; the rest is grouped by what it configures: `[train.pseudo]` (pairwise pseudo labels),
//! `[train.clusters]` (the bank's clusters and dead-cluster splits), `[train.losses]` (which terms,
//! with which weights), `[train.schedule]` (ramps and decay) and `[train.augment]`.

use serde::{Deserialize, Serialize};

use super::{invalid, AugmentConfig, ConfigError};

/// How the model learns: losses, their weights, pseudo labels, augmentations.
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
    /// Within-modal, cross-modal or both kinds of contrast (single-modal models: within).
    pub contrast: Contrast,
    /// Share of training windows whose heads see one modality only (a model of both): each
    /// loses its audio or its picture, half and half, in each view. The heads learn to decide
    /// from either modality alone as well as from both, which a window without audio (or
    /// picture) needs. The contrastive terms and the pseudo labels still see both.
    pub modality_dropout: f64,
    /// How pairwise pseudo labels are made on unlabelled windows.
    pub pseudo: PseudoConfig,
    /// The memory bank's clusters that check the pseudo labels, and splits of dead clusters.
    pub clusters: ClustersConfig,
    /// Which loss terms are on, and their weights.
    pub losses: LossesConfig,
    /// How the learning rate and the unlabelled terms change over the steps.
    pub schedule: ScheduleConfig,
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
            contrast: Contrast::Both,
            modality_dropout: 0.0,
            pseudo: PseudoConfig::default(),
            clusters: ClustersConfig::default(),
            losses: LossesConfig::default(),
            schedule: ScheduleConfig::default(),
            augment: AugmentConfig::default(),
        }
    }
}

impl TrainConfig {
    /// Checks what types alone cannot; the limits that depend on the model's feature width are
    /// checked by `Config::validate`.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.batch_size < 2 {
            return invalid("train.batch_size", "must be at least 2");
        }
        if self.temperature <= 0.0 {
            return invalid("train.temperature", "must be positive");
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return invalid("train.momentum", "must be in [0, 1)");
        }
        if self.bank_size < 1 {
            return invalid("train.bank_size", "must be at least 1");
        }
        if !(0.0..1.0).contains(&self.modality_dropout) {
            return invalid("train.modality_dropout", "must be in [0, 1)");
        }
        self.pseudo.validate()?;
        self.clusters.validate()?;
        self.losses.validate()?;
        self.augment.validate()
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

/// How pairwise pseudo labels are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PseudoLabelKind {
    /// Winner-Take-All hash: share of equal codes ≥ μ.
    Wta,
    /// Cosine similarity of the features ≥ a threshold.
    Cosine,
    /// AutoNovel's rank statistics: the same top-k feature dimensions.
    RankStats,
}

/// `[train.pseudo]`: pairwise pseudo labels on the unlabelled windows of a batch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PseudoConfig {
    /// How pairwise pseudo labels are made.
    pub kind: PseudoLabelKind,
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
    pub from_momentum: bool,
    /// Ablation `cosine`: similarity that makes a positive pair.
    pub cosine_threshold: f64,
    /// Ablation `rank-stats`: top-k dimensions compared.
    pub rank_k: i64,
    /// Whose features the pseudo labels compare, and the bank's clusters and the estimate of
    /// the number of novel clusters with them: both modalities' (`both`: all the model has),
    /// or one's. The contrast and the heads still see every modality the model has.
    pub modality: super::Modality,
}

impl Default for PseudoConfig {
    fn default() -> Self {
        Self {
            kind: PseudoLabelKind::Wta,
            modality: super::Modality::Both,
            wta_permutations: 64,
            wta_window: 4,
            wta_threshold: 0.4,
            negative_threshold: 0.0,
            pair_positive_rate: 0.0,
            from_momentum: true,
            cosine_threshold: 0.9,
            rank_k: 5,
        }
    }
}

impl PseudoConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.wta_permutations == 0 || self.wta_window < 2 {
            return invalid(
                "train.pseudo.wta_permutations/wta_window",
                "need at least 1 permutation and a window of at least 2",
            );
        }
        if !(0.0..1.0).contains(&self.pair_positive_rate) {
            return invalid("train.pseudo.pair_positive_rate", "must be in [0, 1)");
        }
        if self.rank_k < 1 {
            return invalid("train.pseudo.rank_k", "must be between 1 and the feature width");
        }
        Ok(())
    }
}

/// How the bank's clusters join the WTA pseudo labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ClusterPairs {
    /// WTA pseudo labels alone (the paper's method).
    Off,
    /// A pair is positive when the WTA hash or the bank's clusters say so.
    Union,
    /// Positive when both say so, negative when neither does; pairs they disagree on are left
    /// out of the loss.
    Agree,
}

/// What an ambiguous unlabelled window trains (`train.clusters.ambiguous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ambiguous {
    /// The known class the open-set rule routes it to (the default before 2026-11-30).
    Known,
    /// Neither a known class nor "novel": the joint head decides it from the windows around it.
    Abstain,
    /// The nearest novel cluster (the default).
    Novel,
}

/// Where each refresh of the bank's clusters starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ClusterStart {
    /// The previous centroids: the clusters follow the keys as the features move.
    Previous,
    /// Once ramped up, the means of the batch's keys grouped by the momentum encoder's
    /// unlabelled head: the clusters follow the head, so the pseudo labels and the head agree.
    Head,
}

/// `[train.clusters]`: spherical k-means clusters of the memory bank's unlabelled keys that
/// check the pseudo labels, and the splits that keep a cluster from dying — of the bank's
/// clusters and of the unlabelled head's outputs, which are the same rule for two clusterings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClustersConfig {
    /// Whether pairs of windows in the same cluster of the bank's unlabelled keys join the WTA
    /// pseudo labels (`off` is the paper's method).
    pub pairs: ClusterPairs,
    /// Where each refresh of those clusters starts: the previous centroids, or the groups the
    /// momentum encoder's unlabelled head makes of the batch.
    pub start: ClusterStart,
    /// Steps between refreshes of the bank's clusters.
    pub every: u64,
    /// k-means++ restarts per refresh competing with the previous clusters (0: refine those).
    pub restarts: usize,
    /// A bank cluster holding less than this fraction of an even share (`1 / C_u`) of the
    /// unlabelled keys is moved into the largest cluster to split it (0: never).
    pub min_share: f64,
    /// An unlabelled-head output given less than this fraction of an even share (`1 / C_u`) of
    /// the unlabelled windows (moving average over about 50 steps) is re-initialised to split
    /// the head's largest output in two (0: never): a dead output beside two classes merged
    /// under one is a state the pairwise loss alone rarely leaves, since a dead output's softmax
    /// passes it almost no gradient.
    pub head_min_share: f64,
    /// With `model.novel_clusters = "auto"`: steps between estimates of how many novel
    /// clusters the bank's keys hold (the first at this step).
    pub estimate_every: u64,
    /// The head uses the count chosen on the mean silhouette of the last this many estimates,
    /// once there are that many (1: each estimate alone). One estimate clusters a sample of
    /// the bank from two k-means starts; on the visual digits its best count moved by 1–2
    /// between neighbouring estimates, which the mean of three smooths.
    pub estimate_window: usize,
    /// The estimate takes the smallest count whose (mean) silhouette is within this of the
    /// best count's (0: the best). On features that split a class into its styles the
    /// silhouette rises a little with every split; a tolerance of about what one such split
    /// gains (0.02, the default) keeps those splits from counting as categories, while a whole
    /// class gains about twice that.
    pub estimate_tolerance: f64,
    /// Open world: what an unlabelled window trains when it reaches a known class's floor (the
    /// open-set rule routes it to that class) while a novel centroid is nearer. Such windows
    /// are where a new category borders a known one: sent to the known class, they teach the
    /// joint head to call the new category's border known (on MNIST 5–7% of the novel test
    /// images went to a known class so; RESULTS.md).
    pub ambiguous: Ambiguous,
}

impl Default for ClustersConfig {
    fn default() -> Self {
        Self {
            pairs: ClusterPairs::Agree,
            start: ClusterStart::Head,
            every: 20,
            restarts: 0,
            min_share: 0.25,
            head_min_share: 0.25,
            estimate_every: 250,
            estimate_window: 3,
            estimate_tolerance: 0.02,
            ambiguous: Ambiguous::Novel,
        }
    }
}

impl ClustersConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.every == 0 {
            return invalid("train.clusters.every", "must be at least 1");
        }
        if self.estimate_every == 0 {
            return invalid("train.clusters.estimate_every", "must be at least 1");
        }
        if self.estimate_window == 0 {
            return invalid("train.clusters.estimate_window", "must be at least 1");
        }
        if !(0.0..1.0).contains(&self.estimate_tolerance) {
            return invalid("train.clusters.estimate_tolerance", "must be in [0, 1): a difference of silhouettes");
        }
        for (key, share) in
            [("train.clusters.min_share", self.min_share), ("train.clusters.head_min_share", self.head_min_share)]
        {
            if !(0.0..1.0).contains(&share) {
                return invalid(key, "must be in [0, 1): a fraction of an even share of the clusters");
            }
        }
        Ok(())
    }
}

/// `[train.losses]`: the loss terms, each switchable for ablations, and their weights.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LossesConfig {
    /// Instance contrast: each window's two views against each other.
    pub instance_contrast: bool,
    /// Category contrast: labelled windows of the same class against each other.
    pub category_contrast: bool,
    /// Pairwise BCE of the unlabelled head against the pseudo labels.
    pub pairwise_bce: bool,
    /// Cross-entropy of the known head on the labelled windows.
    pub cross_entropy: bool,
    /// Consistency of each head's outputs across the two views.
    pub consistency: bool,
    /// Contrast against the memory bank (else only against the batch).
    pub memory_bank: bool,
    /// Weight λ of the consistency loss once ramped up.
    pub consistency_weight: f64,
    /// Weight of the cluster-balance term `ln C_u − H(mean_i p_i)` on the unlabelled head's
    /// batch-mean prediction (0: off); keeps clusters from merging when classes are about
    /// equally frequent.
    pub balance_weight: f64,
    /// Weight of swapped prediction on the unlabelled head (0: off): each view's head predicts
    /// the other view's balanced (Sinkhorn–Knopp) cluster assignment, as in UNO.
    pub swap_weight: f64,
    /// ε of the Sinkhorn–Knopp assignments (smaller: sharper targets than the head's softmax).
    pub swap_epsilon: f64,
}

impl Default for LossesConfig {
    fn default() -> Self {
        Self {
            instance_contrast: true,
            category_contrast: true,
            pairwise_bce: true,
            cross_entropy: true,
            consistency: true,
            memory_bank: true,
            consistency_weight: 5.0,
            balance_weight: 0.0,
            swap_weight: 0.0,
            swap_epsilon: 0.5,
        }
    }
}

impl LossesConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.swap_epsilon.is_nan() || self.swap_epsilon <= 0.0 {
            return invalid("train.losses.swap_epsilon", "must be positive");
        }
        if !(self.swap_weight >= 0.0 && self.balance_weight >= 0.0) {
            return invalid("train.losses.swap_weight/balance_weight", "must be 0 or more");
        }
        Ok(())
    }
}

/// `[train.schedule]`: how the learning rate and the unlabelled terms change over the steps.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    /// Steps over which the consistency weight ramps up, `T` in `exp(−5(1−t/T)²)`.
    pub rampup_steps: u64,
    /// Ramp the pairwise BCE up like the consistency term, so clusters form once features do.
    pub bce_rampup: bool,
    /// Steps over which the learning rate decays to 0 along a half cosine (0: constant). For
    /// offline runs with a known budget; a daemon that decays stops learning after this many.
    pub lr_decay_steps: u64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self { rampup_steps: 400, bce_rampup: true, lr_decay_steps: 0 }
    }
}

/// Where each `[train]` key of the flat layout moved, as (old key, new table, new key): a config
/// written for the old layout gets an error that says where the key is now.
pub(super) const MOVED_KEYS: &[(&str, &str, &str)] = &[
    ("pseudo_labels", "train.pseudo", "kind"),
    ("wta_permutations", "train.pseudo", "wta_permutations"),
    ("wta_window", "train.pseudo", "wta_window"),
    ("wta_threshold", "train.pseudo", "wta_threshold"),
    ("negative_threshold", "train.pseudo", "negative_threshold"),
    ("pair_positive_rate", "train.pseudo", "pair_positive_rate"),
    ("pseudo_labels_from_momentum", "train.pseudo", "from_momentum"),
    ("cosine_threshold", "train.pseudo", "cosine_threshold"),
    ("rank_k", "train.pseudo", "rank_k"),
    ("cluster_pairs", "train.clusters", "pairs"),
    ("cluster_start", "train.clusters", "start"),
    ("cluster_every", "train.clusters", "every"),
    ("cluster_restarts", "train.clusters", "restarts"),
    ("cluster_min_share", "train.clusters", "min_share"),
    ("head_min_share", "train.clusters", "head_min_share"),
    ("instance_contrast", "train.losses", "instance_contrast"),
    ("category_contrast", "train.losses", "category_contrast"),
    ("pairwise_bce", "train.losses", "pairwise_bce"),
    ("cross_entropy", "train.losses", "cross_entropy"),
    ("consistency", "train.losses", "consistency"),
    ("memory_bank", "train.losses", "memory_bank"),
    ("consistency_weight", "train.losses", "consistency_weight"),
    ("balance_weight", "train.losses", "balance_weight"),
    ("swap_weight", "train.losses", "swap_weight"),
    ("swap_epsilon", "train.losses", "swap_epsilon"),
    ("rampup_steps", "train.schedule", "rampup_steps"),
    ("bce_rampup", "train.schedule", "bce_rampup"),
    ("lr_decay_steps", "train.schedule", "lr_decay_steps"),
];
