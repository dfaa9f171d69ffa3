//! Published novel cluster ids that keep their meaning across model versions and restarts.
//!
//! The unlabelled head's outputs are not identities: a split, a re-estimated number of clusters
//! or plain training can move a category from one output to another. The trainer therefore keeps
//! a set of unlabelled windows and, at every new version, compares what the previous version
//! published for them with what the new one decides. An output that takes over most of a
//! published id's windows inherits that id (one to one, by the largest overlaps); an output
//! whose windows match no id gets an id never given out before. Ids are never reused, so
//! `novel-7` means one category for the whole life of a deployment (the map is checkpointed).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::eval::metrics::hungarian;
use crate::model::Input;
use crate::rng::SplitMix64;

/// The published id of each unlabelled-head output, and the next id never given out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterIds {
    /// `(output, id)` pairs, one per output that has an id.
    outputs: Vec<(i64, u64)>,
    next: u64,
}

impl ClusterIds {
    /// The published id of `output`, if it has one.
    pub fn id(&self, output: i64) -> Option<u64> {
        self.outputs.iter().find(|(o, _)| *o == output).map(|&(_, id)| id)
    }

    /// The published id of `output`, or the output itself for one without an id (a model whose
    /// trainer never published a version: its outputs are the ids).
    pub fn published(&self, output: i64) -> u64 {
        self.id(output).unwrap_or(output as u64)
    }

    /// Gives each output in `active` that has no id yet a fresh one, in output order.
    pub fn cover(&mut self, active: &[i64]) {
        for &output in active {
            if self.id(output).is_none() {
                let id = self.fresh();
                self.outputs.push((output, id));
            }
        }
        self.outputs.sort_unstable();
    }

    fn fresh(&mut self) -> u64 {
        let id = self.next;
        self.next += 1;
        id
    }

    /// Moves ids to the outputs that now hold their windows. `before[i]` is the id window `i`
    /// was published with at the previous version (`None`: a known class, or not seen then);
    /// `now[i]` is the output the new version gives it (`None`: a known class). Outputs in
    /// `active` keep, inherit or get an id; ids of outputs no longer in use stay retired.
    pub fn carry(&mut self, before: &[Option<u64>], now: &[Option<i64>], active: &[i64]) {
        let mut overlap: BTreeMap<(i64, u64), usize> = BTreeMap::new();
        let mut had: BTreeMap<u64, usize> = BTreeMap::new();
        for (b, n) in before.iter().zip(now) {
            if let Some(id) = b {
                *had.entry(*id).or_default() += 1;
            }
            if let (Some(id), Some(output)) = (b, n) {
                *overlap.entry((*output, *id)).or_default() += 1;
            }
        }
        // Windows of an output that had an id before.
        let held = |output: i64| overlap.iter().filter(|((o, _), _)| *o == output).map(|(_, &n)| n).sum::<usize>();
        let outputs: Vec<i64> = active.to_vec();
        let ids: Vec<u64> = had.keys().copied().collect();
        let mut next: BTreeMap<i64, u64> = BTreeMap::new();
        if !outputs.is_empty() && !ids.is_empty() {
            // Maximise the total overlap: one row per output, one column per id (padded so that
            // there are at least as many columns as rows).
            let width = ids.len().max(outputs.len());
            let cost: Vec<Vec<f64>> = outputs
                .iter()
                .map(|&o| {
                    (0..width)
                        .map(|c| ids.get(c).map_or(0.0, |&id| -(overlap.get(&(o, id)).copied().unwrap_or(0) as f64)))
                        .collect()
                })
                .collect();
            for (row, column) in hungarian(&cost).into_iter().enumerate() {
                let (output, Some(&id)) = (outputs[row], ids.get(column)) else { continue };
                let shared = overlap.get(&(output, id)).copied().unwrap_or(0);
                // A real inheritance: most of the smaller side moved across.
                let smaller = held(output).min(had[&id]);
                if shared >= 2 && 2 * shared >= smaller {
                    next.insert(output, id);
                }
            }
        }
        let taken: BTreeSet<u64> = next.values().copied().collect();
        for &output in &outputs {
            if next.contains_key(&output) {
                continue;
            }
            // An output that inherited nothing keeps its own id when no other output took it and
            // its windows do not mostly come from other ids (a class absent for a while keeps
            // its cluster); otherwise it holds new content and gets a new id.
            let own = self.id(output).filter(|id| !taken.contains(id));
            let from_others: usize =
                overlap.iter().filter(|((o, id), _)| *o == output && Some(*id) != own).map(|(_, &n)| n).sum();
            let from_own = own.map_or(0, |id| overlap.get(&(output, id)).copied().unwrap_or(0));
            let id = match own {
                Some(id) if from_others <= from_own || from_others < 2 => id,
                _ => self.fresh(),
            };
            next.insert(output, id);
        }
        self.outputs = next.into_iter().collect();
    }
}

/// The windows ids are carried on: a sample of the unlabelled stream of which an eighth is
/// replaced at every version, so that categories arriving later are in it, with the id each
/// window was published with at the last version.
pub struct IdentitySet {
    windows: Option<Input>,
    published: Vec<Option<u64>>,
    capacity: usize,
}

impl IdentitySet {
    pub fn new(capacity: usize) -> Self {
        Self { windows: None, published: Vec::new(), capacity: capacity.max(1) }
    }

    /// How many new windows the next `refresh` takes: enough to fill the set, then an eighth.
    pub fn wanted(&self) -> usize {
        if self.published.len() < self.capacity {
            self.capacity - self.published.len()
        } else {
            (self.capacity / 8).max(1)
        }
    }

