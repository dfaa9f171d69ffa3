//! `novelstream dataset av-digits`: labelled audio-visual clips from real data. Each clip shows
//! one handwritten MNIST digit drifting slowly across the frame while a person says that digit
//! (the Tux Paint recordings, one speaker per language), with a little noise, encoded as MP4
//! (H.264 + AAC). Test clips use MNIST test images and speakers of languages never heard in
//! training. Everything random is drawn from one seed, so a build is byte-for-byte repeatable.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use super::idx::read_idx;
use super::EvalError;
use crate::rng::SplitMix64;

pub const MANIFEST_SCHEMA: &str = "novelstream.av-digits.v1";

/// What to build.
#[derive(Debug, Clone)]
pub struct AvDigitsOptions {
    /// MNIST IDX files.
    pub mnist: PathBuf,
    /// Spoken digits: `<digit>.ogg` and `<digit>_<language>.ogg`.
    pub speech: PathBuf,
    pub out: PathBuf,
    pub seed: u64,
    pub train_per_class: usize,
    pub test_per_class: usize,
    /// Languages (speakers) held out for the test split; only languages with all ten digits
    /// are held out, so every test class has speakers.
    pub test_languages: usize,
    /// The test clips speak in the training split's languages instead (still MNIST test images,
    /// and each clip's gain, offset and noise drawn anew): a seen-language test split. The
    /// training clips are the same as without it, so one trained model meets both test splits.
    pub seen_languages: bool,
    /// Side of the square frames.
    pub size: u32,
    pub fps: u32,
    pub clip_ms: u64,
    pub sample_rate: u32,
    /// Clips encoded at once (one `ffmpeg` each).
    pub workers: usize,
    pub progress: bool,
}

impl Default for AvDigitsOptions {
    fn default() -> Self {
        Self {
            mnist: "data/mnist".into(),
            speech: "data/spoken-digits".into(),
            out: "data/av-digits".into(),
            seed: 0,
            train_per_class: 300,
            test_per_class: 100,
            test_languages: 6,
            seen_languages: false,
            size: 64,
            fps: 10,
            clip_ms: 1000,
            sample_rate: 16000,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            progress: false,
        }
    }
}

/// `manifest.json`: the clips and how they were made.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AvManifest {
    pub schema: String,
    pub seed: u64,
    pub classes: Vec<String>,
    pub clip_ms: u64,
    pub fps: u32,
    pub width: u32,
    pub height: u32,
    pub sample_rate: u32,
    pub train_languages: Vec<String>,
    pub test_languages: Vec<String>,
    pub clips: Vec<AvClip>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AvClip {
    /// Relative to the manifest's folder.
    pub path: PathBuf,
    pub split: String,
    pub label: String,
    /// Index of the image in MNIST's own split of the same name.
    pub image: usize,
    /// The recording's file name and its speaker's language.
    pub speech: String,
    pub language: String,
}

/// One recording: the digit it says and its trimmed samples.
struct Utterance {
    file: String,
    digit: usize,
    language: String,
    samples: Vec<f32>,
}

/// How one clip is drawn: everything random about it.
struct Plan {
    clip: AvClip,
    utterance: usize,
    /// Digit centre at the start (pixels from the frame centre) and its drift over the clip.
    start: (f64, f64),
    drift: (f64, f64),
    /// Rendered digit height as a share of the frame, and its change over the clip.
    scale: f64,
    zoom: f64,
    gain: f64,
    offset: usize,
    noise: f64,
    noise_seed: u64,
}

fn dataset_error(context: impl std::fmt::Display, e: impl std::fmt::Display) -> EvalError {
    EvalError::Dataset(format!("{context}: {e}"))
}

/// MNIST images as one split holds them: pixels (784 a digit), labels, and the count.
type MnistSplit = (Vec<u8>, Vec<u8>, usize);

