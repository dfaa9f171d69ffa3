//! Labelled data sets for `eval`: IDX files (MNIST layout), image folders, or audio-visual clips
//! listed in a manifest (`novelstream dataset av-digits` writes one). An image is a window of one
//! frame and a clip is a window of frames and audio, decoded by the daemon's own decoder, so the
//! model and trainer are the daemon's own.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tch::{Device, Kind, Tensor};

use super::idx::read_idx;
use super::EvalError;
use crate::config::{DecodeConfig, Modality};
use crate::decode::decode_segment;
use crate::model::{mel_tensor, Input, LogMel, LOG_FLOOR};

/// Samples of one split: frames `[N, T, C, H, W]` bytes (C = 1 for grey, 3 for RGB), log-mel
/// spectrograms `[N, 1, M, F]` where the data has audio, and class indices.
#[derive(Debug)]
pub struct Split {
    pub frames: Option<Tensor>,
    pub mel: Option<Tensor>,
    pub labels: Vec<usize>,
}

impl Split {
    /// The rows `index` as the model's input, with the modalities `modality` asks for (which the
    /// split must have: see [`Dataset::check`]).
    pub fn batch(&self, index: &Tensor, device: Device, modality: Modality) -> Input {
        let index = index.to(Device::Cpu);
        let frames = modality.visual().then(|| {
            let frames = self.frames.as_ref().expect("checked: the data set has frames");
            let x = frames.index_select(0, &index).to(device).to_kind(Kind::Float) / 255.0;
            let size = x.size();
            if size[2] == 1 {
                x.expand([size[0], size[1], 3, size[3], size[4]], false)
            } else {
                x
            }
        });
        let mel = modality
            .audio()
            .then(|| self.mel.as_ref().expect("checked: the data set has audio").index_select(0, &index).to(device));
        Input { frames, mel }
    }

    /// The raw input of the rows `index` as one flat vector each (pixels in [0, 1], log-mel
    /// standardised so neither modality dominates), for the k-means baseline.
    pub fn raw(&self, index: &Tensor, modality: Modality) -> Tensor {
        let input = self.batch(index, Device::Cpu, modality);
        let standardise = |t: Tensor| {
            let t = t.flatten(1, -1);
            (&t - t.mean(Kind::Float)) / t.std(true).clamp_min(1e-6)
        };
        let parts: Vec<Tensor> =
            [input.frames.map(|f| f.flatten(1, -1)), input.mel.map(standardise)].into_iter().flatten().collect();
        if parts.len() == 1 {
            parts.into_iter().next().expect("one part")
        } else {
            // Pixels standardised too when both are present.
            Tensor::cat(&parts.into_iter().map(standardise).collect::<Vec<_>>(), 1)
        }
    }

    /// The same samples with one modality withheld: `Visual` blanks the frames, `Audio` makes
    /// the spectrograms those of silence (what a stream without that track decodes to).
    pub fn withholding(&self, modality: Modality) -> Split {
        let mut split = self.shallow_clone();
        match modality {
            Modality::Visual => split.frames = self.frames.as_ref().map(Tensor::zeros_like),
            Modality::Audio => split.mel = self.mel.as_ref().map(|m| m.full_like(f64::from(LOG_FLOOR.ln()))),
            Modality::Both => panic!("withholding both modalities leaves nothing"),
        }
        split
    }

