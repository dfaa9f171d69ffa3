//! `novelstream eval`: trains the daemon's model with the daemon's trainer on a labelled data
//! set (known classes labelled, novel classes unlabelled), then measures novel-class discovery
//! on the test split against k-means baselines computed in the same run.

pub mod av_digits;
mod dataset;
mod idx;
mod kmeans;
pub mod metrics;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use tch::{Device, Kind, Tensor};

pub use dataset::{load, Dataset, Split};
pub use kmeans::kmeans;
use metrics::{ari, cluster_accuracy, nmi};

use crate::config::{Modality, ModelConfig, TrainConfig};
use crate::train::{Learner, LossReport};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("data set: {0}")]
    Dataset(String),
    #[error("{0}")]
    Invalid(String),
    #[error("model: {0}")]
    Model(#[from] tch::TchError),
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// What to evaluate.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub dataset: PathBuf,
    pub known: Vec<usize>,
    pub novel: Vec<usize>,
    pub seed: i64,
    /// Training steps of the method.
    pub steps: u64,
    /// Training steps of the supervised baseline's encoder.
    pub baseline_steps: u64,
    /// Side length images of folder data sets and clip frames are scaled to.
    pub image_size: u32,
    /// Frames `T` per window of an audio-visual clip.
    pub frames: usize,
    pub model: ModelConfig,
    pub train: TrainConfig,
    pub device: Device,
    pub progress: bool,
    /// Measure the test split every this many steps of the method (0: only at the end).
    pub curve_every: u64,
}

/// Clustering quality on one set of samples.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Clustering {
    pub accuracy: f64,
    pub nmi: f64,
    pub ari: f64,
}

