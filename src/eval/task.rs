//! One evaluation run: the samples each role takes, the method trained and measured on the
//! test split (with its learning curve), and the baselines computed in the same run. The runs
//! happen in a fixed order, since each draws from the global random generator.

use std::time::Instant;

use tch::{Device, Kind, Tensor};

use super::metrics::{cluster_accuracy, gcd_accuracy, GcdAccuracy};
use super::{
    progress_bar, Baselines, Clustering, CurvePoint, Dataset, EvalError, EvalOptions, MethodResult, OpenWorldResult,
    PredictionRow, Split, ViewResult,
};
use crate::config::{LossesConfig, Modality, ModelConfig, ScheduleConfig, TrainConfig};
use crate::model::Input;
use crate::rng::SplitMix64;
use crate::train::checkpoint;
use crate::train::fingerprint::fingerprint;
use crate::train::kmeans::kmeans;
use crate::train::{ClusterIds, Encoder, Learner, LossReport};

/// Samples per forward pass when predicting.
const PREDICT_CHUNK: usize = 512;

/// The data set's samples by role, and the model config the method and the baseline train.
pub(super) struct Task<'a> {
    options: &'a EvalOptions,
    data: &'a Dataset,
    /// `options.model` with the chosen classes and the run's seed.
    pub model: ModelConfig,
    /// Training samples of the known classes that are labelled (`--labelled-fraction` of each
    /// class).
    pub labelled: Vec<i64>,
    /// The other training samples: of the novel classes, and of the known classes unlabelled.
    pub unlabelled: Vec<i64>,
    /// The data set's test split.
    pub test: TestSet<'a>,
}

/// A test split's samples of the chosen classes, as `eval` measures a model on them.
pub(super) struct TestSet<'s> {
    split: &'s Split,
    /// Test samples of the known classes.
    pub known: Vec<i64>,
    /// Test samples of the novel classes.
    pub novel: Vec<i64>,
    /// Class of each novel test sample.
    novel_truth: Vec<usize>,
    /// Known-class index of each known test sample.
    known_truth: Vec<i64>,
}

impl<'s> TestSet<'s> {
    fn new(split: &'s Split, options: &EvalOptions) -> Self {
        let (known, novel) = (split.indices_of(&options.known), split.indices_of(&options.novel));
        Self {
            novel_truth: novel.iter().map(|&i| split.labels[i as usize]).collect(),
            known_truth: known.iter().map(|&i| known_index(&options.known, split.labels[i as usize])).collect(),
            split,
            known,
            novel,
        }
    }

    /// All / Old / New accuracy of `decisions` (known test samples first) over every test
    /// sample of the chosen classes.
    fn gcd(&self, decisions: &[i64]) -> GcdAccuracy {
        let truth: Vec<usize> = self.known.iter().chain(&self.novel).map(|&i| self.split.labels[i as usize]).collect();
        let old: Vec<bool> = (0..truth.len()).map(|i| i < self.known.len()).collect();
        let predicted: Vec<usize> = decisions.iter().map(|&d| d as usize).collect();
        gcd_accuracy(&truth, &predicted, &old)
    }
}

/// What the method gave: its results, its prediction rows for the test split, and those of each
/// further view by name.
pub(super) struct Method {
    pub result: MethodResult,
    pub rows: Vec<PredictionRow>,
    pub views: Vec<(String, Vec<PredictionRow>)>,
}

/// What a trained model says about the test split.
struct Predicted {
    /// Novel-head clusters of the novel test samples (task-aware).
    novel: Vec<usize>,
    /// Known-head classes of the known test samples (task-aware).
    known: Vec<i64>,
    /// Features `z` of the novel test samples, on the CPU.
    features: Tensor,
    /// The decision for each test sample, known ones first: the joint head's in the open world;
    /// in the task-aware setting the known head's for known samples and the novel head's for
    /// novel ones.
    decisions: Vec<i64>,
}

