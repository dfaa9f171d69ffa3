//! Clustering metrics: accuracy under the best one-to-one matching of clusters to classes
//! (Hungarian algorithm), normalised mutual information and adjusted Rand index.

/// Solves the assignment problem for a `rows × cols` cost matrix (`rows <= cols`), minimising
/// the total cost. Returns, for each row, its column. O(rows² · cols).
pub fn hungarian(cost: &[Vec<f64>]) -> Vec<usize> {
    let n = cost.len();
    if n == 0 {
        return Vec::new();
    }
    let m = cost[0].len();
    assert!(cost.iter().all(|r| r.len() == m), "cost matrix rows differ in length");
    assert!(n <= m, "more rows than columns");
    // Potentials u (rows), v (columns); p[j] = row matched to column j (1-based, 0 = none).
    let (mut u, mut v) = (vec![0.0; n + 1], vec![0.0; m + 1]);
    let (mut p, mut way) = (vec![0usize; m + 1], vec![0usize; m + 1]);
    for i in 1..=n {
        p[0] = i;
        let mut j0 = 0;
        let mut minv = vec![f64::INFINITY; m + 1];
        let mut used = vec![false; m + 1];
        loop {
            used[j0] = true;
            let i0 = p[j0];
            let mut delta = f64::INFINITY;
            let mut j1 = 0;
            for j in 1..=m {
                if !used[j] {
                    let cur = cost[i0 - 1][j - 1] - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=m {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if p[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    let mut assignment = vec![0; n];
    for j in 1..=m {
        if p[j] != 0 {
            assignment[p[j] - 1] = j - 1;
        }
    }
    assignment
}

/// The best one-to-one mapping of predicted clusters to true classes, as (cluster, class)
/// pairs, maximising the number of samples that agree.
pub fn best_matching(truth: &[usize], predicted: &[usize]) -> Vec<(usize, usize)> {
    assert_eq!(truth.len(), predicted.len(), "truth and predictions differ in length");
    if truth.is_empty() {
        return Vec::new();
    }
    let d = 1 + truth.iter().chain(predicted).copied().max().unwrap_or(0);
    let mut counts = vec![vec![0.0; d]; d];
    for (&t, &p) in truth.iter().zip(predicted) {
        counts[p][t] += 1.0;
    }
    let max = truth.len() as f64;
    let cost: Vec<Vec<f64>> = counts.iter().map(|row| row.iter().map(|c| max - c).collect()).collect();
    hungarian(&cost).into_iter().enumerate().collect()
}

/// Clustering accuracy: the fraction of samples whose cluster maps to their class under the
/// best one-to-one matching.
pub fn cluster_accuracy(truth: &[usize], predicted: &[usize]) -> f64 {
    if truth.is_empty() {
        return 0.0;
    }
    let matching = best_matching(truth, predicted);
    let mut map = vec![usize::MAX; matching.len()];
    for (cluster, class) in matching {
        map[cluster] = class;
    }
    let hits = truth.iter().zip(predicted).filter(|(&t, &p)| map[p] == t).count();
    hits as f64 / truth.len() as f64
}

/// Accuracy the way generalised category discovery measures it (Vaze et al., CVPR 2022): one
/// best matching of predicted clusters (known classes and novel clusters alike) to classes over
/// all samples, and the share of samples it gets right among all, among those of `old`
/// (known) classes and among the others.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct GcdAccuracy {
    pub all: f64,
    pub old: f64,
    pub new: f64,
}

/// [`GcdAccuracy`] of `predicted` against `truth`; `old[i]` says whether sample `i` is of a
/// known class. A subset without samples scores 0.
pub fn gcd_accuracy(truth: &[usize], predicted: &[usize], old: &[bool]) -> GcdAccuracy {
    assert_eq!(truth.len(), old.len(), "truth and old flags differ in length");
    let mut map = vec![usize::MAX; 1 + truth.iter().chain(predicted).copied().max().unwrap_or(0)];
    for (cluster, class) in best_matching(truth, predicted) {
        map[cluster] = class;
    }
    let share = |keep: &dyn Fn(bool) -> bool| {
        let (mut hits, mut total) = (0usize, 0usize);
        for ((&t, &p), &o) in truth.iter().zip(predicted).zip(old) {
            if keep(o) {
                total += 1;
                hits += usize::from(map[p] == t);
            }
        }
        if total == 0 {
            0.0
        } else {
            hits as f64 / total as f64
        }
    };
    GcdAccuracy { all: share(&|_| true), old: share(&|o| o), new: share(&|o| !o) }
}

/// Contingency table of `truth` (rows) × `predicted` (columns), with row and column sums.
fn contingency(truth: &[usize], predicted: &[usize]) -> (Vec<Vec<f64>>, Vec<f64>, Vec<f64>) {
    assert_eq!(truth.len(), predicted.len(), "truth and predictions differ in length");
    let rows = 1 + truth.iter().copied().max().unwrap_or(0);
    let cols = 1 + predicted.iter().copied().max().unwrap_or(0);
    let mut table = vec![vec![0.0; cols]; rows];
    for (&t, &p) in truth.iter().zip(predicted) {
        table[t][p] += 1.0;
    }
    let a: Vec<f64> = table.iter().map(|r| r.iter().sum()).collect();
    let b: Vec<f64> = (0..cols).map(|j| table.iter().map(|r| r[j]).sum()).collect();
    (table, a, b)
}

fn entropy(counts: &[f64], n: f64) -> f64 {
    counts.iter().filter(|&&c| c > 0.0).map(|&c| -(c / n) * (c / n).ln()).sum()
}

/// Normalised mutual information, arithmetic-mean normalisation (scikit-learn's default).
pub fn nmi(truth: &[usize], predicted: &[usize]) -> f64 {
    let n = truth.len() as f64;
    if truth.is_empty() {
        return 0.0;
    }
    let (table, a, b) = contingency(truth, predicted);
    let mut mi = 0.0;
    for (i, row) in table.iter().enumerate() {
        for (j, &nij) in row.iter().enumerate() {
            if nij > 0.0 {
                mi += (nij / n) * (n * nij / (a[i] * b[j])).ln();
            }
        }
    }
    let (ha, hb) = (entropy(&a, n), entropy(&b, n));
    if ha == 0.0 && hb == 0.0 {
        return 1.0; // both partitions are a single cluster: identical
    }
    let denom = (ha + hb) / 2.0;
    if denom == 0.0 {
        0.0
    } else {
        (mi / denom).clamp(0.0, 1.0)
    }
}

/// Adjusted Rand index.
pub fn ari(truth: &[usize], predicted: &[usize]) -> f64 {
    let n = truth.len() as f64;
    if truth.len() < 2 {
        return 1.0; // zero or one sample: every partition agrees
    }
    let comb2 = |x: f64| x * (x - 1.0) / 2.0;
    let (table, a, b) = contingency(truth, predicted);
    let index: f64 = table.iter().flatten().map(|&x| comb2(x)).sum();
    let sum_a: f64 = a.iter().map(|&x| comb2(x)).sum();
    let sum_b: f64 = b.iter().map(|&x| comb2(x)).sum();
    let expected = sum_a * sum_b / comb2(n);
    let max = (sum_a + sum_b) / 2.0;
    if (max - expected).abs() < f64::EPSILON {
        return 1.0; // degenerate: both partitions trivial in the same way
    }
    (index - expected) / (max - expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known classes 0 and 1 predicted as themselves, novel classes 2 and 3 as clusters 7 and 5,
    /// one old sample sent to a novel cluster: the matching maps each cluster to its class.
    #[test]
    fn gcd_accuracy_splits_old_and_new() {
        let truth = [0, 0, 1, 1, 2, 2, 3, 3];
        let predicted = [0, 0, 1, 7, 7, 7, 5, 5];
        let old = [true, true, true, true, false, false, false, false];
        let a = gcd_accuracy(&truth, &predicted, &old);
        assert_eq!((a.all, a.old, a.new), (7.0 / 8.0, 3.0 / 4.0, 1.0));
        // One cluster for everything: only the largest class counts.
        let one = gcd_accuracy(&truth, &[0; 8], &old);
        assert_eq!((one.all, one.old, one.new), (2.0 / 8.0, 2.0 / 4.0, 0.0));
    }

    #[derive(serde::Deserialize)]
    struct Case {
        truth: Vec<usize>,
        predicted: Vec<usize>,
        accuracy: f64,
        nmi: f64,
        ari: f64,
    }

    /// Expected values from SciPy's linear_sum_assignment and scikit-learn
    /// (`scripts/metric_cases.py`).
    #[test]
    fn agree_with_scipy_and_scikit_learn() {
        let cases: Vec<Case> = serde_json::from_str(include_str!("../../tests/data/metric_cases.json")).unwrap();
        assert!(cases.len() >= 50);
        for (i, c) in cases.iter().enumerate() {
            let acc = cluster_accuracy(&c.truth, &c.predicted);
            assert!((acc - c.accuracy).abs() < 1e-12, "case {i}: accuracy {acc} vs {}", c.accuracy);
            let nmi = nmi(&c.truth, &c.predicted);
            assert!((nmi - c.nmi).abs() < 1e-9, "case {i}: nmi {nmi} vs {}", c.nmi);
            let ari = ari(&c.truth, &c.predicted);
            assert!((ari - c.ari).abs() < 1e-9, "case {i}: ari {ari} vs {}", c.ari);
        }
    }

    #[test]
    fn worked_by_hand() {
        // Clusters are a relabelling of the classes: perfect on every metric.
        let truth = [0, 0, 1, 1, 2, 2];
        let relabelled = [2, 2, 0, 0, 1, 1];
        assert_eq!(cluster_accuracy(&truth, &relabelled), 1.0);
        assert!((nmi(&truth, &relabelled) - 1.0).abs() < 1e-12);
        assert!((ari(&truth, &relabelled) - 1.0).abs() < 1e-12);
        // One cluster for everything: accuracy is the largest class share.
        assert_eq!(cluster_accuracy(&[0, 0, 0, 1], &[5, 5, 5, 5]), 0.75);
        // Hungarian on a 3x3 matrix: the optimum avoids the greedy first choice.
        let cost = vec![vec![1.0, 2.0, 3.0], vec![2.0, 4.0, 6.0], vec![3.0, 6.0, 9.0]];
        let a = hungarian(&cost);
        let total: f64 = a.iter().enumerate().map(|(i, &j)| cost[i][j]).sum();
        assert_eq!(total, 10.0);
    }
}
