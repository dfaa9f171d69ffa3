//! The report page: an overview of the run, its accuracy and stability charts, and one section
//! per cluster.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write;

use super::exemplars::{MediaSource, Sheets};
use crate::config::DecodeConfig;
use crate::sink::{Assignment, Kind, ModelRecord};
use crate::tools::charts::{accuracy_svg, size_svg, stability_svg};
use crate::tools::score::{first_publications, ScoreReport};
use crate::tools::TopicRecord;

/// How much the report shows.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// Exemplar windows per cluster.
    pub exemplars: usize,
    /// Frames shown per exemplar window, evenly spaced across it.
    pub frames: usize,
    /// Height of the exemplar frames, in pixels.
    pub thumb_height: u32,
    /// Bars of each cluster's size-over-time chart.
    pub bins: usize,
    /// Title of the page.
    pub title: String,
    /// Shows a progress bar (per cluster) on stderr.
    pub progress: bool,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            exemplars: 6,
            frames: 3,
            thumb_height: 96,
            bins: 24,
            title: "novelstream report".into(),
            progress: false,
        }
    }
}

/// What the report is made from.
pub struct ReportInput<'a> {
    /// The assignments topic's records, with their publish times.
    pub records: &'a [TopicRecord],
    /// The model record of the clusters topic, for the stability chart.
    pub model: Option<&'a ModelRecord>,
    /// The truth of the streamed clips: `score`'s report and each segment's class.
    pub score: Option<&'a ScoreReport>,
    pub truth: Option<&'a HashMap<String, &'a str>>,
    /// How the daemon cut segments into windows (frames are re-decoded larger for the sheet).
    pub decode: &'a DecodeConfig,
}

/// Counts of what went into a report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportStats {
    /// Distinct windows published, and the clusters they fall in.
    pub windows: usize,
    pub clusters: usize,
    /// Exemplar images and audio clips on the page.
    pub images: usize,
    pub audio_clips: usize,
    /// Exemplars whose media could not be fetched or decoded (named on the page).
    pub missing_media: usize,
}

/// The windows the daemon put in one cluster (or known class), with their publish times.
struct Cluster<'a> {
    name: &'a str,
    kind: Kind,
    windows: Vec<(&'a Assignment, i64)>,
}

/// Renders the page. `media` returns the bytes of a segment's media (or why it cannot).
pub fn render(input: &ReportInput, options: &ReportOptions, media: MediaSource) -> (String, ReportStats) {
    let (assignments, _) = first_publications(input.records);
    let span = match (assignments.first(), assignments.last()) {
        (Some(first), Some(last)) => (first.1, last.1.max(first.1 + 1)),
        _ => (0, 1),
    };
    let clusters = clusters(&assignments);
    let mut stats = ReportStats { windows: assignments.len(), clusters: clusters.len(), ..Default::default() };
    let mut html = String::new();
    let title = escape(&options.title);
    let _ = write!(
        html,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title><style>{STYLE}</style></head><body><h1>{title}</h1>"
    );
    overview(&mut html, &assignments, &clusters, span);
    if let Some(score) = input.score {
        accuracy(&mut html, score, input.model);
    }
    if let Some(model) = input.model.filter(|m| !m.stability.is_empty()) {
        let _ = write!(
            html,
            "<h2>Cluster stability</h2><p>Fraction of the trainer's fixed replay windows whose novel cluster changed when a new model version replaced the previous one (latest: version {}).</p><figure>{}</figure>",
            model.model_version,
            stability_svg(model)
        );
    }
    let mut sheets = Sheets::new(input.decode, options, media);
    html.push_str("<h2>Clusters</h2>");
    let bar = crate::eval::progress_bar(clusters.len() as u64, "report", options.progress, "clusters");
    for cluster in &clusters {
        bar.inc(1);
        section(&mut html, cluster, input.truth, span, options.bins, stats.windows);
        sheets.draw(&mut html, &cluster.windows, &mut stats);
        html.push_str("</section>");
    }
    bar.finish_and_clear();
    // Lets a headless browser (and the tests) confirm every image decoded.
    html.push_str(
        "<script>window.addEventListener('load', () => { const images = [...document.images]; \
         document.body.dataset.images = images.length; \
         document.body.dataset.imagesLoaded = images.filter(i => i.complete && i.naturalWidth > 0).length; });</script></body></html>",
    );
    (html, stats)
}

/// The windows by cluster: discovered clusters first, largest first; then the known classes by
/// name.
fn clusters(assignments: &[(Assignment, i64)]) -> Vec<Cluster<'_>> {
    let mut by_name: BTreeMap<&str, Cluster> = BTreeMap::new();
    for (a, t) in assignments {
        by_name
            .entry(&a.cluster)
            .or_insert_with(|| Cluster { name: &a.cluster, kind: a.kind, windows: Vec::new() })
            .windows
            .push((a, *t));
    }
    let mut clusters: Vec<Cluster> = by_name.into_values().collect();
    clusters.sort_by(|x, y| {
        (x.kind == Kind::Known)
            .cmp(&(y.kind == Kind::Known))
            .then(y.windows.len().cmp(&x.windows.len()))
            .then(x.name.cmp(y.name))
    });
    clusters
}