impl<'a> Task<'a> {
    /// Checks the chosen classes against `data` and sorts its samples by role.
    pub fn new(options: &'a EvalOptions, data: &'a Dataset) -> Result<Self, EvalError> {
        data.check(options.model.modality)?;
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
        if !(options.labelled_fraction > 0.0 && options.labelled_fraction <= 1.0) {
            return Err(EvalError::Invalid("--labelled-fraction must be in (0, 1]".into()));
        }
        let mut model = options.model.clone();
        model.known_classes = options.known.iter().map(|&c| data.classes[c].clone()).collect();
        model.seed = options.seed;
        let (labelled, mut unlabelled) =
            labelled_share(&data.train, &options.known, options.labelled_fraction, options.seed);
        if !options.known_only {
            unlabelled.extend(data.train.indices_of(&options.novel));
        }
        unlabelled.sort_unstable();
        let task = Self { options, data, model, labelled, unlabelled, test: TestSet::new(&data.test, options) };
        if task.unlabelled.is_empty() && options.known_only {
            return Err(EvalError::Invalid(
                "--known-only leaves no unlabelled training sample: label a share of the known classes only \
                 (--labelled-fraction under 1)"
                    .into(),
            ));
        }
        if task.labelled.is_empty() || task.unlabelled.is_empty() || task.test.novel.is_empty() {
            return Err(EvalError::Invalid("the chosen classes leave a split empty".into()));
        }
        Ok(task)
    }

    /// Trains the method on labelled and unlabelled samples, measuring the learning curve on the
    /// way, then measures it on the test split, and on the views of [`Task::views`] (`also`:
    /// further data sets whose test splits it meets, by name).
    pub fn method(&self, also: &[(String, Dataset)]) -> Result<Method, EvalError> {
        let options = self.options;
        let started = Instant::now();
        let mut learner = Learner::new(&self.model, &options.train, options.device)?;
        let mut curve = Vec::new();
        let mut curve_seconds = 0.0;
        let mut measure = |step: u64, learner: &Learner| {
            if options.curve_every == 0 || step % options.curve_every != 0 || step == options.steps {
                return;
            }
            let started = Instant::now();
            // Measuring draws no random numbers, so the training run is the same with or without it.
            curve.push(self.curve_point(step, learner));
            curve_seconds += started.elapsed().as_secs_f64();
        };
        let final_losses =
            self.train(&mut learner, &self.unlabelled, options.steps, &options.train, "method", &mut measure)?;
        let train_seconds = started.elapsed().as_secs_f64() - curve_seconds;
        if let Some((path, decode)) = &options.save_checkpoint {
            // Version 1: the daemon's first version after the initial weights, so that an
            // assignment made with this model never reads as made with untrained ones.
            let fingerprint = fingerprint(&self.model, &options.train, decode);
            checkpoint::save_learner(path, 1, &learner, &fingerprint, &ClusterIds::default())?;
        }
        let predicted = self.predict(&learner, &self.test);
        let estimate = learner.latest_estimate();
        let test = &self.test;
        let open_world = OpenWorldResult {
            accuracy: test.gcd(&predicted.decisions),
            known_by_name: accuracy(&test.known_truth, &predicted.decisions[..test.known.len()]),
            novel_clusters_estimated: learner.novel_clusters_in_use().len(),
            novel_classes: self.options.novel.len(),
            estimate_scores: estimate.map(|e| e.scores.clone()).unwrap_or_default(),
        };
        let mut views = Vec::new();
        for (name, split) in self.views(also) {
            let test = TestSet::new(&split, options);
            let predicted = self.predict(&learner, &test);
            let result = ViewResult {
                name,
                open_world: test.gcd(&predicted.decisions),
                known_by_name: accuracy(&test.known_truth, &predicted.decisions[..test.known.len()]),
                novel: Clustering::of(&test.novel_truth, &predicted.novel),
                known_accuracy: accuracy(&test.known_truth, &predicted.known),
            };
            views.push((result, self.rows(&test, &predicted.decisions)));
        }
        let result = MethodResult {
            open_world,
            novel: Clustering::of(&test.novel_truth, &predicted.novel),
            known_accuracy: accuracy(&test.known_truth, &predicted.known),
            kmeans_on_features: self.kmeans(&predicted.features),
            views: views.iter().map(|(v, _)| v.clone()).collect(),
            train_seconds,
            final_losses,
            head_splits: learner.head_splits(),
            curve,
        };
        let rows = self.rows(test, &predicted.decisions);
        Ok(Method { result, rows, views: views.into_iter().map(|(v, rows)| (v.name, rows)).collect() })
    }

