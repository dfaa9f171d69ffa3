//! The audio-visual digit set (`novelstream dataset av-digits`) from the real MNIST and spoken
//! digits `make setup` fetched, and `novelstream eval` on it in every modality.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use std::path::Path;

use common::{merge_toml, novelstream, Broker, Daemon};
use novelstream::config::{DecodeConfig, KafkaConfig};
use novelstream::decode::decode_segment;
use novelstream::sink::Assignment;
use novelstream::tools::read_topic;

fn data(name: &str) -> std::path::PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data").join(name);
    assert!(path.exists(), "{} missing: run `make setup`", path.display());
    path
}

fn build(out: &Path, seed: &str) -> serde_json::Value {
    build_with(out, seed, &[])
}

/// [`build`] with further `dataset av-digits` flags.
fn build_with(out: &Path, seed: &str, extra: &[&str]) -> serde_json::Value {
    let (mnist, speech) = (data("mnist"), data("spoken-digits"));
    let mut args = vec![
        "dataset",
        "av-digits",
        "--mnist",
        mnist.to_str().unwrap(),
        "--speech",
        speech.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--seed",
        seed,
        "--train-per-class",
        "3",
        "--test-per-class",
        "2",
        "--size",
        "32",
    ];
    args.extend(extra);
    novelstream(&args);
    serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap()
}

/// (true class, answer) of each row of a predictions file.
fn read_answers(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|line| {
            let (_, rest) = line.split_once(',')?;
            let (class, said) = rest.split_once(',')?;
            Some((class.to_owned(), said.to_owned()))
        })
        .collect()
}

fn strings(value: &serde_json::Value) -> BTreeSet<String> {
    value.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
}

/// The daemon config of the scripts (config/av-digits.toml) with `overrides` merged in, table by
/// table, as scripts/toml_merge.py merges them.
fn av_digits_config(overrides: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/av-digits.toml");
    let mut config: toml::Table = std::fs::read_to_string(path).unwrap().parse().unwrap();
    merge_toml(&mut config, overrides.parse().unwrap());
    toml::to_string(&config).unwrap()
}

/// Clustering accuracy of `(class, cluster)` pairs under the best one-to-one map of clusters to
/// classes (what `eval` and `score` report, found here by trying every map: there are few
/// clusters), to check a reported accuracy against the answers it was computed from.
fn matched_accuracy(pairs: &[(String, String)]) -> f64 {
    // hits[cluster][class]: pairs of that cluster and class.
    let mut hits: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    for (class, cluster) in pairs {
        *hits.entry(cluster).or_default().entry(class).or_default() += 1;
    }
    let classes: Vec<&str> =
        pairs.iter().map(|(class, _)| class.as_str()).collect::<BTreeSet<_>>().into_iter().collect();
    let table: Vec<Vec<usize>> =
        hits.values().map(|row| classes.iter().map(|c| row.get(c).copied().unwrap_or(0)).collect()).collect();
    fn best(table: &[Vec<usize>], taken: &mut Vec<bool>) -> usize {
        let Some((row, rest)) = table.split_first() else { return 0 };
        let mut top = best(rest, taken); // this cluster matched to no class
        for class in 0..taken.len() {
            if !taken[class] {
                taken[class] = true;
                top = top.max(row[class] + best(rest, taken));
                taken[class] = false;
            }
        }
        top
    }
    best(&table, &mut vec![false; classes.len()]) as f64 / pairs.len() as f64
}

