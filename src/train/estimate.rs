//! How many novel categories the stream holds (`model.novel_clusters = "auto"`), estimated from
//! the memory bank's keys: for each candidate count `k`, semi-supervised spherical k-means — the
//! known classes' centroids start at their labelled keys' mean and those keys stay with their
//! class, as in GCD's estimate (Vaze et al., CVPR 2022) — then the silhouette of the unlabelled
//! keys under that partition scores `k`; the best score wins. Unlabelled keys of known classes
//! join the known centroids, so only clusters the labelled keys do not explain count as novel.

use tch::{Device, Kind, Tensor};

use crate::model::l2_normalize;

/// Unlabelled keys the silhouette is computed on at most (it compares every pair).
const SILHOUETTE_SAMPLE: i64 = 1500;
/// Centroid updates of each k-means run.
const UPDATES: usize = 15;
/// k-means++ starts per candidate count; the best fit is scored.
const STARTS: usize = 2;
/// Unlabelled keys needed before an estimate is made.
const MIN_UNLABELLED: i64 = 100;

/// An estimate and the score of every count tried.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// The estimated number of novel clusters.
    pub novel: i64,
    /// (novel clusters, mean silhouette of the unlabelled keys) for each count tried.
    pub scores: Vec<(i64, f64)>,
}

/// Estimates the number of novel clusters, from 1 (2 without known classes) to `max`, among
/// `keys` `[N, P]` whose `labels` `[N]` are a known class in `0..known` or −1 (unlabelled):
/// the smallest count whose silhouette is within `tolerance` of the best
/// (`train.clusters.estimate_tolerance`; 0: the best, the smaller count on a tie). Splitting a
/// class into its styles can raise the silhouette by less than the noise between neighbouring
/// counts; a tolerance keeps such splits from counting as categories. `None` with too few
/// unlabelled keys. Draws from the global random generator.
pub fn estimate_novel_clusters(
    keys: &Tensor,
    labels: &Tensor,
    known: i64,
    max: i64,
    tolerance: f64,
) -> Option<Estimate> {
    let _guard = tch::no_grad_guard();
    let x = l2_normalize(&keys.detach().to_kind(Kind::Float));
    let labels = labels.to_kind(Kind::Int64);
    let unlabelled = labels.eq(-1).nonzero().squeeze_dim(1);
    let n = unlabelled.size()[0];
    if n < MIN_UNLABELLED {
        return None;
    }
    let (known_centroids, rank) = known_centroids(&x, &labels, known);
    let present = known_centroids.size()[0];
    let sample = unlabelled
        .index_select(0, &Tensor::randperm(n, (Kind::Int64, x.device())).narrow(0, 0, n.min(SILHOUETTE_SAMPLE)));
    let lowest = if present == 0 { 2 } else { 1 };
    let mut scores = Vec::new();
    for k in lowest..=max {
        let runs = (0..STARTS).map(|_| semi_supervised_kmeans(&x, &labels, &rank, &known_centroids, k));
        let Some((_, assignment)) = runs.max_by(|a, b| a.0.total_cmp(&b.0)) else {
            continue;
        };
        let rows = x.index_select(0, &sample);
        scores.push((k, silhouette(&rows, &assignment.index_select(0, &sample), present + k)));
    }
    Some(Estimate { novel: choose(&scores, tolerance)?, scores })
}

/// The estimate of several in a row: the mean silhouette of each count that every one of
/// `estimates` scored, and the count chosen on those means as [`estimate_novel_clusters`]
/// chooses. `None` without estimates.
pub fn mean_estimate(estimates: &[Estimate], tolerance: f64) -> Option<Estimate> {
    let (first, rest) = estimates.split_first()?;
    let scores: Vec<(i64, f64)> = first
        .scores
        .iter()
        .filter_map(|&(k, score)| {
            let others: Option<f64> = rest.iter().map(|e| e.scores.iter().find(|s| s.0 == k).map(|s| s.1)).sum();
            others.map(|others| (k, (score + others) / estimates.len() as f64))
        })
        .collect();
    Some(Estimate { novel: choose(&scores, tolerance)?, scores })
}

/// The smallest count of `scores` (in increasing count) whose score is within `tolerance` of
/// the best.
fn choose(scores: &[(i64, f64)], tolerance: f64) -> Option<i64> {
    let best = scores.iter().map(|s| s.1).max_by(f64::total_cmp)?;
    scores.iter().find(|s| s.1 >= best - tolerance).map(|s| s.0)
}

