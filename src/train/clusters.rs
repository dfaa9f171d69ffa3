//! Pairwise pseudo labels from the memory bank's clusters: spherical k-means over the
//! unlabelled keys of the bank (momentum projections of thousands of recent windows), so that two
//! windows of a batch are a pair when they fall in the same cluster of that much larger sample.
//! The WTA hash compares two windows alone; the bank's clusters see the whole neighbourhood,
//! which pairs windows of a class the hash finds too varied to call similar.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::model::l2_normalize;

/// How the bank's clusters join the WTA pseudo labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ClusterPairs {
    /// WTA pseudo labels alone (the paper's method).
    Off,
    /// A pair is positive when the WTA hash or the bank's clusters say so.
    Union,
    /// Positive when both say so, negative when neither does; pairs they disagree on are left
    /// out of the loss.
    Agree,
}

/// Centroids of the unlabelled keys, refreshed every few steps from the previous ones.
#[derive(Debug, Default)]
pub struct BankClusters {
    centroids: Option<Tensor>,
}

/// Lloyd iterations per refresh; warm-started from the previous centroids, a few suffice.
const ITERATIONS: usize = 10;

impl BankClusters {
    /// Clusters `keys` `[N, P]` into `k` groups, starting from the previous centroids when there
    /// are any (so cluster ids move little between refreshes), else from `k` random keys.
    pub fn refresh(&mut self, keys: &Tensor, k: i64) {
        let _guard = tch::no_grad_guard();
        let n = keys.size()[0];
        if n < k {
            return;
        }
        let x = l2_normalize(&keys.detach());
        let mut centroids = match &self.centroids {
            Some(c) if c.size() == [k, x.size()[1]] => c.shallow_clone(),
            _ => x.index_select(0, &Tensor::randperm(n, (Kind::Int64, x.device())).narrow(0, 0, k)),
        };
        for _ in 0..ITERATIONS {
            let assignment = x.matmul(&centroids.tr()).argmax(1, false);
            let one_hot = assignment.one_hot(k).to_kind(Kind::Float);
            let sums = one_hot.tr().matmul(&x);
            let counts = one_hot.sum_dim_intlist(0, false, Kind::Float).unsqueeze(1);
            // An emptied cluster keeps its centroid.
            let empty = counts.eq(0.0);
            centroids = l2_normalize(&sums).where_self(&empty.logical_not(), &centroids);
        }
        self.centroids = Some(centroids);
    }

    /// Whether [`BankClusters::refresh`] has found centroids yet.
    pub fn ready(&self) -> bool {
        self.centroids.is_some()
    }

    /// `[B, B]` float 0/1: whether rows `i` and `j` of `x` `[B, P]` share their nearest centroid;
    /// `None` before the first refresh.
    pub fn same_cluster(&self, x: &Tensor) -> Option<Tensor> {
        let _guard = tch::no_grad_guard();
        let centroids = self.centroids.as_ref()?;
        let assignment = l2_normalize(&x.detach()).matmul(&centroids.tr()).argmax(1, false);
        Some(assignment.unsqueeze(1).eq_tensor(&assignment.unsqueeze(0)).to_kind(Kind::Float))
    }
}

/// Joins WTA `targets` and `mask` with the bank's `same` pairs, all `[B, B]` float 0/1.
pub fn join(mode: ClusterPairs, targets: &Tensor, mask: &Tensor, same: &Tensor) -> (Tensor, Tensor) {
    match mode {
        ClusterPairs::Off => (targets.shallow_clone(), mask.shallow_clone()),
        ClusterPairs::Union => (targets.maximum(same), mask.maximum(same)),
        ClusterPairs::Agree => {
            let agree = targets.eq_tensor(same).to_kind(Kind::Float);
            (targets * same, mask * agree)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// Three tight groups of keys around orthogonal directions: the clusters recover them, and
    /// pairs of a batch drawn from them are positive exactly within a group.
    #[test]
    fn recovers_separated_groups_and_pairs_within_them() {
        let _rng = crate::rng_lock();
        tch::manual_seed(5);
        let opts = (Kind::Float, Device::Cpu);
        let directions = Tensor::eye(8, opts).narrow(0, 0, 3);
        let group = Tensor::arange(300, (Kind::Int64, Device::Cpu)).remainder(3);
        let keys = directions.index_select(0, &group) + Tensor::randn([300, 8], opts) * 0.05;
        let mut clusters = BankClusters::default();
        assert!(clusters.same_cluster(&keys).is_none(), "no pairs before the first refresh");
        // Random starts can put two centroids in one group; refreshing from there must still
        // find the three groups within a few rounds, as it does during training.
        for _ in 0..5 {
            clusters.refresh(&keys, 3);
        }
        let batch = keys.narrow(0, 0, 12);
        let same = clusters.same_cluster(&batch).unwrap();
        let truth = group.narrow(0, 0, 12);
        let expected = truth.unsqueeze(1).eq_tensor(&truth.unsqueeze(0)).to_kind(Kind::Float);
        assert_eq!(same, expected);
    }

    #[test]
    fn join_rules_worked_by_hand() {
        let t = |v: &[f32]| Tensor::from_slice(v).view([2, 2]);
        // Pairs: (0,0) both positive, (0,1) WTA only, (1,0) bank only, (1,1) neither.
        let (wta, mask, same) = (t(&[1., 1., 0., 0.]), t(&[1., 1., 1., 0.]), t(&[1., 0., 1., 0.]));
        let (targets, m) = join(ClusterPairs::Off, &wta, &mask, &same);
        assert_eq!((targets, m), (wta.copy(), mask.copy()));
        let (targets, m) = join(ClusterPairs::Union, &wta, &mask, &same);
        assert_eq!((targets, m), (t(&[1., 1., 1., 0.]), t(&[1., 1., 1., 0.])));
        let (targets, m) = join(ClusterPairs::Agree, &wta, &mask, &same);
        assert_eq!((targets, m), (t(&[1., 0., 0., 0.]), t(&[1., 0., 0., 0.])));
    }
}
