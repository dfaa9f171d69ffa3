//! How many novel clusters the unlabelled head uses (`model.novel_clusters = "auto"`): the
//! trainer estimates the number from the bank's keys (`src/train/estimate.rs`) and puts the
//! count of its latest estimates' mean silhouette in use.

use super::Learner;
use crate::train::estimate::{estimate_novel_clusters, mean_estimate};

impl Learner {
    /// Every `train.clusters.estimate_every` steps with `model.novel_clusters = "auto"`:
    /// estimates the number of novel clusters from the banks' keys, and once there are
    /// `train.clusters.estimate_window` estimates, puts in use the count chosen on the mean
    /// silhouette of the latest that many.
    pub(super) fn estimate_novel_clusters(&mut self) {
        let Some(max) = self.auto else {
            return;
        };
        if self.step % self.config.clusters.estimate_every != 0 {
            return;
        }
        let Some((keys, labels)) = self.bank_keys() else {
            return;
        };
        // In the task-aware setting every unlabelled window is novel: the labelled keys say
        // nothing about how many novel clusters there are.
        let (known, keys, labels) = if self.open_world {
            (self.known, keys, labels)
        } else {
            let unlabelled = labels.eq(-1).nonzero().squeeze_dim(1);
            (0, keys.index_select(0, &unlabelled), labels.index_select(0, &unlabelled))
        };
        let started = std::time::Instant::now();
        let tolerance = self.config.clusters.estimate_tolerance;
        let Some(estimate) = estimate_novel_clusters(&keys, &labels, known, max, tolerance) else {
            return;
        };
        let window = self.config.clusters.estimate_window;
        self.estimates.push(estimate);
        if self.estimates.len() > window {
            self.estimates.remove(0);
        }
        let mean = (self.estimates.len() == window).then(|| mean_estimate(&self.estimates, tolerance)).flatten();
        let latest = self.estimates.last().expect("just pushed");
        tracing::info!(
            step = self.step,
            novel = latest.novel,
            mean = mean.as_ref().map(|m| m.novel),
            scores = %latest.scores.iter().map(|(k, s)| format!("{k}:{s:.3}")).collect::<Vec<_>>().join(" "),
            ms = started.elapsed().as_millis() as u64,
            "estimated the number of novel clusters"
        );
        if let Some(mean) = mean {
            self.use_novel_clusters(mean.novel);
            self.estimate = Some(mean);
        }
    }

    /// Puts `n` outputs of the unlabelled head in use: more are the lowest outputs not in use
    /// (the head splitter then gives each a share of the largest), fewer drop the outputs with
    /// the least recent share of the windows.
    fn use_novel_clusters(&mut self, n: i64) {
        let mut active = self.model.active_outputs();
        if active.len() as i64 == n {
            return;
        }
        let outputs = self.model.novel_outputs();
        let unused: Vec<i64> = (0..outputs).filter(|id| !active.contains(id)).collect();
        let missing = (n - active.len() as i64).max(0) as usize;
        active.extend(unused.into_iter().take(missing));
        let shares = self.head.shares().unwrap_or_else(|| vec![0.0; outputs as usize]);
        while active.len() as i64 > n {
            let least =
                (0..active.len()).min_by(|&a, &b| shares[active[a] as usize].total_cmp(&shares[active[b] as usize]));
            active.remove(least.expect("outputs in use"));
        }
        active.sort_unstable();
        tracing::info!(step = self.step, in_use = ?active, "novel clusters in use changed");
        self.model.set_active_outputs(&active);
        self.ema.set_active_outputs(&active);
    }
}
