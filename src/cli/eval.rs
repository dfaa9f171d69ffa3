//! `novelstream eval`: the method against k-means baselines on a labelled data set.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use novelstream::config::{Config, Contrast, DevicePreference, Modality};
use novelstream::eval::{evaluate, parse_classes, write_outputs, EvalOptions, EvalResults};
use novelstream::train::{ClusterPairs, PseudoLabelKind};

use super::load_config;

/// Arguments of `eval`.
#[derive(Args)]
pub struct EvalArgs {
    /// Data set: an audio-visual manifest (manifest.json, or its folder; see `novelstream dataset
    /// av-digits`), a folder of IDX files (MNIST layout, plain or .gz), or a folder with train/
    /// and test/ folders holding one sub-folder of images per class.
    #[arg(long)]
    dataset: PathBuf,
    /// Known classes (labelled during training), e.g. `0-4`.
    #[arg(long, default_value = "0-4")]
    known: String,
    /// Novel classes (unlabelled during training, to be discovered), e.g. `5-9`.
    #[arg(long, default_value = "5-9")]
    novel: String,
    /// Share of each known class's training samples that is labelled; the rest join the
    /// unlabelled samples, as in generalised category discovery (1: the paper's split).
    #[arg(long, default_value_t = 1.0)]
    labelled_fraction: f64,
    /// Novel clusters: `auto` (estimated while training) or a number (default:
    /// model.novel_clusters of the config, `auto` by default).
    #[arg(long)]
    novel_clusters: Option<novelstream::config::NovelClusters>,
    /// Train on the known classes alone: the novel classes' training samples are left out (the
    /// test split still holds them). With `--save-checkpoint`, a known-only starting model for
    /// the daemon (`checkpoint.start`).
    #[arg(long)]
    known_only: bool,
    /// Also write the trained learner as a daemon checkpoint here, for `checkpoint.start`. The
    /// daemon must run the same `--config` (model, bank size, decode geometry), and the eval's
    /// `--image-size` and `--frames` must be its decode height, width and frames.
    #[arg(long)]
    save_checkpoint: Option<PathBuf>,
    /// The paper's task-aware setting (model.open_world = false): unlabelled samples are all
    /// novel, and known and novel test samples are measured with their own heads.
    #[arg(long)]
    task_aware: bool,
    /// Seed of the weights, the sampling and the WTA permutations.
    #[arg(long, default_value_t = 0)]
    seed: i64,
    /// Training steps of the method.
    #[arg(long, default_value_t = 3000)]
    steps: u64,
    /// Training steps of the supervised encoder of the k-means baseline.
    #[arg(long, default_value_t = 300)]
    baseline_steps: u64,
    /// Also measure the test split every this many steps: the learning curve in results.json
    /// (0: only at the end).
    #[arg(long, default_value_t = 0)]
    curve_every: u64,
    /// Where results.json goes.
    #[arg(long, default_value = "results.json")]
    out: PathBuf,
    /// Where predictions.csv goes (index,true_label,prediction per test sample of the chosen
    /// classes; prediction is a known class's name or novel-<id>).
    #[arg(long, default_value = "predictions.csv")]
    predictions: PathBuf,
    /// Config file whose [model] and [train] sections are used (defaults otherwise).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Pairwise pseudo labels: the method's WTA hash, or an ablation.
    #[arg(long, value_enum)]
    pseudo_labels: Option<PseudoLabelKind>,
    /// Pairs in the same k-means cluster of the memory bank's unlabelled keys join the pseudo
    /// labels: off (the paper's method), union or agree (default: train.clusters.pairs).
    #[arg(long, value_enum)]
    cluster_pairs: Option<ClusterPairs>,
    /// Ablation: no instance discrimination (two views of a window as the positive pair).
    #[arg(long)]
    no_instance: bool,
    /// Ablation: no category discrimination (labelled windows of one class as positives).
    #[arg(long)]
    no_category: bool,
    /// Ablation: no pairwise BCE through the unlabelled head (the pseudo labels go unused).
    #[arg(long)]
    no_bce: bool,
    /// Ablation: no consistency between the heads' outputs on two views.
    #[arg(long)]
    no_consistency: bool,
    /// Ablation: contrast against the batch only, without the memory bank of momentum keys.
    #[arg(long)]
    no_memory_bank: bool,
    /// Which encoders make `z` (default: model.modality of the config, else visual); audio and
    /// both need an audio-visual data set.
    #[arg(long, value_enum)]
    modality: Option<Modality>,
    /// Contrastive pairs: within-modal, cross-modal (visual against audio keys and back) or both
    /// (default: train.contrast of the config, else both).
    #[arg(long, value_enum)]
    contrast: Option<Contrast>,
    /// Side length images of folder data sets and clip frames are scaled to.
    #[arg(long, default_value_t = 32)]
    image_size: u32,
    /// Frames per window of an audio-visual clip.
    #[arg(long, default_value_t = 2)]
    frames: usize,
    /// Also measure the trained model on this data set's test split (same classes; repeatable),
    /// e.g. `data/av-digits-seen` (`dataset av-digits --seen-languages`). Its predictions go to
    /// `<predictions>.<folder name>.csv`, its numbers to results.json's `views`.
    #[arg(long)]
    also_test: Vec<PathBuf>,
    /// Where the model runs: auto, cpu or cuda.
    #[arg(long, default_value = "auto")]
    device: String,
}

