//! What the learner's models say about windows, without learning: one batch's outputs, and the
//! clusters, classes and features of a whole set of windows, as `eval` measures them and the
//! online trainer follows its replay windows.

use tch::{Device, Tensor};

use super::Learner;
use crate::model::{Input, Outputs};

/// Which of the learner's models predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoder {
    /// The model being trained.
    Online,
    /// Its momentum encoder, whose weights average the online model's over recent steps.
    Momentum,
}

/// Predictions for a set of windows, on the host, in the order of the windows.
#[derive(Debug)]
pub struct Predictions {
    /// The unlabelled head's cluster of each window (among the outputs in use).
    pub clusters: Vec<i64>,
    /// The joint head's decision for each window (empty for a model without known classes):
    /// a known class `c` as `c`, novel cluster `k` as `C_l + k`.
    pub joint: Vec<i64>,
    /// The labelled head's class of each window (empty for a model without known classes).
    pub classes: Vec<i64>,
    /// The features `z` `[N, D]`.
    pub features: Tensor,
    /// The bank cluster of each window: the momentum encoder's only, and `None` before the bank
    /// has clusters.
    pub bank_clusters: Option<Vec<i64>>,
}

impl Learner {
    /// The online model in evaluation mode, without gradients.
    pub fn predict(&self, input: &Input) -> Outputs {
        let _guard = tch::no_grad_guard();
        self.model.forward_t(input, false)
    }

    /// The momentum encoder's outputs (its weights average the online model's over recent steps).
    pub fn predict_momentum(&self, input: &Input) -> Outputs {
        let _guard = tch::no_grad_guard();
        self.ema.forward_t(input, false)
    }

    /// The bank cluster (the nearest of the centroids behind the pseudo labels) of each of the
    /// momentum encoder's `outputs`; `None` before the first refresh.
    pub fn bank_cluster(&self, outputs: &Outputs) -> Option<Tensor> {
        self.clusters.assign(&self.joint_keys(outputs))
    }

    /// Predicts `batches` one after another, each moved to the learner's device: a set of
    /// windows too large for one forward pass.
    pub fn predict_all(&self, encoder: Encoder, batches: impl IntoIterator<Item = Input>) -> Predictions {
        let device = self.vars.device();
        let mut features = Vec::new();
        let mut found = Predictions {
            clusters: Vec::new(),
            joint: Vec::new(),
            classes: Vec::new(),
            features: Tensor::zeros([0, 0], (tch::Kind::Float, Device::Cpu)),
            bank_clusters: (encoder == Encoder::Momentum).then(Vec::new),
        };
        for batch in batches {
            let batch = batch.to(device);
            let out = match encoder {
                Encoder::Online => self.predict(&batch),
                Encoder::Momentum => self.predict_momentum(&batch),
            };
            found.clusters.extend(out.novel_clusters());
            if let Some(logits) = &out.known_logits {
                found.classes.extend(host_ints(&logits.argmax(1, false)));
                found.joint.extend(joint_decisions(&out));
            }
            features.push(out.z.to(Device::Cpu));
            if encoder == Encoder::Momentum {
                found.bank_clusters = found.bank_clusters.zip(self.bank_cluster(&out)).map(|(mut bank, cluster)| {
                    bank.extend(host_ints(&cluster));
                    bank
                });
            }
        }
        if !features.is_empty() {
            found.features = Tensor::cat(&features, 0);
        }
        found
    }
}

/// The joint head's decision for each of `out`'s windows: a known class `c` as `c`, novel
/// cluster `k` as `C_l + k`.
pub fn joint_decisions(out: &Outputs) -> Vec<i64> {
    let known = out.known_logits.as_ref().map_or(0, |k| k.size()[1]);
    host_ints(&out.joint_logits().argmax(1, false))
        .into_iter()
        .map(|c| if c < known { c } else { known + out.novel_ids[(c - known) as usize] })
        .collect()
}

/// An int64 tensor's values, on the host.
fn host_ints(t: &Tensor) -> Vec<i64> {
    Vec::try_from(t.to(Device::Cpu)).expect("int64")
}