impl Clustering {
    fn of(truth: &[usize], predicted: &[usize]) -> Self {
        Self { accuracy: cluster_accuracy(truth, predicted), nmi: nmi(truth, predicted), ari: ari(truth, predicted) }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MethodResult {
    /// Novel-class clustering of the test split by the unlabelled head.
    pub novel: Clustering,
    /// Accuracy of the labelled head on the known classes of the test split.
    pub known_accuracy: f64,
    /// k-means on the trained encoder's features of the novel test samples: tells a weak head
    /// (this is higher than `novel`) from weak features.
    pub kmeans_on_features: Clustering,
    pub train_seconds: f64,
    /// Mean loss terms over the last 50 steps.
    pub final_losses: LossReport,
    /// Dead outputs of the unlabelled head re-initialised to split the largest
    /// (`train.head_min_share`).
    pub head_splits: u64,
    /// The learning curve: the test split measured every `--curve-every` steps (empty when 0).
    pub curve: Vec<CurvePoint>,
}

/// The test split measured part-way through training.
#[derive(Debug, Clone, Serialize)]
pub struct CurvePoint {
    pub step: u64,
    pub novel_accuracy: f64,
    pub known_accuracy: f64,
    /// Novel-class accuracy of the momentum encoder's unlabelled head.
    pub momentum_novel_accuracy: f64,
    /// Novel-class accuracy of the memory bank's clusters behind the pseudo labels (each test
    /// sample in the cluster of its nearest centroid); absent without them.
    pub bank_cluster_accuracy: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Baselines {
    /// k-means on the raw pixels of the novel test samples.
    pub kmeans_raw_pixels: Clustering,
    /// k-means on the features of the same encoder trained with cross-entropy on the known
    /// classes only.
    pub kmeans_supervised_features: Clustering,
    pub supervised_known_accuracy: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalResults {
    pub dataset: String,
    pub known_classes: Vec<String>,
    pub novel_classes: Vec<String>,
    pub seed: i64,
    pub steps: u64,
    pub device: String,
    pub train_samples: (usize, usize),
    pub test_samples: (usize, usize),
    pub method: MethodResult,
    pub baselines: Baselines,
    pub wall_seconds: f64,
    pub model: ModelConfig,
    pub train: TrainConfig,
}

/// One row of predictions.csv: test index, true label, cluster as the model gave it.
pub type PredictionRow = (usize, String, String);

/// Runs the evaluation; returns the results and one row per test sample of the known and novel
/// classes.
pub fn evaluate(options: &EvalOptions) -> Result<(EvalResults, Vec<PredictionRow>), EvalError> {
    let started = Instant::now();
    let data = load(&options.dataset, options.image_size, options.frames, options.progress)?;
    let modality = options.model.modality;
    data.check(modality)?;
    let n_classes = data.classes.len();
    for &c in options.known.iter().chain(&options.novel) {
        if c >= n_classes {
            return Err(EvalError::Invalid(format!("class {c} is not in the data set ({n_classes} classes)")));
        }
    }
    if options.known.iter().any(|c| options.novel.contains(c)) {
        return Err(EvalError::Invalid("a class cannot be both known and novel".into()));
    }
    if options.novel.len() < 2 || options.known.is_empty() {
        return Err(EvalError::Invalid("need at least one known and two novel classes".into()));
    }
    tch::manual_seed(options.seed);
    let mut model = options.model.clone();
    model.known_classes = options.known.iter().map(|&c| data.classes[c].clone()).collect();
    model.novel_clusters = options.novel.len() as i64;
    model.seed = options.seed;

    let labelled = data.train.indices_of(&options.known);
    let unlabelled = data.train.indices_of(&options.novel);
    let test_known = data.test.indices_of(&options.known);
    let test_novel = data.test.indices_of(&options.novel);
    if labelled.is_empty() || unlabelled.is_empty() || test_novel.is_empty() {
        return Err(EvalError::Invalid("the chosen classes leave a split empty".into()));
    }
    // Label of each labelled training sample as its index among the known classes.
    let known_index = |label: usize| options.known.iter().position(|&k| k == label).expect("known label") as i64;

    // The method.
    let train_started = Instant::now();
    let mut learner = Learner::new(&model, &options.train, options.device)?;
    let novel_truth: Vec<usize> = test_novel.iter().map(|&i| data.test.labels[i as usize]).collect();
    let known_truth: Vec<i64> = test_known.iter().map(|&i| known_index(data.test.labels[i as usize])).collect();
    let mut curve = Vec::new();
    let mut curve_seconds = 0.0;
    let mut measure = |step: u64, learner: &Learner| {
        if options.curve_every == 0 || step % options.curve_every != 0 || step == options.steps {
            return;
        }
        let started = Instant::now();
        // Measuring draws no random numbers, so the training run is the same with or without it.
        let (novel_pred, known_pred, _) =
            predict(learner, &data.test, &test_novel, &test_known, options.device, modality);
        let (momentum_pred, bank_pred) = predict_momentum(learner, &data.test, &test_novel, options.device, modality);
        curve.push(CurvePoint {
            step,
            novel_accuracy: cluster_accuracy(&novel_truth, &novel_pred),
            known_accuracy: accuracy(&known_truth, &known_pred),
            momentum_novel_accuracy: cluster_accuracy(&novel_truth, &momentum_pred),
            bank_cluster_accuracy: bank_pred.map(|bank_pred| cluster_accuracy(&novel_truth, &bank_pred)),
        });
        curve_seconds += started.elapsed().as_secs_f64();
    };
    let final_losses = train_loop(
        &mut learner,
        &data.train,
        &labelled,
        &unlabelled,
        options.steps,
        &options.train,
        options,
        "method",
        &known_index,
        &mut measure,
    )?;
    let train_seconds = train_started.elapsed().as_secs_f64() - curve_seconds;
    let (novel_pred, known_pred, method_features) =
        predict(&learner, &data.test, &test_novel, &test_known, options.device, modality);
    let k = options.novel.len() as i64;
    let method = MethodResult {
        novel: Clustering::of(&novel_truth, &novel_pred),
        known_accuracy: accuracy(&known_truth, &known_pred),
        kmeans_on_features: Clustering::of(&novel_truth, &kmeans(&method_features, k, 3, 100, options.seed)),
        train_seconds,
        final_losses,
        head_splits: learner.head_splits(),
        curve,
    };

    // Baseline 1: k-means on raw pixels.
    let raw = kmeans(&data.test.raw(&Tensor::from_slice(&test_novel), modality), k, 3, 100, options.seed);
    // Baseline 2: the same encoder trained with cross-entropy on the known classes only.
    let supervised_config = TrainConfig {
        instance_contrast: false,
        category_contrast: false,
        pairwise_bce: false,
        consistency: false,
        memory_bank: false,
        lr_decay_steps: 0,
        ..options.train.clone()
    };
    let mut supervised = Learner::new(&model, &supervised_config, options.device)?;
    train_loop(
        &mut supervised,
        &data.train,
        &labelled,
        &[],
        options.baseline_steps,
        &supervised_config,
        options,
        "baseline",
        &known_index,
        &mut |_, _| {},
    )?;
    let (_, supervised_known, features) =
        predict(&supervised, &data.test, &test_novel, &test_known, options.device, modality);
    let feature_clusters = kmeans(&features, k, 3, 100, options.seed);
    let baselines = Baselines {
        kmeans_raw_pixels: Clustering::of(&novel_truth, &raw),
        kmeans_supervised_features: Clustering::of(&novel_truth, &feature_clusters),
        supervised_known_accuracy: accuracy(&known_truth, &supervised_known),
    };

    let mut rows = Vec::with_capacity(test_known.len() + test_novel.len());
    for (&i, &p) in test_known.iter().zip(&known_pred) {
        rows.push((
            i as usize,
            data.classes[data.test.labels[i as usize]].clone(),
            model.known_classes[p as usize].clone(),
        ));
    }
    for (&i, &p) in test_novel.iter().zip(&novel_pred) {
        rows.push((i as usize, data.classes[data.test.labels[i as usize]].clone(), format!("novel-{p}")));
    }
    rows.sort_by_key(|r| r.0);
    let results = EvalResults {
        dataset: options.dataset.display().to_string(),
        known_classes: model.known_classes.clone(),
        novel_classes: options.novel.iter().map(|&c| data.classes[c].clone()).collect(),
        seed: options.seed,
        steps: options.steps,
        device: format!("{:?}", options.device),
        train_samples: (labelled.len(), unlabelled.len()),
        test_samples: (test_known.len(), test_novel.len()),
        method,
        baselines,
        wall_seconds: started.elapsed().as_secs_f64(),
        model,
        train: options.train.clone(),
    };
    Ok((results, rows))
}

#[allow(clippy::too_many_arguments)]
fn train_loop(
    learner: &mut Learner,
    train: &Split,
    labelled: &[i64],
    unlabelled: &[i64],
    steps: u64,
    config: &TrainConfig,
    options: &EvalOptions,
    name: &str,
    known_index: &dyn Fn(usize) -> i64,
    after_step: &mut dyn FnMut(u64, &Learner),
) -> Result<LossReport, EvalError> {
    let bar = progress_bar(steps, name, options.progress, "steps");
    let modality = options.model.modality;
    let labelled_t = Tensor::from_slice(labelled);
    let unlabelled_t = Tensor::from_slice(unlabelled);
    let labels_all: Vec<i64> = labelled.iter().map(|&i| known_index(train.labels[i as usize])).collect();
    let labels_all = Tensor::from_slice(&labels_all);
    let b = config.batch_size as i64;
    let mut recent: Vec<LossReport> = Vec::new();
    for step in 0..steps {
        let pick = |pool: &Tensor| Tensor::randint(pool.size()[0], [b], (Kind::Int64, Device::Cpu));
        let li = pick(&labelled_t);
        let lx = train.batch(&labelled_t.index_select(0, &li), options.device, modality);
        let ly = labels_all.index_select(0, &li).to(options.device);
        let ux = if unlabelled.is_empty() {
            lx.narrow(0)
        } else {
            train.batch(&unlabelled_t.index_select(0, &pick(&unlabelled_t)), options.device, modality)
        };
        let report = learner.step(&lx, &ly, &ux);
        if !report.total.is_finite() {
            return Err(EvalError::Invalid(format!("{name}: loss became {} at step {step}", report.total)));
        }
        if step % 20 == 0 {
            bar.set_message(format!(
                "loss {:.3} bce {:.3} ce {:.3} pos {:.2}",
                report.total, report.bce, report.cross_entropy, report.positive_pair_rate
            ));
        }
        recent.push(report);
        if recent.len() > 50 {
            recent.remove(0);
        }
        bar.inc(1);
        after_step(step + 1, learner);
    }
    bar.finish_and_clear();
    Ok(mean_report(&recent))
}

fn mean_report(reports: &[LossReport]) -> LossReport {
    let n = reports.len().max(1) as f64;
    let sum = |f: fn(&LossReport) -> f64| reports.iter().map(f).sum::<f64>() / n;
    LossReport {
        total: sum(|r| r.total),
        instance: sum(|r| r.instance),
        category: sum(|r| r.category),
        cross_modal: sum(|r| r.cross_modal),
        bce: sum(|r| r.bce),
        cross_entropy: sum(|r| r.cross_entropy),
        consistency: sum(|r| r.consistency),
        consistency_weight: sum(|r| r.consistency_weight),
        balance: sum(|r| r.balance),
        swapped: sum(|r| r.swapped),
        positive_pair_rate: sum(|r| r.positive_pair_rate),
    }
}

/// Novel-head clusters of `novel`, known-head classes of `known`, and the features `z` of
/// `novel` (on the CPU).
fn predict(
    learner: &Learner,
    split: &Split,
    novel: &[i64],
    known: &[i64],
    device: Device,
    modality: Modality,
) -> (Vec<usize>, Vec<i64>, Tensor) {
    let mut novel_pred = Vec::with_capacity(novel.len());
    let mut features = Vec::new();
    for chunk in novel.chunks(PREDICT_CHUNK) {
        let out = learner.predict(&split.batch(&Tensor::from_slice(chunk), device, modality));
        novel_pred.extend(host_ints(&out.novel_logits.argmax(1, false)).into_iter().map(|p| p as usize));
        features.push(out.z.to(Device::Cpu));
    }
    let mut known_pred = Vec::with_capacity(known.len());
    for chunk in known.chunks(PREDICT_CHUNK) {
        let out = learner.predict(&split.batch(&Tensor::from_slice(chunk), device, modality));
        if let Some(logits) = out.known_logits {
            known_pred.extend(host_ints(&logits.argmax(1, false)));
        }
    }
    (novel_pred, known_pred, Tensor::cat(&features, 0))
}

/// Novel-head clusters of `novel` by the momentum encoder, and their bank clusters (`None`
/// before the bank has any).
fn predict_momentum(
    learner: &Learner,
    split: &Split,
    novel: &[i64],
    device: Device,
    modality: Modality,
) -> (Vec<usize>, Option<Vec<usize>>) {
    let mut head = Vec::with_capacity(novel.len());
    let mut bank = Some(Vec::with_capacity(novel.len()));
    for chunk in novel.chunks(PREDICT_CHUNK) {
        let out = learner.predict_momentum(&split.batch(&Tensor::from_slice(chunk), device, modality));
        head.extend(host_ints(&out.novel_logits.argmax(1, false)).into_iter().map(|p| p as usize));
        bank = bank.zip(learner.bank_cluster(&out)).map(|(mut bank, cluster)| {
            bank.extend(host_ints(&cluster).into_iter().map(|p| p as usize));
            bank
        });
    }
    (head, bank)
}

/// Samples per forward pass when predicting.
const PREDICT_CHUNK: usize = 512;

/// An int64 tensor's values, on the host.
fn host_ints(t: &Tensor) -> Vec<i64> {
    Vec::try_from(t.to(Device::Cpu)).expect("int64")
}

fn accuracy(truth: &[i64], predicted: &[i64]) -> f64 {
    if truth.is_empty() {
        return 0.0;
    }
    truth.iter().zip(predicted).filter(|(a, b)| a == b).count() as f64 / truth.len() as f64
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

/// Writes `results.json` and `predictions.csv`.
pub fn write_outputs(
    results: &EvalResults,
    rows: &[(usize, String, String)],
    out: &Path,
    predictions: &Path,
) -> Result<(), EvalError> {
    let write = |path: &Path, bytes: &[u8]| {
        std::fs::write(path, bytes).map_err(|source| EvalError::Write { path: path.to_owned(), source })
    };
    write(out, &serde_json::to_vec_pretty(results).expect("results serialize"))?;
    let mut csv = Vec::new();
    writeln!(csv, "index,true_label,cluster").expect("write to memory");
    for (i, truth, cluster) in rows {
        writeln!(csv, "{i},{truth},{cluster}").expect("write to memory");
    }
    write(predictions, &csv)
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