/// Trains and measures, writes results.json and predictions.csv, and prints the gist.
pub fn handle(args: EvalArgs) -> anyhow::Result<()> {
    let config = configure(&args)?;
    if args.frames == 0 {
        bail!("--frames must be at least 1");
    }
    let preference = match args.device.as_str() {
        "auto" => DevicePreference::Auto,
        "cpu" => DevicePreference::Cpu,
        "cuda" => DevicePreference::Cuda,
        other => bail!("--device must be auto, cpu or cuda, not `{other}`"),
    };
    let save_checkpoint = match &args.save_checkpoint {
        Some(path) => {
            let d = &config.decode;
            if (d.height, d.width, d.frames) != (args.image_size, args.image_size, args.frames) {
                bail!(
                    "--save-checkpoint: the daemon's windows would be {}x{}, {} frames (decode in the config) but \
                     this run trains on {}x{}, {} frames (--image-size, --frames): make them agree",
                    d.height,
                    d.width,
                    d.frames,
                    args.image_size,
                    args.image_size,
                    args.frames
                );
            }
            Some((path.clone(), config.decode.clone()))
        }
        None => None,
    };
    let options = EvalOptions {
        dataset: args.dataset,
        known: parse_classes(&args.known).map_err(|e| anyhow::anyhow!("--known: {e}"))?,
        novel: parse_classes(&args.novel).map_err(|e| anyhow::anyhow!("--novel: {e}"))?,
        labelled_fraction: args.labelled_fraction,
        known_only: args.known_only,
        save_checkpoint,
        seed: args.seed,
        steps: args.steps,
        baseline_steps: args.baseline_steps,
        image_size: args.image_size,
        frames: args.frames,
        model: config.model,
        train: config.train,
        device: novelstream::model::select_device(preference)?,
        progress: super::progress(),
        curve_every: args.curve_every,
        also_test: args.also_test,
    };
    let (results, found) = evaluate(&options)?;
    write_outputs(&results, &found, &args.out, &args.predictions)?;
    print_results(&results, &args.out, &args.predictions);
    if let Some(path) = &args.save_checkpoint {
        println!("wrote the trained learner to {} (the daemon's checkpoint.start)", path.display());
    }
    Ok(())
}

/// The config file (or the defaults) with the flags' ablations and choices applied, validated
/// as a whole so a flag cannot make a combination the daemon would refuse.
fn configure(args: &EvalArgs) -> anyhow::Result<Config> {
    let mut config = load_config(args.config.as_deref())?;
    let train = &mut config.train;
    if let Some(mode) = args.cluster_pairs {
        train.clusters.pairs = mode;
    }
    if let Some(kind) = args.pseudo_labels {
        train.pseudo.kind = kind;
    }
    train.losses.instance_contrast &= !args.no_instance;
    train.losses.category_contrast &= !args.no_category;
    train.losses.pairwise_bce &= !args.no_bce;
    train.losses.consistency &= !args.no_consistency;
    train.losses.memory_bank &= !args.no_memory_bank;
    if let Some(contrast) = args.contrast {
        train.contrast = contrast;
    }
    if let Some(modality) = args.modality {
        config.model.modality = modality;
    }
    if let Some(clusters) = args.novel_clusters {
        config.model.novel_clusters = clusters;
    }
    config.model.open_world &= !args.task_aware;
    config.validate()?;
    Ok(config)
}

fn print_results(results: &EvalResults, out: &std::path::Path, predictions: &std::path::Path) {
    let m = &results.method;
    let b = &results.baselines;
    let w = &m.open_world;
    println!(
        "all {:.2}%  old {:.2}%  new {:.2}%  novel clusters {} (true {})",
        100.0 * w.accuracy.all,
        100.0 * w.accuracy.old,
        100.0 * w.accuracy.new,
        w.novel_clusters_estimated,
        w.novel_classes
    );
    println!(
        "task-aware: novel classes {:?}: accuracy {:.2}%  NMI {:.3}  ARI {:.3}  (known-class accuracy {:.2}%)",
        results.novel_classes,
        100.0 * m.novel.accuracy,
        m.novel.nmi,
        m.novel.ari,
        100.0 * m.known_accuracy
    );
    println!(
        "baselines: k-means on pixels {:.2}%, k-means on supervised features {:.2}%",
        100.0 * b.kmeans_raw_pixels.accuracy,
        100.0 * b.kmeans_supervised_features.accuracy
    );
    println!(
        "k-means on the trained features {:.2}%; trained {} steps in {} ({} in all); wrote {} and {}",
        100.0 * m.kmeans_on_features.accuracy,
        results.steps,
        humantime::format_duration(Duration::from_secs(m.train_seconds.round() as u64)),
        humantime::format_duration(Duration::from_secs(results.wall_seconds.round() as u64)),
        out.display(),
        predictions.display()
    );
    for view in &m.views {
        let w = &view.open_world;
        println!(
            "{}: all {:.2}%  old {:.2}%  new {:.2}%  (task-aware novel {:.2}%, known {:.2}%)",
            view.name,
            100.0 * w.all,
            100.0 * w.old,
            100.0 * w.new,
            100.0 * view.novel.accuracy,
            100.0 * view.known_accuracy
        );
    }
}