/// `[C, P]` unit centroids of the labelled keys of each known class present among `labels`,
/// in class order (classes without keys are left out), and each class's rank among those
/// present, `[known + 1]` int64 (the last entry, for −1, unused).
pub(crate) fn known_centroids(x: &Tensor, labels: &Tensor, known: i64) -> (Tensor, Tensor) {
    let mut rank = vec![0i64; known as usize + 1];
    let mut rows = Vec::new();
    for c in 0..known {
        let members = labels.eq(c).nonzero().squeeze_dim(1);
        if members.size()[0] > 0 {
            rank[c as usize] = rows.len() as i64;
            rows.push(x.index_select(0, &members).sum_dim_intlist(0, false, Kind::Float));
        }
    }
    let rank = Tensor::from_slice(&rank).to(x.device());
    if rows.is_empty() {
        return (Tensor::zeros([0, x.size()[1]], (Kind::Float, x.device())), rank);
    }
    (l2_normalize(&Tensor::stack(&rows, 0)), rank)
}

/// Spherical k-means with the known centroids first and `k` more from k-means++ over the
/// unlabelled rows; a labelled row stays in its class's cluster (`rank` of its class). The fit
/// (total similarity of the unlabelled rows to their centroid) and the assignment `[N]`.
fn semi_supervised_kmeans(x: &Tensor, labels: &Tensor, rank: &Tensor, known: &Tensor, k: i64) -> (f64, Tensor) {
    let run = semi_supervised_lloyd(x, labels, rank, plus_plus_after(x, labels, known, k), UPDATES);
    (run.fit, run.assignment)
}

/// Share of a known class's labelled keys allowed below its floor (see [`open_set_nearest`]).
const FLOOR_QUANTILE: f64 = 0.05;

/// Where semi-supervised k-means ended.
pub(crate) struct OpenSetPartition {
    /// Total similarity of the unlabelled rows to their centroid.
    pub fit: f64,
    /// `[N]` each row's cluster.
    pub assignment: Tensor,
    /// `[K, P]`, the known classes' first.
    pub centroids: Tensor,
    /// `[C]` each known class's floor.
    pub floors: Tensor,
}

/// Spherical k-means from `centroids` `[K, P]` over unit rows `x`, a labelled row staying in its
/// class's cluster (`rank` of its class, among the first `C` centroids) and an unlabelled one
/// going by [`open_set_nearest`]: `updates` updates.
pub(crate) fn semi_supervised_lloyd(
    x: &Tensor,
    labels: &Tensor,
    rank: &Tensor,
    mut centroids: Tensor,
    updates: usize,
) -> OpenSetPartition {
    let total = centroids.size()[0];
    let fixed = labels.ge(0);
    let labelled_cluster = rank.index_select(0, &labels.clamp_min(0));
    let present = if fixed.any().int64_value(&[]) == 1 {
        labelled_cluster.masked_select(&fixed).max().int64_value(&[]) + 1
    } else {
        0
    };
    let assign = |centroids: &Tensor| {
        let floors = known_floors(x, &fixed, &labelled_cluster, centroids, present);
        let nearest = open_set_nearest(x, centroids, &floors);
        (nearest.where_self(&fixed.logical_not(), &labelled_cluster), floors)
    };
    let (mut assignment, mut floors) = assign(&centroids);
    for _ in 0..updates {
        let one_hot = assignment.one_hot(total).to_kind(Kind::Float);
        let sums = one_hot.tr().matmul(x);
        let counts = one_hot.sum_dim_intlist(0, false, Kind::Float);
        centroids = l2_normalize(&sums).where_self(&counts.gt(0.0).unsqueeze(1), &centroids);
        (assignment, floors) = assign(&centroids);
    }
    let similarity = x.matmul(&centroids.tr()).gather(1, &assignment.unsqueeze(1), false).squeeze_dim(1);
    let fit = similarity.masked_select(&fixed.logical_not()).sum(Kind::Double).double_value(&[]);
    OpenSetPartition { fit, assignment, centroids, floors }
}

/// `[C]`: for each of the first `present` centroids (the known classes'), the similarity to it
/// that all but [`FLOOR_QUANTILE`] of its class's labelled rows reach.
fn known_floors(x: &Tensor, fixed: &Tensor, labelled_cluster: &Tensor, centroids: &Tensor, present: i64) -> Tensor {
    let floors: Vec<f32> = (0..present)
        .map(|c| {
            let rows = fixed.logical_and(&labelled_cluster.eq(c)).nonzero().squeeze_dim(1);
            if rows.size()[0] == 0 {
                return f32::INFINITY;
            }
            let similarity = x.index_select(0, &rows).matmul(&centroids.get(c));
            similarity.quantile_scalar(FLOOR_QUANTILE, None, false, "lower").double_value(&[]) as f32
        })
        .collect();
    Tensor::from_slice(&floors).to(x.device())
}

