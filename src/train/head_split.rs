//! Reviving dead outputs of the unlabelled head (`train.clusters.head_min_share`): two classes
//! merged under one output beside a dead one is where the pairwise loss gets stuck, since a dead
//! output's softmax passes it almost no gradient. A split hands the merged windows two outputs,
//! which the loss then pulls apart by class.

use tch::{nn, Kind, Tensor};

use super::adam::Adam;
use super::kmeans::{Lloyd, Metric, Update};
use crate::config::TrainConfig;

/// Weight of the newest batch in the moving average of the unlabelled head's output shares is
/// `1 − SHARE_DECAY` (about 50 steps of memory).
const SHARE_DECAY: f64 = 0.98;
/// Batches the moving average must have seen before it can call an output dead.
const SHARE_WARMUP: u64 = 50;
/// Steps after a split before the next: the split outputs need time to take their halves.
const SPLIT_COOLDOWN: u64 = 100;
/// Logit margin between the two split outputs at the means of their halves.
const SPLIT_MARGIN: f64 = 2.0;

/// The unlabelled head's output shares over recent batches, and the splits made so far.
#[derive(Debug, Default)]
pub struct HeadSplitter {
    /// Moving average of the share of unlabelled windows the head gives each output, and how
    /// many batches it has seen since the start or restart.
    share: Option<(Tensor, u64)>,
    /// Step of the last split.
    last_split: Option<u64>,
    splits: u64,
}

/// The variables a split rewrites: the unlabelled head's rows in the online and momentum
/// models, and their moments in the optimiser.
pub struct Weights<'a> {
    pub online: &'a nn::VarStore,
    pub momentum: &'a nn::VarStore,
    pub optimizer: &'a mut Adam,
}

impl HeadSplitter {
    /// How many splits there have been.
    pub fn splits(&self) -> u64 {
        self.splits
    }

    /// Follows the share of unlabelled windows (`z` `[B, D]`, head `logits` `[B, C_u]`) each
    /// output of the unlabelled head takes; once ramped up, an output whose share has fallen
    /// below `head_min_share` of an even share is re-initialised to take half of the largest
    /// output: the windows the largest takes are split in two by 2-means on their features, and
    /// the two outputs' rows become the largest's row plus and minus the direction between the
    /// halves.
    ///
    /// `logits` has a column for each output in use, `ids` names them; outputs not in use
    /// count neither as dead nor as largest.
    pub fn observe(
        &mut self,
        config: &TrainConfig,
        step: u64,
        (z, logits, ids): (&Tensor, &Tensor, &[i64]),
        outputs: i64,
        weights: Weights,
    ) {
        let _guard = tch::no_grad_guard();
        let columns = logits.argmax(1, false);
        let assignment = Tensor::from_slice(ids).to(columns.device()).index_select(0, &columns);
        let shares = self.follow(&assignment, outputs);
        if step < config.schedule.rampup_steps || !self.settled(step) {
            return;
        }
        let order = |a: &&i64, b: &&i64| shares[**a as usize].total_cmp(&shares[**b as usize]);
        let in_use = ids.len() as f64;
        let (dead, largest) = match (ids.iter().min_by(order), ids.iter().max_by(order)) {
            (Some(&dead), Some(&largest)) if shares[dead as usize] * in_use < config.clusters.head_min_share => {
                (dead, largest)
            }
            _ => return,
        };
        let members = z.detach().index_select(0, &assignment.eq(largest).nonzero().squeeze_dim(1));
        let Some(halves) = two_means(&members) else {
            return;
        };
        split(dead, largest, &halves, weights);
        let half = shares[largest as usize] / 2.0;
        if let Some((average, _)) = &mut self.share {
            let _ = average.get(dead).fill_(half);
            let _ = average.get(largest).fill_(half);
        }
        tracing::info!(step, dead, largest, "re-initialised a dead output of the unlabelled head to split the largest");
        self.last_split = Some(step);
        self.splits += 1;
    }

    /// The moving average of each output's share of the unlabelled windows, once it has seen a
    /// batch.
    pub fn shares(&self) -> Option<Vec<f64>> {
        let (average, _) = self.share.as_ref()?;
        Vec::<f64>::try_from(average.to_kind(Kind::Double).to(tch::Device::Cpu)).ok()
    }