    /// Adds `fresh` windows, or puts them in place of windows drawn at random once full; the
    /// windows put in have no published id yet.
    pub fn refresh(&mut self, fresh: Input, rng: &mut SplitMix64) {
        let _guard = tch::no_grad_guard();
        let windows = match self.windows.take() {
            None => fresh,
            Some(held) if (held.len() as usize) < self.capacity => {
                let room = (self.capacity - held.len() as usize) as i64;
                held.cat(&fresh.narrow(room.min(fresh.len())))
            }
            Some(held) => {
                for row in 0..fresh.len() {
                    let at = rng.below(self.capacity) as i64;
                    for (into, from) in [(&held.frames, &fresh.frames), (&held.mel, &fresh.mel)] {
                        if let (Some(into), Some(from)) = (into, from) {
                            into.narrow(0, at, 1).copy_(&from.narrow(0, row, 1));
                        }
                    }
                    self.published[at as usize] = None;
                }
                held
            }
        };
        self.published.resize(windows.len() as usize, None);
        self.windows = Some(windows);
    }

    /// The windows, as one batch.
    pub fn windows(&self) -> Option<Input> {
        let view = |t: &Option<tch::Tensor>| t.as_ref().map(tch::Tensor::shallow_clone);
        self.windows.as_ref().map(|w| Input { frames: view(&w.frames), mel: view(&w.mel) })
    }

    /// Carries `ids` to a new version whose decisions on the windows are `now` (the novel
    /// output of each window, `None` for a known class), with `active` its outputs in use, and
    /// records the ids the version publishes for them.
    pub fn advance(&mut self, ids: &mut ClusterIds, now: &[Option<i64>], active: &[i64]) {
        if self.published.iter().any(Option::is_some) {
            ids.carry(&self.published, now, active);
        }
        ids.cover(active);
        self.published = now.iter().map(|o| o.map(|o| ids.published(o))).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` windows published as `id`.
    fn windows(n: usize, id: Option<u64>) -> Vec<Option<u64>> {
        vec![id; n]
    }

    #[test]
    fn outputs_get_fresh_ids_in_order_and_keep_them() {
        let mut ids = ClusterIds::default();
        ids.cover(&[0, 1, 2]);
        assert_eq!((ids.id(0), ids.id(1), ids.id(2)), (Some(0), Some(1), Some(2)));
        ids.cover(&[0, 1, 2, 4]);
        assert_eq!(ids.id(4), Some(3), "a later output gets the next id");
        assert_eq!(ids.published(9), 9, "an output without an id is published as itself");
    }

    /// The head swaps what outputs 0 and 1 hold: the published ids follow the windows.
    #[test]
    fn ids_follow_their_windows_when_outputs_permute() {
        let mut ids = ClusterIds::default();
        ids.cover(&[0, 1, 2]);
        let before = [windows(10, Some(0)), windows(8, Some(1)), windows(6, Some(2)), windows(5, None)].concat();
        let now = [vec![Some(1); 10], vec![Some(0); 8], vec![Some(2); 6], vec![None; 5]].concat();
        ids.carry(&before, &now, &[0, 1, 2]);
        assert_eq!((ids.id(1), ids.id(0), ids.id(2)), (Some(0), Some(1), Some(2)));
    }

    /// Output 1 gives up its category to output 3 and takes a new one: the category keeps its
    /// id on output 3, and output 1's new content gets an id never used before.
    #[test]
    fn new_content_never_reuses_an_id() {
        let mut ids = ClusterIds::default();
        ids.cover(&[0, 1, 3]);
        let before = [windows(10, Some(0)), windows(10, Some(1)), windows(6, None)].concat();
        let now = [vec![Some(0); 10], vec![Some(3); 10], vec![Some(1); 6]].concat();
        ids.carry(&before, &now, &[0, 1, 3]);
        assert_eq!(ids.id(3), Some(1), "the category moved to output 3 with its id");
        assert_eq!(ids.id(1), Some(3), "output 1's new windows (known before) get the next fresh id");
        ids.cover(&[0, 1, 3, 4]);
        assert_eq!(ids.id(4), Some(4));
    }

    /// A category absent from the compared windows keeps its output and its id.
    #[test]
    fn an_absent_category_keeps_its_id() {
        let mut ids = ClusterIds::default();
        ids.cover(&[0, 1]);
        let before = windows(10, Some(0));
        let now = vec![Some(0); 10];
        ids.carry(&before, &now, &[0, 1]);
        assert_eq!((ids.id(0), ids.id(1)), (Some(0), Some(1)));
    }

    /// Two categories merged into one output: the larger keeps the id, the other id retires.
    #[test]
    fn a_merge_keeps_one_id_and_retires_the_other() {
        let mut ids = ClusterIds::default();
        ids.cover(&[0, 1]);
        let before = [windows(10, Some(0)), windows(4, Some(1))].concat();
        let now = vec![Some(0); 14];
        ids.carry(&before, &now, &[0]);
        assert_eq!(ids.id(0), Some(0));
        assert_eq!(ids.id(1), None, "an output no longer in use has no id");
        ids.cover(&[0, 1]);
        assert_eq!(ids.id(1), Some(2), "a retired id is not given out again");
    }

    #[test]
    fn round_trips_through_json() {
        let mut ids = ClusterIds::default();
        ids.cover(&[2, 5]);
        let text = serde_json::to_string(&ids).unwrap();
        assert_eq!(serde_json::from_str::<ClusterIds>(&text).unwrap(), ids);
    }
}
