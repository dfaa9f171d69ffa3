//! k-means: one Lloyd loop for its three callers. The eval baselines cluster pixels and
//! features by Euclidean distance ([`kmeans`]); the memory bank's clusters behind the pseudo
//! labels and the 2-means that splits the unlabelled head's largest output cluster unit rows by
//! cosine similarity. What differs between them is a parameter of [`Lloyd`] or of its start, so
//! that each keeps the numbers it always gave.

use tch::{Kind, Tensor};

use crate::model::l2_normalize;

/// How rows are compared with centroids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Squared Euclidean distance; a centroid is the mean of its rows.
    Euclidean,
    /// Cosine similarity of unit rows (the caller normalises them); a centroid is the mean
    /// direction of its rows.
    Cosine,
}

/// How an update computes the centroids from the assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    /// Every cluster at once, from the product of the one-hot assignment with the rows; an
    /// emptied cluster keeps its centroid.
    Together,
    /// Each cluster's rows gathered and averaged on their own; an assignment that leaves a
    /// cluster empty ends the run without a result (head splitting needs both halves). The
    /// centroids equal `Together`'s up to float rounding: kept apart so that splits do not move.
    Apart,
}

/// The settings of one k-means run.
#[derive(Debug, Clone, Copy)]
pub struct Lloyd {
    pub metric: Metric,
    /// Centroid updates at most; each is followed by a new assignment.
    pub updates: usize,
    /// Stop once an update leaves the assignment as it was (it would stay so).
    pub until_stable: bool,
    pub update: Update,
    /// Above 0, each cluster holding less than this share of the rows is moved between updates
    /// (not after the last) onto the farthest row of the largest cluster, to split it: a merged
    /// pair of groups beside a nearly empty cluster is a local optimum that refining alone keeps.
    pub min_share: f64,
}

/// Where a run ended.
#[derive(Debug)]
pub struct Partition {
    /// Total distance of the rows to their nearest centroid (Euclidean) or total similarity
    /// (cosine).
    pub fit: f64,
    /// `[k, D]`.
    pub centroids: Tensor,
    /// `[N]` int64: each row's nearest centroid.
    pub assignment: Tensor,
}

impl Metric {
    /// `[N, k]`: squared distance of each row of `x` to each centroid.
    fn distances(self, x: &Tensor, centroids: &Tensor) -> Tensor {
        match self {
            Metric::Euclidean => {
                let norms = x.pow_tensor_scalar(2).sum_dim_intlist(1, true, Kind::Float);
                let c_norms = centroids.pow_tensor_scalar(2).sum_dim_intlist(1, false, Kind::Float);
                (norms - x.matmul(&centroids.tr()) * 2.0 + c_norms.unsqueeze(0)).clamp_min(0.0)
            }
            // ‖a − b‖² = 2 − 2 a·b for unit vectors.
            Metric::Cosine => (x.matmul(&centroids.tr()) * -2.0 + 2.0).clamp_min(0.0),
        }
    }

    /// `[N]` int64: the nearest centroid of each row of `x`.
    pub fn nearest(self, x: &Tensor, centroids: &Tensor) -> Tensor {
        match self {
            Metric::Euclidean => self.distances(x, centroids).argmin(1, false),
            Metric::Cosine => x.matmul(&centroids.tr()).argmax(1, false),
        }
    }

    /// `[N]`: squared distance of each row of `x` to its nearest centroid.
    fn nearest_distance(self, x: &Tensor, centroids: &Tensor) -> Tensor {
        match self {
            Metric::Euclidean => self.distances(x, centroids).min_dim(1, false).0,
            Metric::Cosine => (x.matmul(&centroids.tr()).amax(1, false) * -2.0 + 2.0).clamp_min(0.0),
        }
    }

    fn fit(self, x: &Tensor, centroids: &Tensor) -> f64 {
        match self {
            Metric::Euclidean => self.distances(x, centroids).min_dim(1, false).0.sum(Kind::Double).double_value(&[]),
            Metric::Cosine => x.matmul(&centroids.tr()).amax(1, false).sum(Kind::Float).double_value(&[]),
        }
    }

    /// The best of `runs`: least total distance, or most total similarity. Ties go to the
    /// earlier run for a distance and to the later for a similarity, as each caller always chose.
    pub fn best(self, runs: impl IntoIterator<Item = Partition>) -> Option<Partition> {
        match self {
            Metric::Euclidean => runs.into_iter().reduce(|best, run| if run.fit < best.fit { run } else { best }),
            Metric::Cosine => runs.into_iter().max_by(|a, b| a.fit.total_cmp(&b.fit)),
        }
    }

