//! The learner's checkpoint state: what [`crate::train::checkpoint`] saves, how it is restored,
//! and the weights snapshots hand to the assigner.

use std::collections::HashMap;

use tch::Tensor;

use super::{Encoder, Learner};
use crate::train::checkpoint::RestoreError;
use crate::train::WtaHash;

impl Learner {
    /// Everything a checkpoint needs: the online and momentum weights (`online.*`, `ema.*`), the
    /// memory banks (`bank.<slot>.*`), the optimiser's moments (`adam.*`), the step and the WTA
    /// permutations.
    pub fn state(&self) -> (u64, &WtaHash, Vec<(String, Tensor)>) {
        let _guard = tch::no_grad_guard();
        let mut tensors: Vec<(String, Tensor)> = Vec::new();
        for (prefix, vars) in [("online", &self.vars), ("ema", &self.ema_vars)] {
            tensors.extend(vars.variables().into_iter().map(|(n, t)| (format!("{prefix}.{n}"), t.detach().copy())));
        }
        for (slot, bank) in self.banks.iter().enumerate() {
            if let Some(bank) = bank {
                let [keys, labels, position] = bank.state();
                tensors.push((format!("bank.{slot}.keys"), keys));
                tensors.push((format!("bank.{slot}.labels"), labels));
                tensors.push((format!("bank.{slot}.position"), position));
            }
        }
        tensors.extend(self.optimizer.state());
        (self.step, &self.wta, tensors)
    }

    /// Restores [`Learner::state`]: every variable of this model must be in `tensors` with its
    /// shape (same model config), else the weights are left as they are and the first tensor
    /// that does not fit is named.
    pub fn restore(&mut self, step: u64, wta: WtaHash, tensors: &[(String, Tensor)]) -> Result<(), RestoreError> {
        let found: HashMap<&str, &Tensor> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let mut copies = Vec::new();
        for (prefix, vars) in [("online", &self.vars), ("ema", &self.ema_vars)] {
            for (name, target) in vars.variables() {
                let key = format!("{prefix}.{name}");
                let source =
                    found.get(key.as_str()).copied().ok_or_else(|| RestoreError::Missing { name: key.clone() })?;
                RestoreError::check_shape(&key, &target, source)?;
                copies.push((target, source.shallow_clone()));
            }
        }
        if wta.dim() != self.wta.dim() {
            return Err(RestoreError::WtaDimensions { expected: self.wta.dim(), found: wta.dim() });
        }
        // Everything is checked before anything is copied: a checkpoint that does not fit
        // leaves the learner as it was. The optimiser checks all its moments before copying.
        for (slot, bank) in self.banks.iter().enumerate() {
            if let Some(bank) = bank {
                bank.check(&format!("bank.{slot}"), &found)?;
            }
        }
        if !self.optimizer.restore(&found)? {
            tracing::warn!("checkpoint has no optimiser state (an older format): Adam's moments start from zero");
        }
        let _guard = tch::no_grad_guard();
        for (mut target, source) in copies {
            target.copy_(&source.to(target.device()));
        }
        for (slot, bank) in self.banks.iter_mut().enumerate() {
            if let Some(bank) = bank {
                bank.restore(&format!("bank.{slot}"), &found)?;
            }
        }
        self.step = step;
        self.wta = wta;
        Ok(())
    }

    /// The online model's visual (else audio) encoder as TorchScript, traced on `example`
    /// (see [`crate::model::JointModel::trace_encoder`]); the learner trains no more after it.
    pub fn trace_encoder(&mut self, visual: bool, example: &Tensor) -> Result<tch::CModule, tch::TchError> {
        self.vars.freeze();
        self.model.trace_encoder(visual, example)
    }

    /// A copy of the weights and batch-norm statistics of `encoder` (the online model or its
    /// momentum encoder; both have the same names), by checkpoint name.
    pub fn snapshot(&self, encoder: Encoder) -> Vec<(String, Tensor)> {
        let _guard = tch::no_grad_guard();
        let vars = match encoder {
            Encoder::Online => &self.vars,
            Encoder::Momentum => &self.ema_vars,
        };
        let mut weights: Vec<(String, Tensor)> =
            vars.variables().into_iter().map(|(name, t)| (name, t.detach().copy())).collect();
        weights.sort_by(|a, b| a.0.cmp(&b.0));
        weights
    }
}

#[cfg(test)]
mod tests {
    use tch::Device;

    use super::*;
    use crate::config::{ModelConfig, TrainConfig};

    /// A state restores into a learner of the same config; one of another projection width is
    /// refused, naming a tensor and both shapes, and the WTA width is checked too.
    #[test]
    fn restore_names_what_does_not_fit() {
        let _rng = crate::rng_lock();
        let model = |projection_dim: i64| ModelConfig { projection_dim, ..super::super::tests::small_model() };
        let train = TrainConfig { batch_size: 4, bank_size: 16, ..Default::default() };
        let saved = Learner::new(&model(8), &train, Device::Cpu).unwrap();
        let (step, wta, tensors) = saved.state();
        let wta = WtaHash::from_prefixes(wta.dim(), wta.prefixes().to_vec());
        let mut same = Learner::new(&model(8), &train, Device::Cpu).unwrap();
        same.restore(step, wta.clone(), &tensors).unwrap();
        let mut wider = Learner::new(&model(16), &train, Device::Cpu).unwrap();
        match wider.restore(step, wta, &tensors) {
            Err(RestoreError::Shape { name, expected, found }) => {
                assert!(name.starts_with("online.") || name.starts_with("ema."), "{name}");
                assert_ne!(expected, found);
            }
            other => panic!("expected a shape mismatch, got {other:?}"),
        }
        let narrow_wta = WtaHash::from_prefixes(3, vec![vec![0, 1]]);
        let error =
            same.restore(step, narrow_wta, &tensors.iter().map(|(n, t)| (n.clone(), t.copy())).collect::<Vec<_>>());
        assert!(matches!(error.unwrap_err(), RestoreError::WtaDimensions { found: 3, .. }));

        // A bank of another size: refused, and nothing was applied (the weights, which fit, too).
        let wta = WtaHash::from_prefixes(saved.state().1.dim(), saved.state().1.prefixes().to_vec());
        let bigger = TrainConfig { bank_size: 32, ..train };
        let mut other_bank = Learner::new(&model(8), &bigger, Device::Cpu).unwrap();
        // Weights unlike the saved ones, so that a partial restore would show.
        tch::no_grad(|| other_bank.vars.variables().into_values().for_each(|mut t| _ = t.g_add_scalar_(1.0)));
        let before = other_bank.snapshot(Encoder::Online);
        let error = other_bank.restore(step + 5, wta, &tensors).unwrap_err();
        assert!(error.to_string().contains("bank."), "{error}");
        for ((name, was), (_, is)) in before.iter().zip(other_bank.snapshot(Encoder::Online)) {
            assert!(was.equal(&is), "{name} was changed by a refused restore");
        }
        assert_eq!(other_bank.step, 0);
    }
}
