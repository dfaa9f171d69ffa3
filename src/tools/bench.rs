//! `novelstream bench`: the product's stages timed against their reference tools on the same
//! machine, in the same run. Results are printed as tables; BENCHMARKS.md records them.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use super::score::nearest_rank;
use super::ToolError;
use crate::config::DecodeConfig;
use crate::decode::decode_segment;

/// Throughput of one way of decoding a clip.
#[derive(Debug, Clone)]
pub struct DecodeRun {
    pub name: String,
    /// Wall seconds per pass (best of the repeats).
    pub seconds: f64,
    /// Windows per second at the product's windowing (the same media for both).
    pub windows_per_s: f64,
    /// Media seconds decoded per wall second.
    pub realtime: f64,
}

impl DecodeRun {
    /// The run of the best pass, `seconds` long, that decoded `windows` windows (`media_s`
    /// seconds of media).
    fn best(name: &str, seconds: f64, windows: usize, media_s: f64) -> Self {
        DecodeRun { name: name.into(), seconds, windows_per_s: windows as f64 / seconds, realtime: media_s / seconds }
    }
}

/// Decodes `clip` `repeat` times with the product's decoder (one thread, as each of the
/// daemon's decoders), and with the `ffmpeg` CLI producing the same raw output — every frame
/// scaled bilinearly to `H × W` RGB24 and the audio resampled to mono f32 at the window rate —
/// with one decoding thread; returns both, best pass of each.
pub fn decode(clip: &Path, config: &DecodeConfig, repeat: usize) -> Result<(DecodeRun, DecodeRun), ToolError> {
    let bytes = std::fs::read(clip).map_err(ToolError::file("reading", clip))?;
    let mut best = f64::INFINITY;
    let mut windows = 0;
    for _ in 0..repeat.max(1) {
        let started = Instant::now();
        let decoded = decode_segment(bytes.clone(), config)
            .map_err(|source| ToolError::Decode { clip: clip.to_owned(), source })?;
        best = best.min(started.elapsed().as_secs_f64());
        windows = decoded.len();
    }
    let media_s = windows as f64 * config.hop.as_secs_f64();
    let product = DecodeRun::best("novelstream decoder", best, windows, media_s);
    let mut cli_best = f64::INFINITY;
    for _ in 0..repeat.max(1) {
        let started = Instant::now();
        let status = Command::new("ffmpeg")
            .args(["-v", "error", "-nostdin", "-threads", "1", "-i"])
            .arg(clip)
            .args(["-map", "0:v:0", "-filter_threads", "1", "-vf"])
            .arg(format!("scale={}:{}:flags=bilinear", config.width, config.height))
            .args(["-pix_fmt", "rgb24", "-f", "rawvideo", "-y", "/dev/null", "-map", "0:a:0?", "-ac", "1", "-ar"])
            .arg(config.sample_rate.to_string())
            .args(["-f", "f32le", "-y", "/dev/null"])
            .status()
            .map_err(ToolError::FfmpegStart)?;
        if !status.success() {
            return Err(ToolError::FfmpegFailed { clip: clip.to_owned(), status });
        }
        cli_best = cli_best.min(started.elapsed().as_secs_f64());
    }
    Ok((product, DecodeRun::best("ffmpeg CLI, same output", cli_best, windows, media_s)))
}

/// Assignment (inference) at one batch size.
#[derive(Debug, Clone)]
pub struct AssignRun {
    pub batch: usize,
    pub windows_per_s: f64,
    /// Seconds per batch: median and 99th percentile.
    pub p50_s: f64,
    pub p99_s: f64,
}

