//! One optimiser over every loss term (DESIGN.md §2): the training step shared by `eval` and the
//! daemon's online trainer.

use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};

use super::losses::{category_nce, consistency, instance_nce, instance_nce_in_batch, pairwise_bce, rampup};
use super::{augment, pseudo_labels, MemoryBank, PairRule, WtaHash};
use crate::config::{ModelConfig, TrainConfig};
use crate::model::{JointModel, Outputs};

/// What one step measured: each loss term (0 when switched off), the consistency weight and the
/// share of unlabelled pairs the pseudo labels called positive.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct LossReport {
    pub total: f64,
    pub instance: f64,
    pub category: f64,
    pub bce: f64,
    pub cross_entropy: f64,
    pub consistency: f64,
    pub consistency_weight: f64,
    pub positive_pair_rate: f64,
}

/// The model being trained, its momentum (key) encoder, the optimiser, the memory bank and the
/// WTA permutations.
pub struct Learner {
    config: TrainConfig,
    _vars: nn::VarStore,
    model: JointModel,
    ema: JointModel,
    /// (momentum copy, online) pairs of every variable, matched by name.
    ema_pairs: Vec<(Tensor, Tensor)>,
    _ema_vars: nn::VarStore,
    optimizer: nn::Optimizer,
    bank: MemoryBank,
    wta: WtaHash,
    step: u64,
}

impl Learner {
    pub fn new(model_config: &ModelConfig, config: &TrainConfig, device: Device) -> Result<Self, tch::TchError> {
        tch::manual_seed(model_config.seed);
        let vars = nn::VarStore::new(device);
        let model = JointModel::new(&vars.root(), model_config);
        let mut ema_vars = nn::VarStore::new(device);
        let ema = JointModel::new(&ema_vars.root(), model_config);
        ema_vars.copy(&vars)?;
        let online = vars.variables();
        let mut ema_pairs: Vec<(String, Tensor, Tensor)> = ema_vars
            .variables()
            .into_iter()
            .map(|(name, t)| {
                let source = online[&name].shallow_clone();
                (name, t, source)
            })
            .collect();
        ema_pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let optimizer =
            nn::Adam { wd: config.weight_decay, ..Default::default() }.build(&vars, config.learning_rate)?;
        let dim = *model_config.channels.last().expect("validated: channels is not empty") as usize;
        Ok(Self {
            wta: WtaHash::new(dim, config.wta_permutations, config.wta_window, model_config.seed as u64 ^ 0x5754_4148),
            bank: MemoryBank::new(config.bank_size, model_config.projection_dim, device),
            config: config.clone(),
            model,
            ema,
            ema_pairs: ema_pairs.into_iter().map(|(_, e, o)| (e, o)).collect(),
            _ema_vars: ema_vars,
            _vars: vars,
            optimizer,
            step: 0,
        })
    }

    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The online model in evaluation mode, without gradients.
    pub fn predict(&self, frames: &Tensor) -> Outputs {
        let _guard = tch::no_grad_guard();
        self.model.forward_t(frames, false)
    }

