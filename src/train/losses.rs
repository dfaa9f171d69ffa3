//! The loss terms of the method (docs/ARCHITECTURE.md), as plain functions of tensors.

use tch::{Kind, Reduction, Tensor};

/// Instance discrimination (InfoNCE): each query's positive is its own key (the other view
/// through the momentum encoder); negatives are the `negatives` rows `[K, P]`.
pub fn instance_nce(queries: &Tensor, keys: &Tensor, negatives: &Tensor, temperature: f64) -> Tensor {
    let positive = (queries * keys).sum_dim_intlist(1, true, Kind::Float);
    let negative = queries.matmul(&negatives.tr());
    let logits = Tensor::cat(&[positive, negative], 1) / temperature;
    let target = Tensor::zeros([queries.size()[0]], (Kind::Int64, queries.device()));
    logits.cross_entropy_for_logits(&target)
}

/// Instance discrimination without a memory bank: the other windows' keys in the batch are
/// the negatives (the diagonal is the positive).
pub fn instance_nce_in_batch(queries: &Tensor, keys: &Tensor, temperature: f64) -> Tensor {
    let logits = queries.matmul(&keys.tr()) / temperature;
    let target = Tensor::arange(queries.size()[0], (Kind::Int64, queries.device()));
    logits.cross_entropy_for_logits(&target)
}

/// Category discrimination (supervised contrast): for each labelled query, every key with the
/// same label is a positive. `key_labels` of −1 (unlabelled) never match.
pub fn category_nce(queries: &Tensor, labels: &Tensor, keys: &Tensor, key_labels: &Tensor, temperature: f64) -> Tensor {
    let logits = queries.matmul(&keys.tr()) / temperature;
    let log_p = logits.log_softmax(1, Kind::Float);
    let positives = labels.unsqueeze(1).eq_tensor(&key_labels.unsqueeze(0)).to_kind(Kind::Float);
    let count = positives.sum_dim_intlist(1, false, Kind::Float).clamp_min(1.0);
    let per_query = -(log_p * &positives).sum_dim_intlist(1, false, Kind::Float) / count;
    per_query.mean(Kind::Float)
}

/// Pairwise binary cross-entropy through the unlabelled head: `P_ij = φ_i · φ_j` against the
/// pseudo labels `ŷ_ij`, averaged over the pairs `mask` keeps.
pub fn pairwise_bce(probabilities: &Tensor, targets: &Tensor, mask: &Tensor) -> Tensor {
    let p = probabilities.matmul(&probabilities.tr()).clamp(1e-7, 1.0 - 1e-7);
    let negatives: Tensor = 1.0 - targets;
    let absent: Tensor = 1.0 - &p;
    let per_pair = -(targets * p.log() + negatives * absent.log());
    (per_pair * mask).sum(Kind::Float) / mask.sum(Kind::Float).clamp_min(1.0)
}

/// Cluster balance: `ln C − H(p̄)` for the batch-mean prediction `p̄` of `probabilities`
/// `[B, C]`; 0 when the batch spreads evenly over the clusters, `ln C` when it all falls in one.
pub fn balance(probabilities: &Tensor) -> Tensor {
    let classes = probabilities.size()[1] as f64;
    let mean = probabilities.mean_dim(0, false, Kind::Float).clamp_min(1e-8);
    (&mean * mean.log()).sum(Kind::Float) + classes.ln()
}

/// Balanced soft assignments of a batch to clusters (Sinkhorn–Knopp, as in SwAV): from
/// `logits` `[B, C]`, the `[B, C]` targets closest to `softmax(logits / ε)` whose clusters each
/// take `1/C` of the batch and whose rows each sum to 1. Without gradients.
pub fn sinkhorn(logits: &Tensor, epsilon: f64, iterations: usize) -> Tensor {
    let _guard = tch::no_grad_guard();
    let (b, c) = (logits.size()[0] as f64, logits.size()[1] as f64);
    let scaled = logits.detach() / epsilon;
    let mut q = (&scaled - scaled.max()).exp();
    q /= q.sum(Kind::Float);
    for _ in 0..iterations {
        q /= q.sum_dim_intlist(0, true, Kind::Float).clamp_min(1e-12) * c;
        q /= q.sum_dim_intlist(1, true, Kind::Float).clamp_min(1e-12) * b;
    }
    q * b
}

/// Swapped prediction: each view's unlabelled head predicts the balanced assignment
/// ([`sinkhorn`]) of the other view, `−Σ q₂ log p₁ − Σ q₁ log p₂`, averaged over windows.
pub fn swapped_prediction(logits_a: &Tensor, logits_b: &Tensor, epsilon: f64) -> Tensor {
    let (qa, qb) = (sinkhorn(logits_a, epsilon, 3), sinkhorn(logits_b, epsilon, 3));
    let term = |q: &Tensor, logits: &Tensor| {
        -(q * logits.log_softmax(1, Kind::Float)).sum_dim_intlist(1, false, Kind::Float).mean(Kind::Float)
    };
    (term(&qb, logits_a) + term(&qa, logits_b)) / 2.0
}

