//! `novelstream eval` end to end on small real data: MNIST from `make setup`, and an image-folder
//! data set made with the `ffmpeg` CLI.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::{ffmpeg, novelstream};
use novelstream::eval::metrics::{cluster_accuracy, gcd_accuracy};

/// A tiny model and batch: these tests prove behaviour, not accuracy.
const SMALL_MODEL: &str = "[model]\nchannels = [8, 16]\nprojection_dim = 16\n\
    [train]\nbatch_size = 16\nbank_size = 256\n[train.pseudo]\nrank_k = 4\n";

/// Runs `novelstream eval` on the CPU with `config`, writing `out` and `predictions`.
fn eval(dataset: &Path, args: &[&str], config: &Path, out: &Path, predictions: &Path) -> String {
    let mut all = vec!["eval", "--dataset", dataset.to_str().unwrap(), "--device", "cpu"];
    all.extend_from_slice(args);
    for (flag, path) in [("--config", config), ("--out", out), ("--predictions", predictions)] {
        all.extend([flag, path.to_str().unwrap()]);
    }
    novelstream(&all)
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The rows of predictions.csv: (true label, prediction).
fn read_predictions(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("index,true_label,prediction"));
    lines
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields.len(), 3, "{line}");
            (fields[1].to_owned(), fields[2].to_owned())
        })
        .collect()
}

/// A number for each distinct name, in order of first appearance.
fn ids<'a>(names: impl Iterator<Item = &'a str>) -> Vec<usize> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    names
        .map(|n| {
            let next = seen.len();
            *seen.entry(n).or_insert(next)
        })
        .collect()
}

/// Recomputes All / Old / New from predictions.csv, as a user would: one matching of
/// predictions to classes over every row.
fn gcd_from_csv(path: &Path, known: &[&str]) -> (f64, f64, f64) {
    let rows = read_predictions(path);
    let truth = ids(rows.iter().map(|r| r.0.as_str()));
    let predicted = ids(rows.iter().map(|r| r.1.as_str()));
    let old: Vec<bool> = rows.iter().map(|r| known.contains(&r.0.as_str())).collect();
    let a = gcd_accuracy(&truth, &predicted, &old);
    (a.all, a.old, a.new)
}

/// Recomputes the task-aware novel-class accuracy from predictions.csv in the task-aware
/// setting, where every novel test sample gets a novel cluster.
fn accuracy_from_csv(path: &Path, novel: &[&str]) -> f64 {
    let rows: Vec<(String, String)> =
        read_predictions(path).into_iter().filter(|r| novel.contains(&r.0.as_str())).collect();
    assert!(rows.iter().all(|r| r.1.starts_with("novel-")), "task-aware: novel samples get novel clusters");
    cluster_accuracy(&ids(rows.iter().map(|r| r.0.as_str())), &ids(rows.iter().map(|r| r.1.as_str())))
}

#[test]
fn mnist_short_run_writes_consistent_results_and_predictions() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    assert!(data.join("train-images-idx3-ubyte").exists(), "MNIST missing: run `make setup`");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("small.toml");
    std::fs::write(&config, SMALL_MODEL).unwrap();
    let (out, predictions) = (dir.path().join("results.json"), dir.path().join("predictions.csv"));
    let stdout = eval(
        &data,
        &[
            "--known",
            "0-4",
            "--novel",
            "5-9",
            "--seed",
            "1",
            "--steps",
            "20",
            "--baseline-steps",
            "10",
            "--task-aware",
            "--novel-clusters",
            "5",
        ],
        &config,
        &out,
        &predictions,
    );
    assert!(stdout.contains("novel classes"), "{stdout}");
    let results = read_json(&out);
    assert_eq!(results["novel_classes"], serde_json::json!(["5", "6", "7", "8", "9"]));
    assert_eq!(results["test_samples"], serde_json::json!([5139, 4861]));
    let pixels = results["baselines"]["kmeans_raw_pixels"]["accuracy"].as_f64().unwrap();
    assert!((0.5..0.75).contains(&pixels), "k-means on MNIST pixels is about 61%, got {pixels}");
    let reported = results["method"]["novel"]["accuracy"].as_f64().unwrap();
    let recomputed = accuracy_from_csv(&predictions, &["5", "6", "7", "8", "9"]);
    assert!((reported - recomputed).abs() < 1e-12, "{reported} vs {recomputed}");
    assert_eq!(std::fs::read_to_string(&predictions).unwrap().lines().count(), 1 + 10_000);
}

