//! `novelstream report`: one self-contained HTML page about what the daemon discovered. Per
//! cluster: its size and span, its size over time, a contact sheet of exemplar windows (frames
//! decoded from the segments' media, with the window's audio to play), and, when the truth of
//! the streamed clips is given, its majority class; for the run: the accuracy-over-time curve
//! and the stability of clusters across model versions. Images and audio are embedded as data
//! URIs, so the file can be mailed or archived on its own.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write;

use base64::Engine;

use crate::config::DecodeConfig;
use crate::decode::{decode_segment, Window};
use crate::score::{accuracy_svg, ScoreReport};
use crate::sink::{Assignment, Kind, ModelRecord};

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
    /// Assignment payloads with their publish times (ms since the epoch), as read from the topic.
    pub records: &'a [(Vec<u8>, i64)],
    /// The model record of the clusters topic, for the stability chart.
    pub model: Option<&'a ModelRecord>,
    /// The truth of the streamed clips: `score`'s report and each segment's class.
    pub score: Option<&'a ScoreReport>,
    pub truth: Option<&'a HashMap<String, String>>,
    /// How the daemon cut segments into windows (frames are re-decoded larger for the sheet).
    pub decode: &'a DecodeConfig,
}

/// Counts of what went into a report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportStats {
    pub windows: usize,
    pub clusters: usize,
    pub images: usize,
    pub audio_clips: usize,
    /// Exemplars whose media could not be fetched or decoded (named on the page).
    pub missing_media: usize,
}

struct Cluster<'a> {
    name: &'a str,
    kind: Kind,
    windows: Vec<(&'a Assignment, i64)>,
}