    /// Adds a batch's `assignment` `[B]` (of `outputs` outputs) to the moving average of the
    /// shares; the average, on the host.
    fn follow(&mut self, assignment: &Tensor, outputs: i64) -> Vec<f64> {
        let share = assignment.one_hot(outputs).to_kind(Kind::Float).mean_dim(0, false, Kind::Float);
        let (average, seen) = match &self.share {
            Some((previous, seen)) => (previous * SHARE_DECAY + share * (1.0 - SHARE_DECAY), seen + 1),
            None => (share, 1),
        };
        let shares = Vec::<f64>::try_from(average.to_kind(Kind::Double)).expect("shares");
        self.share = Some((average, seen));
        shares
    }

    /// Whether the average spans enough batches (also after a restart from a checkpoint) for
    /// one output's absence from a batch or two not to count as dead, and the last split is
    /// long enough ago.
    fn settled(&self, step: u64) -> bool {
        let seen = self.share.as_ref().map_or(0, |(_, seen)| *seen);
        seen >= SHARE_WARMUP && self.last_split.is_none_or(|last| step >= last + SPLIT_COOLDOWN)
    }
}

/// Re-initialises output `dead` and the `largest` so that their logits differ by
/// ±[`SPLIT_MARGIN`] at the means of the `halves` (first and second) of the largest's windows;
/// the momentum model takes the same rows and the optimiser forgets their moments.
fn split(dead: i64, largest: i64, halves: &(Tensor, Tensor), weights: Weights) {
    let (first, second) = halves;
    let direction = first - second;
    let middle = (first + second) / 2.0;
    let scale = SPLIT_MARGIN / direction.square().sum(Kind::Float).double_value(&[]).max(1e-12);
    let (weight_step, bias_step) = (&direction * scale, (&direction * &middle).sum(Kind::Float) * scale);
    let online = weights.online.variables();
    let (weight, bias) = (&online["novel.weight"], &online["novel.bias"]);
    let (row, offset) = (weight.get(largest).copy(), bias.get(largest).copy());
    weight.get(dead).copy_(&(&row + &weight_step));
    weight.get(largest).copy_(&(&row - &weight_step));
    bias.get(dead).copy_(&(&offset - &bias_step));
    bias.get(largest).copy_(&(&offset + &bias_step));
    let momentum = weights.momentum.variables();
    for name in ["novel.weight", "novel.bias"] {
        for r in [dead, largest] {
            momentum[name].get(r).copy_(&online[name].get(r));
        }
        weights.optimizer.reset_rows(name, &[dead, largest]);
    }
}

/// 2-means by cosine similarity: ten assignments, the last of which gives the halves.
const TWO_MEANS: Lloyd =
    Lloyd { metric: Metric::Cosine, updates: 9, until_stable: false, update: Update::Apart, min_share: 0.0 };

/// Means of the two groups 2-means (by cosine similarity) finds among the rows of `x` `[N, D]`,
/// started from the row least like the mean and the row least like that one; `None` when
/// there are fewer than 4 rows or a group ends empty.
fn two_means(x: &Tensor) -> Option<(Tensor, Tensor)> {
    if x.size()[0] < 4 {
        return None;
    }
    let unit = crate::model::l2_normalize(x);
    let least_like = |c: &Tensor| unit.get(unit.matmul(c).argmin(0, false).int64_value(&[]));
    let start = least_like(&unit.mean_dim(0, false, Kind::Float));
    let halves = TWO_MEANS.run(&unit, Tensor::stack(&[least_like(&start), start], 0))?.assignment;
    // The means of the features themselves (not of their directions).
    let mean = |half: i64| x.index_select(0, &halves.eq(half).nonzero().squeeze_dim(1)).mean_dim(0, false, Kind::Float);
    Some((mean(0), mean(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn two_means_finds_two_directions() {
        let _rng = crate::rng_lock();
        let opts = (Kind::Float, Device::Cpu);
        let near = |axis: i64| {
            let x = Tensor::randn([5, 3], opts) * 0.1;
            let _ = x.narrow(1, axis, 1).g_add_scalar_(3.0);
            x
        };
        let x = Tensor::cat(&[near(0), near(1)], 0);
        let (a, b) = two_means(&x).unwrap();
        let (a, b) = (Vec::<f32>::try_from(a).unwrap(), Vec::<f32>::try_from(b).unwrap());
        let (x_axis, y_axis) = if a[0] > a[1] { (a, b) } else { (b, a) };
        assert!(x_axis[0] > 2.5 && x_axis[1].abs() < 0.5 && y_axis[1] > 2.5 && y_axis[0].abs() < 0.5);
        assert!(two_means(&Tensor::ones([6, 3], opts)).is_none(), "identical rows have no second group");
        assert!(two_means(&x.narrow(0, 0, 3)).is_none(), "too few rows");
    }
}