/// Same seed, same bytes; test speakers are never heard in training; every clip decodes to
/// frames that move and audio that is not silence.
#[test]
fn av_digits_are_repeatable_split_by_speaker_and_decodable() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("c"));
    let manifest = build(&a, "3");
    assert_eq!(manifest, build(&b, "3"));
    assert_ne!(manifest["test_languages"], build(&c, "4")["test_languages"], "another seed, other speakers");

    let clips = manifest["clips"].as_array().unwrap();
    assert_eq!(clips.len(), 10 * 3 + 10 * 2);
    let (train_languages, test_languages) =
        (strings(&manifest["train_languages"]), strings(&manifest["test_languages"]));
    assert!(train_languages.is_disjoint(&test_languages));
    assert_eq!(test_languages.len(), 6);
    let decode = DecodeConfig {
        window: std::time::Duration::from_secs(1),
        hop: std::time::Duration::from_secs(1),
        frames: 2,
        height: 32,
        width: 32,
        ..Default::default()
    };
    for clip in clips {
        let (split, language) = (clip["split"].as_str().unwrap(), clip["language"].as_str().unwrap());
        let languages = if split == "train" { &train_languages } else { &test_languages };
        assert!(languages.contains(language), "{clip}");
        let path = clip["path"].as_str().unwrap();
        let bytes = std::fs::read(a.join(path)).unwrap();
        assert_eq!(bytes, std::fs::read(b.join(path)).unwrap(), "{path} differs between two builds");
        let windows = decode_segment(bytes, &decode).unwrap();
        assert_eq!(windows.len(), 1, "{path}");
        let w = &windows[0];
        assert_ne!(w.frames[..32 * 32 * 3], w.frames[32 * 32 * 3..], "{path}: the digit moves");
        let rms = (w.audio.iter().map(|s| s * s).sum::<f32>() / w.audio.len() as f32).sqrt();
        assert!(rms > 0.01, "{path}: audio RMS {rms}");
    }
    for digit in 0..10 {
        for split in ["train", "test"] {
            assert!(
                clips
                    .iter()
                    .any(|c| c["split"] == split
                        && c["label"].as_str().and_then(|l| l.parse::<i32>().ok()) == Some(digit))
            );
        }
    }
}

