//! Pairwise pseudo labels from the memory bank's clusters: spherical k-means over the
//! unlabelled keys of the bank (momentum projections of thousands of recent windows), so that two
//! windows of a batch are a pair when they fall in the same cluster of that much larger sample.
//! The WTA hash compares two windows alone; the bank's clusters see the whole neighbourhood,
//! which pairs windows of a class the hash finds too varied to call similar.

use tch::{Kind, Tensor};

use super::estimate::{known_centroids, open_set_nearest, plus_plus_after, semi_supervised_lloyd};
use super::kmeans::{plus_plus, Lloyd, Metric, Update};
use crate::config::{Ambiguous, ClusterPairs};
use crate::model::l2_normalize;

/// The route of a window that trains neither a known class nor "novel"
/// (`train.clusters.ambiguous = "abstain"`).
pub const ABSTAIN: i64 = -1;

/// What [`BankClusters::route`] decides from: `[B]` each row's open-set cluster, whether the
/// row is ambiguous, and its most similar novel centroid (numbered among all centroids; `None`
/// without novel centroids or known floors).
struct Borders {
    route: Tensor,
    ambiguous: Tensor,
    nearest_novel: Option<Tensor>,
}

/// Centroids of the unlabelled keys, refreshed every few steps.
#[derive(Debug, Default)]
pub struct BankClusters {
    centroids: Option<Tensor>,
    /// The open world's known classes' floors (see [`open_set_nearest`]): the first centroids
    /// are theirs.
    floors: Option<Tensor>,
}