/// Builds the set; returns its manifest (also written to `out/manifest.json`).
pub fn build_av_digits(options: &AvDigitsOptions) -> Result<AvManifest, EvalError> {
    if options.train_per_class == 0 || options.test_per_class == 0 {
        return Err(EvalError::Invalid("clips per class must be at least 1 in both splits".into()));
    }
    if options.size < 16 || options.size % 2 == 1 {
        return Err(EvalError::Invalid("the frame size must be even and at least 16".into()));
    }
    let train_images = read_mnist(&options.mnist, "train-images-idx3-ubyte", "train-labels-idx1-ubyte")?;
    let test_images = read_mnist(&options.mnist, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")?;
    let utterances = load_speech(&options.speech, options.sample_rate, options.workers)?;
    let mut rng = SplitMix64::new(options.seed ^ 0x4156_4449_4749_5453);
    let (train_languages, held_out) = split_languages(&utterances, options.test_languages, &mut rng)?;
    let test_languages = if options.seen_languages { train_languages.clone() } else { held_out };
    let clip_samples = (options.clip_ms * options.sample_rate as u64 / 1000) as usize;
    let mut plans = Vec::new();
    for (split, per_class, (_, labels, _), languages) in [
        ("train", options.train_per_class, &train_images, &train_languages),
        ("test", options.test_per_class, &test_images, &test_languages),
    ] {
        let draw = SplitDraw { split, per_class, labels, languages, clip_samples };
        plan_split(&draw, &utterances, &mut rng, &mut plans)?;
    }
    std::fs::create_dir_all(&options.out).map_err(|e| dataset_error(options.out.display(), e))?;
    render_clips(&plans, &utterances, (&train_images, &test_images), clip_samples, options)?;
    let manifest = AvManifest {
        schema: MANIFEST_SCHEMA.into(),
        seed: options.seed,
        classes: (0..10).map(|d| d.to_string()).collect(),
        clip_ms: options.clip_ms,
        fps: options.fps,
        width: options.size,
        height: options.size,
        sample_rate: options.sample_rate,
        train_languages: train_languages.iter().map(|l| l.to_string()).collect(),
        test_languages: test_languages.iter().map(|l| l.to_string()).collect(),
        clips: plans.into_iter().map(|p| p.clip).collect(),
    };
    let path = options.out.join("manifest.json");
    let mut text = serde_json::to_string_pretty(&manifest).expect("manifest serializes");
    text.push('\n');
    std::fs::write(&path, text).map_err(|e| dataset_error(path.display(), e))?;
    Ok(manifest)
}

/// One split of MNIST's IDX files in `dir`, checked to be 28×28 digits with a label each.
fn read_mnist(dir: &Path, images: &str, labels: &str) -> Result<MnistSplit, EvalError> {
    let images = read_idx(&dir.join(images))?;
    let labels = read_idx(&dir.join(labels))?;
    if images.dims.len() != 3 || images.dims[1] != 28 || images.dims[2] != 28 || labels.dims[0] != images.dims[0] {
        return Err(EvalError::Dataset(format!("{}: not MNIST-shaped IDX files", dir.display())));
    }
    Ok((images.data, labels.data, images.dims[0]))
}

/// Holds out `count` whole languages whose speaker says every digit, drawn with `rng`; returns
/// (train languages, test languages).
fn split_languages<'a>(
    utterances: &'a [Utterance],
    count: usize,
    rng: &mut SplitMix64,
) -> Result<(BTreeSet<&'a str>, BTreeSet<&'a str>), EvalError> {
    let mut digits_of: BTreeMap<&str, BTreeSet<usize>> = BTreeMap::new();
    for u in utterances {
        digits_of.entry(&u.language).or_default().insert(u.digit);
    }
    let mut complete: Vec<&str> = digits_of.iter().filter(|(_, d)| d.len() == 10).map(|(l, _)| *l).collect();
    rng.shuffle(&mut complete);
    if count == 0 || count >= complete.len() {
        return Err(EvalError::Invalid(format!(
            "test languages must be between 1 and {} ({} languages say all ten digits)",
            complete.len().saturating_sub(1),
            complete.len()
        )));
    }
    let test: BTreeSet<&str> = complete[..count].iter().copied().collect();
    let train: BTreeSet<&str> = digits_of.keys().copied().filter(|l| !test.contains(l)).collect();
    Ok((train, test))
}

