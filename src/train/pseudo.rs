//! Pairwise pseudo labels on unlabelled windows: the WTA hash (the method), and for ablations
//! cosine similarity and AutoNovel's rank statistics.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::WtaHash;
use crate::model::l2_normalize;

/// How pairwise pseudo labels are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PseudoLabelKind {
    /// Winner-Take-All hash: share of equal codes ≥ μ.
    Wta,
    /// Cosine similarity of the features ≥ a threshold.
    Cosine,
    /// AutoNovel's rank statistics: the same top-k feature dimensions.
    RankStats,
}

/// Pseudo labels `ŷ` `[B, B]` (float 0/1) for detached features `z` `[B, D]`.
pub fn pseudo_labels(kind: PseudoLabelKind, z: &Tensor, wta: &WtaHash, wta_threshold: f64, cosine_threshold: f64, rank_k: i64) -> Tensor {
    let _guard = tch::no_grad_guard();
    let z = z.detach();
    match kind {
        PseudoLabelKind::Wta => wta.pseudo_labels(&z, wta_threshold).1,
        PseudoLabelKind::Cosine => {
            let n = l2_normalize(&z);
            n.matmul(&n.tr()).ge(cosine_threshold).to_kind(Kind::Float)
        }
        PseudoLabelKind::RankStats => {
            let (_, top) = z.topk(rank_k, 1, true, false);
            let (sorted, _) = top.sort(1, false);
            let same = sorted.unsqueeze(1).eq_tensor(&sorted.unsqueeze(0)).all_dim(-1, false);
            same.to_kind(Kind::Float)
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
        for kind in [PseudoLabelKind::Wta, PseudoLabelKind::Cosine, PseudoLabelKind::RankStats] {
            let y = pseudo_labels(kind, &z, &wta, 0.9, 0.95, 3);
            for i in 0..12 {
                assert_eq!(y.double_value(&[i, i]), 1.0, "{kind:?}");
                assert_eq!(y.double_value(&[i, (i + 6) % 12]), 1.0, "{kind:?}");
            }
        }
    }
}
