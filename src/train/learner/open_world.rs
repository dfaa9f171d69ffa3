//! The open world's unlabelled terms (DESIGN.md 3a): unlabelled windows are of known classes
//! and of novel ones. Each is routed by the bank's semi-supervised clusters — the known classes'
//! centroids held by their labelled keys, the novel clusters' by the rest — and trains what its
//! route says: a window routed to a known class teaches the joint head that class (so known
//! windows are neither pulled into novel clusters nor split), a window routed to the novel
//! clusters teaches the joint head "novel" and the unlabelled head, through the paper's pairwise
//! BCE among the novel-routed windows, which novel cluster.

use tch::{Kind, Tensor};

use super::{Learner, LossReport, Pass};
use crate::config::{ClusterPairs, ClusterStart};
use crate::train::clusters::join;
use crate::train::losses::pairwise_bce;

impl Learner {
    /// The open world's unlabelled terms, times the schedule's `weight`: cross-entropy of the
    /// joint head towards the known class of the windows routed to one, the novel outputs'
    /// share of the joint head's probability for the windows routed novel (as `−log`), and the
    /// pairwise BCE of the unlabelled head among those. `None` before the bank has clusters.
    pub(super) fn open_world_terms(&mut self, pass: &Pass, weight: f64, report: &mut LossReport) -> Option<Tensor> {
        if pass.nu < 2 {
            return None;
        }
        let route = self.route(pass)?;
        let known = self.known;
        let routed_known = route.ge(0).logical_and(&route.lt(known));
        let (to_known, to_novel) = (routed_known.nonzero().squeeze_dim(1), route.ge(known).nonzero().squeeze_dim(1));
        report.routed_novel = to_novel.size()[0] as f64 / pass.nu as f64;
        report.routed_abstain = route.lt(0).sum(Kind::Int64).int64_value(&[]) as f64 / pass.nu as f64;
        let unlabelled = |logits: Tensor| logits.narrow(0, pass.nl, pass.nu);
        let (joint1, joint2) = (unlabelled(pass.out1.joint_logits()), unlabelled(pass.out2.joint_logits()));
        let mut term = Tensor::zeros([], (Kind::Float, joint1.device()));
        if to_known.size()[0] > 0 && self.config.losses.cross_entropy {
            let targets = route.index_select(0, &to_known);
            let ce = (joint1.index_select(0, &to_known).cross_entropy_for_logits(&targets)
                + joint2.index_select(0, &to_known).cross_entropy_for_logits(&targets))
                / 2.0;
            report.routed_known_ce = ce.double_value(&[]);
            term += ce;
        }
        if to_novel.size()[0] > 0 {
            let novel_share = |joint: &Tensor| {
                let rows = joint.index_select(0, &to_novel);
                (rows.logsumexp([1], false) - rows.narrow(1, known, rows.size()[1] - known).logsumexp([1], false))
                    .mean(Kind::Float)
            };
            let share = (novel_share(&joint1) + novel_share(&joint2)) / 2.0;
            report.novel_share = share.double_value(&[]);
            term += share;
        }
        if to_novel.size()[0] > 1 && self.config.losses.pairwise_bce {
            term += self.routed_bce(pass, &route, &to_novel, report);
        }
        Some(term * weight)
    }

    /// Where each unlabelled window trains, `[B_u]`: the bank's cluster of its momentum keys
    /// (below `C_l`: that known class; from `C_l` on: novel; negative: nowhere), as
    /// [`BankClusters::route`](crate::train::clusters::BankClusters::route) says, refreshing
    /// the centroids every `train.clusters.every` steps and whenever the number of novel
    /// clusters in use changed.
    fn route(&mut self, pass: &Pass) -> Option<Tensor> {
        let batch_keys = self.joint_keys(&pass.momentum).narrow(0, pass.nl, pass.nu);
        let novel = pass.out1.novel_logits.size()[1];
        let stale = self.clusters.count() != Some(self.known + novel);
        if self.step % self.config.clusters.every.max(1) == 0 || stale {
            let (keys, labels) = self.bank_keys()?;
            let c = &self.config;
            // Once ramped up, the novel centroids start from the unlabelled head's groups of the
            // windows the previous centroids routed novel, so the clusters follow the head.
            let anchor = (!stale && c.clusters.start == ClusterStart::Head && self.step >= c.schedule.rampup_steps)
                .then(|| {
                    let previous = self.clusters.assign(&batch_keys)?;
                    let rows = previous.ge(self.known).nonzero().squeeze_dim(1);
                    let groups =
                        pass.momentum.novel_logits.narrow(0, pass.nl, pass.nu).index_select(0, &rows).argmax(1, false);
                    Some((batch_keys.index_select(0, &rows), groups))
                })
                .flatten();
            self.clusters.refresh_open(&keys, &labels, (self.known, novel), anchor.as_ref().map(|(k, g)| (k, g)));
        }
        if self.clusters.count() != Some(self.known + novel) {
            return None;
        }
        self.clusters.route(&batch_keys, self.config.clusters.ambiguous)
    }

    /// Pairwise BCE of both views' unlabelled heads among the windows routed novel (`rows` of
    /// the unlabelled windows): the pseudo-label rule's pairs, joined with "same novel cluster"
    /// of the `route` as `train.clusters.pairs` says.
    fn routed_bce(&mut self, pass: &Pass, route: &Tensor, rows: &Tensor, report: &mut LossReport) -> Tensor {
        let z = self.pseudo_label_features(pass).narrow(0, pass.nl, pass.nu).index_select(0, rows);
        let (targets, mask) = self.rule_pairs(&z);
        let (targets, mask) = match self.config.clusters.pairs {
            ClusterPairs::Off => (targets, mask),
            pairs => {
                let cluster = route.index_select(0, rows);
                let same = cluster.unsqueeze(1).eq_tensor(&cluster.unsqueeze(0)).to_kind(Kind::Float);
                join(pairs, &targets, &mask, &same)
            }
        };
        let head = |logits: &Tensor| logits.narrow(0, pass.nl, pass.nu).index_select(0, rows).softmax(1, Kind::Float);
        let (p1, p2) = (head(&pass.out1.novel_logits), head(&pass.out2.novel_logits));
        let term = (pairwise_bce(&p1, &targets, &mask) + pairwise_bce(&p2, &targets, &mask)) / 2.0;
        report.bce = term.double_value(&[]);
        report.positive_pair_rate = targets.mean(Kind::Float).double_value(&[]);
        term
    }
}