/// What the clips of one split are drawn from.
struct SplitDraw<'a> {
    split: &'a str,
    per_class: usize,
    /// The split's MNIST labels.
    labels: &'a [u8],
    /// The languages whose voices this split may use.
    languages: &'a BTreeSet<&'a str>,
    clip_samples: usize,
}

/// Draws `per_class` clips of every digit for one split and appends their plans.
fn plan_split(
    draw: &SplitDraw<'_>,
    utterances: &[Utterance],
    rng: &mut SplitMix64,
    plans: &mut Vec<Plan>,
) -> Result<(), EvalError> {
    let (split, labels) = (draw.split, draw.labels);
    for digit in 0..10usize {
        let mut images: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] as usize == digit).collect();
        rng.shuffle(&mut images);
        let mut voices: Vec<usize> = (0..utterances.len())
            .filter(|&i| utterances[i].digit == digit && draw.languages.contains(utterances[i].language.as_str()))
            .collect();
        if images.is_empty() || voices.is_empty() {
            return Err(EvalError::Dataset(format!("no {split} images or speakers for digit {digit}")));
        }
        rng.shuffle(&mut voices);
        for i in 0..draw.per_class {
            let utterance = voices[i % voices.len()];
            let u = &utterances[utterance];
            let len = u.samples.len().min(draw.clip_samples);
            let index = plans.len();
            plans.push(Plan {
                clip: AvClip {
                    path: PathBuf::from(format!("{split}/{digit}/{index:05}.mp4")),
                    split: split.into(),
                    label: digit.to_string(),
                    image: images[i % images.len()],
                    speech: u.file.clone(),
                    language: u.language.clone(),
                },
                utterance,
                start: (rng.uniform(-0.08, 0.08), rng.uniform(-0.08, 0.08)),
                drift: (rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1)),
                scale: rng.uniform(0.6, 0.75),
                zoom: rng.uniform(-0.05, 0.05),
                gain: rng.uniform(0.4, 0.9),
                offset: rng.below(draw.clip_samples - len + 1),
                noise: rng.uniform(0.002, 0.01),
                noise_seed: rng.next_u64(),
            });
        }
    }
    Ok(())
}

/// Renders and encodes every planned clip into `options.out`, on `options.workers` threads.
fn render_clips(
    plans: &[Plan],
    utterances: &[Utterance],
    (train_images, test_images): (&MnistSplit, &MnistSplit),
    clip_samples: usize,
    options: &AvDigitsOptions,
) -> Result<(), EvalError> {
    let bar = super::progress_bar(plans.len() as u64, "clips", options.progress, "clips");
    let workers = options.workers.max(1);
    let results: Vec<Result<(), EvalError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let bar = &bar;
                scope.spawn(move || {
                    for plan in plans.iter().skip(w).step_by(workers) {
                        let images = if plan.clip.split == "train" { train_images } else { test_images };
                        let image = &images.0[plan.clip.image * 784..(plan.clip.image + 1) * 784];
                        let frames = render_frames(image, plan, options);
                        let audio = render_audio(&utterances[plan.utterance].samples, plan, clip_samples);
                        encode(&frames, &audio, &options.out.join(&plan.clip.path), options)?;
                        bar.inc(1);
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("encoder thread")).collect()
    });
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    bar.finish_and_clear();
    Ok(())
}

