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

/// Where each refresh of the bank's clusters starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ClusterStart {
    /// The previous centroids: the clusters follow the keys as the features move.
    Previous,
    /// Once ramped up, the means of the batch's keys grouped by the momentum encoder's
    /// unlabelled head: the clusters follow the head, so the pseudo labels and the head agree.
    Head,
}

/// Centroids of the unlabelled keys, refreshed every few steps.
#[derive(Debug, Default)]
pub struct BankClusters {
    centroids: Option<Tensor>,
}

/// Lloyd iterations per candidate clustering.
const ITERATIONS: usize = 10;

impl BankClusters {
    /// Clusters `keys` `[N, P]` into `k` groups, starting from the previous centroids (from `k`
    /// random keys at first). With `restarts` above 0, as many k-means++ starts compete with it
    /// and the best fit (highest total cosine similarity to the nearest centroid) is kept. Pairs
    /// depend only on which windows share a cluster, not on cluster ids, so fresh starts cost no
    /// stability; they let a refresh leave a poor local optimum (two centroids in one class,
    /// two classes under one centroid) that warm starts alone keep.
    ///
    /// With an `anchor` — a batch of keys `[B, P]` and the cluster `[B]` the unlabelled head
    /// gives each — the refresh starts from the means of those groups instead (the previous
    /// centroid where a group is empty), so the bank's clusters follow the head's rather than
    /// drift away from them as the features move.
    pub fn refresh(
        &mut self,
        keys: &Tensor,
        k: i64,
        restarts: usize,
        min_share: f64,
        anchor: Option<(&Tensor, &Tensor)>,
    ) {
        let _guard = tch::no_grad_guard();
        let n = keys.size()[0];
        if n < k {
            return;
        }
        let x = l2_normalize(&keys.detach());
        let mut previous = match &self.centroids {
            Some(c) if c.size() == [k, x.size()[1]] => c.shallow_clone(),
            _ => x.index_select(0, &Tensor::randperm(n, (Kind::Int64, x.device())).narrow(0, 0, k)),
        };
        if let Some((batch, groups)) = anchor {
            let one_hot = groups.one_hot(k).to_kind(Kind::Float);
            let sums = one_hot.tr().matmul(&l2_normalize(&batch.detach()));
            let filled = one_hot.sum_dim_intlist(0, false, Kind::Float).gt(0.0).unsqueeze(1);
            previous = l2_normalize(&sums).where_self(&filled, &previous);
        }
        let mut starts = vec![previous];
        starts.extend((0..restarts).map(|_| kmeans_plus_plus(&x, k)));
        self.centroids = starts
            .into_iter()
            .map(|start| lloyd(&x, start, min_share))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, centroids)| centroids);
    }

    /// Whether [`BankClusters::refresh`] has found centroids yet.
    pub fn ready(&self) -> bool {
        self.centroids.is_some()
    }

    /// `[B]` int64: the nearest centroid of each row of `x` `[B, P]`; `None` before the first
    /// refresh.
    pub fn assign(&self, x: &Tensor) -> Option<Tensor> {
        let _guard = tch::no_grad_guard();
        let centroids = self.centroids.as_ref()?;
        Some(l2_normalize(&x.detach()).matmul(&centroids.tr()).argmax(1, false))
    }

    /// `[B, B]` float 0/1: whether rows `i` and `j` of `x` `[B, P]` share their nearest centroid;
    /// `None` before the first refresh.
    pub fn same_cluster(&self, x: &Tensor) -> Option<Tensor> {
        let assignment = self.assign(x)?;
        Some(assignment.unsqueeze(1).eq_tensor(&assignment.unsqueeze(0)).to_kind(Kind::Float))
    }
}

