//! k-means with k-means++ seeding, for the baselines (on raw pixels and on features).

use tch::{Kind, Tensor};

/// Clusters the rows of `x` `[N, D]` into `k` groups; the best of `restarts` runs by inertia.
pub fn kmeans(x: &Tensor, k: i64, restarts: usize, iterations: usize, seed: i64) -> Vec<usize> {
    let _guard = tch::no_grad_guard();
    let x = x.to_kind(Kind::Float);
    let n = x.size()[0];
    assert!(k >= 1 && n >= k, "k-means needs at least k rows");
    tch::manual_seed(seed);
    let norms = x.pow_tensor_scalar(2).sum_dim_intlist(1, true, Kind::Float);
    let distances = |centres: &Tensor| {
        let c_norms = centres.pow_tensor_scalar(2).sum_dim_intlist(1, false, Kind::Float);
        (&norms - x.matmul(&centres.tr()) * 2.0 + c_norms.unsqueeze(0)).clamp_min(0.0)
    };
    let mut best: Option<(f64, Tensor)> = None;
    for _ in 0..restarts {
        // k-means++: each next centre drawn with probability proportional to squared distance.
        let first = Tensor::randint(n, [1], (Kind::Int64, x.device()));
        let mut centres = x.index_select(0, &first);
        for _ in 1..k {
            let d = distances(&centres).min_dim(1, false).0;
            let next = d.clamp_min(1e-12).multinomial(1, false);
            centres = Tensor::cat(&[&centres, &x.index_select(0, &next)], 0);
        }
        let mut assignment = distances(&centres).argmin(1, false);
        for _ in 0..iterations {
            let one_hot = assignment.one_hot(k).to_kind(Kind::Float);
            let counts = one_hot.sum_dim_intlist(0, false, Kind::Float);
            let sums = one_hot.tr().matmul(&x);
            // An emptied cluster keeps its old centre.
            let empty = counts.eq(0.0).unsqueeze(1);
            centres = sums.divide(&counts.clamp_min(1.0).unsqueeze(1)).where_self(&empty.logical_not(), &centres);
            let next = distances(&centres).argmin(1, false);
            let changed = next.ne_tensor(&assignment).any().int64_value(&[]) != 0;
            assignment = next;
            if !changed {
                break;
            }
        }
        let inertia = distances(&centres).min_dim(1, false).0.sum(Kind::Double).double_value(&[]);
        if best.as_ref().is_none_or(|(b, _)| inertia < *b) {
            best = Some((inertia, assignment));
        }
    }
    let assignment = best.expect("at least one restart").1;
    Vec::<i64>::try_from(assignment).expect("assignments are int64").into_iter().map(|a| a as usize).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::metrics::cluster_accuracy;

    #[test]
    fn separates_obvious_blobs() {
        let _rng = crate::rng_lock();
        tch::manual_seed(0);
        let opts = (Kind::Float, tch::Device::Cpu);
        let blobs: Vec<Tensor> = (0..3).map(|i| Tensor::randn([50, 4], opts) * 0.1 + (i as f64) * 5.0).collect();
        let x = Tensor::cat(&blobs, 0);
        let truth: Vec<usize> = (0..150).map(|i| i / 50).collect();
        let predicted = kmeans(&x, 3, 3, 50, 1);
        assert_eq!(cluster_accuracy(&truth, &predicted), 1.0);
    }
}
