//! `novelstream eval`: trains the daemon's model with the daemon's trainer on a labelled data
//! set (known classes labelled, novel classes unlabelled), then measures novel-class discovery
//! on the test split against k-means baselines computed in the same run.

pub mod av_digits;
mod dataset;
mod idx;
pub mod metrics;
mod task;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use tch::Device;

pub use dataset::{load, Dataset, Split};
use metrics::{ari, cluster_accuracy, nmi, GcdAccuracy};
use task::Task;

use crate::config::{DecodeConfig, ModelConfig, TrainConfig};
use crate::train::LossReport;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("data set: {0}")]
    Dataset(String),
    #[error("{0}")]
    Invalid(String),
    #[error("model: {0}")]
    Model(#[from] tch::TchError),
    #[error(transparent)]
    Encoder(#[from] crate::model::EncoderError),
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] crate::train::checkpoint::CheckpointError),
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// What to evaluate.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// The data set: an IDX folder, an image folder or audio-visual clips.
    pub dataset: PathBuf,
    /// Classes whose training samples are labelled.
    pub known: Vec<usize>,
    /// Classes whose training samples are unlabelled, to be discovered.
    pub novel: Vec<usize>,
    /// Share of each known class's training samples that is labelled; the rest join the
    /// unlabelled samples (generalised category discovery). 1: the paper's split.
    pub labelled_fraction: f64,
    /// Leave the novel classes' training samples out: the model learns the known classes alone
    /// (labelled, and unlabelled with a labelled fraction under 1), never seeing a novel sample.
    pub known_only: bool,
    /// Where to write the trained learner as a daemon checkpoint (`checkpoint.start`), with
    /// the decode geometry its windows had.
    pub save_checkpoint: Option<(PathBuf, DecodeConfig)>,
    /// Seeds the model, the batches and the baselines' k-means.
    pub seed: i64,
    /// Training steps of the method.
    pub steps: u64,
    /// Training steps of the supervised baseline's encoder.
    pub baseline_steps: u64,
    /// Side length images of folder data sets and clip frames are scaled to.
    pub image_size: u32,
    /// Frames `T` per window of an audio-visual clip.
    pub frames: usize,
    /// The model; its classes and seed come from the options above.
    pub model: ModelConfig,
    /// How the method (and, with its loss terms off, the baseline) trains.
    pub train: TrainConfig,
    /// Where the models run.
    pub device: Device,
    /// Show progress bars on stderr.
    pub progress: bool,
    /// Measure the test split every this many steps of the method (0: only at the end).
    pub curve_every: u64,
    /// Further data sets of the same classes whose test splits the trained model is measured
    /// on too (`--also-test`), e.g. a seen-language split of the audio-visual digits.
    pub also_test: Vec<PathBuf>,
}

/// Clustering quality on one set of samples.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Clustering {
    /// Accuracy under the best matching of clusters to classes.
    pub accuracy: f64,
    /// Normalised mutual information.
    pub nmi: f64,
    /// Adjusted Rand index.
    pub ari: f64,
}

impl Clustering {
    fn of(truth: &[usize], predicted: &[usize]) -> Self {
        Self { accuracy: cluster_accuracy(truth, predicted), nmi: nmi(truth, predicted), ari: ari(truth, predicted) }
    }
}

/// The open world's measures on the test split (every test sample of the chosen classes).
#[derive(Debug, Clone, Serialize)]
pub struct OpenWorldResult {
    /// All / Old / New accuracy of the method's decisions under one matching of known classes
    /// and novel clusters to classes.
    pub accuracy: GcdAccuracy,
    /// Share of known-class test samples given their own class's name.
    pub known_by_name: f64,
    /// Novel clusters the head had in use at the end: the estimate with `auto`.
    pub novel_clusters_estimated: usize,
    /// Novel classes there are.
    pub novel_classes: usize,
    /// (novel clusters, silhouette) of the last estimate, with `auto`.
    pub estimate_scores: Vec<(i64, f64)>,
}

