//! The online learner (docs/ARCHITECTURE.md): augmentations, the memory bank of momentum keys,
//! pseudo labels (WTA hash and the alternatives used in ablations), the loss terms and the
//! training step that combines them (`learner`), its schedule, the splits of dead outputs of
//! the unlabelled head, the k-means behind the bank's clusters and the eval baselines, and
//! checkpoints.

mod adam;
mod augment;
mod bank;
pub mod checkpoint;
mod clusters;
pub mod estimate;
pub mod fingerprint;
mod head_split;
mod identity;
pub mod kmeans;
mod learner;
mod losses;
mod online;
mod pseudo;
mod ring;
mod schedule;
mod wta;

pub use augment::{augment, augment_mel};
pub use bank::MemoryBank;
pub use clusters::BankClusters;
pub use identity::ClusterIds;
pub use learner::{Encoder, Learner, LossReport, Predictions};
pub use online::{Inherited, OnlineTrainer, Snapshot, TrainerConfigs};
pub use pseudo::{pseudo_labels, PairRule};
pub use schedule::rampup;
pub use wta::{rows_tensor, WtaHash};

// The config owns these choices (config sits below train); re-exported where the learner is used.
pub use crate::config::{ClusterPairs, ClusterStart, PseudoLabelKind};