    /// What else the trained model is measured on, by name: for a model of both modalities,
    /// the test split with the audio withheld (silent, as from a camera without a microphone,
    /// `audio-withheld`) and with the picture withheld (`picture-withheld`); each of the `also`
    /// data sets' test splits (`<name>`, and `<name>-audio-withheld` for both modalities).
    fn views(&self, also: &[(String, Dataset)]) -> Vec<(String, Split)> {
        let withheld = |name: &str, split: &Split, with_picture: bool| {
            let mut views = Vec::new();
            if self.model.modality == Modality::Both {
                views.push((format!("{name}audio-withheld"), split.withholding(Modality::Audio)));
                if with_picture {
                    views.push((format!("{name}picture-withheld"), split.withholding(Modality::Visual)));
                }
            }
            views
        };
        let mut views = withheld("", &self.data.test, true);
        for (name, data) in also {
            views.push((name.clone(), data.test.shallow_clone()));
            views.extend(withheld(&format!("{name}-"), &data.test, false));
        }
        views
    }

    /// k-means on the raw pixels of the novel test samples, and on the features of the same
    /// encoder trained with cross-entropy on the known classes alone.
    pub fn baselines(&self) -> Result<Baselines, EvalError> {
        let options = self.options;
        let kmeans_raw_pixels =
            self.kmeans(&self.data.test.raw(&Tensor::from_slice(&self.test.novel), options.model.modality));
        let config = TrainConfig {
            losses: LossesConfig {
                instance_contrast: false,
                category_contrast: false,
                pairwise_bce: false,
                consistency: false,
                memory_bank: false,
                ..options.train.losses.clone()
            },
            schedule: ScheduleConfig { lr_decay_steps: 0, ..options.train.schedule.clone() },
            ..options.train.clone()
        };
        // The baseline learns the known classes alone, with the labelled head of the paper.
        let model = ModelConfig { open_world: false, ..self.model.clone() };
        let mut supervised = Learner::new(&model, &config, options.device)?;
        self.train(&mut supervised, &[], options.baseline_steps, &config, "baseline", &mut |_, _| {})?;
        let predicted = self.predict(&supervised, &self.test);
        Ok(Baselines {
            kmeans_raw_pixels,
            kmeans_supervised_features: self.kmeans(&predicted.features),
            supervised_known_accuracy: accuracy(&self.test.known_truth, &predicted.known),
        })
    }

    /// One row per known and novel sample of `test`, by index: its class and the decision
    /// (known samples first), a known class's name or `novel-<id>`.
    fn rows(&self, test: &TestSet, decisions: &[i64]) -> Vec<PredictionRow> {
        let class = |i: i64| self.data.classes[test.split.labels[i as usize]].clone();
        let known = self.model.known_classes.len() as i64;
        let mut rows: Vec<PredictionRow> = test
            .known
            .iter()
            .chain(&test.novel)
            .zip(decisions)
            .map(|(&i, &d)| {
                let said = if d < known {
                    self.model.known_classes[d as usize].clone()
                } else {
                    format!("novel-{}", d - known)
                };
                (i as usize, class(i), said)
            })
            .collect();
        rows.sort_by_key(|r| r.0);
        rows
    }