    /// Centroids of the groups `assignment` `[N]` makes of the rows of `x`, all at once from
    /// the product of the one-hot assignment with the rows; a group without rows keeps its
    /// `previous` centroid. Also the groups' sizes `[k]` (float).
    pub fn group_centroids(self, x: &Tensor, assignment: &Tensor, previous: &Tensor) -> (Tensor, Tensor) {
        let one_hot = assignment.one_hot(previous.size()[0]).to_kind(Kind::Float);
        let counts = one_hot.sum_dim_intlist(0, false, Kind::Float);
        let sums = one_hot.tr().matmul(x);
        let means = match self {
            Metric::Euclidean => sums.divide(&counts.clamp_min(1.0).unsqueeze(1)),
            // The sum points the mean's way.
            Metric::Cosine => l2_normalize(&sums),
        };
        (means.where_self(&counts.gt(0.0).unsqueeze(1), previous), counts)
    }

    /// Means as centroids: unit vectors for cosine similarity.
    fn centroids(self, means: Tensor) -> Tensor {
        match self {
            Metric::Euclidean => means,
            Metric::Cosine => l2_normalize(&means),
        }
    }

    /// The row of cluster `cluster` (of `assignment`) farthest from its `centroid` `[D]`, as a
    /// `[1]` index.
    fn farthest_member(self, x: &Tensor, centroid: &Tensor, assignment: &Tensor, cluster: i64) -> Tensor {
        let others = assignment.ne(cluster);
        match self {
            Metric::Euclidean => {
                let distance = (x - centroid.unsqueeze(0)).square().sum_dim_intlist(1, false, Kind::Float);
                distance.masked_fill(&others, f64::NEG_INFINITY).argmax(0, true)
            }
            Metric::Cosine => x.matmul(centroid).masked_fill(&others, f64::INFINITY).argmin(0, true),
        }
    }
}

impl Lloyd {
    /// Runs from the centroids `start` `[k, D]` on the rows of `x` `[N, D]`; `None` when an
    /// assignment left a cluster empty under [`Update::Apart`].
    pub fn run(&self, x: &Tensor, start: Tensor) -> Option<Partition> {
        let _guard = tch::no_grad_guard();
        let mut centroids = start;
        let mut assignment = self.metric.nearest(x, &centroids);
        for update in 0..self.updates {
            let counts;
            (centroids, counts) = self.update(x, &assignment, centroids)?;
            if self.min_share > 0.0 && update + 1 < self.updates {
                centroids = self.split_small(x, centroids, &assignment, &counts);
            }
            let next = self.metric.nearest(x, &centroids);
            let stable = self.until_stable && next.ne_tensor(&assignment).any().int64_value(&[]) == 0;
            assignment = next;
            if stable {
                break;
            }
        }
        let k = centroids.size()[0];
        if self.update == Update::Apart && (0..k).any(|c| assignment.eq(c).any().int64_value(&[]) == 0) {
            return None;
        }
        Some(Partition { fit: self.metric.fit(x, &centroids), centroids, assignment })
    }

    /// New centroids from `assignment`, and the clusters' sizes `[k]` (float); `None` under
    /// [`Update::Apart`] when a cluster is empty.
    fn update(&self, x: &Tensor, assignment: &Tensor, centroids: Tensor) -> Option<(Tensor, Tensor)> {
        if self.update == Update::Together {
            return Some(self.metric.group_centroids(x, assignment, &centroids));
        }
        let k = centroids.size()[0];
        let rows: Vec<Tensor> = (0..k).map(|c| assignment.eq(c).nonzero().squeeze_dim(1)).collect();
        if rows.iter().any(|r| r.size()[0] == 0) {
            return None;
        }
        let means: Vec<Tensor> = rows.iter().map(|r| x.index_select(0, r).mean_dim(0, false, Kind::Float)).collect();
        let counts = Tensor::from_slice(&rows.iter().map(|r| r.size()[0] as f32).collect::<Vec<_>>());
        Some((self.metric.centroids(Tensor::stack(&means, 0)), counts.to(x.device())))
    }

    /// Moves each cluster holding less than `min_share` of the rows of `x` onto the farthest
    /// row of the largest cluster. `assignment` and `counts` are the rows' clusters and the
    /// clusters' sizes.
    fn split_small(&self, x: &Tensor, mut centroids: Tensor, assignment: &Tensor, counts: &Tensor) -> Tensor {
        let floor = self.min_share * x.size()[0] as f64;
        let mut sizes = Vec::<f64>::try_from(counts.to_kind(Kind::Double)).expect("counts");
        for small in 0..sizes.len() {
            if sizes[small] >= floor {
                continue;
            }
            let largest = (0..sizes.len()).max_by(|&a, &b| sizes[a].total_cmp(&sizes[b])).expect("k > 0");
            let farthest = self.metric.farthest_member(x, &centroids.get(largest as i64), assignment, largest as i64);
            centroids = centroids.index_copy(0, &Tensor::from_slice(&[small as i64]), &x.index_select(0, &farthest));
            // The largest is now split in two, as far as the next small clusters are concerned.
            let moved = sizes[largest] / 2.0;
            sizes[largest] -= moved;
            sizes[small] += moved;
        }
        centroids
    }
}

