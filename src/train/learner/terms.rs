//! The loss terms of one step, each from the step's forward [`Pass`]: contrast,
//! cross-entropy, pairwise BCE on pseudo labels, swapped prediction, cluster balance and
//! consistency. Each returns its weighted term (or `None` when off) and records it in the
//! step's report; [`Learner::step`] adds them up.

use tch::{Kind, Tensor};

use super::{projection, Learner, LossReport, Pass, Slot};
use crate::config::{ClusterPairs, ClusterStart};
use crate::train::clusters::join;
use crate::train::losses::{
    balance, category_nce, consistency, instance_nce, instance_nce_in_batch, pairwise_bce, swapped_prediction,
};
use crate::train::schedule::rampup;
use crate::train::{pseudo_labels, PairRule};

impl Learner {
    /// The contrast of one (query modality, key modality) pair, as its share of the average over
    /// the pairs: instance discrimination on every window, category discrimination on the
    /// labelled ones, against the memory bank's keys when it is on.
    pub(super) fn contrast(
        &self,
        pass: &Pass,
        (q, k): (Slot, Slot),
        labels: &Tensor,
        report: &mut LossReport,
    ) -> Tensor {
        let c = &self.config;
        let pairs = self.pairs.len().max(1) as f64;
        let queries = projection(&pass.out1, q).expect("query modality present");
        let keys = projection(&pass.momentum, k).expect("key modality present");
        let bank =
            self.banks[k].as_ref().filter(|bank| c.losses.memory_bank && !bank.is_empty()).map(|bank| bank.contents());
        let mut pair_loss = Tensor::zeros([], (Kind::Float, labels.device()));
        if c.losses.instance_contrast {
            let term = match &bank {
                Some((negatives, _)) => instance_nce(queries, keys, negatives, c.temperature),
                None => instance_nce_in_batch(queries, keys, c.temperature),
            } / pairs;
            report.instance += term.double_value(&[]);
            pair_loss += term;
        }
        if c.losses.category_contrast && pass.nl > 0 {
            let (all_keys, all_labels) = match &bank {
                Some((bank_keys, bank_labels)) => {
                    (Tensor::cat(&[keys, bank_keys], 0), Tensor::cat(&[&pass.key_labels, bank_labels], 0))
                }
                None => (keys.shallow_clone(), pass.key_labels.shallow_clone()),
            };
            let queries = queries.narrow(0, 0, pass.nl);
            let term = category_nce(&queries, labels, &all_keys, &all_labels, c.temperature) / pairs;
            report.category += term.double_value(&[]);
            pair_loss += term;
        }
        if q != k {
            report.cross_modal += pair_loss.double_value(&[]);
        }
        pair_loss
    }

    /// Cross-entropy of both views' labelled-head logits on the labelled windows; in the open
    /// world, of the joint head's, so that a known class's windows leave the novel outputs.
    pub(super) fn cross_entropy(&self, pass: &Pass, labels: &Tensor, report: &mut LossReport) -> Option<Tensor> {
        let (Some(k1), Some(k2)) = (&pass.out1.known_logits, &pass.out2.known_logits) else {
            return None;
        };
        if !self.config.losses.cross_entropy || pass.nl == 0 {
            return None;
        }
        let (k1, k2) = if self.open_world {
            (pass.out1.joint_logits(), pass.out2.joint_logits())
        } else {
            (k1.shallow_clone(), k2.shallow_clone())
        };
        let nl = pass.nl;
        let term = (k1.narrow(0, 0, nl).cross_entropy_for_logits(labels)
            + k2.narrow(0, 0, nl).cross_entropy_for_logits(labels))
            / 2.0;
        report.cross_entropy = term.double_value(&[]);
        Some(term)
    }

    /// Pairwise BCE of both views' unlabelled heads against the pseudo labels of the unlabelled
    /// windows, times `weight`.
    pub(super) fn pairwise_bce(&mut self, pass: &Pass, weight: f64, report: &mut LossReport) -> Option<Tensor> {
        if !self.config.losses.pairwise_bce || pass.nu < 2 {
            return None;
        }
        let (targets, mask) = self.pseudo_pairs(pass);
        let p1 = pass.out1.novel_logits.narrow(0, pass.nl, pass.nu).softmax(1, Kind::Float);
        let p2 = pass.out2.novel_logits.narrow(0, pass.nl, pass.nu).softmax(1, Kind::Float);
        let term = (pairwise_bce(&p1, &targets, &mask) + pairwise_bce(&p2, &targets, &mask)) / 2.0;
        report.bce = term.double_value(&[]);
        report.positive_pair_rate = targets.mean(Kind::Float).double_value(&[]);
        Some(term * weight)
    }

