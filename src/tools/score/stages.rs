//! The open world over time: each novel class's arrival and how soon it had a cluster of its
//! own, and All / Old / New per stage of a stream whose novel classes enter in stages.

use std::collections::HashMap;

use serde::Serialize;

use super::open_world::{gcd, Unlabelled};
use crate::eval::metrics::GcdAccuracy;

/// The span over which a class's windows are checked for a cluster of their own.
const BIN_MS: i64 = 60_000;

/// A novel class's arrival among the unlabelled windows.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NovelArrival {
    pub class: String,
    /// Publish time of its first window (ms since the epoch).
    pub first_ms: i64,
    /// Seconds from its first window to the end of the first minute (counted from it) in which
    /// most of its windows went to one novel cluster id that was no other class's most frequent
    /// answer in that minute; `None` when no minute of the run qualifies.
    pub own_cluster_after_s: Option<f64>,
    /// That cluster id.
    pub cluster: Option<String>,
}

/// All / Old / New of one stage: from the first window of a class that enters in it to the
/// first window of a class of the next stage.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OpenWorldStage {
    pub index: usize,
    /// The novel classes that enter in this stage.
    pub classes: Vec<String>,
    pub first_ms: i64,
    pub last_ms: i64,
    pub windows: usize,
    pub accuracy: GcdAccuracy,
    /// Novel classes among the stage's windows, and the novel cluster ids published for them.
    pub novel_classes: usize,
    pub novel_ids: usize,
}

/// The arrival of every novel class among `windows` (in publish order), in order of arrival.
pub(super) fn arrivals(windows: &[Unlabelled]) -> Vec<NovelArrival> {
    let mut first: Vec<(&str, i64)> = Vec::new();
    for w in windows.iter().filter(|w| !w.old) {
        if !first.iter().any(|(c, _)| *c == w.class) {
            first.push((w.class, w.time));
        }
    }
    let end = windows.last().map_or(0, |w| w.time);
    first
        .into_iter()
        .map(|(class, first_ms)| {
            let own = (0..)
                .map(|bin| first_ms + bin * BIN_MS)
                .take_while(|&from| from <= end)
                .find_map(|from| own_cluster(windows, class, from, from + BIN_MS).map(|id| (from + BIN_MS, id)));
            NovelArrival {
                class: class.to_owned(),
                first_ms,
                own_cluster_after_s: own.as_ref().map(|(to, _)| (to - first_ms) as f64 / 1000.0),
                cluster: own.map(|(_, id)| id.to_owned()),
            }
        })
        .collect()
}

/// The novel cluster id most of `class`'s windows published in `[from, to)` went to, when it
/// was no other class's most frequent answer there.
fn own_cluster<'a>(windows: &[Unlabelled<'a>], class: &str, from: i64, to: i64) -> Option<&'a str> {
    let mut answers: HashMap<&str, HashMap<&str, usize>> = HashMap::new();
    for w in windows.iter().filter(|w| (from..to).contains(&w.time)) {
        *answers.entry(w.class).or_default().entry(w.said).or_default() += 1;
    }
    let top =
        |counts: &HashMap<&'a str, usize>| counts.iter().max_by_key(|(said, n)| (**n, *said)).map(|(s, n)| (*s, *n));
    let (id, n) = top(answers.get(class)?)?;
    let total: usize = answers[class].values().sum();
    let mine = id.starts_with("novel-") && 2 * n > total;
    let shared = answers.iter().any(|(c, counts)| *c != class && top(counts).is_some_and(|(other, _)| other == id));
    (mine && !shared).then_some(id)
}