    /// The same samples, sharing their tensors.
    pub fn shallow_clone(&self) -> Split {
        Split {
            frames: self.frames.as_ref().map(Tensor::shallow_clone),
            mel: self.mel.as_ref().map(Tensor::shallow_clone),
            labels: self.labels.clone(),
        }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Indices of the samples whose class is in `classes`.
    pub fn indices_of(&self, classes: &[usize]) -> Vec<i64> {
        (0..self.len()).filter(|&i| classes.contains(&self.labels[i])).map(|i| i as i64).collect()
    }
}

#[derive(Debug)]
pub struct Dataset {
    /// Class names, indexed by label.
    pub classes: Vec<String>,
    pub train: Split,
    pub test: Split,
}

impl Dataset {
    /// Refuses a modality the data does not have.
    pub fn check(&self, modality: Modality) -> Result<(), EvalError> {
        if modality.visual() && self.train.frames.is_none() {
            return Err(EvalError::Invalid("this data set has no frames: use --modality audio".into()));
        }
        if modality.audio() && self.train.mel.is_none() {
            return Err(EvalError::Invalid(
                "this data set has no audio (images only): use --modality visual, or an audio-visual manifest".into(),
            ));
        }
        Ok(())
    }
}

/// Loads `path`: an audio-visual manifest (`manifest.json`, or a folder holding one) whose clips
/// are decoded to windows of `frames` frames of `size`×`size`; IDX files
/// (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-…`, plain or `.gz`); or folders
/// `train/<class>/*` and `test/<class>/*` of images, scaled to `size`.
pub fn load(path: &Path, size: u32, frames: usize, progress: bool) -> Result<Dataset, EvalError> {
    if path.is_file() {
        return load_manifest(path, size, frames, progress);
    }
    let dir = path;
    let idx = dir.join("train-images-idx3-ubyte");
    if dir.join("manifest.json").is_file() {
        load_manifest(&dir.join("manifest.json"), size, frames, progress)
    } else if idx.exists() || idx.with_extension("gz").exists() || dir.join("train-images-idx3-ubyte.gz").exists() {
        load_idx(dir)
    } else if dir.join("train").is_dir() && dir.join("test").is_dir() {
        load_folders(dir, size)
    } else {
        Err(EvalError::Dataset(format!(
            "{} holds no manifest.json, no IDX files (train-images-idx3-ubyte, …) and no train/ and test/ image folders",
            dir.display()
        )))
    }
}

fn load_idx(dir: &Path) -> Result<Dataset, EvalError> {
    let split = |images: &str, labels: &str| -> Result<Split, EvalError> {
        let images = read_idx(&dir.join(images))?;
        let labels = read_idx(&dir.join(labels))?;
        if images.dims.len() != 3 || labels.dims.len() != 1 || images.dims[0] != labels.dims[0] {
            return Err(EvalError::Dataset(format!(
                "IDX shapes {:?} (images) and {:?} (labels) do not fit together",
                images.dims, labels.dims
            )));
        }
        let (n, h, w) = (images.dims[0] as i64, images.dims[1] as i64, images.dims[2] as i64);
        Ok(Split {
            frames: Some(Tensor::from_slice(&images.data).view([n, 1, 1, h, w])),
            mel: None,
            labels: labels.data.iter().map(|&l| l as usize).collect(),
        })
    };
    let train = split("train-images-idx3-ubyte", "train-labels-idx1-ubyte")?;
    let test = split("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")?;
    let classes = 1 + train.labels.iter().chain(&test.labels).copied().max().unwrap_or(0);
    Ok(Dataset { classes: (0..classes).map(|c| c.to_string()).collect(), train, test })
}

/// FFmpeg's demuxers of single images, which an image-folder data set is made of.
const IMAGE_FORMATS: [&str; 4] = ["png_pipe", "jpeg_pipe", "bmp_pipe", "webp_pipe"];

fn load_folders(dir: &Path, size: u32) -> Result<Dataset, EvalError> {
    let mut classes: Vec<String> = std::fs::read_dir(dir.join("train"))
        .map_err(|e| EvalError::Dataset(format!("{}: {e}", dir.join("train").display())))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    classes.sort();
    if classes.is_empty() {
        return Err(EvalError::Dataset(format!("{} has no class folders", dir.join("train").display())));
    }
    // The operator's own image files: their single-image demuxers join the container list.
    let formats = novelstream_input::DEFAULT_FORMATS.iter().chain(&IMAGE_FORMATS).map(|f| f.to_string()).collect();
    let decode = DecodeConfig {
        frames: 1,
        height: size,
        width: size,
        window: Duration::from_secs(1),
        hop: Duration::from_secs(1),
        formats,
        ..Default::default()
    };
    let split = |name: &str| -> Result<Split, EvalError> {
        let mut bytes = Vec::new();
        let mut labels = Vec::new();
        for (label, class) in classes.iter().enumerate() {
            let folder = dir.join(name).join(class);
            let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
                .map_err(|e| EvalError::Dataset(format!("{}: {e}", folder.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            for file in files {
                let data = std::fs::read(&file).map_err(|e| EvalError::Dataset(format!("{}: {e}", file.display())))?;
                let windows = decode_segment(data, &decode)
                    .map_err(|e| EvalError::Dataset(format!("{}: {e}", file.display())))?;
                let first = windows
                    .into_iter()
                    .next()
                    .ok_or_else(|| EvalError::Dataset(format!("{}: no image", file.display())))?;
                // Window frames are H×W×3 (interleaved); the model reads planes.
                let image = Tensor::from_slice(&first.frames).view([size as i64, size as i64, 3]).permute([2, 0, 1]);
                bytes.push(image);
                labels.push(label);
            }
        }
        if bytes.is_empty() {
            return Err(EvalError::Dataset(format!("{} has no images", dir.join(name).display())));
        }
        Ok(Split { frames: Some(Tensor::stack(&bytes, 0).unsqueeze(1)), mel: None, labels })
    };
    Ok(Dataset { train: split("train")?, test: split("test")?, classes: classes.clone() })
}

/// The manifest `novelstream dataset av-digits` writes (only what loading needs).
#[derive(Debug, Deserialize)]
struct Manifest {
    classes: Vec<String>,
    clip_ms: u64,
    sample_rate: u32,
    clips: Vec<ManifestClip>,
}

#[derive(Debug, Deserialize)]
struct ManifestClip {
    path: PathBuf,
    split: String,
    label: String,
}

/// Decodes every clip of the manifest with the daemon's decoder into one window of `frames`
/// frames at `size`×`size` and its audio's log-mel spectrogram.
fn load_manifest(path: &Path, size: u32, frames: usize, progress: bool) -> Result<Dataset, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::Dataset(format!("{}: {e}", path.display())))?;
    let manifest: Manifest =
        serde_json::from_str(&text).map_err(|e| EvalError::Dataset(format!("{}: {e}", path.display())))?;
    let root = path.parent().unwrap_or(Path::new("."));
    let decode = DecodeConfig {
        frames,
        height: size,
        width: size,
        window: Duration::from_millis(manifest.clip_ms),
        hop: Duration::from_millis(manifest.clip_ms),
        sample_rate: manifest.sample_rate,
        ..Default::default()
    };
    let mel = LogMel::new(manifest.sample_rate);
    let bar = super::progress_bar(manifest.clips.len() as u64, "decode", progress, "clips");
    let split = |name: &str| -> Result<Split, EvalError> {
        let clips: Vec<&ManifestClip> = manifest.clips.iter().filter(|c| c.split == name).collect();
        if clips.is_empty() {
            return Err(EvalError::Dataset(format!("{}: no {name} clips", path.display())));
        }
        let mut labels = Vec::with_capacity(clips.len());
        for clip in &clips {
            let label = manifest.classes.iter().position(|c| *c == clip.label).ok_or_else(|| {
                EvalError::Dataset(format!("{}: label `{}` is not in classes", clip.path.display(), clip.label))
            })?;
            labels.push(label);
        }
        // Two decoders at a time; each clip is small.
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).min(8);
        let chunk = clips.len().div_ceil(workers);
        let decoded: Vec<Result<Vec<crate::decode::Window>, EvalError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = clips
                .chunks(chunk)
                .map(|part| {
                    let (decode, bar) = (&decode, &bar);
                    scope.spawn(move || {
                        part.iter()
                            .map(|clip| {
                                let file = root.join(&clip.path);
                                let fail = |e: String| EvalError::Dataset(format!("{}: {e}", file.display()));
                                let data = std::fs::read(&file).map_err(|e| fail(e.to_string()))?;
                                let window = decode_segment(data, decode)
                                    .map_err(|e| fail(e.to_string()))?
                                    .into_iter()
                                    .next()
                                    .ok_or_else(|| fail("no window".into()))?;
                                bar.inc(1);
                                Ok(window)
                            })
                            .collect::<Result<Vec<_>, _>>()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("decoder thread")).collect()
        });
        let windows: Vec<crate::decode::Window> =
            decoded.into_iter().collect::<Result<Vec<_>, _>>()?.into_iter().flatten().collect();
        let refs: Vec<&crate::decode::Window> = windows.iter().collect();
        let (t, h, w) = (frames as i64, size as i64, size as i64);
        let bytes: Vec<u8> = windows.iter().flat_map(|w| w.frames.iter().copied()).collect();
        Ok(Split {
            frames: Some(
                Tensor::from_slice(&bytes)
                    .view([windows.len() as i64, t, h, w, 3])
                    .permute([0, 1, 4, 2, 3])
                    .contiguous(),
            ),
            mel: Some(mel_tensor(&refs, &mel, decode.audio_silence_dbfs)),
            labels,
        })
    };
    let (train, test) = (split("train")?, split("test")?);
    bar.finish_and_clear();
    Ok(Dataset { classes: manifest.classes, train, test })
}