/// One sentence on the run: windows, segments, its length, model versions and clusters.
fn overview(html: &mut String, assignments: &[(Assignment, i64)], clusters: &[Cluster], (t0, t1): (i64, i64)) {
    let novel = clusters.iter().filter(|c| c.kind == Kind::Novel).count();
    let versions: HashSet<u64> = assignments.iter().map(|(a, _)| a.model_version).collect();
    let segments: HashSet<&str> = assignments.iter().map(|(a, _)| a.segment_id.as_str()).collect();
    let _ = write!(
        html,
        "<p class=\"overview\">{} windows of {} segments published over {}, by {} model version{}: {} discovered cluster{} and {} known class{}.</p>",
        assignments.len(),
        segments.len(),
        escape(&humantime::format_duration(std::time::Duration::from_secs(((t1 - t0) / 1000).max(0) as u64)).to_string()),
        versions.len(),
        if versions.len() == 1 { "" } else { "s" },
        novel,
        if novel == 1 { "" } else { "s" },
        clusters.len() - novel,
        if clusters.len() - novel == 1 { "" } else { "es" },
    );
}

/// The score against the truth: the open world's All / Old / New over the unlabelled windows
/// (when the input topic said which were unlabelled) with the number of new categories the
/// model estimated, then the task-aware numbers and the accuracy-over-time curve.
fn accuracy(html: &mut String, score: &ScoreReport, model: Option<&ModelRecord>) {
    html.push_str("<h2>Accuracy against the truth</h2>");
    if let Some(world) = score.open_world.as_ref().filter(|w| w.windows > 0) {
        let (a, t) = (&world.accuracy, &world.last_third);
        let _ = write!(
            html,
            "<p class=\"open-world\">Over the {} unlabelled windows: <b>All {:.1}%, Old {:.1}%, New {:.1}%</b> (known classes and discovered clusters matched to the truth together); over the last third All {:.1}%, Old {:.1}%, New {:.1}%.",
            world.windows,
            100.0 * a.all,
            100.0 * a.old,
            100.0 * a.new,
            100.0 * t.all,
            100.0 * t.old,
            100.0 * t.new,
        );
        if let Some(model) = model {
            let _ = write!(
                html,
                " New categories estimated by the model (version {}): <b>{}</b>; present among the last third's unlabelled windows: {}.",
                model.model_version,
                model.novel_clusters.len(),
                world.novel_classes_last_third
            );
        }
        html.push_str("</p>");
    }
    let _ = write!(
        html,
        "<p>Task-aware: novel-class accuracy {:.1}% over the run, {:.1}% over its second half (NMI {:.3}, ARI {:.3}, {} novel windows); known-class accuracy {:.1}% over {} windows.</p><figure>{}</figure>",
        100.0 * score.novel_accuracy,
        100.0 * score.last_half_novel_accuracy,
        score.novel_nmi,
        score.novel_ari,
        score.novel_windows,
        100.0 * score.known_accuracy,
        score.known_windows,
        accuracy_svg(score)
    );
}

