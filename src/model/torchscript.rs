//! A pretrained backbone as an encoder: `model.visual_encoder` or `model.audio_encoder =
//! "torchscript:PATH"` loads a TorchScript module (`tch::CModule`) whose output `[N, D]` is the
//! representation `z_m`; the projections and heads are built on its width, read from one probe
//! forward pass at start. The module reads `[N, C, H, W]` images: each frame (a window's
//! features are the mean over its frames, as the built-in encoder's) or the log-mel
//! spectrogram, resized to `size` and normalised as `model.visual_input` / `audio_input` say;
//! or, with `model.visual_input.stack_frames = T`, a window's frames stacked as a clip
//! `[N, 3, T, H, W]` (the layout of video backbones such as torchvision's R(2+1)D).
//!
//! What trains (`model.encoder_training`): nothing of the module (`frozen`: its forward pass runs
//! without gradients), the parameters whose names start with a prefix of
//! `model.fine_tune_prefix` (`last-block`), or all of them (`full`). The parameters that train
//! are registered in the model's `VarStore` under `<visual|audio>.script.<name with _ for .>`,
//! so the optimiser, the momentum encoder and checkpoints see them and nothing else of the
//! module: a checkpoint never holds a frozen backbone. The module always runs in evaluation
//! mode (its batch-norm statistics and dropout as exported). A frozen module is loaded once per
//! process and shared by the trainer's online and momentum models and the assigner.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use tch::{nn, CModule, Device, Kind, Tensor};

use crate::config::{EncoderInput, EncoderTraining};