/// Spherical k-means from `centroids`: (total cosine similarity of the rows of `x` to their
/// nearest centroid, centroids). With `min_share` above 0, small clusters are moved between
/// iterations (see [`split_largest`]).
fn lloyd(x: &Tensor, mut centroids: Tensor, min_share: f64) -> (f64, Tensor) {
    let k = centroids.size()[0];
    for iteration in 0..ITERATIONS {
        let assignment = x.matmul(&centroids.tr()).argmax(1, false);
        let one_hot = assignment.one_hot(k).to_kind(Kind::Float);
        let sums = one_hot.tr().matmul(x);
        let counts = one_hot.sum_dim_intlist(0, false, Kind::Float);
        // An emptied cluster keeps its centroid.
        centroids = l2_normalize(&sums).where_self(&counts.gt(0.0).unsqueeze(1), &centroids);
        if min_share > 0.0 && iteration + 1 < ITERATIONS {
            centroids = split_largest(x, centroids, &assignment, &counts, min_share);
        }
    }
    let fit = x.matmul(&centroids.tr()).amax(1, false).sum(Kind::Float).double_value(&[]);
    (fit, centroids)
}

/// Moves each cluster holding less than `min_share` of the rows of `x` into the largest
/// cluster, onto its row farthest from its centroid, so that the next iterations split it: a
/// merged pair of classes beside a nearly empty cluster is a local optimum that refining alone
/// keeps. `assignment` and `counts` are the rows' clusters and the clusters' sizes.
fn split_largest(x: &Tensor, mut centroids: Tensor, assignment: &Tensor, counts: &Tensor, min_share: f64) -> Tensor {
    let floor = min_share * x.size()[0] as f64;
    let mut sizes = Vec::<f64>::try_from(counts.to_kind(Kind::Double)).expect("counts");
    for small in 0..sizes.len() {
        if sizes[small] >= floor {
            continue;
        }
        let largest = (0..sizes.len()).max_by(|&a, &b| sizes[a].total_cmp(&sizes[b])).expect("k > 0");
        let similarity = x.matmul(&centroids.get(largest as i64));
        let farthest = similarity.masked_fill(&assignment.ne(largest as i64), f64::INFINITY).argmin(0, true);
        centroids = centroids.index_copy(0, &Tensor::from_slice(&[small as i64]), &x.index_select(0, &farthest));
        // The largest is now split in two, as far as the next candidates are concerned.
        let moved = sizes[largest] / 2.0;
        sizes[largest] -= moved;
        sizes[small] += moved;
    }
    centroids
}