    /// `[B_u, B_u]` targets and mask of the unlabelled windows' pairs: the pseudo-label rule's,
    /// joined with the bank's clusters (refreshed every `train.clusters.every` steps) when
    /// `train.clusters.pairs` is on.
    fn pseudo_pairs(&mut self, pass: &Pass) -> (Tensor, Tensor) {
        let z = self.pseudo_label_features(pass).narrow(0, pass.nl, pass.nu);
        let (targets, mask) = self.rule_pairs(&z);
        let pairs = self.config.clusters.pairs;
        if pairs == ClusterPairs::Off {
            return (targets, mask);
        }
        let batch_keys = self.joint_keys(&pass.momentum).narrow(0, pass.nl, pass.nu);
        if self.step % self.config.clusters.every.max(1) == 0 || !self.clusters.ready() {
            self.refresh_clusters(pass, &batch_keys);
        }
        match self.clusters.same_cluster(&batch_keys) {
            Some(same) => join(pairs, &targets, &mask, &same),
            None => (targets, mask),
        }
    }

    /// The features pseudo labels compare: the slowly moving momentum encoder's are steadier
    /// than the online one's; only the columns of `train.pseudo.modality`.
    pub(super) fn pseudo_label_features(&self, pass: &Pass) -> Tensor {
        let z = if self.config.pseudo.from_momentum { &pass.momentum.z } else { &pass.out1.z };
        let (first, width) = self.pseudo_columns();
        if width == z.size()[1] {
            z.shallow_clone()
        } else {
            z.narrow(1, first, width)
        }
    }

    /// `[n, n]` targets and mask of the pairs of the rows of `z` by the pseudo-label rule.
    pub(super) fn rule_pairs(&self, z: &Tensor) -> (Tensor, Tensor) {
        let p = &self.config.pseudo;
        let rule = PairRule {
            wta_threshold: p.wta_threshold,
            cosine_threshold: p.cosine_threshold,
            rank_k: p.rank_k,
            negative_below: (p.negative_threshold > 0.0).then_some(p.negative_threshold),
            positive_rate: (p.pair_positive_rate > 0.0).then_some(p.pair_positive_rate),
        };
        pseudo_labels(p.kind, z, &self.wta, &rule)
    }

    /// Re-clusters the banks' unlabelled keys; once ramped up, the momentum head's clusters of
    /// the batch (`batch_keys` `[B_u, P]`) anchor the refresh.
    fn refresh_clusters(&mut self, pass: &Pass, batch_keys: &Tensor) {
        let Some(keys) = self.unlabelled_bank_keys() else {
            return;
        };
        let c = &self.config;
        let head = (c.clusters.start == ClusterStart::Head && self.step >= c.schedule.rampup_steps)
            .then(|| pass.momentum.novel_logits.narrow(0, pass.nl, pass.nu).argmax(1, false));
        let outputs = pass.out1.novel_logits.size()[1];
        self.clusters.refresh(
            &keys,
            outputs,
            c.clusters.restarts,
            c.clusters.min_share / outputs as f64,
            head.as_ref().map(|head| (batch_keys, head)),
        );
    }

    /// Swapped prediction on the unlabelled head, times `weight` and `train.losses.swap_weight`.
    pub(super) fn swapped(&self, pass: &Pass, weight: f64, report: &mut LossReport) -> Option<Tensor> {
        let losses = &self.config.losses;
        let (value, term) =
            head_term(pass, losses.swap_weight, weight, |l1, l2| swapped_prediction(l1, l2, losses.swap_epsilon))?;
        report.swapped = value;
        Some(term)
    }

    /// Cluster balance of both views' unlabelled heads, times `weight` and
    /// `train.losses.balance_weight`.
    pub(super) fn balance(&self, pass: &Pass, weight: f64, report: &mut LossReport) -> Option<Tensor> {
        let (value, term) = head_term(pass, self.config.losses.balance_weight, weight, |l1, l2| {
            (balance(&l1.softmax(1, Kind::Float)) + balance(&l2.softmax(1, Kind::Float))) / 2.0
        })?;
        report.balance = value;
        Some(term)
    }