/// Renders the page. `media` returns the bytes of a segment's media (or why it cannot).
pub fn render(
    input: &ReportInput,
    options: &ReportOptions,
    media: &dyn Fn(&str) -> Result<Vec<u8>, String>,
) -> (String, ReportStats) {
    let mut assignments: Vec<(Assignment, i64)> = input
        .records
        .iter()
        .filter_map(|(p, t)| serde_json::from_slice::<Assignment>(p).ok().map(|a| (a, *t)))
        .collect();
    assignments.sort_by_key(|(_, t)| *t);
    let mut seen = HashSet::new();
    assignments.retain(|(a, _)| seen.insert((a.segment_id.clone(), a.window)));
    let (t0, t1) = match (assignments.first(), assignments.last()) {
        (Some(first), Some(last)) => (first.1, last.1.max(first.1 + 1)),
        _ => (0, 1),
    };

    let mut by_name: BTreeMap<&str, Cluster> = BTreeMap::new();
    for (a, t) in &assignments {
        by_name
            .entry(&a.cluster)
            .or_insert_with(|| Cluster { name: &a.cluster, kind: a.kind, windows: Vec::new() })
            .windows
            .push((a, *t));
    }
    let mut clusters: Vec<Cluster> = by_name.into_values().collect();
    // Discovered clusters first, largest first; then the known classes by name.
    clusters.sort_by(|x, y| {
        (x.kind == Kind::Known)
            .cmp(&(y.kind == Kind::Known))
            .then(y.windows.len().cmp(&x.windows.len()))
            .then(x.name.cmp(y.name))
    });

    let mut stats = ReportStats { windows: assignments.len(), clusters: clusters.len(), ..Default::default() };
    let mut html = String::new();
    let title = escape(&options.title);
    let _ = write!(
        html,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title><style>{STYLE}</style></head><body><h1>{title}</h1>"
    );
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
    if let Some(score) = input.score {
        let _ = write!(
            html,
            "<h2>Accuracy against the truth</h2><p>Novel-class accuracy {:.1}% over the run, {:.1}% over its second half (NMI {:.3}, ARI {:.3}, {} novel windows); known-class accuracy {:.1}% over {} windows.</p><figure>{}</figure>",
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
    if let Some(model) = input.model.filter(|m| !m.stability.is_empty()) {
        let _ = write!(
            html,
            "<h2>Cluster stability</h2><p>Fraction of the trainer's fixed replay windows whose novel cluster changed when a new model version replaced the previous one (latest: version {}).</p><figure>{}</figure>",
            model.model_version,
            stability_svg(model)
        );
    }

    let mut decoded: HashMap<String, Result<Vec<Window>, String>> = HashMap::new();
    let thumb = thumb_config(input.decode, options);
    html.push_str("<h2>Clusters</h2>");
    let bar = crate::eval::progress_bar(clusters.len() as u64, "report", options.progress, "clusters");
    for cluster in &clusters {
        bar.inc(1);
        let size = cluster.windows.len();
        let (first, last) = (cluster.windows[0].1, cluster.windows[size - 1].1);
        let _ = write!(
            html,
            "<section class=\"cluster\" id=\"{id}\"><h3>{name} <small>{kind} · {size} windows ({share:.1}%) · first {first} · last {last}</small></h3>",
            id = escape(cluster.name),
            name = escape(cluster.name),
            kind = if cluster.kind == Kind::Novel { "discovered" } else { "known class" },
            share = 100.0 * size as f64 / assignments.len().max(1) as f64,
            first = clock(first),
            last = clock(last),
        );
        if let Some(truth) = input.truth {
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
        let _ = write!(html, "<figure>{}</figure>", size_svg(&cluster.windows, t0, t1, options.bins));

        // The most confident windows of the newest model version that made any, one per segment.
        let mut candidates = cluster.windows.clone();
        candidates.sort_by(|(x, _), (y, _)| {
            y.model_version.cmp(&x.model_version).then(y.confidence.total_cmp(&x.confidence))
        });
        let mut used = HashSet::new();
        html.push_str("<div class=\"sheet\">");
        for (a, _) in candidates.into_iter().filter(|(a, _)| used.insert(a.segment_id.clone())).take(options.exemplars)
        {
            let windows = decoded.entry(a.segment_id.clone()).or_insert_with(|| {
                media(&a.segment_id).and_then(|bytes| decode_segment(bytes, &thumb).map_err(|e| e.to_string()))
            });
            let caption = format!(
                "{} · {} · {:.1}–{:.1} s · confidence {:.2} · v{}",
                a.stream_id,
                a.segment_id,
                a.start_ms as f64 / 1000.0,
                a.end_ms as f64 / 1000.0,
                a.confidence,
                a.model_version
            );
            html.push_str("<div class=\"exemplar\">");
            match windows.as_ref().map(|w| w.iter().find(|w| w.index == a.window)) {
                Ok(Some(window)) => {
                    let png = strip_png(window, &thumb);
                    let _ = write!(
                        html,
                        "<img alt=\"{alt}\" width=\"{w}\" height=\"{h}\" src=\"data:image/png;base64,{data}\">",
                        alt = escape(&caption),
                        w = png.1,
                        h = png.2,
                        data = base64::engine::general_purpose::STANDARD.encode(&png.0)
                    );
                    stats.images += 1;
                    if window.audio.iter().any(|s| *s != 0.0) {
                        let wav =
                            base64::engine::general_purpose::STANDARD.encode(wav(&window.audio, thumb.sample_rate));
                        let _ = write!(
                            html,
                            "<div><audio controls preload=\"none\" src=\"data:audio/wav;base64,{wav}\"></audio> <a download=\"{name}.wav\" href=\"data:audio/wav;base64,{wav}\">audio</a></div>",
                            name = escape(&format!("{}-{}", a.segment_id.replace('/', "_"), a.window))
                        );
                        stats.audio_clips += 1;
                    }
                }
                Ok(None) => {
                    stats.missing_media += 1;
                    let _ = write!(html, "<p class=\"missing\">window {} is not in the decoded media</p>", a.window);
                }
                Err(why) => {
                    stats.missing_media += 1;
                    let _ = write!(html, "<p class=\"missing\">media unavailable: {}</p>", escape(why));
                }
            }
            let _ = write!(html, "<p class=\"caption\">{}</p></div>", escape(&caption));
        }
        html.push_str("</div></section>");
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

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222;max-width:1100px}\
h3 small{font-weight:normal;color:#666;font-size:.8em}.cluster{border-top:1px solid #ccc;padding-top:.5em}\
.sheet{display:flex;flex-wrap:wrap;gap:12px}.exemplar{max-width:340px}.exemplar img{image-rendering:pixelated;border:1px solid #999}\
.caption{font-size:.75em;color:#555;margin:.2em 0;word-break:break-all}.missing{color:#a00}audio{height:28px;width:220px}";

/// The decode settings for exemplar frames: the daemon's windows, at thumbnail size.
fn thumb_config(decode: &DecodeConfig, options: &ReportOptions) -> DecodeConfig {
    let height = options.thumb_height.max(8) & !1;
    let width = ((u64::from(height) * u64::from(decode.width) / u64::from(decode.height.max(1))) as u32).max(8) & !1;
    DecodeConfig { frames: options.frames.max(1), height, width, ..decode.clone() }
}

/// The window's frames side by side, 2 pixels apart, as PNG bytes (with its width and height).
fn strip_png(window: &Window, config: &DecodeConfig) -> (Vec<u8>, u32, u32) {
    let (h, w, t) = (config.height as usize, config.width as usize, config.frames);
    let gap = 2;
    let width = t * w + (t - 1) * gap;
    let mut pixels = vec![255u8; width * h * 3];
    for f in 0..t {
        for y in 0..h {
            let from = (f * h + y) * w * 3;
            let to = (y * width + f * (w + gap)) * 3;
            pixels[to..to + w * 3].copy_from_slice(&window.frames[from..from + w * 3]);
        }
    }
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, width as u32, h as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().expect("PNG header into memory");
        writer.write_image_data(&pixels).expect("PNG data into memory");
    }
    (bytes, width as u32, h as u32)
}

/// Mono f32 samples as a 16-bit PCM WAV file.
fn wav(samples: &[f32], rate: u32) -> Vec<u8> {
    let data = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + data as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&((s.clamp(-1.0, 1.0) * 32767.0).round() as i16).to_le_bytes());
    }
    out
}

/// A cluster's windows per time bin over the run, as a small bar chart.
fn size_svg(windows: &[(&Assignment, i64)], t0: i64, t1: i64, bins: usize) -> String {
    let bins = bins.max(1);
    let mut counts = vec![0usize; bins];
    for (_, t) in windows {
        let bin = ((t - t0) as f64 / (t1 - t0) as f64 * bins as f64) as usize;
        counts[bin.min(bins - 1)] += 1;
    }
    let (width, height) = (480.0, 60.0);
    let top = *counts.iter().max().unwrap_or(&1) as f64;
    let bar = width / bins as f64;
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" viewBox="0 0 {width} {h}" font-family="sans-serif" font-size="10"><rect width="{width}" height="{height}" fill="#f7f7f7"/>"##,
        h = height + 14.0
    );
    for (i, c) in counts.iter().enumerate() {
        let bh = height * *c as f64 / top.max(1.0);
        let _ = write!(
            svg,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#4c78a8"><title>{} windows</title></rect>"##,
            i as f64 * bar + 1.0,
            height - bh,
            (bar - 2.0).max(1.0),
            bh,
            c
        );
    }
    let _ = write!(
        svg,
        r#"<text x="0" y="{y}">size over the run (peak {top} windows per bar)</text></svg>"#,
        y = height + 12.0
    );
    svg
}

/// The changed fraction per model version, as a line chart.
fn stability_svg(model: &ModelRecord) -> String {
    let (width, height, margin) = (640.0, 240.0, 44.0);
    let points = &model.stability;
    let (v0, v1) = (points[0].model_version as f64, points[points.len() - 1].model_version as f64);
    let x = |v: f64| margin + (width - 2.0 * margin) * if v1 > v0 { (v - v0) / (v1 - v0) } else { 0.5 };
    let y = |f: f64| height - margin - (height - 2.0 * margin) * f;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12"><rect width="{width}" height="{height}" fill="white"/>"#
    );
    for tick in [0.0, 0.5, 1.0] {
        let _ = write!(
            svg,
            r##"<line x1="{margin}" x2="{r}" y1="{yy}" y2="{yy}" stroke="#ddd"/><text x="{t}" y="{ty}" text-anchor="end">{p:.0}%</text>"##,
            r = width - margin,
            yy = y(tick),
            t = margin - 6.0,
            ty = y(tick) + 4.0,
            p = tick * 100.0
        );
    }
    let line: Vec<String> = points
        .iter()
        .map(|p| format!("{:.1},{:.1}", x(p.model_version as f64), y(p.changed_fraction.clamp(0.0, 1.0))))
        .collect();
    let _ = write!(
        svg,
        r##"<polyline fill="none" stroke="#e45756" stroke-width="2" points="{}"/><text x="{cx}" y="18" text-anchor="middle">Replay windows that changed cluster, per model version ({v0}–{v1})</text><text x="{cx}" y="{by}" text-anchor="middle">model version →</text></svg>"##,
        line.join(" "),
        cx = width / 2.0,
        by = height - 10.0
    );
    svg
}

/// `HH:MM:SS` UTC of a millisecond timestamp.
fn clock(ms: i64) -> String {
    let s = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02} UTC", s / 3600, s / 60 % 60, s % 60)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(segment: &str, cluster: &str, kind: Kind, confidence: f64, version: u64) -> Vec<u8> {
        serde_json::to_vec(&Assignment {
            schema: crate::sink::ASSIGNMENT_SCHEMA.into(),
            stream_id: "cam".into(),
            segment_id: segment.into(),
            seq: 0,
            window: 0,
            start_ms: 0,
            end_ms: 1000,
            kind,
            cluster: cluster.into(),
            confidence,
            model_version: version,
        })
        .unwrap()
    }

    /// Without media the page still lists every cluster, says why exemplars are missing, and
    /// escapes what came from the topic.
    #[test]
    fn clusters_sizes_truth_and_missing_media() {
        let records = vec![
            (assignment("a", "novel-1", Kind::Novel, 0.9, 1), 1_000),
            (assignment("b", "novel-1", Kind::Novel, 0.8, 2), 2_000),
            (assignment("b", "novel-1", Kind::Novel, 0.8, 2), 2_500),
            (assignment("c<x>", "novel-0", Kind::Novel, 0.7, 2), 3_000),
            (assignment("d", "cat", Kind::Known, 0.99, 2), 4_000),
        ];
        let truth: HashMap<String, String> =
            [("a", "5"), ("b", "5"), ("c<x>", "6")].into_iter().map(|(s, c)| (s.to_owned(), c.to_owned())).collect();
        let decode = DecodeConfig::default();
        let input = ReportInput { records: &records, model: None, score: None, truth: Some(&truth), decode: &decode };
        let (html, stats) = render(&input, &ReportOptions::default(), &|s| Err(format!("no media for {s}")));
        assert_eq!((stats.windows, stats.clusters, stats.images, stats.missing_media), (4, 3, 0, 4));
        let order: Vec<usize> =
            ["id=\"novel-1\"", "id=\"novel-0\"", "id=\"cat\""].iter().map(|id| html.find(id).unwrap()).collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "discovered clusters by size, then known classes");
        assert!(html.contains("mostly <b>5</b> (100% of 2 windows"));
        assert!(html.contains("media unavailable: no media for c&lt;x&gt;") && !html.contains("c<x>"));
    }

    #[test]
    fn wav_header_and_samples() {
        let bytes = wav(&[0.0, 1.0, -1.0, 2.0], 16_000);
        assert_eq!(&bytes[..4], b"RIFF");
        assert_eq!(u32::from_le_bytes(bytes[4..8].try_into().unwrap()), 36 + 8);
        assert_eq!(u32::from_le_bytes(bytes[24..28].try_into().unwrap()), 16_000);
        let samples: Vec<i16> = bytes[44..].chunks(2).map(|c| i16::from_le_bytes([c[0], c[1]])).collect();
        assert_eq!(samples, vec![0, 32767, -32767, 32767]);
    }

    #[test]
    fn strip_places_frames_side_by_side() {
        let config = DecodeConfig { frames: 2, height: 2, width: 2, ..Default::default() };
        let frames: Vec<u8> = (0..24).collect();
        let window = Window { index: 0, start_ms: 0, end_ms: 1000, frames, audio: Vec::new() };
        let (bytes, width, height) = strip_png(&window, &config);
        assert_eq!((width, height), (6, 2));
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size()];
        reader.next_frame(&mut pixels).unwrap();
        // Row 0: frame 0's first row, the white gap, frame 1's first row.
        assert_eq!(&pixels[..18], &[0, 1, 2, 3, 4, 5, 255, 255, 255, 255, 255, 255, 12, 13, 14, 15, 16, 17]);
    }
}