/// The method measured on the test split.
#[derive(Debug, Clone, Serialize)]
pub struct MethodResult {
    /// All / Old / New and the estimated number of novel classes.
    pub open_world: OpenWorldResult,
    /// Task-aware: novel-class clustering of the novel test samples by the unlabelled head
    /// alone.
    pub novel: Clustering,
    /// Task-aware: accuracy of the labelled head alone on the known classes of the test split.
    pub known_accuracy: f64,
    /// k-means on the trained encoder's features of the novel test samples: tells a weak head
    /// (this is higher than `novel`) from weak features.
    pub kmeans_on_features: Clustering,
    /// The same model on other test data: a modality withheld, `--also-test` splits.
    pub views: Vec<ViewResult>,
    /// Training time, without the time the learning curve took.
    pub train_seconds: f64,
    /// Mean loss terms over the last 50 steps.
    pub final_losses: LossReport,
    /// Dead outputs of the unlabelled head re-initialised to split the largest
    /// (`train.clusters.head_min_share`).
    pub head_splits: u64,
    /// The learning curve: the test split measured every `--curve-every` steps (empty when 0).
    pub curve: Vec<CurvePoint>,
}

/// The trained model measured on one view of test data ([`MethodResult::views`]); its
/// predictions are in `<predictions>.<name>.csv`.
#[derive(Debug, Clone, Serialize)]
pub struct ViewResult {
    pub name: String,
    /// All / Old / New of the joint decision.
    pub open_world: GcdAccuracy,
    /// Known test samples given their own class by name.
    pub known_by_name: f64,
    /// Task-aware: the unlabelled head on the novel samples, the labelled head on the known.
    pub novel: Clustering,
    pub known_accuracy: f64,
}

/// The test split measured part-way through training.
#[derive(Debug, Clone, Serialize)]
pub struct CurvePoint {
    /// Steps trained.
    pub step: u64,
    /// All / Old / New accuracy of the method's decisions.
    pub open_world: GcdAccuracy,
    /// Novel clusters in use.
    pub novel_clusters_in_use: usize,
    /// Novel-class accuracy of the unlabelled head.
    pub novel_accuracy: f64,
    /// Known-class accuracy of the labelled head.
    pub known_accuracy: f64,
    /// Novel-class accuracy of the momentum encoder's unlabelled head.
    pub momentum_novel_accuracy: f64,
    /// Novel-class accuracy of the memory bank's clusters behind the pseudo labels (each test
    /// sample in the cluster of its nearest centroid); absent without them.
    pub bank_cluster_accuracy: Option<f64>,
}

/// The baselines computed in the same run.
#[derive(Debug, Clone, Serialize)]
pub struct Baselines {
    /// k-means on the raw pixels of the novel test samples.
    pub kmeans_raw_pixels: Clustering,
    /// k-means on the features of the same encoder trained with cross-entropy on the known
    /// classes only.
    pub kmeans_supervised_features: Clustering,
    /// Known-class accuracy of that encoder's labelled head.
    pub supervised_known_accuracy: f64,
}

/// Everything `results.json` records.
#[derive(Debug, Clone, Serialize)]
pub struct EvalResults {
    /// The data set's path.
    pub dataset: String,
    /// Names of the known classes, in the labelled head's order.
    pub known_classes: Vec<String>,
    /// Names of the novel classes.
    pub novel_classes: Vec<String>,
    /// The run's seed.
    pub seed: i64,
    /// Training steps of the method.
    pub steps: u64,
    /// Share of the known classes' training samples labelled.
    pub labelled_fraction: f64,
    /// Whether the novel classes' training samples were left out (`--known-only`).
    pub known_only: bool,
    /// The device the models ran on.
    pub device: String,
    /// Labelled and unlabelled training samples.
    pub train_samples: (usize, usize),
    /// Known-class and novel-class test samples.
    pub test_samples: (usize, usize),
    /// The method's results.
    pub method: MethodResult,
    /// The baselines' results.
    pub baselines: Baselines,
    /// Time the whole run took.
    pub wall_seconds: f64,
    /// The model config trained (with the run's classes and seed).
    pub model: ModelConfig,
    /// The training config of the method.
    pub train: TrainConfig,
}

/// One row of predictions.csv: test index, true label, the method's decision (a known class's
/// name or `novel-<id>`).
pub type PredictionRow = (usize, String, String);

/// Predictions of one run: the test split's rows, then each view's by name.
pub struct Predictions {
    pub rows: Vec<PredictionRow>,
    pub views: Vec<(String, Vec<PredictionRow>)>,
}