/// `[N]`: the cluster of each unit row of `x` by the open-set rule. The first `C` centroids are
/// the known classes' (`floors` `[C]`): a row at least as similar to a known class's centroid as
/// that class's floor goes to the most similar such class; any other row to the most similar of
/// the other (novel) centroids, or to the most similar known class when there are none. A
/// novel cluster thus never takes a window a known class explains, however many novel clusters
/// there are.
pub(crate) fn open_set_nearest(x: &Tensor, centroids: &Tensor, floors: &Tensor) -> Tensor {
    let present = floors.size()[0];
    let similarity = x.matmul(&centroids.tr());
    if present == 0 {
        return similarity.argmax(1, false);
    }
    let known = similarity.narrow(1, 0, present);
    let explains = known.ge_tensor(&floors.unsqueeze(0));
    let best_known = known.masked_fill(&explains.logical_not(), f64::NEG_INFINITY).argmax(1, false);
    let total = similarity.size()[1];
    let otherwise = if total > present {
        similarity.narrow(1, present, total - present).argmax(1, false) + present
    } else {
        known.argmax(1, false)
    };
    best_known.where_self(&explains.any_dim(1, false), &otherwise)
}

/// The `known` centroids followed by `k` unlabelled rows picked by k-means++ (each with
/// probability growing with its squared distance to the nearest centroid so far).
pub(crate) fn plus_plus_after(x: &Tensor, labels: &Tensor, known: &Tensor, k: i64) -> Tensor {
    let pool = x.index_select(0, &labels.eq(-1).nonzero().squeeze_dim(1));
    let mut chosen: Vec<Tensor> = (0..known.size()[0]).map(|c| known.get(c)).collect();
    for _ in 0..k {
        let next = if chosen.is_empty() {
            Tensor::randint(pool.size()[0], [1], (Kind::Int64, x.device()))
        } else {
            let nearest = pool.matmul(&Tensor::stack(&chosen, 0).tr()).amax(1, false);
            let weight = (nearest * -2.0 + 2.0).clamp_min(0.0) + 1e-12;
            weight.multinomial(1, false)
        };
        chosen.push(pool.index_select(0, &next).squeeze_dim(0));
    }
    Tensor::stack(&chosen, 0)
}