/// Spherical k-means with the refresh's `min_share`: ten updates from each start.
fn lloyd(min_share: f64) -> Lloyd {
    Lloyd { metric: Metric::Cosine, updates: 10, until_stable: false, update: Update::Together, min_share }
}

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
            previous = Metric::Cosine.group_centroids(&l2_normalize(&batch.detach()), groups, &previous).0;
        }
        let mut starts = vec![previous];
        starts.extend((0..restarts).map(|_| plus_plus(Metric::Cosine, &x, k)));
        let runs = starts.into_iter().filter_map(|start| lloyd(min_share).run(&x, start));
        self.centroids = Metric::Cosine.best(runs).map(|best| best.centroids);
    }

    /// The open world's refresh: semi-supervised spherical k-means over all the bank's `keys`
    /// `[N, P]` (`labels` a known class in `0..known` or −1) into the `known` classes — their
    /// centroids start at their labelled keys' mean and those keys stay with their class — and
    /// `novel` clusters, which start from the previous novel centroids (k-means++ at first) or,
    /// with an `anchor` (batch keys and the novel cluster `0..novel` the unlabelled head gives
    /// each), from the means of those groups. Centroids `0..known` are then the known classes',
    /// the rest novel. Nothing changes while a known class has no labelled key in the bank.
    pub fn refresh_open(
        &mut self,
        keys: &Tensor,
        labels: &Tensor,
        (known, novel): (i64, i64),
        anchor: Option<(&Tensor, &Tensor)>,
    ) {
        let _guard = tch::no_grad_guard();
        let x = l2_normalize(&keys.detach());
        let (known_centroids, rank) = known_centroids(&x, labels, known);
        if known_centroids.size()[0] != known || labels.eq(-1).sum(Kind::Int64).int64_value(&[]) < novel {
            return;
        }
        let mut previous = match &self.centroids {
            Some(c) if c.size() == [known + novel, x.size()[1]] => c.narrow(0, known, novel),
            _ => plus_plus_after(&x, labels, &known_centroids, novel).narrow(0, known, novel),
        };
        if let Some((batch, groups)) = anchor {
            previous = Metric::Cosine.group_centroids(&l2_normalize(&batch.detach()), groups, &previous).0;
        }
        let start = Tensor::cat(&[known_centroids, previous], 0);
        let run = semi_supervised_lloyd(&x, labels, &rank, start, 10);
        (self.centroids, self.floors) = (Some(run.centroids), Some(run.floors));
    }

    /// How many centroids there are, once there are any.
    pub fn count(&self) -> Option<i64> {
        self.centroids.as_ref().map(|c| c.size()[0])
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
        let x = l2_normalize(&x.detach());
        Some(match &self.floors {
            Some(floors) => open_set_nearest(&x, centroids, floors),
            None => Metric::Cosine.nearest(&x, centroids),
        })
    }

    /// `[B]` int64: where each row of `x` `[B, P]` trains — its cluster by the open-set rule
    /// (below `C_l`: a known class), except that a row the rule gives a known class while a
    /// novel centroid is more similar goes where `ambiguous` says ([`ABSTAIN`]: nowhere);
    /// `None` before the first refresh.
    pub fn route(&self, x: &Tensor, ambiguous: Ambiguous) -> Option<Tensor> {
        let borders = self.borders(x)?;
        let instead = match (ambiguous, borders.nearest_novel) {
            (Ambiguous::Known, _) | (Ambiguous::Novel, None) => return Some(borders.route),
            (Ambiguous::Abstain, _) => Tensor::full_like(&borders.route, ABSTAIN),
            (Ambiguous::Novel, Some(novel)) => novel,
        };
        Some(instead.where_self(&borders.ambiguous, &borders.route))
    }

    /// `[B]` bool: whether each row of `x` `[B, P]` is routed to a known class by the open-set
    /// rule although a novel centroid is more similar (all false without known floors or novel
    /// centroids); `None` before the first refresh.
    pub fn ambiguous(&self, x: &Tensor) -> Option<Tensor> {
        Some(self.borders(x)?.ambiguous)
    }

    /// The open-set rule's cluster of each row of `x` `[B, P]`, which rows it gives a known
    /// class while a novel centroid is more similar, and the most similar novel centroid (from
    /// one normalisation and one assignment); `None` before the first refresh.
    fn borders(&self, x: &Tensor) -> Option<Borders> {
        let _guard = tch::no_grad_guard();
        let centroids = self.centroids.as_ref()?;
        let x = l2_normalize(&x.detach());
        let route = self.assign(&x)?;
        let known = self.floors.as_ref().map_or(0, |f| f.size()[0]);
        let total = centroids.size()[0];
        if known == 0 || total == known {
            let ambiguous = Tensor::zeros([x.size()[0]], (Kind::Bool, x.device()));
            return Some(Borders { route, ambiguous, nearest_novel: None });
        }
        let similarity = x.matmul(&centroids.tr());
        let best_known = similarity.narrow(1, 0, known).amax(1, false);
        let (best_novel, novel) = similarity.narrow(1, known, total - known).max_dim(1, false);
        let ambiguous = route.lt(known).logical_and(&best_novel.gt_tensor(&best_known));
        Some(Borders { route, ambiguous, nearest_novel: Some(novel + known) })
    }

    /// `[B, B]` float 0/1: whether rows `i` and `j` of `x` `[B, P]` share their nearest centroid;
    /// `None` before the first refresh.
    pub fn same_cluster(&self, x: &Tensor) -> Option<Tensor> {
        let assignment = self.assign(x)?;
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

    /// 300 keys in three tight groups around orthogonal directions: (directions, group of
    /// each key, keys).
    fn three_groups() -> (Tensor, Tensor, Tensor) {
        let opts = (Kind::Float, Device::Cpu);
        let directions = Tensor::eye(8, opts).narrow(0, 0, 3);
        let group = Tensor::arange(300, (Kind::Int64, Device::Cpu)).remainder(3);
        let keys = directions.index_select(0, &group) + Tensor::randn([300, 8], opts) * 0.05;
        (directions, group, keys)
    }

    /// Total cosine similarity of `keys` to their nearest centroid after refining `centroids`.
    fn fit(keys: &Tensor, centroids: &Tensor) -> f64 {
        lloyd(0.0).run(&l2_normalize(keys), centroids.shallow_clone()).unwrap().fit
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
        let stuck_fit = fit(&keys, &stuck);
        let mut clusters = BankClusters { centroids: Some(stuck.shallow_clone()), floors: None };
        clusters.refresh(&keys, 3, 0, 0.0, None);
        let kept = fit(&keys, clusters.centroids.as_ref().unwrap());
        assert!((kept - stuck_fit).abs() < 1.0, "without restarts the warm start stays stuck: {kept} vs {stuck_fit}");
        clusters.refresh(&keys, 3, 3, 0.0, None);
        let refreshed = fit(&keys, clusters.centroids.as_ref().unwrap());
        assert!(refreshed > stuck_fit + 30.0, "refreshed fit {refreshed}, stuck {stuck_fit}");
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
        let mut refined = BankClusters { centroids: Some(merged.shallow_clone()), floors: None };
        refined.refresh(&keys, 3, 0, 0.0, None);
        assert_ne!(refined.same_cluster(&keys).unwrap(), same_group(&group), "refining alone keeps the merge");
        let mut split = BankClusters { centroids: Some(merged), floors: None };
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
        let mut clusters = BankClusters { centroids: Some(merged.shallow_clone()), floors: None };
        clusters.refresh(&keys, 3, 0, 0.0, None);
        assert_ne!(clusters.same_cluster(&keys).unwrap(), same_group(&group), "refining alone keeps the merge");
        let (batch, head) = (keys.narrow(0, 0, 30), group.narrow(0, 0, 30));
        clusters.refresh(&keys, 3, 0, 0.0, Some((&batch, &head)));
        assert_eq!(clusters.same_cluster(&keys).unwrap(), same_group(&group));
    }

    /// One known class (centroid along x, floor 0.5) and one novel cluster (along y): a row the
    /// known class explains is ambiguous only when the novel centroid is nearer, and a row
    /// under the floor, routed novel anyway, is not.
    #[test]
    fn ambiguous_rows_are_explained_by_a_known_class_and_nearer_a_novel_one() {
        let opts = (Kind::Float, Device::Cpu);
        let centroids = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0]).view([2, 2]);
        let clusters = BankClusters { centroids: Some(centroids), floors: Some(Tensor::from_slice(&[0.5f32])) };
        let rows = Tensor::from_slice(&[0.6f32, 0.8, 0.9, 0.436, 0.3, 0.954]).view([3, 2]).to_kind(opts.0);
        assert_eq!(Vec::<i64>::try_from(clusters.assign(&rows).unwrap()).unwrap(), vec![0, 0, 1]);
        assert_eq!(Vec::<bool>::try_from(clusters.ambiguous(&rows).unwrap()).unwrap(), vec![true, false, false]);
        let known_only = BankClusters {
            centroids: Some(Tensor::from_slice(&[1.0f32, 0.0]).view([1, 2])),
            floors: Some(Tensor::from_slice(&[0.5f32])),
        };
        assert_eq!(Vec::<bool>::try_from(known_only.ambiguous(&rows).unwrap()).unwrap(), vec![false; 3]);
        assert!(BankClusters::default().ambiguous(&rows).is_none());
        let route = |ambiguous| Vec::<i64>::try_from(clusters.route(&rows, ambiguous).unwrap()).unwrap();
        assert_eq!(route(Ambiguous::Known), vec![0, 0, 1]);
        assert_eq!(route(Ambiguous::Abstain), vec![ABSTAIN, 0, 1]);
        assert_eq!(route(Ambiguous::Novel), vec![1, 0, 1]);
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