/// The open world's split: half the known classes' training images labelled, the rest with the
/// novel ones unlabelled; All / Old / New in results.json are those of predictions.csv, whose
/// predictions name known classes and novel clusters.
#[test]
fn mnist_open_world_split_and_measures() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("small.toml");
    std::fs::write(&config, SMALL_MODEL).unwrap();
    let (out, predictions) = (dir.path().join("results.json"), dir.path().join("predictions.csv"));
    let args =
        ["--known", "0-4", "--novel", "5-9", "--steps", "30", "--baseline-steps", "5", "--labelled-fraction", "0.5"];
    let stdout = eval(&data, &args, &config, &out, &predictions);
    assert!(stdout.contains("all ") && stdout.contains("novel clusters"), "{stdout}");
    let results = read_json(&out);
    // MNIST's training split has 30,596 images of 0-4, 29,404 of 5-9; half of each known class
    // (rounded up) is labelled.
    let (labelled, unlabelled) =
        (results["train_samples"][0].as_u64().unwrap(), results["train_samples"][1].as_u64().unwrap());
    assert!((15_298..=15_303).contains(&labelled), "{labelled}");
    assert_eq!(labelled + unlabelled, 60_000);
    let measured = &results["method"]["open_world"];
    let (all, old, new) = gcd_from_csv(&predictions, &["0", "1", "2", "3", "4"]);
    for (key, recomputed) in [("all", all), ("old", old), ("new", new)] {
        let reported = measured["accuracy"][key].as_f64().unwrap();
        assert!((reported - recomputed).abs() < 1e-12, "{key}: {reported} vs {recomputed}");
    }
    assert_eq!(measured["novel_classes"], 5);
    assert_eq!(measured["novel_clusters_estimated"], 1, "30 steps: no estimate yet, one novel cluster");
    let rows = read_predictions(&predictions);
    assert_eq!(rows.len(), 10_000);
    assert!(
        rows.iter().all(|r| r.1 == "novel-0" || ["0", "1", "2", "3", "4"].contains(&r.1.as_str())),
        "known names or novel-0"
    );
}