    /// One optimisation step on `labelled` windows (`[B_l, T, 3, H, W]` with `labels` `[B_l]`)
    /// and `unlabelled` windows (`[B_u, T, 3, H, W]`); either may be empty.
    pub fn step(&mut self, labelled: &Tensor, labels: &Tensor, unlabelled: &Tensor) -> LossReport {
        let c = self.config.clone();
        let nl = labelled.size()[0];
        let nu = unlabelled.size()[0];
        let x = Tensor::cat(&[labelled, unlabelled], 0);
        let (view1, view2) = (augment(&x, &c.augment), augment(&x, &c.augment));
        let out1 = self.model.forward_t(&view1, true);
        let out2 = self.model.forward_t(&view2, true);
        let momentum_out = {
            let _guard = tch::no_grad_guard();
            self.ema.forward_t(&view2, true)
        };
        let keys = momentum_out.projection.shallow_clone();
        let device = x.device();
        let key_labels = Tensor::cat(&[labels.to_kind(Kind::Int64), Tensor::full([nu], -1, (Kind::Int64, device))], 0);
        let (bank_keys, bank_labels) = self.bank.contents();
        let use_bank = c.memory_bank && !self.bank.is_empty();
        let mut report = LossReport::default();
        let mut loss = Tensor::zeros([], (Kind::Float, device));

        if c.instance_contrast {
            let term = if use_bank {
                instance_nce(&out1.projection, &keys, &bank_keys, c.temperature)
            } else {
                instance_nce_in_batch(&out1.projection, &keys, c.temperature)
            };
            report.instance = term.double_value(&[]);
            loss += term;
        }
        if c.category_contrast && nl > 0 {
            let (all_keys, all_labels) = if use_bank {
                (Tensor::cat(&[&keys, &bank_keys], 0), Tensor::cat(&[&key_labels, &bank_labels], 0))
            } else {
                (keys.shallow_clone(), key_labels.shallow_clone())
            };
            let term = category_nce(&out1.projection.narrow(0, 0, nl), labels, &all_keys, &all_labels, c.temperature);
            report.category = term.double_value(&[]);
            loss += term;
        }
        if let (true, true, Some(k1), Some(k2)) = (c.cross_entropy, nl > 0, &out1.known_logits, &out2.known_logits) {
            let term = (k1.narrow(0, 0, nl).cross_entropy_for_logits(labels)
                + k2.narrow(0, 0, nl).cross_entropy_for_logits(labels))
                / 2.0;
            report.cross_entropy = term.double_value(&[]);
            loss += term;
        }
        if c.pairwise_bce && nu > 1 {
            // Pseudo labels from the slowly moving momentum encoder are steadier than the online one's.
            let z = if c.pseudo_labels_from_momentum { &momentum_out.z } else { &out1.z }.narrow(0, nl, nu);
            let rule = PairRule {
                wta_threshold: c.wta_threshold,
                cosine_threshold: c.cosine_threshold,
                rank_k: c.rank_k,
                negative_below: (c.negative_threshold > 0.0).then_some(c.negative_threshold),
                positive_rate: (c.pair_positive_rate > 0.0).then_some(c.pair_positive_rate),
            };
            let (targets, mask) = pseudo_labels(c.pseudo_labels, &z, &self.wta, &rule);
            let p1 = out1.novel_logits.narrow(0, nl, nu).softmax(1, Kind::Float);
            let p2 = out2.novel_logits.narrow(0, nl, nu).softmax(1, Kind::Float);
            let term = (pairwise_bce(&p1, &targets, &mask) + pairwise_bce(&p2, &targets, &mask)) / 2.0;
            report.bce = term.double_value(&[]);
            report.positive_pair_rate = targets.mean(Kind::Float).double_value(&[]);
            let weight = if c.bce_rampup { rampup(self.step, c.rampup_steps) } else { 1.0 };
            loss += term * weight;
        }
        if c.consistency {
            let weight = c.consistency_weight * rampup(self.step, c.rampup_steps);
            let mut term = consistency(&out1.novel_logits, &out2.novel_logits);
            if let (Some(k1), Some(k2)) = (&out1.known_logits, &out2.known_logits) {
                term += consistency(k1, k2);
            }
            report.consistency = term.double_value(&[]);
            report.consistency_weight = weight;
            loss += term * weight;
        }
        report.total = loss.double_value(&[]);
        if loss.requires_grad() {
            self.optimizer.backward_step(&loss);
        }
        self.update_momentum_encoder();
        if c.memory_bank {
            self.bank.push(&keys, &key_labels);
        }
        self.step += 1;
        report
    }

    /// `ema ← m·ema + (1−m)·online`, batch-norm statistics included.
    fn update_momentum_encoder(&mut self) {
        let _guard = tch::no_grad_guard();
        let m = self.config.momentum;
        for (ema, online) in &mut self.ema_pairs {
            let _ = ema.g_mul_scalar_(m);
            let _ = ema.g_add_(&(&*online * (1.0 - m)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two well-separated synthetic classes per split: one step must run every term, and a few
    /// dozen steps must teach the labelled head the known classes.
    #[test]
    fn every_term_runs_and_the_known_head_learns() {
        let _rng = crate::rng_lock();
        let model = ModelConfig {
            known_classes: vec!["dark".into(), "bright".into()],
            novel_clusters: 2,
            channels: vec![8, 16],
            projection_dim: 8,
            ..Default::default()
        };
        let train = TrainConfig { batch_size: 8, bank_size: 32, rampup_steps: 10, ..Default::default() };
        let mut learner = Learner::new(&model, &train, Device::Cpu).unwrap();
        let opts = (Kind::Float, Device::Cpu);
        let dark = Tensor::rand([4, 1, 3, 12, 12], opts) * 0.2;
        let bright = Tensor::rand([4, 1, 3, 12, 12], opts) * 0.2 + 0.8;
        let labelled = Tensor::cat(&[&dark, &bright], 0);
        let labels = Tensor::from_slice(&[0i64, 0, 0, 0, 1, 1, 1, 1]);
        let unlabelled = Tensor::rand([8, 1, 3, 12, 12], opts);
        let first = learner.step(&labelled, &labels, &unlabelled);
        for (name, v) in [
            ("instance", first.instance),
            ("category", first.category),
            ("bce", first.bce),
            ("ce", first.cross_entropy),
            ("consistency", first.consistency),
        ] {
            assert!(v.is_finite() && v >= 0.0, "{name} = {v}");
        }
        assert!(first.instance > 0.0 && first.category > 0.0 && first.bce > 0.0 && first.cross_entropy > 0.0);
        for _ in 0..40 {
            learner.step(&labelled, &labels, &unlabelled);
        }
        assert_eq!(learner.step_count(), 41);
        let logits = learner.predict(&labelled).known_logits.unwrap();
        let predicted: Vec<i64> = Vec::try_from(logits.argmax(1, false)).unwrap();
        assert_eq!(predicted, vec![0, 0, 0, 0, 1, 1, 1, 1]);
    }
}
