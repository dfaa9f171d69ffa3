//! Pairwise pseudo labels on unlabelled windows: the WTA hash (the method), and for ablations
//! cosine similarity and AutoNovel's rank statistics.

use tch::{Kind, Tensor};

use super::WtaHash;
use crate::config::PseudoLabelKind;
use crate::model::l2_normalize;

/// Thresholds for turning similarities into pairs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairRule {
    /// WTA: share of equal codes μ that makes a positive pair.
    pub wta_threshold: f64,
    /// Cosine: similarity that makes a positive pair.
    pub cosine_threshold: f64,
    /// Rank statistics: top-k dimensions compared.
    pub rank_k: i64,
    /// WTA and cosine: pairs whose similarity falls between this and the positive threshold are
    /// left out of the loss (neither positive nor negative); `None` makes every pair count.
    pub negative_below: Option<f64>,
    /// When set, the threshold (WTA and cosine) is instead the batch's similarity quantile that
    /// makes this share of pairs positive, so the balance of pairs holds while features drift.
    pub positive_rate: Option<f64>,
}

/// Pseudo labels `ŷ` `[B, B]` (float 0/1) for detached features `z` `[B, D]`, and the mask
/// `[B, B]` (float 0/1) of the pairs that count.
pub fn pseudo_labels(kind: PseudoLabelKind, z: &Tensor, wta: &WtaHash, rule: &PairRule) -> (Tensor, Tensor) {
    let _guard = tch::no_grad_guard();
    let z = z.detach();
    let threshold = |similarity: Tensor, fixed: f64| {
        let cut = match rule.positive_rate {
            Some(rate) => similarity.quantile_scalar(1.0 - rate, None, false, "higher").double_value(&[]),
            None => fixed,
        };
        let positive = similarity.ge(cut);
        let mask = match rule.negative_below {
            Some(low) => positive.logical_or(&similarity.lt(low)),
            None => similarity.ones_like().to_kind(Kind::Bool),
        };
        (positive.to_kind(Kind::Float), mask.to_kind(Kind::Float))
    };
    match kind {
        PseudoLabelKind::Wta => threshold(wta.pseudo_labels(&z, rule.wta_threshold).0, rule.wta_threshold),
        PseudoLabelKind::Cosine => {
            let n = l2_normalize(&z);
            threshold(n.matmul(&n.tr()), rule.cosine_threshold)
        }
        PseudoLabelKind::RankStats => {
            let (_, top) = z.topk(rule.rank_k, 1, true, false);
            let (sorted, _) = top.sort(1, false);
            let same = sorted.unsqueeze(1).eq_tensor(&sorted.unsqueeze(0)).all_dim(-1, false).to_kind(Kind::Float);
            let mask = same.ones_like();
            (same, mask)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_marks_a_vector_similar_to_itself_and_its_copy() {
        let _rng = crate::rng_lock();
        tch::manual_seed(3);
        let z = Tensor::randn([6, 12], (Kind::Float, tch::Device::Cpu));
        let z = Tensor::cat(&[&z, &z], 0);
        let wta = WtaHash::new(12, 16, 4, 0);
        let rule = PairRule {
            wta_threshold: 0.9,
            cosine_threshold: 0.95,
            rank_k: 3,
            negative_below: Some(0.3),
            positive_rate: None,
        };
        for kind in [PseudoLabelKind::Wta, PseudoLabelKind::Cosine, PseudoLabelKind::RankStats] {
            let (y, mask) = pseudo_labels(kind, &z, &wta, &rule);
            assert!(mask.ge_tensor(&y).all().int64_value(&[]) == 1, "{kind:?}: every positive pair counts");
            for i in 0..12 {
                assert_eq!(y.double_value(&[i, i]), 1.0, "{kind:?}");
                assert_eq!(y.double_value(&[i, (i + 6) % 12]), 1.0, "{kind:?}");
            }
        }
    }
}

#[cfg(test)]
mod rate_tests {
    use super::*;

    #[test]
    fn positive_rate_sets_the_share_of_positive_pairs() {
        let _rng = crate::rng_lock();
        tch::manual_seed(4);
        let z = Tensor::randn([40, 16], (Kind::Float, tch::Device::Cpu));
        let wta = WtaHash::new(16, 64, 4, 0);
        let rule = PairRule {
            wta_threshold: 0.5,
            cosine_threshold: 0.5,
            rank_k: 3,
            negative_below: None,
            positive_rate: Some(0.2),
        };
        for kind in [PseudoLabelKind::Wta, PseudoLabelKind::Cosine] {
            let rate = pseudo_labels(kind, &z, &wta, &rule).0.mean(Kind::Float).double_value(&[]);
            // Ties in similarity can only add positives, never remove them.
            assert!((0.2..0.3).contains(&rate), "{kind:?}: {rate}");
        }
    }
}
