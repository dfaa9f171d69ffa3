//! One optimiser over every loss term (DESIGN.md §2): the training step shared by `eval` and the
//! daemon's online trainer.

use tch::{nn, Device, Kind, Tensor};

use super::adam::Adam;
use super::clusters::{join, BankClusters, ClusterPairs, ClusterStart};
use super::losses::{
    balance, category_nce, consistency, instance_nce, instance_nce_in_batch, pairwise_bce, rampup, swapped_prediction,
};
use super::{augment, augment_mel, pseudo_labels, MemoryBank, PairRule, WtaHash};
use crate::config::{Contrast, ModelConfig, TrainConfig};
use crate::model::{Input, JointModel, Outputs};

/// A modality's slot: 0 visual, 1 audio.
type Slot = usize;

fn projection(out: &Outputs, slot: Slot) -> Option<&Tensor> {
    if slot == 0 {
        out.projection_v.as_ref()
    } else {
        out.projection_a.as_ref()
    }
}

/// What one step measured: each loss term (0 when switched off), the consistency weight and the
/// share of unlabelled pairs the pseudo labels called positive.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct LossReport {
    pub total: f64,
    pub instance: f64,
    pub category: f64,
    /// The cross-modal share of the contrast (0 without it).
    pub cross_modal: f64,
    pub bce: f64,
    pub cross_entropy: f64,
    pub consistency: f64,
    pub consistency_weight: f64,
    /// The cluster-balance term, before its weight.
    pub balance: f64,
    /// Swapped prediction on the unlabelled head, before its weight.
    pub swapped: f64,
    pub positive_pair_rate: f64,
}