    /// Trains `learner` (called `name` on the progress bar) with `config` for `steps` steps on
    /// batches of the labelled samples and of `unlabelled` (none for the supervised baseline);
    /// `after_step` sees the learner after each. The mean loss terms of the last 50 steps.
    fn train(
        &self,
        learner: &mut Learner,
        unlabelled: &[i64],
        steps: u64,
        config: &TrainConfig,
        name: &str,
        after_step: &mut dyn FnMut(u64, &Learner),
    ) -> Result<LossReport, EvalError> {
        let (options, train) = (self.options, &self.data.train);
        let bar = progress_bar(steps, name, options.progress, "steps");
        let modality = options.model.modality;
        let labelled_t = Tensor::from_slice(&self.labelled);
        let unlabelled_t = Tensor::from_slice(unlabelled);
        let labels_all: Vec<i64> =
            self.labelled.iter().map(|&i| known_index(&self.options.known, train.labels[i as usize])).collect();
        let labels_all = Tensor::from_slice(&labels_all);
        let b = config.batch_size as i64;
        let mut recent: Vec<LossReport> = Vec::new();
        for step in 0..steps {
            let pick = |pool: &Tensor| Tensor::randint(pool.size()[0], [b], (Kind::Int64, Device::Cpu));
            let li = pick(&labelled_t);
            let lx = train.batch(&labelled_t.index_select(0, &li), options.device, modality);
            let ly = labels_all.index_select(0, &li);
            // The supervised baseline has no unlabelled samples: the step gets an empty batch.
            let ux = (!unlabelled.is_empty())
                .then(|| train.batch(&unlabelled_t.index_select(0, &pick(&unlabelled_t)), options.device, modality));
            let report = learner.step_on(Some((lx, ly)), ux);
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

    /// The test split measured after `step` steps of the method.
    fn curve_point(&self, step: u64, learner: &Learner) -> CurvePoint {
        let test = &self.test;
        let predicted = self.predict(learner, test);
        let momentum = learner.predict_all(Encoder::Momentum, self.batches(test.split, &test.novel));
        CurvePoint {
            step,
            open_world: test.gcd(&predicted.decisions),
            novel_clusters_in_use: learner.novel_clusters_in_use().len(),
            novel_accuracy: cluster_accuracy(&test.novel_truth, &predicted.novel),
            known_accuracy: accuracy(&test.known_truth, &predicted.known),
            momentum_novel_accuracy: cluster_accuracy(&test.novel_truth, &clusters(momentum.clusters)),
            bank_cluster_accuracy: momentum
                .bank_clusters
                .map(|bank| cluster_accuracy(&test.novel_truth, &clusters(bank))),
        }
    }

    /// What `learner` says about the samples of `test`.
    fn predict(&self, learner: &Learner, test: &TestSet) -> Predicted {
        let novel = learner.predict_all(Encoder::Online, self.batches(test.split, &test.novel));
        let known = learner.predict_all(Encoder::Online, self.batches(test.split, &test.known));
        let classes = self.model.known_classes.len() as i64;
        let decisions = if learner.open_world() {
            known.joint.iter().chain(&novel.joint).copied().collect()
        } else {
            known.classes.iter().copied().chain(novel.clusters.iter().map(|&k| classes + k)).collect()
        };
        Predicted { novel: clusters(novel.clusters), known: known.classes, features: novel.features, decisions }
    }

    /// The samples `indices` of `split` on the device, [`PREDICT_CHUNK`] at a time.
    fn batches<'s>(&self, split: &'s Split, indices: &'s [i64]) -> impl Iterator<Item = Input> + 's {
        let (device, modality) = (self.options.device, self.options.model.modality);
        indices.chunks(PREDICT_CHUNK).map(move |chunk| split.batch(&Tensor::from_slice(chunk), device, modality))
    }

    /// How well k-means (best of 3 starts, seeded with the run's seed) on the rows of `x`
    /// clusters the novel test samples.
    fn kmeans(&self, x: &Tensor) -> Clustering {
        let k = self.options.novel.len() as i64;
        Clustering::of(&self.test.novel_truth, &kmeans(x, k, 3, 100, self.options.seed))
    }
}

/// The mean of each loss term over `reports`.
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
        routed_novel: sum(|r| r.routed_novel),
        routed_abstain: sum(|r| r.routed_abstain),
        routed_known_ce: sum(|r| r.routed_known_ce),
        novel_share: sum(|r| r.novel_share),
    }
}

/// The first `fraction` (rounded up) of each known class's training samples in an order drawn
/// from `seed` — the labelled ones — and the rest; each ascending. Draws nothing from the global
/// random generator.
fn labelled_share(train: &super::Split, known: &[usize], fraction: f64, seed: i64) -> (Vec<i64>, Vec<i64>) {
    let (mut labelled, mut rest) = (Vec::new(), Vec::new());
    for &class in known {
        let mut members = train.indices_of(&[class]);
        SplitMix64::new(seed as u64 ^ class as u64).shuffle(&mut members);
        let keep = ((members.len() as f64) * fraction).ceil() as usize;
        labelled.extend_from_slice(&members[..keep.min(members.len())]);
        rest.extend_from_slice(&members[keep.min(members.len())..]);
    }
    labelled.sort_unstable();
    rest.sort_unstable();
    (labelled, rest)
}

/// A known class's index among the `known` classes: the label the labelled head learns.
fn known_index(known: &[usize], label: usize) -> i64 {
    known.iter().position(|&k| k == label).expect("known label") as i64
}

/// Cluster ids as the metrics take them.
fn clusters(ids: Vec<i64>) -> Vec<usize> {
    ids.into_iter().map(|id| id as usize).collect()
}

/// Share of `predicted` classes equal to the `truth`; 0 for no samples.
fn accuracy(truth: &[i64], predicted: &[i64]) -> f64 {
    if truth.is_empty() {
        return 0.0;
    }
    truth.iter().zip(predicted).filter(|(a, b)| a == b).count() as f64 / truth.len() as f64
}
