//! `novelstream score`: what the daemon published, measured against the ground truth of the
//! streamed clips (an av-digits manifest, whose clip paths are the segment ids `produce
//! --manifest` sends). The daemon never sees the truth of unlabelled segments; this reads it
//! only here, after the fact.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

mod open_world;
mod stages;

pub use open_world::{OpenWorldScore, OpenWorldSlice};
pub use stages::{NovelArrival, OpenWorldStage};

use super::manifest::truth_labels;
use super::TopicRecord;
use crate::eval::av_digits::AvManifest;
use crate::eval::metrics::{ari, cluster_accuracy, nmi};
use crate::sink::{Assignment, Kind};

/// Accuracy of one stretch of the run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Slice {
    pub index: usize,
    /// Publish times of the slice's first and last assignment (ms since the epoch).
    pub first_ms: i64,
    pub last_ms: i64,
    pub novel_windows: usize,
    /// Novel-class clustering accuracy within the slice (Hungarian), `None` without novel windows.
    pub novel_accuracy: Option<f64>,
}

/// A segment as it was sent on the input topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    /// Its publish time (ms since the epoch): the first, if repeated.
    pub time_ms: i64,
    /// The label it carried, if any.
    pub label: Option<String>,
}

/// What `score` measured: `score.json`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ScoreReport {
    /// All / Old / New over the unlabelled windows; absent when the input topic was not read.
    pub open_world: Option<OpenWorldScore>,
    /// Distinct (segment, window) pairs published, and the segments they belong to.
    pub windows: usize,
    pub segments: usize,
    /// Task-aware: novel-kind windows of clips with a truth, over the whole run, clustered.
    pub novel_windows: usize,
    pub novel_accuracy: f64,
    pub novel_nmi: f64,
    pub novel_ari: f64,
    /// Novel accuracy over the second half of the run (by publish order).
    pub last_half_novel_accuracy: f64,
    pub known_windows: usize,
    pub known_accuracy: f64,
    pub slices: Vec<Slice>,
    /// How many segments had 1, 2, … windows published.
    pub windows_per_segment: BTreeMap<usize, usize>,
    /// (segment, window) pairs published more than once (at-least-once redelivery).
    pub duplicate_windows: usize,
    /// Segments of the truth (of `split`, when given) with no assignment at all.
    pub missing_segments: usize,
    /// Assignments whose segment is not in the truth.
    pub unknown_segments: usize,
    /// Windows per model version.
    pub model_versions: BTreeMap<u64, usize>,
    /// From each segment's publish time on the input topic to its assignment's publish time.
    pub latency: Option<Latency>,
}

/// Assignment latency percentiles, in milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latency {
    pub windows: usize,
    pub p50_ms: i64,
    pub p95_ms: i64,
    pub p99_ms: i64,
    pub max_ms: i64,
}

impl Latency {
    /// Nearest-rank percentiles of `samples` (ms); `None` when empty.
    pub fn of(mut samples: Vec<i64>) -> Option<Latency> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        Some(Latency {
            windows: samples.len(),
            p50_ms: nearest_rank(&samples, 0.50),
            p95_ms: nearest_rank(&samples, 0.95),
            p99_ms: nearest_rank(&samples, 0.99),
            max_ms: samples[samples.len() - 1],
        })
    }
}

