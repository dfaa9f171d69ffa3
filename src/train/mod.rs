//! The online learner of DESIGN.md §2–3: augmentations, the memory bank of momentum keys,
//! pseudo labels (WTA hash and the alternatives used in ablations), the loss terms and the
//! training step that combines them.

mod adam;
mod augment;
mod bank;
pub mod checkpoint;
mod clusters;
mod learner;
mod losses;
mod online;
mod pseudo;
mod wta;

pub use augment::{augment, augment_mel};
pub use bank::MemoryBank;
pub use clusters::{BankClusters, ClusterPairs, ClusterStart};
pub use learner::{Learner, LossReport};
pub use losses::rampup;
pub use online::{OnlineTrainer, Snapshot};
pub use pseudo::{pseudo_labels, PairRule, PseudoLabelKind};
pub use wta::{rows_tensor, WtaHash};
