//! Inference: window → known class or novel cluster, with the model version that decided it.

use tch::{nn, Device, Kind, Tensor};

use crate::config::{DecodeConfig, ModelConfig};
use crate::decode::Window;
use crate::model::{window_input, JointModel, LogMel};
use crate::sink::Kind as AssignmentKind;

/// The verdict on one window.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub kind: AssignmentKind,
    /// A known class name, or `novel-<k>`.
    pub cluster: String,
    /// The head's softmax probability of that class or cluster.
    pub confidence: f64,
}

/// Holds the current model and assigns windows with it.
pub struct Assigner {
    vars: nn::VarStore,
    model: JointModel,
    device: Device,
    known_classes: Vec<String>,
    decode: DecodeConfig,
    modality: crate::config::Modality,
    mel: LogMel,
    max_batch: usize,
    version: u64,
}

impl Assigner {
    /// A freshly initialised (untrained) model: model version 0.
    pub fn untrained(model: &ModelConfig, decode: &DecodeConfig, device: Device) -> Self {
        tch::manual_seed(model.seed);
        let vars = nn::VarStore::new(device);
        let joint = JointModel::new(&vars.root(), model);
        Self {
            vars,
            model: joint,
            device,
            known_classes: model.known_classes.clone(),
            decode: decode.clone(),
            modality: model.modality,
            mel: LogMel::new(decode.sample_rate),
            max_batch: model.max_batch,
            version: 0,
        }
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// Index of a known class by name.
    pub fn known_index(&self, label: &str) -> Option<i64> {
        self.known_classes.iter().position(|c| c == label).map(|i| i as i64)
    }

    /// Switches to the trainer's weights `snapshot` as model version `version`. Every variable
    /// of the assigner's model must be in the snapshot (same config, same names).
    pub fn apply(&mut self, version: u64, weights: &[(String, Tensor)]) {
        let _guard = tch::no_grad_guard();
        let mut mine = self.vars.variables();
        for (name, value) in weights {
            if let Some(target) = mine.get_mut(name) {
                target.copy_(&value.to(self.device));
            }
        }
        self.version = version;
    }

    /// Assigns every window of one segment. Windows of a labelled segment are `known` as that
    /// class, with the labelled head's probability for it; all others go to the unlabelled
    /// head's most likely novel cluster.
    pub fn assign(&self, windows: &[Window], label: Option<&str>) -> Vec<Decision> {
        let _guard = tch::no_grad_guard();
        let mut decisions = Vec::with_capacity(windows.len());
        for chunk in windows.chunks(self.max_batch) {
            let refs: Vec<&Window> = chunk.iter().collect();
            let input = window_input(&refs, &self.decode, self.modality, &self.mel).to(self.device);
            let out = self.model.forward_t(&input, false);
            let known_class = label.and_then(|l| self.known_classes.iter().position(|c| c == l));
            match (known_class, &out.known_logits) {
                (Some(class), Some(logits)) => {
                    let p = probabilities(logits);
                    decisions.extend(p.iter().map(|row| Decision {
                        kind: AssignmentKind::Known,
                        cluster: self.known_classes[class].clone(),
                        confidence: f64::from(row[class]),
                    }));
                }
                _ => {
                    let p = probabilities(&out.novel_logits);
                    decisions.extend(p.iter().map(|row| {
                        let (k, confidence) = argmax(row);
                        Decision {
                            kind: AssignmentKind::Novel,
                            cluster: format!("novel-{k}"),
                            confidence: f64::from(confidence),
                        }
                    }));
                }
            }
        }
        decisions
    }
}

/// Softmax rows of `[B, C]` logits, on the CPU.
fn probabilities(logits: &Tensor) -> Vec<Vec<f32>> {
    let p = logits.softmax(-1, Kind::Float).to(Device::Cpu);
    let cols = p.size()[1] as usize;
    let flat: Vec<f32> = Vec::try_from(p.flatten(0, -1)).expect("probabilities are f32");
    flat.chunks(cols).map(<[f32]>::to_vec).collect()
}

fn argmax(row: &[f32]) -> (usize, f32) {
    row.iter().copied().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, p)| if p > best.1 { (i, p) } else { best })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(decode: &DecodeConfig, fill: u8) -> Window {
        let bytes = decode.frames * (decode.height * decode.width * 3) as usize;
        Window { index: 0, start_ms: 0, end_ms: 1000, frames: vec![fill; bytes], audio: vec![] }
    }

    #[test]
    fn untrained_model_assigns_every_window_deterministically() {
        let _rng = crate::rng_lock();
        let decode = DecodeConfig { height: 16, width: 16, frames: 2, ..Default::default() };
        let model =
            ModelConfig { known_classes: vec!["a".into()], novel_clusters: 3, max_batch: 2, ..Default::default() };
        let windows: Vec<Window> = (0..5).map(|i| window(&decode, i * 50)).collect();
        let a = Assigner::untrained(&model, &decode, Device::Cpu);
        let novel = a.assign(&windows, None);
        assert_eq!(novel.len(), 5);
        for d in &novel {
            assert_eq!(d.kind, AssignmentKind::Novel);
            let k: usize = d.cluster.strip_prefix("novel-").unwrap().parse().unwrap();
            assert!(k < 3);
            assert!(d.confidence >= 1.0 / 3.0 - 1e-6 && d.confidence <= 1.0);
        }
        assert_eq!(
            Assigner::untrained(&model, &decode, Device::Cpu).assign(&windows, None),
            novel,
            "same seed, same answers"
        );
        let known = a.assign(&windows, Some("a"));
        assert!(known.iter().all(|d| d.kind == AssignmentKind::Known && d.cluster == "a"));
        assert_eq!(a.version(), 0);
    }
}