/// Assigns batches of synthetic windows (random frames and audio at the configured size) with
/// the daemon's assigner, `batches` times per batch size after a warm-up; the model's weights do
/// not change its cost.
pub fn assign(
    config: &crate::config::Config,
    device: tch::Device,
    sizes: &[usize],
    batches: usize,
) -> Result<Vec<AssignRun>, ToolError> {
    let d = &config.decode;
    let model =
        crate::config::ModelConfig { max_batch: sizes.iter().copied().max().unwrap_or(1), ..config.model.clone() };
    let mut assigner = crate::assign::Assigner::untrained(&model, d, device)?;
    let mut rng = crate::rng::SplitMix64::new(0);
    let frame_bytes = (d.height * d.width * 3) as usize * d.frames;
    let samples = d.window_samples();
    let window = |i: usize| crate::decode::Window {
        index: i as u32,
        start_ms: 0,
        end_ms: d.window.as_millis() as u64,
        frames: (0..frame_bytes).map(|_| (rng.next_u64() >> 56) as u8).collect(),
        audio: (0..samples).map(|_| rng.normal() as f32 * 0.1).collect(),
    };
    let pool: Vec<crate::decode::Window> = (0..model.max_batch).map(window).collect();
    Ok(sizes
        .iter()
        .map(|&batch| {
            let windows = &pool[..batch];
            for _ in 0..3 {
                assigner.assign(windows, None);
            }
            let mut times: Vec<f64> = (0..batches.max(1))
                .map(|_| {
                    let started = Instant::now();
                    assigner.assign(windows, None);
                    started.elapsed().as_secs_f64()
                })
                .collect();
            times.sort_by(f64::total_cmp);
            let total: f64 = times.iter().sum();
            AssignRun {
                batch,
                windows_per_s: (batch * times.len()) as f64 / total,
                p50_s: nearest_rank(&times, 0.5),
                p99_s: nearest_rank(&times, 0.99),
            }
        })
        .collect())
}

/// Training steps of the daemon's learner.
#[derive(Debug, Clone)]
pub struct TrainRun {
    /// Windows per step (labelled plus unlabelled).
    pub windows_per_step: usize,
    pub steps: usize,
    /// Seconds per step: mean, median and 90th percentile.
    pub mean_s: f64,
    pub p50_s: f64,
    pub p90_s: f64,
    pub windows_per_s: f64,
}

/// Times `steps` training steps (after `warmup` untimed ones) of the daemon's learner on one
/// fixed synthetic batch: `train.batch_size` labelled and as many unlabelled windows of the
/// configured size, every loss term and augmentation of the config. The data do not change
/// the cost.
pub fn train(
    config: &crate::config::Config,
    device: tch::Device,
    steps: usize,
    warmup: usize,
) -> Result<TrainRun, ToolError> {
    use tch::{Kind, Tensor};
    let (m, d, t) = (&config.model, &config.decode, &config.train);
    let mut learner = crate::train::Learner::new(m, t, device)?;
    let b = t.batch_size as i64;
    let mel = crate::model::LogMel::new(d.sample_rate);
    let mel_frames = mel.frames_for(d.window_samples()) as i64;
    let input = |n: i64| crate::model::Input {
        frames: m.modality.visual().then(|| {
            Tensor::rand([n, d.frames as i64, 3, i64::from(d.height), i64::from(d.width)], (Kind::Float, device))
        }),
        mel: m.modality.audio().then(|| Tensor::randn([n, 1, mel.bands() as i64, mel_frames], (Kind::Float, device))),
    };
    let classes = m.known_classes.len().max(1) as i64;
    let (labelled, unlabelled) = (input(b), input(b));
    let labels = Tensor::randint(classes, [b], (Kind::Int64, device));
    let sync = || {
        if let tch::Device::Cuda(_) = device {
            tch::Cuda::synchronize(0);
        }
    };
    for _ in 0..warmup {
        learner.step(&labelled, &labels, &unlabelled);
    }
    sync();
    let mut times: Vec<f64> = (0..steps.max(1))
        .map(|_| {
            let started = Instant::now();
            learner.step(&labelled, &labels, &unlabelled);
            sync();
            started.elapsed().as_secs_f64()
        })
        .collect();
    let mean_s = times.iter().sum::<f64>() / times.len() as f64;
    times.sort_by(f64::total_cmp);
    Ok(TrainRun {
        windows_per_step: 2 * t.batch_size,
        steps: times.len(),
        mean_s,
        p50_s: nearest_rank(&times, 0.5),
        p90_s: nearest_rank(&times, 0.9),
        windows_per_s: (2 * t.batch_size) as f64 / mean_s,
    })
}