/// Every `<digit>[_<language>].ogg` of `dir`, decoded to mono at `rate` by the `ffmpeg` CLI and
/// trimmed of leading and trailing silence. The file without a language is English.
fn load_speech(dir: &Path, rate: u32, workers: usize) -> Result<Vec<Utterance>, EvalError> {
    let mut files: Vec<(String, usize, String)> = std::fs::read_dir(dir)
        .map_err(|e| dataset_error(dir.display(), e))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter_map(|file| {
            let stem = file.strip_suffix(".ogg")?.to_owned();
            let (digit, language) = match stem.split_once('_') {
                Some((d, l)) => (d.to_owned(), l.to_owned()),
                None => (stem, "en".to_owned()),
            };
            let digit = digit.parse::<usize>().ok().filter(|&d| d <= 9)?;
            Some((file, digit, language))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(EvalError::Dataset(format!("{}: no spoken digits (<digit>[_<language>].ogg)", dir.display())));
    }
    let decode = |(file, digit, language): &(String, usize, String)| -> Result<Utterance, EvalError> {
        let path = dir.join(file);
        let output = Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(&path)
            .args(["-f", "f32le", "-ac", "1", "-ar", &rate.to_string(), "-"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| dataset_error("running ffmpeg", e))?;
        if !output.status.success() {
            return Err(dataset_error(path.display(), String::from_utf8_lossy(&output.stderr).trim()));
        }
        let samples: Vec<f32> =
            output.stdout.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let samples = trim_silence(&samples, rate);
        if samples.is_empty() {
            return Err(dataset_error(path.display(), "silent recording"));
        }
        Ok(Utterance { file: file.clone(), digit: *digit, language: language.clone(), samples })
    };
    let chunk = files.len().div_ceil(workers.max(1));
    std::thread::scope(|scope| {
        let handles: Vec<_> =
            files.chunks(chunk).map(|part| scope.spawn(move || part.iter().map(decode).collect::<Vec<_>>())).collect();
        handles.into_iter().flat_map(|h| h.join().expect("speech decoder thread")).collect()
    })
}

/// Drops 10 ms frames quieter than 1/20 of the loudest frame's RMS at either end (keeping 30 ms
/// of margin), and scales the rest to a peak of 1.
fn trim_silence(samples: &[f32], rate: u32) -> Vec<f32> {
    let frame = (rate / 100).max(1) as usize;
    let rms: Vec<f32> =
        samples.chunks(frame).map(|c| (c.iter().map(|s| s * s).sum::<f32>() / c.len() as f32).sqrt()).collect();
    let loudest = rms.iter().cloned().fold(0.0, f32::max);
    if loudest <= 0.0 {
        return Vec::new();
    }
    let loud = |r: &f32| *r >= loudest / 20.0;
    let first = rms.iter().position(loud).unwrap_or(0).saturating_sub(3);
    let last = (rms.iter().rposition(loud).unwrap_or(0) + 4).min(rms.len());
    let kept = &samples[first * frame..(last * frame).min(samples.len())];
    let peak = kept.iter().fold(0f32, |m, s| m.max(s.abs())).max(1e-6);
    kept.iter().map(|s| s / peak).collect()
}

/// Grey frames: the 28×28 digit scaled to `scale` of the frame's height, centred at
/// `start + drift · t`, sampled bilinearly.
fn render_frames(image: &[u8], plan: &Plan, options: &AvDigitsOptions) -> Vec<u8> {
    let size = options.size as usize;
    let count = (options.fps as u64 * options.clip_ms / 1000).max(1) as usize;
    let pixel = |x: i64, y: i64| -> f64 {
        if (0..28).contains(&x) && (0..28).contains(&y) {
            f64::from(image[(y * 28 + x) as usize])
        } else {
            0.0
        }
    };
    let mut out = Vec::with_capacity(count * size * size);
    for f in 0..count {
        let t = if count > 1 { f as f64 / (count - 1) as f64 } else { 0.0 };
        let s = size as f64;
        let (cx, cy) =
            (s / 2.0 + (plan.start.0 + plan.drift.0 * t) * s, s / 2.0 + (plan.start.1 + plan.drift.1 * t) * s);
        let scale = (plan.scale + plan.zoom * t) * s / 28.0;
        for y in 0..size {
            for x in 0..size {
                let sx = (x as f64 + 0.5 - cx) / scale + 14.0 - 0.5;
                let sy = (y as f64 + 0.5 - cy) / scale + 14.0 - 0.5;
                let (x0, y0) = (sx.floor(), sy.floor());
                let (fx, fy) = (sx - x0, sy - y0);
                let (x0, y0) = (x0 as i64, y0 as i64);
                let v = pixel(x0, y0) * (1.0 - fx) * (1.0 - fy)
                    + pixel(x0 + 1, y0) * fx * (1.0 - fy)
                    + pixel(x0, y0 + 1) * (1.0 - fx) * fy
                    + pixel(x0 + 1, y0 + 1) * fx * fy;
                out.push(v.round().clamp(0.0, 255.0) as u8);
            }
        }
    }
    out
}

/// The utterance at `offset`, scaled to a peak of `gain`, over white noise.
fn render_audio(samples: &[f32], plan: &Plan, clip_samples: usize) -> Vec<f32> {
    let mut rng = SplitMix64::new(plan.noise_seed);
    let mut out: Vec<f32> = (0..clip_samples).map(|_| (rng.normal() * plan.noise) as f32).collect();
    for (slot, s) in out[plan.offset..].iter_mut().zip(samples) {
        *slot += s * plan.gain as f32;
    }
    out.iter().map(|s| s.clamp(-1.0, 1.0)).collect()
}

/// Encodes grey frames and mono audio to `path` (H.264 + AAC in MP4) with the `ffmpeg` CLI,
/// bit-exact and single-threaded so the bytes depend only on the input.
fn encode(frames: &[u8], audio: &[f32], path: &Path, options: &AvDigitsOptions) -> Result<(), EvalError> {
    let folder = path.parent().expect("clip paths have a folder");
    std::fs::create_dir_all(folder).map_err(|e| dataset_error(folder.display(), e))?;
    let video_raw = path.with_extension("gray.tmp");
    let audio_raw = path.with_extension("f32.tmp");
    let bytes: Vec<u8> = audio.iter().flat_map(|s| s.to_le_bytes()).collect();
    std::fs::write(&video_raw, frames).map_err(|e| dataset_error(video_raw.display(), e))?;
    std::fs::write(&audio_raw, bytes).map_err(|e| dataset_error(audio_raw.display(), e))?;
    let size = format!("{}x{}", options.size, options.size);
    let output = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-threads", "1", "-f", "rawvideo", "-pix_fmt", "gray", "-s", &size])
        .args(["-r", &options.fps.to_string(), "-i"])
        .arg(&video_raw)
        .args(["-f", "f32le", "-ar", &options.sample_rate.to_string(), "-ac", "1", "-i"])
        .arg(&audio_raw)
        .args(["-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p", "-threads", "1"])
        .args(["-c:a", "aac", "-b:a", "64k", "-fflags", "+bitexact", "-flags", "+bitexact"])
        .args(["-map_metadata", "-1", "-movflags", "+faststart"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| dataset_error("running ffmpeg", e));
    let _ = std::fs::remove_file(&video_raw);
    let _ = std::fs::remove_file(&audio_raw);
    let output = output?;
    if !output.status.success() {
        return Err(dataset_error(path.display(), String::from_utf8_lossy(&output.stderr).trim()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_is_trimmed_and_the_peak_is_one() {
        let mut samples = vec![0.0f32; 1600];
        samples.extend((0..1600).map(|i| 0.5 * (i as f32 * 0.3).sin()));
        samples.extend(vec![0.0f32; 3200]);
        let trimmed = trim_silence(&samples, 16000);
        // 1600 loud samples plus at most 30 ms (480) of margin before and 40 ms after.
        assert!(trimmed.len() >= 1600 && trimmed.len() <= 1600 + 480 + 640, "{}", trimmed.len());
        let peak = trimmed.iter().fold(0f32, |m, s| m.max(s.abs()));
        assert!((peak - 1.0).abs() < 1e-6);
        assert!(trim_silence(&[0.0; 100], 16000).is_empty());
    }
}