/// A few steps of every modality and contrast run and write results that name them; a modality
/// the data does not have, or cross-modal contrast on one modality, is refused clearly.
#[test]
fn eval_runs_on_av_clips_in_every_modality() {
    let dir = tempfile::tempdir().unwrap();
    let (set, seen) = (dir.path().join("set"), dir.path().join("seen"));
    let manifest = build(&set, "0");
    // The seen-language split: the same training clips, test clips in the training languages.
    let seen_manifest = build_with(&seen, "0", &["--seen-languages"]);
    let train_clips = |m: &serde_json::Value| -> Vec<serde_json::Value> {
        m["clips"].as_array().unwrap().iter().filter(|c| c["split"] == "train").cloned().collect()
    };
    assert_eq!(train_clips(&manifest), train_clips(&seen_manifest));
    assert_eq!(seen_manifest["test_languages"], manifest["train_languages"]);
    let config = dir.path().join("small.toml");
    std::fs::write(
        &config,
        "[model]\nchannels = [8, 16]\naudio_channels = [8, 16]\nprojection_dim = 16\n[train]\nbatch_size = 8\nbank_size = 64\n",
    )
    .unwrap();
    let (out, predictions) = (dir.path().join("results.json"), dir.path().join("predictions.csv"));
    let base = [
        "eval",
        "--dataset",
        set.to_str().unwrap(),
        "--device",
        "cpu",
        "--steps",
        "4",
        "--baseline-steps",
        "2",
        "--config",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--predictions",
        predictions.to_str().unwrap(),
    ];
    for (modality, contrast) in [("visual", "within"), ("audio", "within"), ("both", "within"), ("both", "cross")] {
        let mut args = base.to_vec();
        args.extend(["--modality", modality, "--contrast", contrast, "--also-test", seen.to_str().unwrap()]);
        novelstream(&args);
        let results: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(results["model"]["modality"], modality);
        assert_eq!(results["train"]["contrast"], contrast);
        assert_eq!(results["test_samples"], serde_json::json!([10, 10]));
        // Twenty test clips, two of each class, cannot tell a model from chance, and four steps
        // train none: what must hold is that the reported All accuracy is that of the answers
        // in predictions.csv (a known class's name or a novel cluster for every test clip).
        let accuracy = results["method"]["open_world"]["accuracy"]["all"].as_f64().unwrap();
        let answers = read_answers(&predictions);
        assert_eq!(answers.len(), 20, "{modality}/{contrast}: one answer per test clip");
        assert_eq!(accuracy, matched_accuracy(&answers), "{modality}/{contrast}: {answers:?}");
        if contrast == "cross" {
            assert!(results["method"]["final_losses"]["cross_modal"].as_f64().unwrap() > 0.0);
        }
        // The same model on other test data, each view with its own predictions: both
        // modalities are also measured with the audio and with the picture withheld.
        let views: Vec<&str> =
            results["method"]["views"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
        let expected: &[&str] = if modality == "both" {
            &["audio-withheld", "picture-withheld", "seen", "seen-audio-withheld"]
        } else {
            &["seen"]
        };
        assert_eq!(views, expected, "{modality}");
        for (i, view) in views.iter().enumerate() {
            let file = dir.path().join(format!("predictions.{view}.csv"));
            let answers = read_answers(&file);
            assert_eq!(answers.len(), 20, "{view}");
            let all = results["method"]["views"][i]["open_world"]["all"].as_f64().unwrap();
            assert_eq!(all, matched_accuracy(&answers), "{modality}/{view}: {answers:?}");
        }
    }

    let refused = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_novelstream")).args(args).output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let mnist = data("mnist");
    let mut args = base.to_vec();
    args[2] = mnist.to_str().unwrap();
    args.extend(["--modality", "audio"]);
    assert!(refused(&args).contains("no audio"), "MNIST has no audio");
    let mut args = base.to_vec();
    args.extend(["--modality", "visual", "--contrast", "cross"]);
    assert!(refused(&args).contains("needs model.modality = \"both\""), "the flags are validated as the config");
}

/// The audio-visual set streamed through a real broker on several streams, known classes
/// labelled: the daemon (both modalities, training online) publishes every window once, and
/// `score` finds them all and writes its report and curve.
#[test]
fn av_stream_through_the_daemon_is_scored_complete() {
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("set");
    let clips = build(&set, "0")["clips"].clone();
    let broker = Broker::start();
    let config = dir.path().join("daemon.toml");
    let overrides = format!(
        r#"
[kafka]
brokers = "{brokers}"
input_topic = "av.segments"
output_topic = "av.assignments"
dead_letter_topic = "av.dead"
group_id = "av-daemon"
topic_partitions = 2
[source]
file_roots = ["{root}"]
[model]
channels = [8, 16]
audio_channels = [8, 16]
projection_dim = 16
device = "cpu"
[online]
min_unlabelled = 4
snapshot_every = 2
[train]
batch_size = 4
bank_size = 32
[metrics]
listen = "127.0.0.1:0"
"#,
        brokers = broker.address,
        root = set.display()
    );
    std::fs::write(&config, av_digits_config(&overrides)).unwrap();
    let daemon = Daemon::start(&["run", "--config", config.to_str().unwrap()]);
    let manifest = set.join("manifest.json");
    let out = novelstream(&[
        "produce",
        "--brokers",
        &broker.address,
        "--topic",
        "av.segments",
        "--manifest",
        manifest.to_str().unwrap(),
        "--split",
        "test",
        "--known",
        "0-4",
        "--streams",
        "3",
    ]);
    assert_eq!(out.lines().count(), 20, "one line per published clip: {out}");
    assert!(out.lines().all(|l| l.starts_with("test/")), "segment ids are the clips' paths: {out}");
    let (report, svg) = (dir.path().join("score.json"), dir.path().join("accuracy.svg"));
    let out = novelstream(&[
        "score",
        "--brokers",
        &broker.address,
        "--topic",
        "av.assignments",
        "--input-topic",
        "av.segments",
        "--truth",
        manifest.to_str().unwrap(),
        "--split",
        "test",
        "--expect",
        "20",
        "--timeout",
        "120s",
        "--slices",
        "2",
        "--out",
        report.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
    ]);
    let status = daemon.terminate(std::time::Duration::from_secs(30));
    assert!(status.success());
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(report["windows"], 20, "{out}");
    assert_eq!(report["segments"], 20);
    assert_eq!(report["windows_per_segment"], serde_json::json!({"1": 20}));
    assert_eq!(report["missing_segments"], 0);
    assert_eq!(report["duplicate_windows"], 0);
    assert_eq!(report["unknown_segments"], 0);
    // The ten unlabelled clips (of novel classes) are each a known class or a novel cluster in
    // the open world; as in `eval` above, ten windows cannot tell a model from chance: the
    // reported All accuracy must be that of the published answers against the clips' truth.
    assert_eq!(report["open_world"]["windows"], 10);
    assert_eq!(report["open_world"]["known_classes"], serde_json::json!(["0", "1", "2", "3", "4"]));
    let truth: BTreeMap<&str, &str> =
        clips.as_array().unwrap().iter().map(|c| (c["path"].as_str().unwrap(), c["label"].as_str().unwrap())).collect();
    let kafka = KafkaConfig { brokers: broker.address.clone(), ..Default::default() };
    let answers: Vec<(String, String)> = read_topic(&kafka, "av.assignments", 20, std::time::Duration::from_secs(30))
        .unwrap()
        .iter()
        .map(|record| serde_json::from_slice::<Assignment>(&record.payload).unwrap())
        .map(|a| (truth[a.segment_id.as_str()].to_owned(), a.cluster))
        .filter(|(class, _)| class.as_str() >= "5")
        .collect();
    assert_eq!(answers.len(), 10);
    let all = report["open_world"]["accuracy"]["all"].as_f64().unwrap();
    assert!((all - matched_accuracy(&answers)).abs() < 1e-12, "{answers:?}");
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<polyline"));

    // The HTML report from the same topics: every cluster with a contact sheet decoded from the
    // clips themselves, playable audio, the accuracy curve; and Chromium renders it.
    let html_path = dir.path().join("report.html");
    let out = novelstream(&[
        "report",
        "--config",
        config.to_str().unwrap(),
        "--truth",
        manifest.to_str().unwrap(),
        "--split",
        "test",
        "--exemplars",
        "2",
        "--out",
        html_path.to_str().unwrap(),
    ]);
    assert!(out.contains("20 windows in"), "{out}");
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(html.contains("Accuracy against the truth") && html.contains("<polyline"));
    // A section per name published: the 5 known classes, and whatever novel clusters the
    // barely trained joint head gave the unlabelled clips (in the open world it may call them
    // all known classes).
    let published: BTreeSet<String> = read_topic(&kafka, "av.assignments", 20, std::time::Duration::from_secs(30))
        .unwrap()
        .iter()
        .map(|record| serde_json::from_slice::<Assignment>(&record.payload).unwrap().cluster)
        .collect();
    let clusters = html.matches("<section class=\"cluster\"").count();
    assert_eq!(clusters, published.len(), "one section per published cluster: {published:?}");
    assert!(clusters >= 5, "the 5 known classes at least: {published:?}");
    let images = check_report_images(&html, &set);
    assert!(images >= clusters, "at least one exemplar per cluster: {images} images, {clusters} clusters");
    assert_eq!(html.matches("<audio").count(), images, "every exemplar clip has its audio");
    let rendered = chromium(&html_path);
    assert!(
        rendered.contains(&format!("data-images=\"{images}\""))
            && rendered.contains(&format!("data-images-loaded=\"{images}\"")),
        "Chromium loaded every image: {}",
        rendered.lines().find(|l| l.contains("<body")).unwrap_or("no body")
    );
}

/// Checks every exemplar image of a report is a strip of 3 frames of 96×96 whose first frame
/// is a frame of the clip its caption names (decoded by the ffmpeg CLI); returns how many.
fn check_report_images(html: &str, set: &Path) -> usize {
    let mut count = 0;
    for piece in html.split("<img alt=\"").skip(1) {
        let alt = &piece[..piece.find('"').unwrap()];
        let segment = alt.split(" · ").nth(1).unwrap();
        let data = piece.split("base64,").nth(1).unwrap();
        let data = &data[..data.find('"').unwrap()];
        let bytes = base64::engine::general_purpose::STANDARD.decode(data).unwrap();
        let mut reader = png::Decoder::new(std::io::Cursor::new(bytes)).read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut pixels).unwrap();
        assert_eq!((info.width, info.height, info.color_type), (3 * 96 + 2 * 2, 96, png::ColorType::Rgb));
        let first: Vec<u8> =
            (0..96).flat_map(|y| pixels[y * info.line_size..y * info.line_size + 96 * 3].to_vec()).collect();
        let clip = set.join(segment);
        let raw = std::process::Command::new("ffmpeg")
            .args([
                "-v",
                "error",
                "-i",
                clip.to_str().unwrap(),
                "-vf",
                "scale=96:96",
                "-f",
                "rawvideo",
                "-pix_fmt",
                "rgb24",
                "-",
            ])
            .output()
            .unwrap()
            .stdout;
        let best = raw
            .chunks(96 * 96 * 3)
            .map(|frame| {
                frame.iter().zip(&first).map(|(a, b)| (*a as f64 - *b as f64).abs()).sum::<f64>() / first.len() as f64
            })
            .fold(f64::INFINITY, f64::min);
        assert!(best < 4.0, "{segment}: the exemplar's first frame is a frame of the clip (mean difference {best:.1})");
        let mean = first.iter().map(|&v| v as f64).sum::<f64>() / first.len() as f64;
        let spread = first.iter().map(|&v| (v as f64 - mean).abs()).sum::<f64>() / first.len() as f64;
        assert!(spread > 5.0, "{segment}: a real picture, not a flat one");
        count += 1;
    }
    count
}

/// The report as Chromium sees it after running its scripts (headless, DOM dumped).
fn chromium(page: &Path) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=10000",
            &format!("--user-data-dir={}", profile.path().display()),
            "--dump-dom",
            &format!("file://{}", page.display()),
        ])
        .output()
        .expect("chromium (Debian package `chromium`, installed by make setup)");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}
