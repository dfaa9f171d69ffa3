//! One optimiser over every loss term (docs/ARCHITECTURE.md): the training step shared by `eval`
//! and the daemon's online trainer. The step is the method's sum of terms (`learner/terms.rs`);
//! the checkpoint state and predictions live beside it (`learner/state.rs`,
//! `learner/predict.rs`), the head splits and the schedule in their own modules.

mod novel_count;
mod open_world;
mod predict;
mod state;
mod terms;

use std::cell::OnceCell;

use tch::{nn, Device, Kind, Tensor};

pub use predict::{Encoder, Predictions};

use super::adam::Adam;
use super::clusters::BankClusters;
use super::estimate::Estimate;
use super::head_split::{HeadSplitter, Weights};
use super::{augment, augment_mel, schedule, MemoryBank, WtaHash};
use crate::config::{ClusterPairs, Contrast, ModelConfig, NovelClusters, TrainConfig};
use crate::model::{EncoderError, Input, JointModel, Outputs, ACTIVE_OUTPUTS};

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
    /// The loss the step minimised: the weighted sum of the terms.
    pub total: f64,
    /// Instance discrimination, averaged over the contrast's modality pairs.
    pub instance: f64,
    /// Category discrimination on the labelled windows, averaged over the modality pairs.
    pub category: f64,
    /// The cross-modal share of the contrast (0 without it).
    pub cross_modal: f64,
    /// Pairwise BCE on the pseudo labels, before its weight.
    pub bce: f64,
    /// Cross-entropy of the labelled head.
    pub cross_entropy: f64,
    /// Consistency between the views, before its weight.
    pub consistency: f64,
    /// The consistency's weight at this step (it ramps up).
    pub consistency_weight: f64,
    /// The cluster-balance term, before its weight.
    pub balance: f64,
    /// Swapped prediction on the unlabelled head, before its weight.
    pub swapped: f64,
    /// Share of unlabelled pairs the pseudo labels called positive.
    pub positive_pair_rate: f64,
    /// Open world: share of the unlabelled windows the bank's clusters routed to the novel
    /// clusters.
    pub routed_novel: f64,
    /// Open world: share of the unlabelled windows that trained neither a known class nor
    /// "novel" (`train.clusters.ambiguous = "abstain"`).
    pub routed_abstain: f64,
    /// Open world: cross-entropy of the joint head on the unlabelled windows routed to a known
    /// class, before its weight.
    pub routed_known_ce: f64,
    /// Open world: `−log` of the novel outputs' share of the joint head's probability on the
    /// windows routed novel, before its weight.
    pub novel_share: f64,
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
    /// The modalities (visual, audio) whose features and keys make the pseudo labels, the
    /// bank's clusters and the count estimate (`train.pseudo.modality`).
    pseudo_slots: [bool; 2],
    /// (query, key) modality pairs the contrast compares.
    pairs: Vec<(Slot, Slot)>,
    wta: WtaHash,
    /// Clusters of the banks' unlabelled keys, when `train.clusters.pairs` is on.
    clusters: BankClusters,
    /// Splits of dead outputs of the unlabelled head, while `train.clusters.head_min_share` is
    /// on.
    head: HeadSplitter,
    /// One decision over known classes and novel clusters (`model.open_world` with known
    /// classes): the labelled and pairwise losses act on the joint head.
    open_world: bool,
    /// Known classes `C_l`.
    known: i64,
    /// With `model.novel_clusters = "auto"`, the capacity the estimates stay within.
    auto: Option<i64>,
    /// The latest estimates of the number of novel clusters, newest last
    /// (`train.clusters.estimate_window` at most).
    estimates: Vec<Estimate>,
    /// The estimate in use: the mean of the latest window of estimates.
    estimate: Option<Estimate>,
    step: u64,
}

/// One step's forward passes, which every term reads: both views through the online model,
/// the second also through the momentum encoder. Labelled windows come first in the batch.
struct Pass {
    out1: Outputs,
    out2: Outputs,
    /// The momentum encoder's outputs (without gradients): the contrast's keys, the pseudo
    /// labels' features.
    momentum: Outputs,
    /// Labelled and unlabelled windows in the batch.
    nl: i64,
    nu: i64,
    /// Each window's label, −1 for unlabelled ones: for the category contrast and the banks.
    key_labels: Tensor,
    /// Both views' unlabelled-head logits of the unlabelled windows, shared by swapped
    /// prediction and balance (made once, when the first of them needs it).
    unlabelled_logits: OnceCell<(Tensor, Tensor)>,
}