/// The `p` quantile of sorted, non-empty `samples` by nearest rank.
pub fn nearest_rank<T: Copy>(sorted: &[T], p: f64) -> T {
    sorted[((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Every window's first publication in publish order, and how many later publications of an
/// already published (segment, window) there were (at-least-once redelivery). Records that are
/// not assignments are skipped.
pub fn first_publications(records: &[TopicRecord]) -> (Vec<(Assignment, i64)>, usize) {
    let mut assignments: Vec<(Assignment, i64)> = records
        .iter()
        .filter_map(|r| serde_json::from_slice::<Assignment>(&r.payload).ok().map(|a| (a, r.timestamp_ms)))
        .collect();
    assignments.sort_by_key(|(_, t)| *t);
    let published = assignments.len();
    let mut seen = HashSet::new();
    assignments.retain(|(a, _)| seen.insert((a.segment_id.clone(), a.window)));
    let duplicates = published - assignments.len();
    (assignments, duplicates)
}

/// Scores `records` (as read from the assignments topic). Duplicates of a (segment, window)
/// count once, the first time. `sent` (the segments as the input topic holds them) adds the
/// assignment latency and the open world's All / Old / New.
pub fn score(
    records: &[TopicRecord],
    truth: &AvManifest,
    split: Option<&str>,
    slices: usize,
    sent: Option<&HashMap<String, Sent>>,
    novel_stages: &[Vec<String>],
) -> ScoreReport {
    let labels = truth_labels(truth, split);
    let (assignments, duplicate_windows) = first_publications(records);
    let tally = Tally::count(&assignments, &labels, &truth.classes, sent);
    let open_world = sent.map(|sent| open_world::score(&assignments, &labels, sent, slices, novel_stages));
    let (novel_accuracy, novel_nmi, novel_ari) = clustering(&tally.novel);
    let mut windows_per_segment = BTreeMap::new();
    for count in tally.per_segment.values() {
        *windows_per_segment.entry(*count).or_default() += 1;
    }
    let novel = &tally.novel;
    ScoreReport {
        open_world,
        windows: assignments.len(),
        segments: tally.per_segment.len(),
        novel_windows: novel.len(),
        novel_accuracy,
        novel_nmi,
        novel_ari,
        last_half_novel_accuracy: clustering(&novel[novel.len() / 2..]).0,
        known_windows: tally.known_windows,
        known_accuracy: if tally.known_windows > 0 {
            tally.known_right as f64 / tally.known_windows as f64
        } else {
            0.0
        },
        slices: time_slices(novel, slices),
        windows_per_segment,
        duplicate_windows,
        missing_segments: labels.keys().filter(|s| !tally.per_segment.contains_key(*s)).count(),
        unknown_segments: tally.unknown_segments.len(),
        model_versions: tally.model_versions,
        latency: Latency::of(tally.latencies),
    }
}

/// A novel window: its true class (index in the manifest's classes), its cluster and its
/// publish time.
type NovelWindow = (usize, String, i64);

/// What one pass over the windows' first publications counts.
#[derive(Default)]
struct Tally {
    per_segment: HashMap<String, usize>,
    model_versions: BTreeMap<u64, usize>,
    unknown_segments: HashSet<String>,
    /// In publish order.
    novel: Vec<NovelWindow>,
    known_windows: usize,
    known_right: usize,
    latencies: Vec<i64>,
}

impl Tally {
    fn count(
        assignments: &[(Assignment, i64)],
        labels: &HashMap<String, &str>,
        classes: &[String],
        sent: Option<&HashMap<String, Sent>>,
    ) -> Self {
        let mut t = Tally::default();
        for (a, time) in assignments {
            if let Some(at) = sent.and_then(|s| s.get(&a.segment_id)) {
                t.latencies.push(time - at.time_ms);
            }
            *t.per_segment.entry(a.segment_id.clone()).or_default() += 1;
            *t.model_versions.entry(a.model_version).or_default() += 1;
            let Some(label) = labels.get(&a.segment_id) else {
                t.unknown_segments.insert(a.segment_id.clone());
                continue;
            };
            match a.kind {
                Kind::Known => {
                    t.known_windows += 1;
                    t.known_right += usize::from(a.cluster == *label);
                }
                Kind::Novel => {
                    let class = classes.iter().position(|c| c == label).unwrap_or(usize::MAX);
                    t.novel.push((class, a.cluster.clone(), *time));
                }
            }
        }
        t
    }
}

/// Accuracy (Hungarian), NMI and ARI of the clusters against the true classes; zeros when empty.
fn clustering(part: &[NovelWindow]) -> (f64, f64, f64) {
    if part.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let truth: Vec<usize> = part.iter().map(|p| p.0).collect();
    let predicted: Vec<usize> = part
        .iter()
        .map(|p| {
            let next = ids.len();
            *ids.entry(p.1.as_str()).or_insert(next)
        })
        .collect();
    (cluster_accuracy(&truth, &predicted), nmi(&truth, &predicted), ari(&truth, &predicted))
}

/// The novel windows cut into `slices` equal runs in publish order, each with its accuracy.
fn time_slices(novel: &[NovelWindow], slices: usize) -> Vec<Slice> {
    let slices = slices.max(1);
    (0..slices)
        .filter_map(|i| {
            let (from, to) = (i * novel.len() / slices, (i + 1) * novel.len() / slices);
            let part = &novel[from..to];
            (!part.is_empty()).then(|| Slice {
                index: i,
                first_ms: part[0].2,
                last_ms: part[part.len() - 1].2,
                novel_windows: part.len(),
                novel_accuracy: Some(clustering(part).0),
            })
        })
        .collect()
}

/// `score --predictions`: every window's first publication, in publish order, one CSV row each:
/// `published_ms,segment_id,window,true_label,sent_label,prediction,model_version`. The true
/// label is the manifest's (empty for a segment it does not hold), `sent_label` the label the
/// segment carried on the input topic (empty: unlabelled; `sent` unread: empty too), and
/// `prediction` what was published (a known class's name or `novel-<id>`), so that the open
/// world's All / Old / New, per stretch of time, can be recomputed from the file alone.
pub fn predictions_csv(
    records: &[TopicRecord],
    truth: &AvManifest,
    split: Option<&str>,
    sent: Option<&HashMap<String, Sent>>,
) -> String {
    let labels = truth_labels(truth, split);
    let mut csv = String::from("published_ms,segment_id,window,true_label,sent_label,prediction,model_version\n");
    for (a, published) in first_publications(records).0 {
        let sent_label = sent.and_then(|s| s.get(&a.segment_id)?.label.as_deref()).unwrap_or("");
        let row = [
            published.to_string(),
            csv_field(&a.segment_id),
            a.window.to_string(),
            csv_field(labels.get(&a.segment_id).copied().unwrap_or("")),
            csv_field(sent_label),
            csv_field(&a.cluster),
            a.model_version.to_string(),
        ];
        csv.push_str(&row.join(","));
        csv.push('\n');
    }
    csv
}

/// A CSV field: quoted (quotes doubled) when it holds a comma, a quote or a line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// Each segment as the input topic holds it: its publish time (the first, if repeated) and its
/// label.
pub fn sent_segments(records: &[TopicRecord]) -> HashMap<String, Sent> {
    let mut sent = HashMap::new();
    for r in records {
        let header = |name: &str| {
            r.headers.iter().find(|(k, _)| k == name).map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        let (id, label) = match header("segment_id") {
            Some(id) => (Some(id), header("label")),
            None => {
                let value = serde_json::from_slice::<serde_json::Value>(&r.payload).ok();
                let field = |name: &str| value.as_ref().and_then(|v| v.get(name)?.as_str().map(str::to_owned));
                (field("segment_id"), field("label"))
            }
        };
        if let Some(id) = id {
            sent.entry(id).or_insert(Sent { time_ms: r.timestamp_ms, label });
        }
    }
    sent
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::eval::av_digits::AvClip;

    pub(crate) fn manifest() -> AvManifest {
        let clip = |path: &str, label: &str| AvClip {
            path: path.into(),
            split: "test".into(),
            label: label.into(),
            image: 0,
            speech: String::new(),
            language: String::new(),
        };
        AvManifest {
            schema: String::new(),
            seed: 0,
            classes: (0..10).map(|d| d.to_string()).collect(),
            clip_ms: 1000,
            fps: 10,
            width: 64,
            height: 64,
            sample_rate: 16000,
            train_languages: vec![],
            test_languages: vec![],
            clips: vec![
                clip("k0", "0"),
                clip("n5a", "5"),
                clip("n5b", "5"),
                clip("n6a", "6"),
                clip("n6b", "6"),
                clip("lost", "7"),
            ],
        }
    }

    pub(crate) fn record(segment: &str, kind: Kind, cluster: &str, version: u64, time: i64) -> TopicRecord {
        crate::tools::testing::assignment(segment, kind, cluster, 0.9, version, time)
    }

    /// The input topic's segments: (segment id, publish time, label).
    fn sent(segments: &[(&str, i64, Option<&str>)]) -> HashMap<String, Sent> {
        let sent = |&(id, time_ms, label): &(&str, i64, Option<&str>)| {
            (id.to_owned(), Sent { time_ms, label: label.map(str::to_owned) })
        };
        segments.iter().map(sent).collect()
    }

    #[test]
    fn scores_novel_and_known_windows_over_time() {
        let records = vec![
            record("k0", Kind::Known, "0", 0, 1),
            record("n5a", Kind::Novel, "novel-1", 0, 2),
            record("n6a", Kind::Novel, "novel-1", 0, 3),
            record("n5b", Kind::Novel, "novel-0", 1, 4),
            record("n6b", Kind::Novel, "novel-2", 1, 5),
            record("n6b", Kind::Novel, "novel-2", 1, 6),
            record("other", Kind::Novel, "novel-2", 1, 7),
        ];
        let sent = sent(&[("k0", 0, Some("0")), ("n5a", 1, None), ("n6b", 2, None)]);
        let report = score(&records, &manifest(), Some("test"), 2, Some(&sent), &[]);
        assert_eq!(report.windows, 6);
        assert_eq!(report.duplicate_windows, 1);
        assert_eq!(report.unknown_segments, 1);
        assert_eq!(report.missing_segments, 1, "`lost` was never published");
        assert_eq!((report.known_windows, report.known_accuracy), (1, 1.0));
        assert_eq!(report.novel_windows, 4);
        // Clusters 1, 1, 0, 2 for classes 5, 6, 5, 6: the best matching gets 2 of 4 right.
        assert_eq!(report.novel_accuracy, 0.5);
        // The second half (n5b → 0, n6b → 2) is perfectly separated.
        assert_eq!(report.last_half_novel_accuracy, 1.0);
        assert_eq!(report.slices.len(), 2);
        assert_eq!(report.slices[0].novel_accuracy, Some(0.5));
        assert_eq!(report.windows_per_segment, BTreeMap::from([(1, 6)]));
        assert_eq!(report.model_versions, BTreeMap::from([(0, 3), (1, 3)]));
        let svg = crate::tools::charts::accuracy_svg(&report);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>") && svg.contains("<polyline"));
        // Windows of sent segments: 1 - 0, 2 - 1, 5 - 2 (the duplicate at 6 does not count).
        let latency = report.latency.unwrap();
        assert_eq!((latency.windows, latency.p50_ms, latency.max_ms), (3, 1, 3));
    }

    #[test]
    fn predictions_list_each_window_once_with_its_truth_and_the_label_it_carried() {
        let records = vec![
            record("n5a", Kind::Novel, "novel-1", 0, 2),
            record("k0", Kind::Known, "0", 1, 1),
            record("n5a", Kind::Novel, "novel-4", 2, 3),
            record("odd,\"id\"", Kind::Novel, "novel-2", 2, 4),
        ];
        let sent = sent(&[("k0", 0, Some("0")), ("n5a", 0, None)]);
        let csv = predictions_csv(&records, &manifest(), None, Some(&sent));
        assert_eq!(
            csv.lines().collect::<Vec<_>>(),
            [
                "published_ms,segment_id,window,true_label,sent_label,prediction,model_version",
                "1,k0,0,0,0,0,1",
                "2,n5a,0,5,,novel-1,0",
                "4,\"odd,\"\"id\"\"\",0,,,novel-2,2",
            ]
        );
    }

    #[test]
    fn latency_percentiles_by_nearest_rank() {
        let l = Latency::of((1..=200).collect()).unwrap();
        assert_eq!((l.windows, l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms), (200, 100, 190, 198, 200));
        assert_eq!(Latency::of(vec![7]).unwrap().p99_ms, 7);
        assert!(Latency::of(Vec::new()).is_none());
    }

    #[test]
    fn segment_times_from_references_and_inline_headers() {
        let record = |payload: &[u8], headers: Vec<(String, Vec<u8>)>, t| TopicRecord {
            key: String::new(),
            payload: payload.to_vec(),
            headers,
            timestamp_ms: t,
            partition: 0,
        };
        let sent = sent_segments(&[
            record(br#"{"stream_id":"a","segment_id":"s1","seq":0,"uri":"file:///x","label":"3"}"#, vec![], 10),
            record(b"\x00media", vec![("segment_id".into(), b"s2".to_vec())], 20),
            record(br#"{"stream_id":"a","segment_id":"s1","seq":0,"uri":"file:///x"}"#, vec![], 30),
            record(b"not json", vec![], 40),
        ]);
        let s = |time_ms, label: Option<&str>| Sent { time_ms, label: label.map(str::to_owned) };
        assert_eq!(sent, HashMap::from([("s1".to_owned(), s(10, Some("3"))), ("s2".to_owned(), s(20, None))]));
    }
}