/// Mean squared error between the softmax outputs of two views.
pub fn consistency(logits_a: &Tensor, logits_b: &Tensor) -> Tensor {
    logits_a.softmax(1, Kind::Float).mse_loss(&logits_b.softmax(1, Kind::Float), Reduction::Mean)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::l2_normalize;

    #[test]
    fn contrast_prefers_matching_keys() {
        let _rng = crate::rng_lock();
        tch::manual_seed(1);
        let q = l2_normalize(&Tensor::randn([8, 16], (Kind::Float, tch::Device::Cpu)));
        let noise = l2_normalize(&Tensor::randn([32, 16], (Kind::Float, tch::Device::Cpu)));
        let aligned = instance_nce(&q, &q, &noise, 0.1).double_value(&[]);
        let shuffled = instance_nce(&q, &q.roll([1], [0]), &noise, 0.1).double_value(&[]);
        assert!(aligned < shuffled, "{aligned} vs {shuffled}");
        let labels = Tensor::from_slice(&[0i64, 0, 1, 1, 2, 2, 3, 3]);
        let same = category_nce(&q, &labels, &q, &labels, 0.1).double_value(&[]);
        let other = category_nce(&q, &labels, &q, &labels.roll([1], [0]), 0.1).double_value(&[]);
        assert!(same < other);
    }

    #[test]
    fn bce_is_small_when_heads_agree_with_targets() {
        let confident = Tensor::from_slice(&[1.0f32, 0.0, 1.0, 0.0, 0.0, 1.0]).view([3, 2]);
        let targets = Tensor::from_slice(&[1.0f32, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0]).view([3, 3]);
        let all = targets.ones_like();
        assert!(pairwise_bce(&confident, &targets, &all).double_value(&[]) < 1e-5);
        let wrong = Tensor::ones([3, 3], (Kind::Float, tch::Device::Cpu)) - &targets;
        assert!(pairwise_bce(&confident, &wrong, &all).double_value(&[]) > 5.0);
        // Pairs left out by the mask do not count, however wrong.
        assert_eq!(pairwise_bce(&confident, &wrong, &all.zeros_like()).double_value(&[]), 0.0);
        // Keeping only the diagonal (always a true positive here) leaves a near-zero loss.
        let diagonal = Tensor::eye(3, (Kind::Float, tch::Device::Cpu));
        assert!(pairwise_bce(&confident, &targets, &diagonal).double_value(&[]) < 1e-5);
    }

    #[test]
    fn balance_is_zero_when_even_and_ln_c_when_all_in_one_cluster() {
        let even = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0]).view([2, 2]);
        assert!(balance(&even).double_value(&[]).abs() < 1e-6);
        let one = Tensor::from_slice(&[1.0f32, 0.0, 1.0, 0.0]).view([2, 2]);
        assert!((balance(&one).double_value(&[]) - 2f64.ln()).abs() < 1e-5);
    }

    /// Sinkhorn's targets are distributions per window with every cluster taking an equal share of
    /// the batch, even when the head puts almost everything in one cluster; they keep the head's
    /// order among windows (the one it favours most for a cluster gets it).
    #[test]
    fn sinkhorn_balances_clusters_and_keeps_preferences() {
        let logits = Tensor::from_slice(&[4.0f32, 0.0, 3.0, 0.0, 2.0, 0.0, 1.0, 0.0]).view([4, 2]);
        let q = sinkhorn(&logits, 0.5, 50);
        let rows = Vec::<f32>::try_from(q.sum_dim_intlist(1, false, Kind::Float)).unwrap();
        let columns = Vec::<f32>::try_from(q.sum_dim_intlist(0, false, Kind::Float)).unwrap();
        for r in rows {
            assert!((r - 1.0).abs() < 1e-4, "row sum {r}");
        }
        for c in columns {
            assert!((c - 2.0).abs() < 1e-3, "column sum {c}");
        }
        let first: Vec<f32> = Vec::try_from(q.select(1, 0)).unwrap();
        assert!(first.windows(2).all(|w| w[0] > w[1]), "{first:?}");
        assert!(first[0] > 0.9 && first[3] < 0.1, "{first:?}");
    }

    #[test]
    fn swapped_prediction_is_lower_when_views_agree() {
        let a = Tensor::from_slice(&[5.0f32, 0.0, 0.0, 5.0, 5.0, 0.0, 0.0, 5.0]).view([4, 2]);
        let agree = swapped_prediction(&a, &a, 0.5).double_value(&[]);
        let disagree = swapped_prediction(&a, &a.flip([1]), 0.5).double_value(&[]);
        assert!(agree < 0.05 && disagree > 3.0, "{agree} vs {disagree}");
    }
}