    /// Consistency of both heads between the views, ramped up over `rampup_steps`.
    pub(super) fn consistency(&self, pass: &Pass, report: &mut LossReport) -> Option<Tensor> {
        let c = &self.config;
        if !c.losses.consistency {
            return None;
        }
        let weight = c.losses.consistency_weight * rampup(self.step, c.schedule.rampup_steps);
        let term = if self.open_world {
            consistency(&pass.out1.joint_logits(), &pass.out2.joint_logits())
        } else {
            let mut term = consistency(&pass.out1.novel_logits, &pass.out2.novel_logits);
            if let (Some(k1), Some(k2)) = (&pass.out1.known_logits, &pass.out2.known_logits) {
                term += consistency(k1, k2);
            }
            term
        };
        report.consistency = term.double_value(&[]);
        report.consistency_weight = weight;
        Some(term * weight)
    }
}

/// A term of both views' unlabelled-head logits of the unlabelled windows, when its
/// `term_weight` is on and there are pairs: its value, and the term times `term_weight` and the
/// schedule's `weight`.
fn head_term(
    pass: &Pass,
    term_weight: f64,
    weight: f64,
    term: impl FnOnce(&Tensor, &Tensor) -> Tensor,
) -> Option<(f64, Tensor)> {
    let on = pass.nu > 1 && term_weight > 0.0;
    if !on {
        return None;
    }
    let (l1, l2) = pass.unlabelled_logits();
    let term = term(l1, l2);
    let value = term.double_value(&[]);
    Some((value, term * (term_weight * weight)))
}

#[cfg(test)]
mod tests {
    use tch::Device;

    use super::super::tests::{frames, small_model};
    use super::*;
    use crate::config::{Contrast, ModelConfig, ScheduleConfig, TrainConfig};
    use crate::model::Input;