/// Opens a cluster's section: its heading, its majority class (with the truth) and its size
/// over the run (from `t0` to `t1`, in `bins` bars). `total` is the run's window count.
fn section(
    html: &mut String,
    cluster: &Cluster,
    truth: Option<&HashMap<String, &str>>,
    (t0, t1): (i64, i64),
    bins: usize,
    total: usize,
) {
    let size = cluster.windows.len();
    let (first, last) = (cluster.windows[0].1, cluster.windows[size - 1].1);
    let _ = write!(
        html,
        "<section class=\"cluster\" id=\"{id}\"><h3>{name} <small>{kind} · {size} windows ({share:.1}%) · first {first} · last {last}</small></h3>",
        id = escape(cluster.name),
        name = escape(cluster.name),
        kind = if cluster.kind == Kind::Novel { "discovered" } else { "known class" },
        share = 100.0 * size as f64 / total.max(1) as f64,
        first = clock(first),
        last = clock(last),
    );
    if let Some(truth) = truth {
        let mut classes: BTreeMap<&str, usize> = BTreeMap::new();
        for (a, _) in &cluster.windows {
            if let Some(class) = truth.get(&a.segment_id) {
                *classes.entry(class).or_default() += 1;
            }
        }
        let total: usize = classes.values().sum();
        if let Some((class, count)) = classes.iter().max_by_key(|(c, n)| (**n, std::cmp::Reverse(**c))) {
            let _ = write!(
                html,
                "<p>Truth: mostly <b>{}</b> ({:.0}% of {} windows with a known truth).</p>",
                escape(class),
                100.0 * *count as f64 / total as f64,
                total
            );
        }
    }
    let _ = write!(html, "<figure>{}</figure>", size_svg(&cluster.windows, t0, t1, bins));
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222;max-width:1100px}\
h3 small{font-weight:normal;color:#666;font-size:.8em}.cluster{border-top:1px solid #ccc;padding-top:.5em}\
.sheet{display:flex;flex-wrap:wrap;gap:12px}.exemplar{max-width:340px}.exemplar img{image-rendering:pixelated;border:1px solid #999}\
.caption{font-size:.75em;color:#555;margin:.2em 0;word-break:break-all}.missing{color:#a00}audio{height:28px;width:220px}";

/// `HH:MM:SS` UTC of a millisecond timestamp.
fn clock(ms: i64) -> String {
    let s = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02} UTC", s / 3600, s / 60 % 60, s % 60)
}

/// Text made safe for HTML: what came from the topics is not trusted markup.
pub(super) fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::super::MediaError;
    use super::*;
    use crate::tools::testing::assignment;

    /// Without media the page still lists every cluster, says why exemplars are missing, and
    /// escapes what came from the topic.
    #[test]
    fn clusters_sizes_truth_and_missing_media() {
        let records = vec![
            assignment("a", Kind::Novel, "novel-1", 0.9, 1, 1_000),
            assignment("b", Kind::Novel, "novel-1", 0.8, 2, 2_000),
            assignment("b", Kind::Novel, "novel-1", 0.8, 2, 2_500),
            assignment("c<x>", Kind::Novel, "novel-0", 0.7, 2, 3_000),
            assignment("d", Kind::Known, "cat", 0.99, 2, 4_000),
        ];
        let truth: HashMap<String, &str> =
            [("a", "5"), ("b", "5"), ("c<x>", "6")].into_iter().map(|(s, c)| (s.to_owned(), c)).collect();
        let decode = DecodeConfig::default();
        let input = ReportInput { records: &records, model: None, score: None, truth: Some(&truth), decode: &decode };
        let gone = |s: &str| Err(MediaError::NotOnTopic { segment_id: s.to_owned(), topic: "in".into() });
        let (html, stats) = render(&input, &ReportOptions::default(), &gone);
        assert_eq!((stats.windows, stats.clusters, stats.images, stats.missing_media), (4, 3, 0, 4));
        let order: Vec<usize> =
            ["id=\"novel-1\"", "id=\"novel-0\"", "id=\"cat\""].iter().map(|id| html.find(id).unwrap()).collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "discovered clusters by size, then known classes");
        assert!(html.contains("mostly <b>5</b> (100% of 2 windows"));
        assert!(
            html.contains("media unavailable: segment c&lt;x&gt; is no longer on topic in") && !html.contains("c<x>")
        );
    }

    /// The open world's All / Old / New over the unlabelled windows, and the model's estimate
    /// of the number of new categories, head the accuracy section; a mixed cluster lowers New.
    #[test]
    fn open_world_accuracy_and_the_estimate() {
        use crate::tools::score::tests::{manifest, record};
        use crate::tools::score::{score, Sent};
        // A labelled segment of class 0 makes 0 a known class; the scored windows are unlabelled.
        let sent: HashMap<String, Sent> = ["labelled", "k0", "n5a", "n5b", "n6a", "n6b"]
            .map(|s| (s.to_owned(), Sent { time_ms: 0, label: (s == "labelled").then(|| "0".to_owned()) }))
            .into();
        let model = ModelRecord {
            schema: String::new(),
            model_version: 7,
            novel_clusters: vec!["novel-0".into(), "novel-1".into()],
            stability: vec![],
        };
        let page = |n6a: &str| {
            let records = vec![
                record("k0", Kind::Known, "0", 7, 1),
                record("n5a", Kind::Novel, "novel-1", 7, 2),
                record("n5b", Kind::Novel, "novel-1", 7, 3),
                record("n6a", Kind::Novel, n6a, 7, 4),
                record("n6b", Kind::Novel, "novel-0", 7, 5),
            ];
            let report = score(&records, &manifest(), Some("test"), 2, Some(&sent), &[]);
            let decode = DecodeConfig::default();
            let input = ReportInput {
                records: &records,
                model: Some(&model),
                score: Some(&report),
                truth: None,
                decode: &decode,
            };
            render(&input, &ReportOptions::default(), &|_| Ok(Vec::new())).0
        };
        let separated = page("novel-0");
        assert!(
            separated.contains("Over the 5 unlabelled windows: <b>All 100.0%, Old 100.0%, New 100.0%</b>"),
            "{separated}"
        );
        assert!(separated.contains("estimated by the model (version 7): <b>2</b>"));
        let mixed = page("novel-1");
        assert!(mixed.contains("<b>All 80.0%, Old 100.0%, New 75.0%</b>"), "{mixed}");
    }
}