/// `--known-only` leaves the novel classes' training images out, and `--save-checkpoint` writes
/// the trained learner as a daemon checkpoint (version 1, its step, the config's fingerprint),
/// refused when the eval's image size is not the daemon's decode geometry.
#[test]
fn mnist_known_only_checkpoint_for_the_daemon() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("small.toml");
    std::fs::write(&config, format!("{SMALL_MODEL}[decode]\nheight = 32\nwidth = 32\nframes = 2\n")).unwrap();
    let (out, predictions) = (dir.path().join("results.json"), dir.path().join("predictions.csv"));
    let checkpoint = dir.path().join("known-only.ckpt");
    let args = [
        "--known",
        "0-4",
        "--novel",
        "5-9",
        "--steps",
        "12",
        "--baseline-steps",
        "2",
        "--labelled-fraction",
        "0.5",
        "--known-only",
        "--save-checkpoint",
        checkpoint.to_str().unwrap(),
    ];
    let stdout = eval(&data, &args, &config, &out, &predictions);
    assert!(stdout.contains("checkpoint.start"), "{stdout}");
    let results = read_json(&out);
    // Only 0-4's 30,596 training images: half labelled, the other half unlabelled; none of 5-9.
    let (labelled, unlabelled) =
        (results["train_samples"][0].as_u64().unwrap(), results["train_samples"][1].as_u64().unwrap());
    assert_eq!(labelled + unlabelled, 30_596, "({labelled}, {unlabelled})");
    assert!((15_298..=15_303).contains(&labelled), "{labelled}");
    assert_eq!(results["known_only"], true);
    // The test split still holds the novel classes: they are measured.
    assert_eq!(read_predictions(&predictions).len(), 10_000);

    let (meta, tensors) = novelstream::train::checkpoint::load(&checkpoint).unwrap();
    assert_eq!((meta.version, meta.step), (1, 12));
    assert_eq!(meta.fingerprint["decode.height"], "32");
    assert_eq!(meta.fingerprint["model.known_classes"], r#"["0","1","2","3","4"]"#);
    assert!(
        tensors.iter().any(|(name, _)| name.starts_with("online."))
            && tensors.iter().any(|(n, _)| n.starts_with("bank."))
    );

    // The default decode geometry (64 x 64) is not what this run trains on: refused at once.
    std::fs::write(&config, SMALL_MODEL).unwrap();
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_novelstream"))
        .args(["eval", "--dataset", data.to_str().unwrap(), "--known-only", "--labelled-fraction", "0.5"])
        .args(["--config", config.to_str().unwrap(), "--save-checkpoint", checkpoint.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("--image-size"), "{stderr}");
    // Known-only with every known image labelled leaves nothing unlabelled: a clear error.
    let all_labelled = std::process::Command::new(env!("CARGO_BIN_EXE_novelstream"))
        .args(["eval", "--dataset", data.to_str().unwrap(), "--known-only", "--steps", "1", "--device", "cpu"])
        .args(["--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&all_labelled.stderr);
    assert!(!all_labelled.status.success() && stderr.contains("--labelled-fraction"), "{stderr}");
}

#[test]
fn image_folders_are_a_data_set() {
    let dir = tempfile::tempdir().unwrap();
    let colours = ["red", "green", "blue", "yellow"];
    for split in ["train", "test"] {
        for colour in colours {
            let folder = dir.path().join(split).join(colour);
            std::fs::create_dir_all(&folder).unwrap();
            for i in 0..6 {
                // Shades of one colour, as PNG and JPEG.
                let ext = if i % 2 == 0 { "png" } else { "jpg" };
                let source = format!("color=c={colour}@{:.2}:s=20x20", 0.6 + 0.06 * i as f64);
                ffmpeg(&[
                    "-f",
                    "lavfi",
                    "-i",
                    &source,
                    "-frames:v",
                    "1",
                    folder.join(format!("{i}.{ext}")).to_str().unwrap(),
                ]);
            }
        }
    }
    let (out, predictions) = (dir.path().join("r.json"), dir.path().join("p.csv"));
    let config = dir.path().join("small.toml");
    std::fs::write(&config, SMALL_MODEL).unwrap();
    eval(
        dir.path(),
        &["--known", "0-1", "--novel", "2-3", "--steps", "5", "--baseline-steps", "5", "--image-size", "16"],
        &config,
        &out,
        &predictions,
    );
    let results = read_json(&out);
    // Class folders are sorted by name: blue, green, red, yellow.
    assert_eq!(results["known_classes"], serde_json::json!(["blue", "green"]));
    assert_eq!(results["novel_classes"], serde_json::json!(["red", "yellow"]));
    assert_eq!(results["baselines"]["kmeans_raw_pixels"]["accuracy"].as_f64().unwrap(), 1.0);
    assert_eq!(std::fs::read_to_string(&predictions).unwrap().lines().count(), 1 + 24);
    assert_eq!(results["method"]["curve"], serde_json::json!([]));

    // The learning curve: points part-way through, and the same run otherwise.
    let (curve_out, curve_predictions) = (dir.path().join("curve.json"), dir.path().join("curve.csv"));
    eval(
        dir.path(),
        &["--known", "0-1", "--novel", "2-3", "--steps", "5", "--baseline-steps", "5", "--image-size", "16"]
            .into_iter()
            .chain(["--curve-every", "2"])
            .collect::<Vec<_>>(),
        &config,
        &curve_out,
        &curve_predictions,
    );
    let curve = read_json(&curve_out)["method"]["curve"].as_array().unwrap().clone();
    let steps: Vec<u64> = curve.iter().map(|p| p["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [2, 4]);
    for point in &curve {
        for key in ["novel_accuracy", "momentum_novel_accuracy", "known_accuracy"] {
            assert!((0.0..=1.0).contains(&point[key].as_f64().unwrap()), "{key}: {point}");
        }
    }
    assert_eq!(
        std::fs::read_to_string(&curve_predictions).unwrap(),
        std::fs::read_to_string(&predictions).unwrap(),
        "measuring the curve changed the run"
    );
}

#[test]
fn bad_arguments_are_clear_errors() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_novelstream"))
        .args(["eval", "--dataset", "/nonexistent", "--steps", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent") && stderr.contains("IDX"), "{stderr}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_novelstream"))
        .args(["eval", "--dataset", "/tmp", "--known", "4-0"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--known"), "range error names the flag");
}