impl Pass {
    fn unlabelled_logits(&self) -> (&Tensor, &Tensor) {
        let (l1, l2) = self.unlabelled_logits.get_or_init(|| {
            (self.out1.novel_logits.narrow(0, self.nl, self.nu), self.out2.novel_logits.narrow(0, self.nl, self.nu))
        });
        (l1, l2)
    }
}

impl Learner {
    /// A learner with `model_config`'s initial weights (seeded by its `seed`), empty memory
    /// banks and zero optimiser moments, on `device`.
    /// A TorchScript encoder is loaded twice (online and momentum), each probed.
    pub fn new(model_config: &ModelConfig, config: &TrainConfig, device: Device) -> Result<Self, EncoderError> {
        tch::manual_seed(model_config.seed);
        let vars = nn::VarStore::new(device);
        let model = JointModel::new(&vars.root(), model_config)?;
        let (window, rank_k, width) = (config.pseudo.wta_window as i64, config.pseudo.rank_k, model.dim());
        if window > width || rank_k > width {
            return Err(EncoderError::FeatureWidth { window, rank_k, width });
        }
        let mut ema_vars = nn::VarStore::new(device);
        let ema = JointModel::new(&ema_vars.root(), model_config)?;
        ema_vars.copy(&vars)?;
        let online = vars.variables();
        // The mask of the head's outputs in use is set, not averaged.
        let mut ema_pairs: Vec<(String, Tensor, Tensor)> = ema_vars
            .variables()
            .into_iter()
            .filter(|(name, _)| name != ACTIVE_OUTPUTS)
            .map(|(name, t)| {
                let source = online[&name].shallow_clone();
                (name, t, source)
            })
            .collect();
        ema_pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let optimizer = Adam::new(&vars, config.learning_rate, config.weight_decay);
        let present = [model_config.modality.visual(), model_config.modality.audio()];
        let chosen = config.pseudo.modality;
        let pseudo_slots = [present[0] && chosen.visual(), present[1] && chosen.audio()];
        let dim = pseudo_columns(&model, pseudo_slots).1 as usize;
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
            wta: WtaHash::new(
                dim,
                config.pseudo.wta_permutations,
                config.pseudo.wta_window,
                model_config.seed as u64 ^ 0x5754_4148,
            ),
            banks: [bank(0), bank(1)],
            pseudo_slots,
            pairs,
            config: config.clone(),
            model,
            ema,
            ema_pairs: ema_pairs.into_iter().map(|(_, e, o)| (e, o)).collect(),
            ema_vars,
            vars,
            optimizer,
            clusters: BankClusters::default(),
            head: HeadSplitter::default(),
            open_world: model_config.open_world && !model_config.known_classes.is_empty(),
            known: model_config.known_classes.len() as i64,
            auto: (model_config.novel_clusters == NovelClusters::Auto).then_some(model_config.max_novel_clusters),
            estimates: Vec::new(),
            estimate: None,
            step: 0,
        })
    }

    /// Steps taken (also before a restart from a checkpoint).
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The WTA permutations pseudo labels are hashed with.
    pub fn wta(&self) -> &WtaHash {
        &self.wta
    }

    /// The unlabelled head's outputs in use (the novel cluster ids it can give), ascending.
    pub fn novel_clusters_in_use(&self) -> Vec<i64> {
        self.model.active_outputs()
    }

    /// The estimate of the number of novel clusters in use (`model.novel_clusters = "auto"`):
    /// the count and mean silhouettes of the latest `train.clusters.estimate_window` estimates.
    pub fn latest_estimate(&self) -> Option<&Estimate> {
        self.estimate.as_ref()
    }

    /// Whether known classes and novel clusters share one decision (the open world).
    pub fn open_world(&self) -> bool {
        self.open_world
    }

    /// Known classes `C_l`: the joint head's decision `C_l + k` is novel output `k`.
    pub fn known_count(&self) -> i64 {
        self.known
    }

    /// How often a dead output of the unlabelled head has been re-initialised to split the
    /// largest (`train.clusters.head_min_share`).
    pub fn head_splits(&self) -> u64 {
        self.head.splits()
    }

    /// Two independently augmented views of a batch.
    fn view(&self, x: &Input) -> Input {
        let a = &self.config.augment;
        Input { frames: x.frames.as_ref().map(|f| augment(f, a)), mel: x.mel.as_ref().map(|m| augment_mel(m, a)) }
    }

    /// Which modalities the heads see for each of `n` windows, `[n, 2]` (visual, audio):
    /// `train.modality_dropout` of them lose one, drawn from the global generator; `None` when
    /// nothing is withheld (the setting is 0, or the model has one modality).
    fn modality_dropout(&self, n: i64) -> Option<Tensor> {
        let p = self.config.modality_dropout;
        if p <= 0.0 || self.banks.iter().any(Option::is_none) {
            return None;
        }
        let device = self.vars.device();
        let dropped = Tensor::rand([n], (Kind::Float, device)).lt(p);
        let audio = Tensor::rand([n], (Kind::Float, device)).lt(0.5);
        let lose_audio = dropped.logical_and(&audio);
        let lose_visual = dropped.logical_and(&audio.logical_not());
        Some(Tensor::stack(&[lose_visual.logical_not(), lose_audio.logical_not()], 1).to_kind(Kind::Float))
    }

    /// One optimisation step on `labelled` windows (with `labels` `[B_l]`) and `unlabelled`
    /// windows; either may be empty.
    pub fn step(&mut self, labelled: &Input, labels: &Tensor, unlabelled: &Input) -> LossReport {
        let pass = self.forward(labelled, labels, unlabelled);
        let mut report = LossReport::default();
        let mut loss = Tensor::zeros([], (Kind::Float, labels.device()));
        // Each term joins the sum as soon as it is made, so that the autograd graph (and with
        // it the order gradients accumulate in) is the one the method has always built.
        let mut add = |term: Option<Tensor>| {
            if let Some(term) = term {
                loss += term;
            }
        };
        for &pair in &self.pairs {
            add(Some(self.contrast(&pass, pair, labels, &mut report)));
        }
        add(self.cross_entropy(&pass, labels, &mut report));
        let unlabelled_weight = schedule::unlabelled_weight(&self.config.schedule, self.step);
        if self.open_world {
            add(self.open_world_terms(&pass, unlabelled_weight, &mut report));
        } else {
            add(self.pairwise_bce(&pass, unlabelled_weight, &mut report));
        }
        add(self.swapped(&pass, unlabelled_weight, &mut report));
        add(self.balance(&pass, unlabelled_weight, &mut report));
        add(self.consistency(&pass, &mut report));
        report.total = loss.double_value(&[]);
        self.optimise(&loss);
        self.update_momentum_encoder();
        self.split_dead_output(&pass);
        self.push_banks(&pass);
        self.step += 1;
        self.estimate_novel_clusters();
        report
    }

    /// One step on a labelled batch (windows and labels) and an unlabelled batch, each moved to
    /// the learner's device; an absent side is an empty batch shaped like the other. The online
    /// trainer and `eval` both train through this.
    pub fn step_on(&mut self, labelled: Option<(Input, Tensor)>, unlabelled: Option<Input>) -> LossReport {
        let device = self.vars.device();
        let (labelled, labels) = match (labelled, &unlabelled) {
            (Some((x, y)), _) => (x.to(device), y.to(device)),
            (None, Some(u)) => (u.narrow(0).to(device), Tensor::zeros([0], (Kind::Int64, device))),
            (None, None) => panic!("a training step needs labelled or unlabelled windows"),
        };
        let unlabelled = match unlabelled {
            Some(u) => u.to(device),
            None => labelled.narrow(0),
        };
        self.step(&labelled, &labels, &unlabelled)
    }

    /// The forward passes of a step: two augmented views of the labelled and unlabelled windows
    /// through the online model, the second through the momentum encoder too.
    fn forward(&self, labelled: &Input, labels: &Tensor, unlabelled: &Input) -> Pass {
        let (nl, nu) = (labelled.len(), unlabelled.len());
        let x = labelled.cat(unlabelled);
        let (view1, view2) = (self.view(&x), self.view(&x));
        let out1 = self.model.forward_kept(&view1, true, self.modality_dropout(nl + nu).as_ref());
        let out2 = self.model.forward_kept(&view2, true, self.modality_dropout(nl + nu).as_ref());
        let momentum = {
            let _guard = tch::no_grad_guard();
            self.ema.forward_t(&view2, true)
        };
        let unlabelled_keys = Tensor::full([nu], -1, (Kind::Int64, labels.device()));
        let key_labels = Tensor::cat(&[labels.to_kind(Kind::Int64), unlabelled_keys], 0);
        Pass { out1, out2, momentum, nl, nu, key_labels, unlabelled_logits: OnceCell::new() }
    }

    /// Back-propagates `loss` and takes an optimiser step at the schedule's learning rate
    /// (nothing to learn when every term is off).
    fn optimise(&mut self, loss: &Tensor) {
        if !loss.requires_grad() {
            return;
        }
        let c = &self.config;
        if let Some(rate) = schedule::decayed_learning_rate(c.learning_rate, &c.schedule, self.step) {
            self.optimizer.set_learning_rate(rate);
        }
        self.optimizer.backward_step(loss);
    }

    /// Lets the head splitter see the unlabelled windows' features and clusters, and split the
    /// largest output into a dead one (`train.clusters.head_min_share`).
    fn split_dead_output(&mut self, pass: &Pass) {
        let on = self.config.clusters.head_min_share > 0.0 && pass.nu > 1;
        if !on {
            return;
        }
        let mut z = pass.out1.z.narrow(0, pass.nl, pass.nu);
        let mut logits = pass.out1.novel_logits.narrow(0, pass.nl, pass.nu);
        if self.open_world {
            // Only the windows the joint head calls novel are the novel outputs' share.
            let _guard = tch::no_grad_guard();
            let decided = pass.out1.joint_logits().narrow(0, pass.nl, pass.nu).argmax(1, false);
            let novel = decided.ge(self.known).nonzero().squeeze_dim(1);
            if novel.size()[0] < 2 {
                return;
            }
            (z, logits) = (z.index_select(0, &novel), logits.index_select(0, &novel));
        }
        let outputs = self.model.novel_outputs();
        let weights = Weights { online: &self.vars, momentum: &self.ema_vars, optimizer: &mut self.optimizer };
        self.head.observe(&self.config, self.step, (&z, &logits, &pass.out1.novel_ids), outputs, weights);
    }

    /// Enqueues the momentum encoder's keys of the batch in each modality's bank (the banks
    /// feed the contrast and the bank clusters).
    fn push_banks(&mut self, pass: &Pass) {
        // The open world routes windows by the bank's clusters.
        if !self.config.losses.memory_bank && self.config.clusters.pairs == ClusterPairs::Off && !self.open_world {
            return;
        }
        for (slot, bank) in self.banks.iter_mut().enumerate() {
            if let (Some(bank), Some(keys)) = (bank, projection(&pass.momentum, slot)) {
                bank.push(keys, &pass.key_labels);
            }
        }
    }

    /// The columns of `z` the pseudo labels compare (`train.pseudo.modality`): (first, width).
    fn pseudo_columns(&self) -> (i64, i64) {
        pseudo_columns(&self.model, self.pseudo_slots)
    }

    /// The momentum projections of the modalities of `train.pseudo.modality` side by side,
    /// `[B, P · modalities]`: the space the banks' clusters live in.
    fn joint_keys(&self, momentum_out: &Outputs) -> Tensor {
        let parts: Vec<&Tensor> =
            (0..2).filter(|&slot| self.pseudo_slots[slot]).filter_map(|slot| projection(momentum_out, slot)).collect();
        Tensor::cat(&parts, 1)
    }

    /// The banks' keys, modalities side by side, and their labels (−1 for unlabelled windows);
    /// `None` while the banks are empty or unused.
    fn bank_keys(&self) -> Option<(Tensor, Tensor)> {
        let mut parts = Vec::new();
        let mut labels = None;
        let chosen =
            self.banks.iter().zip(self.pseudo_slots).filter(|(_, on)| *on).filter_map(|(bank, _)| bank.as_ref());
        for bank in chosen {
            if bank.is_empty() {
                return None;
            }
            let (keys, bank_labels) = bank.contents();
            labels.get_or_insert(bank_labels);
            parts.push(keys);
        }
        Some((Tensor::cat(&parts, 1), labels?))
    }

    /// The banks' keys of unlabelled windows, modalities side by side (the banks fill in step,
    /// so their rows are the same windows); `None` while the banks are empty or unused.
    fn unlabelled_bank_keys(&self) -> Option<Tensor> {
        let (keys, labels) = self.bank_keys()?;
        Some(keys.index_select(0, &labels.eq(-1).nonzero().squeeze_dim(1)))
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

/// The columns of `model`'s `z = [z_v; z_a]` of the modalities `slots` (visual, audio) says:
/// (first, width).
fn pseudo_columns(model: &JointModel, slots: [bool; 2]) -> (i64, i64) {
    let (visual, audio) = model.modality_dims();
    match slots {
        [true, false] => (0, visual),
        [false, true] => (visual, audio),
        _ => (0, visual + audio),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClustersConfig, ScheduleConfig};

    /// Windows of frames alone.
    pub(super) fn frames(x: Tensor) -> Input {
        Input { frames: Some(x), mel: None }
    }

    /// A small visual model: known classes `a` and `b`, two novel clusters, one layer of 8
    /// channels, projections of 8, in the paper's task-aware setting.
    pub(super) fn small_model() -> ModelConfig {
        ModelConfig {
            known_classes: vec!["a".into(), "b".into()],
            novel_clusters: crate::config::NovelClusters::Fixed(2),
            open_world: false,
            channels: vec![8],
            projection_dim: 8,
            ..Default::default()
        }
    }

    /// With `lr_decay_steps`, the learning rate falls to 0 along a half cosine: the weights
    /// still move before the end of the decay and no longer after it.
    #[test]
    fn the_learning_rate_decays_to_zero() {
        let _rng = crate::rng_lock();
        let model = small_model();
        let schedule = ScheduleConfig { lr_decay_steps: 3, ..Default::default() };
        let train = TrainConfig { batch_size: 4, bank_size: 16, schedule, ..Default::default() };
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
        let model = small_model();
        let train = TrainConfig {
            batch_size: 8,
            bank_size: 32,
            learning_rate: 0.0,
            schedule: ScheduleConfig { rampup_steps: RAMPUP, ..Default::default() },
            clusters: ClustersConfig { head_min_share: 0.2, ..Default::default() },
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

    /// With `novel_clusters = "auto"` the head's count waits for `estimate_window` estimates,
    /// then follows the count chosen on their mean silhouette, not the latest estimate's.
    #[test]
    fn the_count_in_use_follows_the_mean_of_a_window_of_estimates() {
        let _rng = crate::rng_lock();
        tch::manual_seed(4);
        let model =
            ModelConfig { novel_clusters: crate::config::NovelClusters::Auto, max_novel_clusters: 6, ..small_model() };
        let train = TrainConfig {
            batch_size: 8,
            bank_size: 256,
            learning_rate: 0.0,
            clusters: ClustersConfig { estimate_every: 1000, ..Default::default() },
            augment: crate::config::AugmentConfig::visual_off(),
            ..Default::default()
        };
        let mut learner = Learner::new(&model, &train, Device::Cpu).unwrap();
        let opts = (Kind::Float, Device::Cpu);
        let (labelled, labels) = (frames(Tensor::rand([2, 1, 3, 12, 12], opts)), Tensor::from_slice(&[0i64, 1]));
        // 160 unlabelled keys in the bank: enough for an estimate.
        for _ in 0..20 {
            learner.step(&labelled, &labels, &frames(Tensor::rand([8, 1, 3, 12, 12], opts)));
        }
        learner.config.clusters.estimate_every = 1;
        let before = learner.novel_clusters_in_use();
        assert_eq!(before.len(), 1, "one novel cluster until the first count");
        learner.estimate_novel_clusters();
        learner.estimate_novel_clusters();
        assert_eq!(learner.estimates.len(), 2);
        assert_eq!(learner.latest_estimate(), None, "two of three estimates");
        assert_eq!(learner.novel_clusters_in_use(), before);
        learner.estimate_novel_clusters();
        let tolerance = learner.config.clusters.estimate_tolerance;
        let mean = crate::train::estimate::mean_estimate(&learner.estimates, tolerance).unwrap();
        assert_eq!(learner.latest_estimate(), Some(&mean));
        assert_ne!(mean.scores, learner.estimates[2].scores, "the mean, not the latest estimate");
        assert_eq!(learner.novel_clusters_in_use().len() as i64, mean.novel);
        learner.estimate_novel_clusters();
        assert_eq!(learner.estimates.len(), 3, "the window slides");
    }
}