/// k-means++ seeding: `k` rows of `x` `[N, D]`, each after the first drawn with probability
/// proportional to its squared distance from the nearest one drawn so far.
pub fn plus_plus(metric: Metric, x: &Tensor, k: i64) -> Tensor {
    let _guard = tch::no_grad_guard();
    let n = x.size()[0];
    let first = Tensor::randint(n, [1], (Kind::Int64, x.device()));
    let mut chosen = x.index_select(0, &first);
    for _ in 1..k {
        // The floor keeps the weights a distribution when every row is already drawn (all 0).
        let next = metric.nearest_distance(x, &chosen).clamp_min(1e-12).multinomial(1, false);
        chosen = Tensor::cat(&[&chosen, &x.index_select(0, &next)], 0);
    }
    chosen
}

/// Euclidean k-means of the rows of `x` `[N, D]` into `k` clusters, the best of `restarts`
/// k-means++ starts, each refined for at most `iterations` updates; the cluster of each row.
/// Seeds the global generator with `seed` first, so the result depends on nothing else.
pub fn kmeans(x: &Tensor, k: i64, restarts: usize, iterations: usize, seed: i64) -> Vec<usize> {
    let _guard = tch::no_grad_guard();
    let x = x.to_kind(Kind::Float);
    assert!(k >= 1 && x.size()[0] >= k, "k-means needs at least k rows");
    tch::manual_seed(seed);
    let metric = Metric::Euclidean;
    let lloyd = Lloyd { metric, updates: iterations, until_stable: true, update: Update::Together, min_share: 0.0 };
    let runs = (0..restarts).filter_map(|_| lloyd.run(&x, plus_plus(metric, &x, k)));
    let best = metric.best(runs).expect("at least one restart");
    Vec::<i64>::try_from(best.assignment).expect("assignments are int64").into_iter().map(|a| a as usize).collect()
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

    /// Two blobs under one centroid beside a centroid far from every row: with a minimum share
    /// the far centroid moves into the merged blobs and the next updates split them, for either
    /// metric.
    #[test]
    fn a_small_cluster_splits_the_largest() {
        let _rng = crate::rng_lock();
        tch::manual_seed(1);
        let opts = (Kind::Float, tch::Device::Cpu);
        let directions = Tensor::eye(4, opts);
        let group = Tensor::arange(90, (Kind::Int64, tch::Device::Cpu)).remainder(3);
        let x = l2_normalize(&(directions.index_select(0, &group) + Tensor::randn([90, 4], opts) * 0.05));
        let start = l2_normalize(&Tensor::stack(
            &[directions.get(0), directions.get(1) + directions.get(2), directions.get(3)],
            0,
        ));
        let truth: Vec<usize> = Vec::<i64>::try_from(&group).unwrap().into_iter().map(|g| g as usize).collect();
        for metric in [Metric::Euclidean, Metric::Cosine] {
            let accuracy = |min_share: f64| {
                let lloyd = Lloyd { metric, updates: 10, until_stable: false, update: Update::Together, min_share };
                let found = lloyd.run(&x, start.copy()).unwrap().assignment;
                let found: Vec<usize> = Vec::<i64>::try_from(found).unwrap().into_iter().map(|a| a as usize).collect();
                cluster_accuracy(&truth, &found)
            };
            assert!(accuracy(0.0) < 0.9, "{metric:?}: refining alone keeps the merge");
            assert_eq!(accuracy(0.1), 1.0, "{metric:?}");
        }
    }

    /// Under `Update::Apart` a start that leaves a cluster without rows gives no result; under
    /// `Update::Together` that cluster keeps its centroid.
    #[test]
    fn an_emptied_cluster_ends_only_an_apart_run() {
        let x = Tensor::from_slice(&[1.0f32, 0.0, 0.9, 0.1, 1.0, 0.05]).view([3, 2]);
        let start = Tensor::from_slice(&[1.0f32, 0.0, -1.0, 0.0]).view([2, 2]);
        let lloyd =
            Lloyd { metric: Metric::Cosine, updates: 3, until_stable: true, update: Update::Apart, min_share: 0.0 };
        assert!(lloyd.run(&l2_normalize(&x), start.copy()).is_none());
        let together = Lloyd { update: Update::Together, ..lloyd }.run(&l2_normalize(&x), start.copy()).unwrap();
        assert_eq!(together.centroids.get(1), Tensor::from_slice(&[-1.0f32, 0.0]));
        assert_eq!(Vec::<i64>::try_from(together.assignment).unwrap(), vec![0, 0, 0]);
    }
}