/// A TorchScript encoder that cannot serve, said at start.
#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    #[error("{key}: {path}: no such file")]
    Missing { key: &'static str, path: PathBuf },
    #[error("{key}: {path}: not a TorchScript module libtorch can load: {reason}")]
    NotTorchScript { key: &'static str, path: PathBuf, reason: String },
    #[error("{key}: {path}: the module failed on a probe input of shape {shape:?} (the size it reads is {key}'s input `size`): {reason}")]
    Refused { key: &'static str, path: PathBuf, shape: Vec<i64>, reason: String },
    #[error("{key}: {path}: for a probe input of shape {shape:?} the module returned shape {found:?}; z must be [N, D] with N = {n}")]
    OutputShape { key: &'static str, path: PathBuf, shape: Vec<i64>, found: Vec<i64>, n: i64 },
    #[error("{key}: {path}: the module's output for a probe input holds NaN or infinite values")]
    NotFinite { key: &'static str, path: PathBuf },
    #[error("{key}: {path}: encoder_training = \"{mode}\", but the module exposes no parameters to train (a traced module holds its weights as constants: use \"frozen\")")]
    NoParameters { key: &'static str, path: PathBuf, mode: &'static str },
    #[error(
        "model.fine_tune_prefix: no parameter of {path} starts with any of {prefixes:?}; its parameters begin {names}"
    )]
    NoMatch { path: PathBuf, prefixes: Vec<String>, names: String },
    #[error("train.pseudo.wta_window ({window}) and train.pseudo.rank_k ({rank_k}) must not exceed the width of z ({width}) the encoders give")]
    FeatureWidth { window: i64, rank_k: i64, width: i64 },
    #[error("model: {0}")]
    Torch(#[from] tch::TchError),
}

/// Windows in the probe batch.
const PROBE: i64 = 2;

/// A loaded TorchScript encoder, checked by a probe forward pass.
#[derive(Debug)]
pub struct ScriptEncoder {
    /// Shared by every frozen load of the same file (see [`FROZEN`]).
    module: Arc<CModule>,
    /// `[H, W]` the module reads.
    size: [i64; 2],
    /// `[1, C, 1, 1]`.
    mean: Tensor,
    std: Tensor,
    /// No parameter of the module trains: its forward pass needs no gradients.
    frozen: bool,
    /// Frames stacked per window (`[N, C, T, H, W]`); 0: each frame on its own, averaged.
    stack: i64,
    /// Channels the module reads; RGB frames become one luminance channel when it is 1.
    channels: i64,
    dim: i64,
}

impl ScriptEncoder {
    /// Loads the module at `path` for the encoder named by config key `key`, whose input has
    /// `channels` channels, onto `root`'s device, registers the parameters `training` trains
    /// under `root`, and probes it.
    pub fn load(
        root: &nn::Path,
        key: &'static str,
        path: &Path,
        input: &EncoderInput,
        channels: i64,
        training: EncoderTraining,
        prefixes: &[String],
    ) -> Result<Self, EncoderError> {
        let path_buf = || path.to_path_buf();
        if !path.is_file() {
            return Err(EncoderError::Missing { key, path: path_buf() });
        }
        let module = load(path, root.device(), training == EncoderTraining::Frozen)
            .map_err(|e| EncoderError::NotTorchScript { key, path: path_buf(), reason: first_line(&e) })?;
        let parameters = module.named_parameters()?;
        let trains = |name: &str| match training {
            EncoderTraining::Frozen => false,
            EncoderTraining::LastBlock => prefixes.iter().any(|p| name.starts_with(p.as_str())),
            EncoderTraining::Full => true,
        };
        if training != EncoderTraining::Frozen {
            if parameters.is_empty() {
                let mode = if training == EncoderTraining::Full { "full" } else { "last-block" };
                return Err(EncoderError::NoParameters { key, path: path_buf(), mode });
            }
            if !parameters.iter().any(|(name, _)| trains(name)) {
                let names: Vec<&str> = parameters.iter().take(8).map(|(n, _)| n.as_str()).collect();
                return Err(EncoderError::NoMatch {
                    path: path_buf(),
                    prefixes: prefixes.to_vec(),
                    names: names.join(", "),
                });
            }
        }
        let mut frozen = true;
        for (name, tensor) in parameters {
            if trains(&name) {
                frozen = false;
                // The module's own tensor: the optimiser's updates are the module's weights.
                let _ = (root / "script").add(&name.replace('.', "_"), tensor, true);
            } else {
                let _ = tensor.set_requires_grad(false);
            }
        }
        let per_channel = |values: &[f64]| {
            let values: Vec<f32> = (0..channels as usize).map(|c| values[c.min(values.len() - 1)] as f32).collect();
            Tensor::from_slice(&values).view([1, channels, 1, 1]).to(root.device())
        };
        let mut encoder = Self {
            module,
            size: [input.size[0], input.size[1]],
            mean: per_channel(&input.mean),
            std: per_channel(&input.std),
            frozen,
            stack: input.stack_frames,
            channels,
            dim: 0,
        };
        encoder.dim = encoder.probe(key, path, channels, root.device())?;
        Ok(encoder)
    }

    /// One forward pass on random input of the size the module reads: the width of `z`, or why
    /// the module cannot serve.
    fn probe(&self, key: &'static str, path: &Path, channels: i64, device: Device) -> Result<i64, EncoderError> {
        let _guard = tch::no_grad_guard();
        let [h, w] = self.size;
        let input = if self.stack > 0 {
            let frames = Tensor::rand([PROBE * self.stack, channels, h, w], (Kind::Float, device));
            self.clip(&self.normalise(&frames), PROBE)
        } else {
            self.normalise(&Tensor::rand([PROBE, channels, h, w], (Kind::Float, device)))
        };
        let shape = input.size();
        let out = self.module.forward_ts(&[input]).map_err(|e| EncoderError::Refused {
            key,
            path: path.to_path_buf(),
            shape: shape.clone(),
            reason: first_line(&e),
        })?;
        let found = out.size();
        if found.len() != 2 || found[0] != PROBE || found[1] < 1 {
            return Err(EncoderError::OutputShape { key, path: path.to_path_buf(), shape, found, n: PROBE });
        }
        if out.isfinite().all().int64_value(&[]) == 0 {
            return Err(EncoderError::NotFinite { key, path: path.to_path_buf() });
        }
        Ok(found[1])
    }

    fn normalise(&self, x: &Tensor) -> Tensor {
        (x - &self.mean) / &self.std
    }

    /// `[N·T, C, H, W]` prepared frames of `n` windows as `[N, C, T, H, W]` clips.
    fn clip(&self, frames: &Tensor, n: i64) -> Tensor {
        let [h, w] = self.size;
        frames.view([n, self.stack, self.channels, h, w]).permute([0, 2, 1, 3, 4])
    }

    /// `[N, C, H', W']` as the module reads it: RGB to luminance (ITU-R BT.601) for a one-channel
    /// module, resized to its size, normalised.
    fn prepare(&self, x: &Tensor) -> Tensor {
        let x = if self.channels == 1 && x.size()[1] == 3 {
            let weights = Tensor::from_slice(&[0.299f32, 0.587, 0.114]).view([1, 3, 1, 1]).to(x.device());
            (x * weights).sum_dim_intlist(1, true, Kind::Float)
        } else {
            x.shallow_clone()
        };
        if x.size()[2..] == self.size {
            self.normalise(&x)
        } else {
            self.normalise(&x.upsample_bilinear2d(self.size, false, None, None))
        }
    }

    fn run(&self, input: Tensor) -> Tensor {
        let shape = input.size();
        let run = || self.module.forward_ts(&[&input]);
        // The probe checked the shapes: a failure here is libtorch's (memory), as for any layer.
        let z = if self.frozen { tch::no_grad(run) } else { run() };
        z.unwrap_or_else(|e| panic!("the TorchScript encoder failed on a batch of shape {shape:?}: {}", first_line(&e)))
    }

    /// Width of `z`.
    pub fn dim(&self) -> i64 {
        self.dim
    }

    /// Frames `[B, T, 3, H, W]` in [0, 1] (each frame, then the mean over `T`; or the clip of
    /// `T` stacked frames) or images `[N, C, H, W]` → `[N, D]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        if x.dim() == 5 {
            let (b, t) = (x.size()[0], x.size()[1]);
            let frames = self.prepare(&x.flatten(0, 1));
            if self.stack > 0 {
                return self.run(self.clip(&frames, b));
            }
            return self.run(frames).view([b, t, self.dim]).mean_dim(1, false, Kind::Float);
        }
        self.run(self.prepare(x))
    }

    /// Whether the module reads clips of stacked frames.
    pub fn stacks_frames(&self) -> bool {
        self.stack > 0
    }
}

/// Frozen modules loaded, by file and device: nothing of a frozen module changes, so the
/// trainer's online and momentum models and the assigner share one copy of the backbone
/// instead of three. A module no encoder holds any more is loaded afresh.
static FROZEN: Mutex<Vec<(PathBuf, Device, Weak<CModule>)>> = Mutex::new(Vec::new());

/// The module at `path` on `device` in evaluation mode; with `shared`, the copy a frozen
/// encoder already holds, if any.
fn load(path: &Path, device: Device, shared: bool) -> Result<Arc<CModule>, tch::TchError> {
    let mut frozen = FROZEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    frozen.retain(|(_, _, module)| module.strong_count() > 0);
    if shared {
        let held = frozen.iter().find(|(p, d, _)| p == path && *d == device).and_then(|(_, _, m)| m.upgrade());
        if let Some(module) = held {
            return Ok(module);
        }
    }
    let mut module = CModule::load_on_device(path, device)?;
    module.f_set_eval()?;
    let module = Arc::new(module);
    if shared {
        frozen.push((path.to_path_buf(), device, Arc::downgrade(&module)));
    }
    Ok(module)
}

/// The first line of a libtorch error (the rest is its C++ backtrace).
fn first_line(e: &tch::TchError) -> String {
    e.to_string().lines().next().unwrap_or_default().to_owned()
}

/// What a checkpoint records of a module file: its length and CRC-32, so that a checkpoint
/// trained on top of one backbone is refused on top of another.
/// The file is read in pieces: a backbone can be hundreds of megabytes.
pub fn file_fingerprint(path: &Path) -> String {
    let checksum = || -> std::io::Result<(u64, u32)> {
        let mut file = std::fs::File::open(path)?;
        let (mut hasher, mut length, mut buffer) = (crc32fast::Hasher::new(), 0u64, vec![0u8; 1 << 20]);
        loop {
            let n = std::io::Read::read(&mut file, &mut buffer)?;
            if n == 0 {
                return Ok((length, hasher.finalize()));
            }
            hasher.update(&buffer[..n]);
            length += n as u64;
        }
    };
    match checksum() {
        Ok((length, crc)) => format!("{length} bytes, crc32 {crc:08x}"),
        Err(e) => format!("unreadable: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::Module;

    /// Frozen loads of one file share a module (the backbone is in memory once for the
    /// trainer's two models and the assigner); once none holds it, it is loaded afresh.
    #[test]
    fn frozen_loads_of_a_file_share_one_module() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.pt");
        let mut vars = nn::VarStore::new(Device::Cpu);
        let linear = nn::linear(vars.root() / "fc", 3, 4, Default::default());
        vars.freeze();
        let example = Tensor::rand([2, 3, 8, 8], (Kind::Float, Device::Cpu));
        CModule::create_by_tracing("M", "forward", &[example], &mut |x| {
            vec![linear.forward(&x[0].mean_dim([2, 3].as_slice(), false, Kind::Float))]
        })
        .unwrap()
        .save(&path)
        .unwrap();
        let input = crate::config::EncoderInput { size: vec![8, 8], ..Default::default() };
        let encoder = |vars: &nn::VarStore| {
            ScriptEncoder::load(&vars.root(), "model.visual_encoder", &path, &input, 3, EncoderTraining::Frozen, &[])
                .unwrap()
        };
        let (a_vars, b_vars) = (nn::VarStore::new(Device::Cpu), nn::VarStore::new(Device::Cpu));
        let (a, b) = (encoder(&a_vars), encoder(&b_vars));
        assert!(Arc::ptr_eq(&a.module, &b.module));
        assert_eq!(a.dim(), 4);
        drop((a, b));
        let c = encoder(&a_vars);
        assert_eq!(Arc::strong_count(&c.module), 1, "not held by a dropped encoder");
        // The checkpoint's record of the file, read in pieces, is the whole file's CRC-32.
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(file_fingerprint(&path), format!("{} bytes, crc32 {:08x}", bytes.len(), crc32fast::hash(&bytes)));
        assert!(file_fingerprint(&dir.path().join("gone.pt")).starts_with("unreadable"));
    }
}