/// Runs the evaluation; returns the results and one row per test sample of the known and novel
/// classes, for the test split and for each view.
pub fn evaluate(options: &EvalOptions) -> Result<(EvalResults, Predictions), EvalError> {
    let started = Instant::now();
    let data = load(&options.dataset, options.image_size, options.frames, options.progress)?;
    let task = Task::new(options, &data)?;
    let mut also = Vec::new();
    for path in &options.also_test {
        let other = load(path, options.image_size, options.frames, options.progress)?;
        if other.classes != data.classes {
            return Err(EvalError::Invalid(format!(
                "--also-test {}: its classes {:?} are not the data set's {:?}",
                path.display(),
                other.classes,
                data.classes
            )));
        }
        // A manifest is named by its folder.
        let folder = if path.is_file() { path.parent().unwrap_or(path) } else { path };
        let name = folder.file_name().map_or_else(|| "also".into(), |n| n.to_string_lossy().into_owned());
        also.push((name, other));
    }
    let method = task.method(&also)?;
    let baselines = task.baselines()?;
    let rows = method.rows;
    let results = EvalResults {
        dataset: options.dataset.display().to_string(),
        known_classes: task.model.known_classes.clone(),
        novel_classes: options.novel.iter().map(|&c| data.classes[c].clone()).collect(),
        seed: options.seed,
        steps: options.steps,
        labelled_fraction: options.labelled_fraction,
        known_only: options.known_only,
        device: format!("{:?}", options.device),
        train_samples: (task.labelled.len(), task.unlabelled.len()),
        test_samples: (task.test.known.len(), task.test.novel.len()),
        method: method.result,
        baselines,
        wall_seconds: started.elapsed().as_secs_f64(),
        model: task.model.clone(),
        train: options.train.clone(),
    };
    Ok((results, Predictions { rows, views: method.views }))
}

/// A progress bar on stderr counting `unit`s, hidden when `visible` is false.
pub fn progress_bar(total: u64, name: &str, visible: bool, unit: &str) -> indicatif::ProgressBar {
    if !visible {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    let template =
        format!("{{prefix:>8}} [{{elapsed_precise}}] {{bar:30}} {{pos}}/{{len}} {unit}, eta {{eta}} {{msg}}");
    bar.set_style(indicatif::ProgressStyle::with_template(&template).expect("valid template"));
    bar.set_prefix(name.to_owned());
    bar
}

/// Writes results.json to `out`, the test split's predictions to `predictions`, and each
/// view's to [`view_predictions`].
pub fn write_outputs(
    results: &EvalResults,
    found: &Predictions,
    out: &Path,
    predictions: &Path,
) -> Result<(), EvalError> {
    let write = |path: &Path, bytes: &[u8]| {
        std::fs::write(path, bytes).map_err(|source| EvalError::Write { path: path.to_owned(), source })
    };
    write(out, &serde_json::to_vec_pretty(results).expect("results serialize"))?;
    let csv = |rows: &[PredictionRow]| {
        let mut csv = Vec::new();
        writeln!(csv, "index,true_label,prediction").expect("write to memory");
        for (i, truth, cluster) in rows {
            writeln!(csv, "{i},{truth},{cluster}").expect("write to memory");
        }
        csv
    };
    write(predictions, &csv(&found.rows))?;
    for (name, rows) in &found.views {
        write(&view_predictions(predictions, name), &csv(rows))?;
    }
    Ok(())
}

/// Where the predictions of view `name` go: `predictions-0.csv` → `predictions-0.<name>.csv`.
pub fn view_predictions(predictions: &Path, name: &str) -> PathBuf {
    let stem = predictions.file_stem().map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    predictions.with_file_name(format!("{stem}.{name}.csv"))
}

/// Parses class lists like `0-4`, `5,7,9` or `0-2,8`.
pub fn parse_classes(text: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let number = |s: &str| s.trim().parse::<usize>().map_err(|_| format!("`{s}` is not a class number"));
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (number(a)?, number(b)?);
                if a > b {
                    return Err(format!("range `{part}` runs backwards"));
                }
                out.extend(a..=b);
            }
            None => out.push(number(part)?),
        }
    }
    if out.is_empty() {
        return Err("no classes given".into());
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_lists() {
        assert_eq!(parse_classes("0-4").unwrap(), vec![0, 1, 2, 3, 4]);
        assert_eq!(parse_classes("5,7, 9").unwrap(), vec![5, 7, 9]);
        assert_eq!(parse_classes("0-2,8,1").unwrap(), vec![0, 1, 2, 8]);
        assert!(parse_classes("4-0").is_err());
        assert!(parse_classes("a").is_err());
        assert!(parse_classes("").is_err());
    }
}
