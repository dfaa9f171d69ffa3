//! `score`'s open world: All / Old / New over the windows of segments sent without a label, the
//! way generalised category discovery measures them.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::stages::{self, NovelArrival, OpenWorldStage};
use super::Sent;
use crate::eval::metrics::{gcd_accuracy, GcdAccuracy};
use crate::sink::Assignment;

/// The open world measured the GCD way, over the windows of segments sent without a label.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OpenWorldScore {
    /// Unlabelled windows with a truth.
    pub windows: usize,
    /// Known classes: the labels labelled segments carried.
    pub known_classes: Vec<String>,
    /// All / Old / New over the whole run (one matching of published names and cluster ids to
    /// classes).
    pub accuracy: GcdAccuracy,
    /// The same over the last third of the run (by publish order).
    pub last_third: GcdAccuracy,
    /// Novel classes among the unlabelled windows of the last third, and the novel cluster ids
    /// published for them there.
    pub novel_classes_last_third: usize,
    pub novel_ids_last_third: usize,
    /// All / Old / New of equal runs of the unlabelled windows, in publish order.
    pub slices: Vec<OpenWorldSlice>,
    /// Each novel class's arrival, and how soon it had a cluster of its own.
    pub arrivals: Vec<NovelArrival>,
    /// All / Old / New per stage, when the novel classes' stages were given.
    pub stages: Vec<OpenWorldStage>,
}

/// All / Old / New of one stretch of the run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OpenWorldSlice {
    pub index: usize,
    pub first_ms: i64,
    pub last_ms: i64,
    pub windows: usize,
    pub accuracy: GcdAccuracy,
}

/// An unlabelled window: its true class, what was published for it, when, and whether its
/// class is a known one.
#[derive(Clone, Copy)]
pub(super) struct Unlabelled<'a> {
    pub class: &'a str,
    pub said: &'a str,
    pub time: i64,
    pub old: bool,
}

/// All / Old / New over the windows of segments `sent` without a label, the known classes being
/// the labels the labelled ones carried.
pub(super) fn score(
    assignments: &[(Assignment, i64)],
    labels: &HashMap<String, &str>,
    sent: &HashMap<String, Sent>,
    slices: usize,
    novel_stages: &[Vec<String>],
) -> OpenWorldScore {
    let mut known_classes: Vec<String> = sent.values().filter_map(|s| s.label.clone()).collect();
    known_classes.sort();
    known_classes.dedup();
    let windows: Vec<Unlabelled> = assignments
        .iter()
        .filter(|(a, _)| sent.get(&a.segment_id).is_some_and(|s| s.label.is_none()))
        .filter_map(|(a, time)| {
            let class = *labels.get(&a.segment_id)?;
            Some(Unlabelled { class, said: &a.cluster, time: *time, old: known_classes.iter().any(|k| k == class) })
        })
        .collect();
    let last_third = &windows[windows.len() - windows.len() / 3..];
    let distinct = |values: Vec<&str>| values.into_iter().collect::<HashSet<_>>().len();
    let slices = slices.max(1);
    OpenWorldScore {
        windows: windows.len(),
        accuracy: gcd(&windows),
        last_third: gcd(last_third),
        novel_classes_last_third: distinct(last_third.iter().filter(|w| !w.old).map(|w| w.class).collect()),
        novel_ids_last_third: distinct(
            last_third.iter().filter(|w| w.said.starts_with("novel-")).map(|w| w.said).collect(),
        ),
        slices: (0..slices)
            .filter_map(|i| {
                let part = &windows[i * windows.len() / slices..(i + 1) * windows.len() / slices];
                Some(OpenWorldSlice {
                    index: i,
                    first_ms: part.first()?.time,
                    last_ms: part.last()?.time,
                    windows: part.len(),
                    accuracy: gcd(part),
                })
            })
            .collect(),
        arrivals: stages::arrivals(&windows),
        stages: stages::stages(&windows, novel_stages),
        known_classes,
    }
}

/// [`GcdAccuracy`] of unlabelled windows.
pub(super) fn gcd(windows: &[Unlabelled]) -> GcdAccuracy {
    let number = |names: &mut HashMap<String, usize>, name: &str| {
        let next = names.len();
        *names.entry(name.to_owned()).or_insert(next)
    };
    let (mut classes, mut said) = (HashMap::new(), HashMap::new());
    let truth: Vec<usize> = windows.iter().map(|w| number(&mut classes, w.class)).collect();
    let predicted: Vec<usize> = windows.iter().map(|w| number(&mut said, w.said)).collect();
    let old: Vec<bool> = windows.iter().map(|w| w.old).collect();
    gcd_accuracy(&truth, &predicted, &old)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::super::tests::{manifest, record};
    use super::super::{score, Sent};
    use crate::sink::Kind;

    /// Unlabelled windows of known and novel classes, published as known names and novel ids:
    /// All / Old / New come from one matching over them; labelled segments do not count.
    #[test]
    fn open_world_all_old_new_over_unlabelled_windows() {
        let mut truth = manifest();
        truth.clips.push(crate::eval::av_digits::AvClip {
            path: "k0b".into(),
            label: "0".into(),
            ..truth.clips[0].clone()
        });
        truth.clips.push(crate::eval::av_digits::AvClip {
            path: "k1".into(),
            label: "1".into(),
            ..truth.clips[0].clone()
        });
        let records = vec![
            record("k0", Kind::Known, "0", 0, 1),
            record("k0b", Kind::Known, "0", 0, 2),
            record("k1", Kind::Novel, "novel-3", 0, 3),
            record("n5a", Kind::Novel, "novel-3", 0, 4),
            record("n5b", Kind::Novel, "novel-3", 0, 5),
            record("n6a", Kind::Novel, "novel-1", 0, 6),
            record("n6b", Kind::Known, "0", 0, 7),
        ];
        let sent: HashMap<String, Sent> = ["k0", "k0b", "k1", "n5a", "n5b", "n6a", "n6b"]
            .iter()
            .enumerate()
            .map(|(i, s)| ((*s).to_owned(), Sent { time_ms: i as i64, label: (*s == "k0").then(|| "0".to_owned()) }))
            .collect();
        let world = score(&records, &truth, Some("test"), 2, Some(&sent), &[]).open_world.unwrap();
        assert_eq!(world.known_classes, ["0"]);
        assert_eq!(world.windows, 6, "the labelled k0 does not count");
        // Matching: "0" → 0, novel-3 → 5, novel-1 → 6: k0b, n5a, n5b, n6a right; k1 (class 1,
        // not a label any segment carried, so new) and n6b wrong.
        assert_eq!(world.accuracy.all, 4.0 / 6.0);
        assert_eq!(world.accuracy.old, 1.0);
        assert_eq!(world.accuracy.new, 3.0 / 5.0);
        assert_eq!((world.novel_classes_last_third, world.novel_ids_last_third), (1, 1));
        assert_eq!(world.slices.len(), 2);
        assert!(score(&records, &truth, Some("test"), 2, None, &[]).open_world.is_none());
    }
}