/// The model being trained, its momentum (key) encoder, the optimiser, a memory bank per
/// modality and the WTA permutations.
pub struct Learner {
    config: TrainConfig,
    vars: nn::VarStore,
    model: JointModel,
    ema: JointModel,
    /// (momentum copy, online) pairs of every variable, matched by name.
    ema_pairs: Vec<(Tensor, Tensor)>,
    ema_vars: nn::VarStore,
    optimizer: Adam,
    /// Memory banks of visual and audio keys, where the model has that modality.
    banks: [Option<MemoryBank>; 2],
    /// (query, key) modality pairs the contrast compares.
    pairs: Vec<(Slot, Slot)>,
    wta: WtaHash,
    /// Clusters of the banks' unlabelled keys, when `cluster_pairs` is on.
    clusters: BankClusters,
    /// Moving average of the share of unlabelled windows the unlabelled head gives each output
    /// (kept while `head_min_share` is on), and how many batches it has seen since the start
    /// or restart.
    head_share: Option<(Tensor, u64)>,
    /// Step of the last split of the unlabelled head, and how many there have been.
    last_split: Option<u64>,
    head_splits: u64,
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
        let optimizer = Adam::new(&vars, config.learning_rate, config.weight_decay);
        let dim = model.dim() as usize;
        let present = [model_config.modality.visual(), model_config.modality.audio()];
        let bank =
            |slot: usize| present[slot].then(|| MemoryBank::new(config.bank_size, model_config.projection_dim, device));
        let both = present[0] && present[1];
        let mut pairs = Vec::new();
        if !both || matches!(config.contrast, Contrast::Within | Contrast::Both) {
            pairs.extend((0..2).filter(|&s| present[s]).map(|s| (s, s)));
        }
        if both && matches!(config.contrast, Contrast::Cross | Contrast::Both) {
            pairs.extend([(0, 1), (1, 0)]);
        }
        Ok(Self {
            wta: WtaHash::new(dim, config.wta_permutations, config.wta_window, model_config.seed as u64 ^ 0x5754_4148),
            banks: [bank(0), bank(1)],
            pairs,
            config: config.clone(),
            model,
            ema,
            ema_pairs: ema_pairs.into_iter().map(|(_, e, o)| (e, o)).collect(),
            ema_vars,
            vars,
            optimizer,
            clusters: BankClusters::default(),
            head_share: None,
            last_split: None,
            head_splits: 0,
            step: 0,
        })
    }

    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// How often a dead output of the unlabelled head has been re-initialised to split the
    /// largest (`train.head_min_share`).
    pub fn head_splits(&self) -> u64 {
        self.head_splits
    }

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
    /// shape (same model config), else nothing is changed and the mismatch is returned.
    pub fn restore(&mut self, step: u64, wta: WtaHash, tensors: &[(String, Tensor)]) -> Result<(), String> {
        let found: std::collections::HashMap<&str, &Tensor> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let mut copies = Vec::new();
        for (prefix, vars) in [("online", &self.vars), ("ema", &self.ema_vars)] {
            for (name, target) in vars.variables() {
                let key = format!("{prefix}.{name}");
                let source = found.get(key.as_str()).ok_or_else(|| format!("checkpoint lacks {key}"))?;
                if source.size() != target.size() {
                    return Err(format!(
                        "{key}: shape {:?} in the checkpoint, {:?} here",
                        source.size(),
                        target.size()
                    ));
                }
                copies.push((target, (*source).shallow_clone()));
            }
        }
        if wta.dim() != self.wta.dim() {
            return Err(format!("WTA over {} dimensions in the checkpoint, {} here", wta.dim(), self.wta.dim()));
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
                let get = |part: &str| found.get(format!("bank.{slot}.{part}").as_str()).copied();
                if let (Some(k), Some(l), Some(p)) = (get("keys"), get("labels"), get("position")) {
                    bank.restore(k, l, p)?;
                }
            }
        }
        self.step = step;
        self.wta = wta;
        Ok(())
    }

    /// A copy of the online model's weights and batch-norm statistics, by checkpoint name.
    pub fn snapshot(&self) -> Vec<(String, Tensor)> {
        let _guard = tch::no_grad_guard();
        let mut weights: Vec<(String, Tensor)> =
            self.vars.variables().into_iter().map(|(name, t)| (name, t.detach().copy())).collect();
        weights.sort_by(|a, b| a.0.cmp(&b.0));
        weights
    }

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

    /// Two independently augmented views of a batch.
    fn view(&self, x: &Input) -> Input {
        let a = &self.config.augment;
        Input { frames: x.frames.as_ref().map(|f| augment(f, a)), mel: x.mel.as_ref().map(|m| augment_mel(m, a)) }
    }

    /// One optimisation step on `labelled` windows (with `labels` `[B_l]`) and `unlabelled`
    /// windows; either may be empty.
    pub fn step(&mut self, labelled: &Input, labels: &Tensor, unlabelled: &Input) -> LossReport {
        let c = self.config.clone();
        let nl = labelled.len();
        let nu = unlabelled.len();
        let x = labelled.cat(unlabelled);
        let (view1, view2) = (self.view(&x), self.view(&x));
        let out1 = self.model.forward_t(&view1, true);
        let out2 = self.model.forward_t(&view2, true);
        let momentum_out = {
            let _guard = tch::no_grad_guard();
            self.ema.forward_t(&view2, true)
        };
        let device = labels.device();
        let key_labels = Tensor::cat(&[labels.to_kind(Kind::Int64), Tensor::full([nu], -1, (Kind::Int64, device))], 0);
        let mut report = LossReport::default();
        let mut loss = Tensor::zeros([], (Kind::Float, device));

        // Contrast, averaged over the (query modality, key modality) pairs: instance
        // discrimination on every window, category discrimination on the labelled ones.
        let pairs = self.pairs.len().max(1) as f64;
        for &(q, k) in &self.pairs {
            let queries = projection(&out1, q).expect("query modality present");
            let keys = projection(&momentum_out, k).expect("key modality present");
            let bank = self.banks[k].as_ref().filter(|bank| c.memory_bank && !bank.is_empty());
            let (bank_keys, bank_labels) = match bank {
                Some(bank) => {
                    let (keys, labels) = bank.contents();
                    (Some(keys), Some(labels))
                }
                None => (None, None),
            };
            let mut pair_loss = Tensor::zeros([], (Kind::Float, device));
            if c.instance_contrast {
                let term = match &bank_keys {
                    Some(negatives) => instance_nce(queries, keys, negatives, c.temperature),
                    None => instance_nce_in_batch(queries, keys, c.temperature),
                } / pairs;
                report.instance += term.double_value(&[]);
                pair_loss += term;
            }
            if c.category_contrast && nl > 0 {
                let (all_keys, all_labels) = match (&bank_keys, &bank_labels) {
                    (Some(bk), Some(bl)) => (Tensor::cat(&[keys, bk], 0), Tensor::cat(&[&key_labels, bl], 0)),
                    _ => (keys.shallow_clone(), key_labels.shallow_clone()),
                };
                let term =
                    category_nce(&queries.narrow(0, 0, nl), labels, &all_keys, &all_labels, c.temperature) / pairs;
                report.category += term.double_value(&[]);
                pair_loss += term;
            }
            if q != k {
                report.cross_modal += pair_loss.double_value(&[]);
            }
            loss += pair_loss;
        }
        if let (true, true, Some(k1), Some(k2)) = (c.cross_entropy, nl > 0, &out1.known_logits, &out2.known_logits) {
            let term = (k1.narrow(0, 0, nl).cross_entropy_for_logits(labels)
                + k2.narrow(0, 0, nl).cross_entropy_for_logits(labels))
                / 2.0;
            report.cross_entropy = term.double_value(&[]);
            loss += term;
        }
        // The unlabelled head's terms ramp up like the consistency, so clusters form once
        // features do.
        let unlabelled_weight = if c.bce_rampup { rampup(self.step, c.rampup_steps) } else { 1.0 };
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
            let (mut targets, mut mask) = pseudo_labels(c.pseudo_labels, &z, &self.wta, &rule);
            if c.cluster_pairs != ClusterPairs::Off {
                let batch_keys = self.joint_keys(&momentum_out).narrow(0, nl, nu);
                if self.step % c.cluster_every.max(1) == 0 || !self.clusters.ready() {
                    if let Some(keys) = self.unlabelled_bank_keys() {
                        // Once ramped up, the momentum head's clusters of the batch anchor the refresh.
                        let head = (c.cluster_start == ClusterStart::Head && self.step >= c.rampup_steps)
                            .then(|| momentum_out.novel_logits.narrow(0, nl, nu).argmax(1, false));
                        self.clusters.refresh(
                            &keys,
                            out1.novel_logits.size()[1],
                            c.cluster_restarts,
                            c.cluster_min_share / out1.novel_logits.size()[1] as f64,
                            head.as_ref().map(|head| (&batch_keys, head)),
                        );
                    }
                }
                if let Some(same) = self.clusters.same_cluster(&batch_keys) {
                    (targets, mask) = join(c.cluster_pairs, &targets, &mask, &same);
                }
            }
            let p1 = out1.novel_logits.narrow(0, nl, nu).softmax(1, Kind::Float);
            let p2 = out2.novel_logits.narrow(0, nl, nu).softmax(1, Kind::Float);
            let term = (pairwise_bce(&p1, &targets, &mask) + pairwise_bce(&p2, &targets, &mask)) / 2.0;
            report.bce = term.double_value(&[]);
            report.positive_pair_rate = targets.mean(Kind::Float).double_value(&[]);
            loss += term * unlabelled_weight;
        }
        if nu > 1 && (c.swap_weight > 0.0 || c.balance_weight > 0.0) {
            let (l1, l2) = (out1.novel_logits.narrow(0, nl, nu), out2.novel_logits.narrow(0, nl, nu));
            if c.swap_weight > 0.0 {
                let term = swapped_prediction(&l1, &l2, c.swap_epsilon);
                report.swapped = term.double_value(&[]);
                loss += term * (c.swap_weight * unlabelled_weight);
            }
            if c.balance_weight > 0.0 {
                let term = (balance(&l1.softmax(1, Kind::Float)) + balance(&l2.softmax(1, Kind::Float))) / 2.0;
                report.balance = term.double_value(&[]);
                loss += term * (c.balance_weight * unlabelled_weight);
            }
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
            if c.lr_decay_steps > 0 {
                let progress = self.step.min(c.lr_decay_steps) as f64 / c.lr_decay_steps as f64;
                self.optimizer
                    .set_learning_rate(c.learning_rate * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()));
            }
            self.optimizer.backward_step(&loss);
        }
        self.update_momentum_encoder();
        if c.head_min_share > 0.0 && nu > 1 {
            self.revive_dead_output(&out1.z.narrow(0, nl, nu), &out1.novel_logits.narrow(0, nl, nu));
        }
        if c.memory_bank || c.cluster_pairs != ClusterPairs::Off {
            for (slot, bank) in self.banks.iter_mut().enumerate() {
                if let (Some(bank), Some(keys)) = (bank, projection(&momentum_out, slot)) {
                    bank.push(keys, &key_labels);
                }
            }
        }
        self.step += 1;
        report
    }

    /// Follows the share of unlabelled windows (`z` `[B, D]`, head `logits` `[B, C_u]`) each
    /// output of the unlabelled head takes; once ramped up, an output whose share has fallen
    /// below `head_min_share` of an even share is re-initialised to take half of the largest
    /// output: the windows the largest takes are split in two by 2-means on their features, and
    /// the two outputs' rows become the largest's row plus and minus the direction between the
    /// halves. Two classes merged under one output beside a dead one is where the pairwise loss
    /// gets stuck; a split hands it two outputs that it then pulls apart by class.
    fn revive_dead_output(&mut self, z: &Tensor, logits: &Tensor) {
        let _guard = tch::no_grad_guard();
        let outputs = logits.size()[1];
        let assignment = logits.argmax(1, false);
        let share = assignment.one_hot(outputs).to_kind(Kind::Float).mean_dim(0, false, Kind::Float);
        let (average, seen) = match &self.head_share {
            Some((previous, seen)) => (previous * SHARE_DECAY + share * (1.0 - SHARE_DECAY), seen + 1),
            None => (share, 1),
        };
        let shares = Vec::<f64>::try_from(average.to_kind(Kind::Double)).expect("shares");
        self.head_share = Some((average, seen));
        // The average must span enough batches (also after a restart from a checkpoint) for one
        // output's absence from a batch or two not to count as dead.
        let settled = seen >= SHARE_WARMUP && self.last_split.is_none_or(|last| self.step >= last + SPLIT_COOLDOWN);
        if self.step < self.config.rampup_steps || !settled {
            return;
        }
        let order = |a: &usize, b: &usize| shares[*a].total_cmp(&shares[*b]);
        let (dead, largest) = match ((0..shares.len()).min_by(order), (0..shares.len()).max_by(order)) {
            (Some(dead), Some(largest)) if shares[dead] * (outputs as f64) < self.config.head_min_share => {
                (dead as i64, largest as i64)
            }
            _ => return,
        };
        let members = z.detach().index_select(0, &assignment.eq(largest).nonzero().squeeze_dim(1));
        let Some((first, second)) = two_means(&members) else {
            return;
        };
        let direction = &first - &second;
        let middle = (&first + &second) / 2.0;
        // Logits of the two outputs then differ by ±SPLIT_MARGIN at the halves' means.
        let scale = SPLIT_MARGIN / direction.square().sum(Kind::Float).double_value(&[]).max(1e-12);
        let (weight_step, bias_step) = (&direction * scale, (&direction * &middle).sum(Kind::Float) * scale);
        let online = self.vars.variables();
        let (weight, bias) = (&online["novel.weight"], &online["novel.bias"]);
        let (row, offset) = (weight.get(largest).copy(), bias.get(largest).copy());
        weight.get(dead).copy_(&(&row + &weight_step));
        weight.get(largest).copy_(&(&row - &weight_step));
        bias.get(dead).copy_(&(&offset - &bias_step));
        bias.get(largest).copy_(&(&offset + &bias_step));
        let momentum = self.ema_vars.variables();
        for name in ["novel.weight", "novel.bias"] {
            for r in [dead, largest] {
                momentum[name].get(r).copy_(&online[name].get(r));
            }
            self.optimizer.reset_rows(name, &[dead, largest]);
        }
        let half = shares[largest as usize] / 2.0;
        if let Some((average, _)) = &mut self.head_share {
            let _ = average.get(dead).fill_(half);
            let _ = average.get(largest).fill_(half);
        }
        tracing::info!(
            step = self.step,
            dead,
            largest,
            "re-initialised a dead output of the unlabelled head to split the largest"
        );
        self.last_split = Some(self.step);
        self.head_splits += 1;
    }

    /// The momentum projections of every modality side by side, `[B, P · modalities]`: the
    /// space the banks' clusters live in.
    fn joint_keys(&self, momentum_out: &Outputs) -> Tensor {
        let parts: Vec<&Tensor> = (0..2).filter_map(|slot| projection(momentum_out, slot)).collect();
        Tensor::cat(&parts, 1)
    }

    /// The banks' keys of unlabelled windows, modalities side by side (the banks fill in step,
    /// so their rows are the same windows); `None` while the banks are empty or unused.
    fn unlabelled_bank_keys(&self) -> Option<Tensor> {
        let mut parts = Vec::new();
        let mut unlabelled = None;
        for bank in self.banks.iter().flatten() {
            if bank.is_empty() {
                return None;
            }
            let (keys, labels) = bank.contents();
            unlabelled.get_or_insert_with(|| labels.eq(-1).nonzero().squeeze_dim(1));
            parts.push(keys);
        }
        let rows = unlabelled?;
        Some(Tensor::cat(&parts, 1).index_select(0, &rows))
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

/// Weight of the newest batch in the moving average of the unlabelled head's output shares is
/// `1 − SHARE_DECAY` (about 50 steps of memory).
const SHARE_DECAY: f64 = 0.98;
/// Batches the moving average must have seen before it can call an output dead.
const SHARE_WARMUP: u64 = 50;
/// Steps after a split before the next: the split outputs need time to take their halves.
const SPLIT_COOLDOWN: u64 = 100;
/// Logit margin between the two split outputs at the means of their halves.
const SPLIT_MARGIN: f64 = 2.0;

/// Means of the two groups 2-means (by cosine similarity) finds among the rows of `x` `[N, D]`,
/// started from the row least like the mean and the row least like that one; `None` when
/// there are fewer than 4 rows or a group ends empty.
fn two_means(x: &Tensor) -> Option<(Tensor, Tensor)> {
    if x.size()[0] < 4 {
        return None;
    }
    let unit = crate::model::l2_normalize(x);
    let least_like = |c: &Tensor| unit.get(unit.matmul(c).argmin(0, false).int64_value(&[]));
    let start = least_like(&unit.mean_dim(0, false, Kind::Float));
    let mut centroids = Tensor::stack(&[least_like(&start), start], 0);
    let group_mean = |t: &Tensor, r: &Tensor| t.index_select(0, r).mean_dim(0, false, Kind::Float);
    let mut rows = None;
    for _ in 0..10 {
        let first = unit.matmul(&centroids.tr()).argmax(1, false).eq(0);
        let groups = [first.nonzero().squeeze_dim(1), first.logical_not().nonzero().squeeze_dim(1)];
        if groups.iter().any(|r| r.size()[0] == 0) {
            return None;
        }
        centroids = crate::model::l2_normalize(&Tensor::stack(&groups.each_ref().map(|r| group_mean(&unit, r)), 0));
        rows = Some(groups);
    }
    // The means of the features themselves (not of their directions) over the last groups.
    rows.map(|[a, b]| (group_mean(x, &a), group_mean(x, &b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(x: Tensor) -> Input {
        Input { frames: Some(x), mel: None }
    }

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
        let labelled = frames(Tensor::cat(&[&dark, &bright], 0));
        let labels = Tensor::from_slice(&[0i64, 0, 0, 0, 1, 1, 1, 1]);
        let unlabelled = frames(Tensor::rand([8, 1, 3, 12, 12], opts));
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

    /// With `lr_decay_steps`, the learning rate falls to 0 along a half cosine: the weights
    /// still move before the end of the decay and no longer after it.
    #[test]
    fn the_learning_rate_decays_to_zero() {
        let _rng = crate::rng_lock();
        let model = ModelConfig {
            known_classes: vec!["a".into(), "b".into()],
            novel_clusters: 2,
            channels: vec![8],
            projection_dim: 8,
            ..Default::default()
        };
        let train = TrainConfig { batch_size: 4, bank_size: 16, lr_decay_steps: 3, ..Default::default() };
        let mut learner = Learner::new(&model, &train, Device::Cpu).unwrap();
        let opts = (Kind::Float, Device::Cpu);
        let (labelled, unlabelled) =
            (frames(Tensor::rand([4, 1, 3, 12, 12], opts)), frames(Tensor::rand([4, 1, 3, 12, 12], opts)));
        let labels = Tensor::from_slice(&[0i64, 1, 0, 1]);
        let weights = |learner: &Learner| -> Vec<Tensor> {
            learner.vars.trainable_variables().iter().map(|t| t.detach().copy()).collect()
        };
        let moved = |a: &[Tensor], b: &[Tensor]| a.iter().zip(b).any(|(a, b)| a != b);
        for step in 0..5 {
            let before = weights(&learner);
            learner.step(&labelled, &labels, &unlabelled);
            // Steps 0, 1, 2 use the rates 1, 0.75 and 0.25 of the base; 3 and later 0.
            assert_eq!(moved(&before, &weights(&learner)), step < 3, "step {step}");
        }
    }

    /// An unlabelled-head output that takes no window is re-initialised once ramped up to split
    /// the largest: with the learning rate at 0 only the split moves the head (the steps before
    /// settle batch-norm statistics), and it must give the two kinds of unlabelled windows the
    /// largest output held one output each.
    #[test]
    fn a_dead_head_output_splits_the_largest() {
        const RAMPUP: u64 = 60;
        let _rng = crate::rng_lock();
        let model = ModelConfig {
            known_classes: vec!["a".into(), "b".into()],
            novel_clusters: 2,
            channels: vec![8],
            projection_dim: 8,
            ..Default::default()
        };
        let train = TrainConfig {
            batch_size: 8,
            bank_size: 32,
            learning_rate: 0.0,
            rampup_steps: RAMPUP,
            head_min_share: 0.2,
            // Views equal to the windows, so that the features the split sees are the ones
            // `predict` sees.
            augment: crate::config::AugmentConfig::visual_off(),
            ..Default::default()
        };
        let mut learner = Learner::new(&model, &train, Device::Cpu).unwrap();
        let opts = (Kind::Float, Device::Cpu);
        // Left-lit and right-lit images: features that point different ways.
        let half = |left: bool| {
            let x = Tensor::rand([4, 1, 3, 12, 12], opts) * 0.1;
            let lit = x.narrow(4, if left { 0 } else { 6 }, 6);
            lit.shallow_clone().copy_(&(&lit + 0.9));
            x
        };
        let unlabelled = frames(Tensor::cat(&[half(true), half(false)], 0));
        let (labelled, labels) = (frames(Tensor::rand([2, 1, 3, 12, 12], opts)), Tensor::from_slice(&[0i64, 1]));
        tch::no_grad(|| {
            let _ = learner.vars.variables()["novel.bias"].get(1).fill_(-100.0);
        });
        let clusters = |learner: &Learner| {
            Vec::<i64>::try_from(learner.predict(&unlabelled).novel_logits.argmax(1, false)).unwrap()
        };
        assert_eq!(clusters(&learner), vec![0; 8], "output 1 is dead");
        for _ in 0..RAMPUP {
            learner.step(&labelled, &labels, &unlabelled);
        }
        assert_eq!(learner.head_splits(), 0, "no split before the ramp-up ends");
        learner.step(&labelled, &labels, &unlabelled);
        assert_eq!(learner.head_splits(), 1);
        let after = clusters(&learner);
        assert!(
            after[..4].iter().all(|&c| c == after[0]) && after[4..].iter().all(|&c| c == 1 - after[0]),
            "{after:?}"
        );
        // The momentum head follows, and the next split waits for the cooldown.
        let momentum = learner.predict_momentum(&unlabelled).novel_logits.argmax(1, false);
        assert_eq!(Vec::<i64>::try_from(momentum).unwrap(), after);
        learner.step(&labelled, &labels, &unlabelled);
        assert_eq!(learner.head_splits(), 1);
    }

    #[test]
    fn two_means_finds_two_directions() {
        let _rng = crate::rng_lock();
        let opts = (Kind::Float, Device::Cpu);
        let near = |axis: i64| {
            let x = Tensor::randn([5, 3], opts) * 0.1;
            let _ = x.narrow(1, axis, 1).g_add_scalar_(3.0);
            x
        };
        let x = Tensor::cat(&[near(0), near(1)], 0);
        let (a, b) = two_means(&x).unwrap();
        let (a, b) = (Vec::<f32>::try_from(a).unwrap(), Vec::<f32>::try_from(b).unwrap());
        let (x_axis, y_axis) = if a[0] > a[1] { (a, b) } else { (b, a) };
        assert!(x_axis[0] > 2.5 && x_axis[1].abs() < 0.5 && y_axis[1] > 2.5 && y_axis[0].abs() < 0.5);
        assert!(two_means(&Tensor::ones([6, 3], opts)).is_none(), "identical rows have no second group");
        assert!(two_means(&x.narrow(0, 0, 3)).is_none(), "too few rows");
    }

    /// Visual and audio encoders both train; the cross-modal share of the contrast is there only
    /// when the contrast compares visual with audio keys.
    #[test]
    fn both_modalities_with_within_and_cross_contrast() {
        let _rng = crate::rng_lock();
        let opts = (Kind::Float, Device::Cpu);
        let input = |n: i64| Input {
            frames: Some(Tensor::rand([n, 2, 3, 12, 12], opts)),
            mel: Some(Tensor::randn([n, 1, 16, 20], opts)),
        };
        let (labelled, unlabelled) = (input(6), input(6));
        let labels = Tensor::from_slice(&[0i64, 1, 0, 1, 0, 1]);
        for (contrast, cross) in [(Contrast::Within, false), (Contrast::Cross, true), (Contrast::Both, true)] {
            let model = ModelConfig {
                known_classes: vec!["a".into(), "b".into()],
                novel_clusters: 2,
                modality: crate::config::Modality::Both,
                channels: vec![8],
                audio_channels: vec![8],
                projection_dim: 8,
                ..Default::default()
            };
            let train = TrainConfig { batch_size: 6, bank_size: 16, contrast, ..Default::default() };
            let mut learner = Learner::new(&model, &train, Device::Cpu).unwrap();
            assert_eq!(learner.pairs.len(), if contrast == Contrast::Both { 4 } else { 2 });
            for _ in 0..3 {
                let report = learner.step(&labelled, &labels, &unlabelled);
                assert!(report.total.is_finite() && report.instance > 0.0 && report.category > 0.0);
                assert_eq!(report.cross_modal > 0.0, cross, "{contrast:?}");
            }
            let out = learner.predict(&unlabelled);
            assert_eq!(out.z.size(), [6, 16], "z = [z_v; z_a]");
        }
    }
}