/// All / Old / New per stage of `stages` (the novel classes entering in each; stage 0 starts
/// with the run). A stage none of whose classes appear has no windows and is left out.
pub(super) fn stages(windows: &[Unlabelled], stages: &[Vec<String>]) -> Vec<OpenWorldStage> {
    let first_of = |classes: &[String]| windows.iter().find(|w| classes.iter().any(|c| c == w.class)).map(|w| w.time);
    let starts: Vec<Option<i64>> = stages
        .iter()
        .enumerate()
        .map(|(s, classes)| if s == 0 { windows.first().map(|w| w.time) } else { first_of(classes) })
        .collect();
    let distinct = |values: Vec<&str>| values.into_iter().collect::<std::collections::HashSet<_>>().len();
    (0..stages.len())
        .filter_map(|s| {
            let from = starts[s]?;
            let to = starts[s + 1..].iter().flatten().copied().find(|&t| t > from).unwrap_or(i64::MAX);
            let part: Vec<Unlabelled> = windows.iter().filter(|w| (from..to).contains(&w.time)).copied().collect();
            Some(OpenWorldStage {
                index: s,
                classes: stages[s].clone(),
                first_ms: part.first()?.time,
                last_ms: part.last()?.time,
                windows: part.len(),
                accuracy: gcd(&part),
                novel_classes: distinct(part.iter().filter(|w| !w.old).map(|w| w.class).collect()),
                novel_ids: distinct(part.iter().filter(|w| w.said.starts_with("novel-")).map(|w| w.said).collect()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w<'a>(class: &'a str, said: &'a str, seconds: i64, old: bool) -> Unlabelled<'a> {
        Unlabelled { class, said, time: seconds * 1000, old }
    }

    /// Class 5 arrives at 0 s and has novel-1 to itself from the first minute; class 6 arrives
    /// at 100 s, shares novel-1 with 5 in its first minute and gets novel-2 in its second.
    #[test]
    fn a_class_has_its_own_cluster_from_the_first_minute_it_is_not_shared() {
        let mut windows = vec![w("0", "0", 0, true), w("5", "novel-1", 0, false), w("5", "novel-1", 30, false)];
        windows.extend([w("5", "novel-1", 110, false), w("6", "novel-1", 100, false), w("6", "novel-1", 120, false)]);
        windows.extend([w("6", "novel-2", 170, false), w("6", "novel-2", 200, false), w("5", "novel-1", 190, false)]);
        windows.sort_by_key(|w| w.time);
        let found = arrivals(&windows);
        let summary: Vec<_> =
            found.iter().map(|a| (a.class.as_str(), a.own_cluster_after_s, a.cluster.as_deref())).collect();
        assert_eq!(summary, [("5", Some(60.0), Some("novel-1")), ("6", Some(120.0), Some("novel-2"))]);
    }

    #[test]
    fn a_class_that_only_ever_shares_a_cluster_never_has_its_own() {
        let mut windows = vec![w("5", "novel-0", 0, false), w("6", "novel-0", 1, false), w("6", "novel-0", 2, false)];
        windows.push(w("5", "novel-0", 3, false));
        let found = arrivals(&windows);
        assert_eq!(found[0].own_cluster_after_s, None, "5's windows all went where most of 6's did");
        assert_eq!(found[1].own_cluster_after_s, None);
    }

    /// Stage 1 begins with the first window of 6; its All / Old / New count its windows only.
    #[test]
    fn stages_split_the_run_where_their_classes_first_appear() {
        let windows = vec![
            w("0", "0", 0, true),
            w("5", "novel-0", 1, false),
            w("0", "0", 2, true),
            w("6", "novel-1", 3, false),
            w("5", "novel-1", 4, false),
            w("0", "0", 5, true),
        ];
        let found = stages(&windows, &[vec!["5".into()], vec!["6".into()]]);
        assert_eq!(found.len(), 2);
        assert_eq!((found[0].windows, found[0].first_ms, found[0].last_ms), (3, 0, 2000));
        assert_eq!((found[0].accuracy.all, found[0].novel_classes, found[0].novel_ids), (1.0, 1, 1));
        assert_eq!((found[1].windows, found[1].novel_classes, found[1].novel_ids), (3, 2, 1));
        let a = found[1].accuracy;
        assert!((a.all - 2.0 / 3.0).abs() < 1e-9 && a.old == 1.0 && a.new == 0.5, "5 and 6 shared novel-1: {a:?}");
        assert!(stages(&windows, &[vec!["5".into()], vec!["9".into()]]).len() == 1, "9 never arrived");
    }
}