/// Mean silhouette of unit `rows` `[n, P]` in clusters `assignment` `[n]` (of `k`), with cosine
/// distance: for each row, `(b − a) / max(a, b)`, `a` its mean distance to the rest of its
/// cluster, `b` the least mean distance to another cluster's rows; 0 for a row alone in its
/// cluster.
pub fn silhouette(rows: &Tensor, assignment: &Tensor, k: i64) -> f64 {
    let _guard = tch::no_grad_guard();
    let distance = (rows.matmul(&rows.tr()) * -1.0 + 1.0).clamp_min(0.0);
    let one_hot = assignment.one_hot(k).to_kind(Kind::Float);
    let sums = distance.matmul(&one_hot);
    let counts = one_hot.sum_dim_intlist(0, false, Kind::Float);
    let own_count = counts.index_select(0, assignment);
    let own_sum = sums.gather(1, &assignment.unsqueeze(1), false).squeeze_dim(1);
    let a = own_sum / (&own_count - 1.0).clamp_min(1.0);
    let others = (&sums / counts.clamp_min(1.0).unsqueeze(0))
        .masked_fill(&one_hot.gt(0.0), f64::INFINITY)
        .masked_fill(&counts.eq(0.0).unsqueeze(0), f64::INFINITY);
    let b = others.amin(1, false);
    let s = (&b - &a) / a.maximum(&b).clamp_min(1e-12);
    // Alone in its cluster, or no other cluster: 0.
    let s = s.where_self(&own_count.gt(1.0).logical_and(&b.isfinite()), &s.zeros_like());
    s.mean(Kind::Double).to(Device::Cpu).double_value(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Silhouettes of a real estimate on the visual keys of the av-digits (`eval`, 5 novel
    /// classes, 1,000 steps) with a bump at 8 as splits of a digit's styles give: the best
    /// count alone over-counts; a tolerance of the neighbouring counts' noise takes 5; one as
    /// large as a whole class's gain (5 against 4) under-counts.
    #[test]
    fn the_tolerance_takes_the_smallest_count_near_the_best() {
        let scores = [(1, 0.217), (2, 0.293), (3, 0.356), (4, 0.396), (5, 0.414), (6, 0.409), (7, 0.407), (8, 0.42)];
        assert_eq!(choose(&scores, 0.0), Some(8));
        assert_eq!(choose(&scores, 0.01), Some(5));
        assert_eq!(choose(&scores, 0.03), Some(4));
        assert_eq!(choose(&[(2, 0.5), (3, 0.5)], 0.0), Some(2), "a tie goes to the smaller count");
        assert_eq!(choose(&[], 0.01), None);
    }

    /// Three estimates in a row of one training run on the visual digits (`eval`, 5 novel
    /// classes, seed 0, steps 1,000, 1,250 and 1,500; counts 1–9 of the 20 tried): alone they
    /// choose 5, 7 and 6 (no two agree); their mean chooses 5. One estimate alone is itself;
    /// counts not every estimate scored are left out.
    #[test]
    fn the_mean_of_neighbouring_estimates_chooses_on_their_mean_silhouette() {
        let estimate = |scores: &[f64]| {
            let scores: Vec<(i64, f64)> = (1..).zip(scores.iter().copied()).collect();
            Estimate { novel: choose(&scores, 0.01).unwrap(), scores }
        };
        let run = [
            estimate(&[0.036, 0.115, 0.160, 0.187, 0.200, 0.207, 0.200, 0.195, 0.199]),
            estimate(&[-0.016, 0.100, 0.155, 0.199, 0.235, 0.234, 0.244, 0.246, 0.227]),
            estimate(&[-0.049, 0.075, 0.120, 0.204, 0.232, 0.245, 0.244, 0.239, 0.234]),
        ];
        assert_eq!(run.iter().map(|e| e.novel).collect::<Vec<_>>(), [5, 7, 6]);
        let mean = mean_estimate(&run, 0.01).unwrap();
        assert_eq!(mean.novel, 5, "{:?}", mean.scores);
        assert!((mean.scores[4].1 - (0.200 + 0.235 + 0.232) / 3.0).abs() < 1e-12);
        assert_eq!(mean_estimate(&run[..1], 0.01).unwrap(), run[0]);
        let shorter = Estimate { novel: 1, scores: vec![(1, 0.3), (2, 0.1)] };
        assert_eq!(mean_estimate(&[run[0].clone(), shorter], 0.0).unwrap().scores.len(), 2);
        assert_eq!(mean_estimate(&[], 0.01), None);
    }

    /// `per` keys around each of the first `groups` axes of 16 dimensions, a little noise.
    fn groups(groups: i64, per: i64) -> (Tensor, Tensor) {
        let opts = (Kind::Float, Device::Cpu);
        let group = Tensor::arange(groups * per, (Kind::Int64, Device::Cpu)).remainder(groups);
        let keys = Tensor::eye(16, opts).narrow(0, 0, groups).index_select(0, &group)
            + Tensor::randn([groups * per, 16], opts) * 0.15;
        (keys, group)
    }

    /// Three known classes (half their keys labelled, half not) and four novel groups: the
    /// estimate is four, and fewer or more clusters score lower.
    #[test]
    fn counts_the_groups_the_labelled_keys_do_not_explain() {
        let _rng = crate::rng_lock();
        tch::manual_seed(1);
        let (keys, group) = groups(7, 120);
        let index = Tensor::arange(group.size()[0], (Kind::Int64, Device::Cpu));
        // Known classes 0-2: even rows labelled. Groups 3-6 novel: never labelled.
        let labelled = group.lt(3).logical_and(&index.remainder(2).eq(0));
        let labels = group.where_self(&labelled, &group.full_like(-1));
        let estimate = estimate_novel_clusters(&keys, &labels, 3, 10, 0.0).unwrap();
        assert_eq!(estimate.novel, 4, "{:?}", estimate.scores);
        assert_eq!(estimate.scores.len(), 10);
        let score = |k: i64| estimate.scores.iter().find(|s| s.0 == k).unwrap().1;
        assert!(score(4) > score(3) && score(4) > score(5), "{:?}", estimate.scores);
    }

    /// Without known classes (the task-aware setting, or none labelled yet) counts start at 2.
    #[test]
    fn without_known_classes() {
        let _rng = crate::rng_lock();
        tch::manual_seed(2);
        let (keys, group) = groups(5, 60);
        let estimate = estimate_novel_clusters(&keys, &group.full_like(-1), 0, 8, 0.0).unwrap();
        assert_eq!(estimate.novel, 5, "{:?}", estimate.scores);
        assert_eq!(estimate.scores[0].0, 2);
        assert!(
            estimate_novel_clusters(&keys.narrow(0, 0, 50), &group.narrow(0, 0, 50).full_like(-1), 0, 8, 0.0).is_none()
        );
    }

    #[test]
    fn silhouette_of_tight_and_of_mixed_clusters() {
        let _rng = crate::rng_lock();
        tch::manual_seed(3);
        let (keys, group) = groups(3, 40);
        let rows = l2_normalize(&keys);
        assert!(silhouette(&rows, &group, 3) > 0.5);
        let shuffled = group.index_select(0, &Tensor::randperm(120, (Kind::Int64, Device::Cpu)));
        assert!(silhouette(&rows, &shuffled, 3).abs() < 0.1);
    }
}