/// k-means++ seeding on unit rows: each next centroid is a row drawn with probability
/// proportional to its squared distance from the nearest centroid so far.
fn kmeans_plus_plus(x: &Tensor, k: i64) -> Tensor {
    let n = x.size()[0];
    let first = Tensor::randint(n, [1], (Kind::Int64, x.device()));
    let mut chosen = x.index_select(0, &first);
    for _ in 1..k {
        // ‖a − b‖² = 2 − 2 a·b for unit vectors.
        let similarity = x.matmul(&chosen.tr()).amax(1, false);
        let distance = (similarity * -2.0 + 2.0).clamp_min(0.0);
        let weights =
            if distance.sum(Kind::Float).double_value(&[]) > 0.0 { distance } else { x.ones_like().select(1, 0) };
        let next = weights.multinomial(1, false);
        chosen = Tensor::cat(&[&chosen, &x.index_select(0, &next)], 0);
    }
    chosen
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

    /// 300 keys in three tight groups around orthogonal directions: (directions, group of
    /// each key, keys).
    fn three_groups() -> (Tensor, Tensor, Tensor) {
        let opts = (Kind::Float, Device::Cpu);
        let directions = Tensor::eye(8, opts).narrow(0, 0, 3);
        let group = Tensor::arange(300, (Kind::Int64, Device::Cpu)).remainder(3);
        let keys = directions.index_select(0, &group) + Tensor::randn([300, 8], opts) * 0.05;
        (directions, group, keys)
    }

    /// `[N, N]` float 0/1: whether two keys are of one group.
    fn same_group(group: &Tensor) -> Tensor {
        group.unsqueeze(1).eq_tensor(&group.unsqueeze(0)).to_kind(Kind::Float)
    }

    /// Three tight groups of keys around orthogonal directions: the clusters recover them, and
    /// pairs of a batch drawn from them are positive exactly within a group.
    #[test]
    fn recovers_separated_groups_and_pairs_within_them() {
        let _rng = crate::rng_lock();
        tch::manual_seed(5);
        let (_, group, keys) = three_groups();
        let mut clusters = BankClusters::default();
        assert!(clusters.same_cluster(&keys).is_none(), "no pairs before the first refresh");
        for _ in 0..5 {
            clusters.refresh(&keys, 3, 0, 0.0, None);
        }
        let batch = keys.narrow(0, 0, 12);
        let same = clusters.same_cluster(&batch).unwrap();
        assert_eq!(same, same_group(&group.narrow(0, 0, 12)));
    }

    /// Centroids stuck in a local optimum (two in one group, one between the other two groups)
    /// stay there when a refresh only refines them, and are left when k-means++ restarts compete.
    #[test]
    fn a_refresh_leaves_a_poor_local_optimum() {
        let _rng = crate::rng_lock();
        tch::manual_seed(6);
        let (directions, group, keys) = three_groups();
        let stuck = Tensor::stack(
            &[
                directions.get(0),
                (directions.get(0) * 0.99 + directions.get(1) * 0.01),
                (directions.get(1) + directions.get(2)),
            ],
            0,
        );
        let stuck = l2_normalize(&stuck);
        let (stuck_fit, _) = lloyd(&l2_normalize(&keys), stuck.shallow_clone(), 0.0);
        let mut clusters = BankClusters { centroids: Some(stuck.shallow_clone()) };
        clusters.refresh(&keys, 3, 0, 0.0, None);
        let (kept, _) = lloyd(&l2_normalize(&keys), clusters.centroids.as_ref().unwrap().shallow_clone(), 0.0);
        assert!((kept - stuck_fit).abs() < 1.0, "without restarts the warm start stays stuck: {kept} vs {stuck_fit}");
        clusters.refresh(&keys, 3, 3, 0.0, None);
        let (fit, _) = lloyd(&l2_normalize(&keys), clusters.centroids.as_ref().unwrap().shallow_clone(), 0.0);
        assert!(fit > stuck_fit + 30.0, "refreshed fit {fit}, stuck {stuck_fit}");
        let same = clusters.same_cluster(&keys).unwrap();
        assert_eq!(same, same_group(&group));
    }

    /// Two groups under one centroid and a third centroid far from every key: refining keeps
    /// that; with a minimum share the empty cluster moves into the merged one and splits it.
    #[test]
    fn a_nearly_empty_cluster_splits_the_largest() {
        let _rng = crate::rng_lock();
        tch::manual_seed(7);
        let (directions, group, keys) = three_groups();
        let merged = Tensor::stack(
            &[
                directions.get(0),
                directions.get(1) + directions.get(2),
                Tensor::eye(8, (Kind::Float, tch::Device::Cpu)).get(7),
            ],
            0,
        );
        let merged = l2_normalize(&merged);
        let mut refined = BankClusters { centroids: Some(merged.shallow_clone()) };
        refined.refresh(&keys, 3, 0, 0.0, None);
        assert_ne!(refined.same_cluster(&keys).unwrap(), same_group(&group), "refining alone keeps the merge");
        let mut split = BankClusters { centroids: Some(merged) };
        split.refresh(&keys, 3, 0, 0.1, None);
        assert_eq!(split.same_cluster(&keys).unwrap(), same_group(&group));
    }

    /// Centroids stuck with two groups merged: an anchor whose groups follow the keys' true
    /// groups (a head that has them right) starts the refresh there, and the merge is gone.
    #[test]
    fn an_anchor_restarts_the_clusters_from_the_heads_groups() {
        let _rng = crate::rng_lock();
        tch::manual_seed(8);
        let (directions, group, keys) = three_groups();
        let merged = l2_normalize(&Tensor::stack(
            &[
                directions.get(0),
                directions.get(0) * 0.9 + directions.get(1) * 0.1,
                directions.get(1) + directions.get(2),
            ],
            0,
        ));
        let mut clusters = BankClusters { centroids: Some(merged.shallow_clone()) };
        clusters.refresh(&keys, 3, 0, 0.0, None);
        assert_ne!(clusters.same_cluster(&keys).unwrap(), same_group(&group), "refining alone keeps the merge");
        let (batch, head) = (keys.narrow(0, 0, 30), group.narrow(0, 0, 30));
        clusters.refresh(&keys, 3, 0, 0.0, Some((&batch, &head)));
        assert_eq!(clusters.same_cluster(&keys).unwrap(), same_group(&group));
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