    /// Two well-separated synthetic classes per split: one step must run every term, and a few
    /// dozen steps must teach the labelled head the known classes.
    #[test]
    fn every_term_runs_and_the_known_head_learns() {
        let _rng = crate::rng_lock();
        let model =
            ModelConfig { known_classes: vec!["dark".into(), "bright".into()], channels: vec![8, 16], ..small_model() };
        let schedule = ScheduleConfig { rampup_steps: 10, ..Default::default() };
        let train = TrainConfig { batch_size: 8, bank_size: 32, schedule, ..Default::default() };
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
            let model =
                ModelConfig { modality: crate::config::Modality::Both, audio_channels: vec![8], ..small_model() };
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

    /// A window whose audio carries no signal (silence, or a stream without an audio track)
    /// is decided by its picture alone: the audio half of its `z` is zero and the heads say
    /// exactly what they say with its audio withheld. `train.modality_dropout` withholds the
    /// audio of a quarter of the windows and the picture of another quarter, never both.
    #[test]
    fn silent_audio_is_withheld_and_dropout_withholds_one_modality() {
        let _rng = crate::rng_lock();
        tch::manual_seed(3);
        let opts = (Kind::Float, Device::Cpu);
        let model = ModelConfig { modality: crate::config::Modality::Both, audio_channels: vec![8], ..small_model() };
        let train = TrainConfig { batch_size: 6, bank_size: 16, modality_dropout: 0.5, ..Default::default() };
        let mut learner = Learner::new(&model, &train, Device::Cpu).unwrap();
        let input = |frames: &Tensor, mel: &Tensor| Input {
            frames: Some(frames.shallow_clone()),
            mel: Some(mel.shallow_clone()),
        };
        let (frames, mel) = (Tensor::rand([6, 2, 3, 12, 12], opts), Tensor::randn([6, 1, 16, 20], opts));
        let labels = Tensor::from_slice(&[0i64, 1, 0, 1, 0, 1]);
        for _ in 0..3 {
            assert!(learner.step(&input(&frames, &mel), &labels, &input(&frames, &mel)).total.is_finite());
        }
        let silence = mel.full_like(f64::from(crate::model::LOG_FLOOR.ln()));
        let heard = learner.predict(&input(&frames, &mel));
        let quiet = learner.predict(&input(&frames, &silence));
        let audio_dim = 8;
        let visual_dim = heard.z.size()[1] - audio_dim;
        let max_abs = |t: Tensor| t.abs().max().double_value(&[]);
        assert_eq!(max_abs(quiet.z.narrow(1, visual_dim, audio_dim)), 0.0, "silence adds nothing to z");
        assert!(max_abs(heard.z.narrow(1, visual_dim, audio_dim)) > 0.0);
        assert_eq!(max_abs(quiet.z.narrow(1, 0, visual_dim) - heard.z.narrow(1, 0, visual_dim)), 0.0);
        let keep_picture = Tensor::from_slice(&[1f32, 0.0]).view([1, 2]).expand([6, 2], false);
        let withheld = {
            let _guard = tch::no_grad_guard();
            learner.model.forward_kept(&input(&frames, &mel), false, Some(&keep_picture))
        };
        let known = |o: &crate::model::Outputs| o.known_logits.as_ref().unwrap().shallow_clone();
        assert_eq!(max_abs(known(&withheld) - known(&quiet)), 0.0, "silence is the audio withheld");
        assert!(max_abs(known(&heard) - known(&quiet)) > 1e-6, "heard audio counts");

        // Pseudo labels of the picture alone: the WTA hash reads z_v, the bank's clusters the
        // visual keys.
        let mut train_visual = train.clone();
        train_visual.pseudo.modality = crate::config::Modality::Visual;
        let by_picture = Learner::new(&model, &train_visual, Device::Cpu).unwrap();
        assert_eq!(by_picture.wta().dim() as i64, visual_dim);
        assert_eq!(learner.wta().dim() as i64, visual_dim + audio_dim);
        let pass = by_picture.forward(&input(&frames, &mel), &labels, &input(&frames, &silence));
        assert_eq!(by_picture.pseudo_label_features(&pass), pass.momentum.z.narrow(1, 0, visual_dim));
        assert_eq!(by_picture.joint_keys(&pass.momentum).size()[1], model.projection_dim);

        let mask = learner.modality_dropout(8000).expect("both modalities, dropout on");
        let share = |v: f32, a: f32| {
            let rows = mask.select(1, 0).eq(f64::from(v)).logical_and(&mask.select(1, 1).eq(f64::from(a)));
            rows.to_kind(Kind::Float).mean(Kind::Float).double_value(&[])
        };
        assert!((share(1.0, 1.0) - 0.5).abs() < 0.03, "{}", share(1.0, 1.0));
        assert!((share(1.0, 0.0) - 0.25).abs() < 0.03 && (share(0.0, 1.0) - 0.25).abs() < 0.03);
        assert_eq!(share(0.0, 0.0), 0.0, "never both");
        learner.config.modality_dropout = 0.0;
        assert!(learner.modality_dropout(8).is_none());
        let visual = Learner::new(&small_model(), &train, Device::Cpu).unwrap();
        assert!(visual.modality_dropout(8).is_none(), "one modality: nothing to withhold");
    }

    /// The open world: unlabelled windows of the two known classes (dark, bright) and of a novel
    /// one (green) in one buffer. The joint head must learn to call the unlabelled
    /// dark and bright windows by their class and the green ones novel; trained in the
    /// task-aware setting (the pairwise loss on the unlabelled head alone), it does not.
    #[test]
    fn the_joint_head_recognises_known_classes_among_unlabelled_windows() {
        let _rng = crate::rng_lock();
        tch::manual_seed(7);
        let opts = (Kind::Float, Device::Cpu);
        let dark = || Tensor::rand([6, 1, 3, 12, 12], opts) * 0.2;
        let bright = || Tensor::rand([6, 1, 3, 12, 12], opts) * 0.2 + 0.8;
        let green = || {
            let x = Tensor::rand([6, 1, 3, 12, 12], opts) * 0.2;
            let lit = x.narrow(2, 1, 1);
            lit.shallow_clone().copy_(&(&lit + 0.8));
            x
        };
        let labelled = frames(Tensor::cat(&[dark(), bright()], 0));
        let labels = Tensor::from_slice(&[0i64, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]);
        let unlabelled = frames(Tensor::cat(&[dark(), bright(), green()], 0));
        let decided = |open_world: bool| {
            let model = ModelConfig {
                known_classes: vec!["dark".into(), "bright".into()],
                // As many novel outputs as novel classes: a split of a dead output is not what
                // this measures.
                novel_clusters: crate::config::NovelClusters::Fixed(1),
                channels: vec![8, 16],
                open_world,
                ..small_model()
            };
            let schedule = ScheduleConfig { rampup_steps: 20, ..Default::default() };
            let train = TrainConfig { batch_size: 12, bank_size: 64, schedule, ..Default::default() };
            let mut learner = Learner::new(&model, &train, Device::Cpu).unwrap();
            for _ in 0..80 {
                learner.step(&labelled, &labels, &unlabelled);
            }
            super::super::predict::joint_decisions(&learner.predict(&unlabelled))
        };
        let open = decided(true);
        assert_eq!(&open[..12], &[0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1], "{open:?}");
        assert!(open[12..].iter().all(|&d| d >= 2), "novel windows go to a novel cluster: {open:?}");
        let task_aware = decided(false);
        assert_ne!(task_aware, open, "the task-aware losses alone do not make the joint head decide");
    }
}
