//! The joint model of the method (docs/ARCHITECTURE.md), in tch: a visual encoder `f_v` and an
//! audio encoder `f_a` (either or both, per `model.modality`) giving `z = [z_v; z_a]`,
//! contrastive projections per modality, a labelled head `η_l` over the known classes and an
//! unlabelled head `φ` over the novel clusters.

mod device;
mod encoder;
pub mod mel;
mod torchscript;

pub use device::{select_device, DeviceError};
pub use encoder::{AudioEncoder, VisualEncoder};
pub use mel::{LogMel, LOG_FLOOR};
pub use torchscript::{file_fingerprint, EncoderError, ScriptEncoder};

use tch::{nn, Device, Kind, Tensor};

use crate::config::{DecodeConfig, EncoderSource, Modality, ModelConfig, NovelClusters};
use crate::decode::Window;

/// A batch of windows as the model reads them: frames and/or log-mel spectrograms.
#[derive(Debug)]
pub struct Input {
    /// `[B, T, 3, H, W]` floats in [0, 1].
    pub frames: Option<Tensor>,
    /// `[B, 1, M, F]` log-mel spectrograms.
    pub mel: Option<Tensor>,
}

impl Input {
    pub fn len(&self) -> i64 {
        self.frames.as_ref().or(self.mel.as_ref()).map_or(0, |t| t.size()[0])
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The two batches one after the other (both must carry the same modalities).
    pub fn cat(&self, other: &Input) -> Input {
        let join = |a: &Option<Tensor>, b: &Option<Tensor>| match (a, b) {
            (Some(a), Some(b)) => Some(Tensor::cat(&[a, b], 0)),
            (None, None) => None,
            _ => panic!("batches with different modalities"),
        };
        Input { frames: join(&self.frames, &other.frames), mel: join(&self.mel, &other.mel) }
    }

    /// The first `n` windows.
    pub fn narrow(&self, n: i64) -> Input {
        let take = |t: &Option<Tensor>| t.as_ref().map(|t| t.narrow(0, 0, n));
        Input { frames: take(&self.frames), mel: take(&self.mel) }
    }

    pub fn to(&self, device: Device) -> Input {
        let move_ = |t: &Option<Tensor>| t.as_ref().map(|t| t.to(device));
        Input { frames: move_(&self.frames), mel: move_(&self.mel) }
    }
}

/// What one forward pass gives for a batch of windows.
#[derive(Debug)]
pub struct Outputs {
    /// The global representation `z = [z_v; z_a]`, `[B, D]`.
    pub z: Tensor,
    /// The visual contrastive projection `ẑ_v = l2norm(MLP_v(z_v))`, `[B, P]`.
    pub projection_v: Option<Tensor>,
    /// The audio contrastive projection `ẑ_a = l2norm(MLP_a(z_a))`, `[B, P]`.
    pub projection_a: Option<Tensor>,
    /// Logits of the labelled head, `[B, C_l]` (`None` with no known classes).
    pub known_logits: Option<Tensor>,
    /// Logits of the unlabelled head's outputs in use, `[B, n]`: all `C_u` of them with a
    /// given number of novel clusters, the estimated number with `auto`.
    pub novel_logits: Tensor,
    /// The output (the cluster id) of each column of `novel_logits`, ascending.
    pub novel_ids: Vec<i64>,
}

impl Outputs {
    /// The joint head of the open world: known classes' logits, then the novel outputs' in use,
    /// `[B, C_l + n]` (only the novel ones without known classes).
    pub fn joint_logits(&self) -> Tensor {
        match &self.known_logits {
            Some(known) => Tensor::cat(&[known, &self.novel_logits], 1),
            None => self.novel_logits.shallow_clone(),
        }
    }

    /// The cluster id of each row's most likely novel output in use, `[B]` int64 on the host.
    pub fn novel_clusters(&self) -> Vec<i64> {
        let columns = Vec::<i64>::try_from(self.novel_logits.argmax(1, false).to(Device::Cpu)).expect("int64");
        columns.into_iter().map(|c| self.novel_ids[c as usize]).collect()
    }
}

/// One modality's encoder `f_m`.
#[derive(Debug)]
enum Encoder {
    Visual(VisualEncoder),
    Audio(AudioEncoder),
    Script(ScriptEncoder),
}

impl Encoder {
    /// The encoder `source` names for a modality, under `path` (`visual` or `audio`).
    fn new(path: nn::Path, source: &EncoderSource, config: &ModelConfig, visual: bool) -> Result<Self, EncoderError> {
        let (key, input) = if visual {
            ("model.visual_encoder", &config.visual_input)
        } else {
            ("model.audio_encoder", &config.audio_input)
        };
        let channels = input.channels(visual);
        Ok(match source.torchscript() {
            Some(file) => Self::Script(ScriptEncoder::load(
                &path,
                key,
                file,
                input,
                channels,
                config.encoder_training,
                &config.fine_tune_prefix,
            )?),
            None if visual => Self::Visual(VisualEncoder::new(&path, &config.channels)),
            None => Self::Audio(AudioEncoder::new(&path, &config.audio_channels)),
        })
    }

    fn dim(&self) -> i64 {
        match self {
            Self::Visual(e) => e.dim(),
            Self::Audio(e) => e.dim(),
            Self::Script(e) => e.dim(),
        }
    }

    /// `[N, C, H, W]` (single frames or spectrograms) → `[N, D]` in evaluation mode.
    fn forward_images(&self, x: &Tensor) -> Tensor {
        match self {
            Self::Visual(e) => e.forward_images(x),
            Self::Audio(e) => e.forward_t(x, false),
            Self::Script(e) => e.forward(x),
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        match self {
            Self::Visual(e) => e.forward_t(x, train),
            Self::Audio(e) => e.forward_t(x, train),
            Self::Script(e) => e.forward(x),
        }
    }
}

#[derive(Debug)]
struct Projection(nn::Linear, nn::Linear);

impl Projection {
    fn new(path: nn::Path, dim: i64, out: i64) -> Self {
        Self(
            nn::linear(&path / "hidden", dim, dim, Default::default()),
            nn::linear(&path / "out", dim, out, Default::default()),
        )
    }

    fn forward(&self, z: &Tensor) -> Tensor {
        l2_normalize(&z.apply(&self.0).relu().apply(&self.1))
    }
}

/// Encoders plus heads. Checkpoint keys are the `nn::Path` names: `visual.*`, `audio.*`
/// (a TorchScript encoder's: only the parameters that train, `visual.script.*`),
/// `proj_v.*`, `proj_a.*`, `known.*`, `novel.*`; `novel.active` (not trained) marks the
/// outputs of the unlabelled head in use with 1.
#[derive(Debug)]
pub struct JointModel {
    visual: Option<(Encoder, Projection)>,
    audio: Option<(Encoder, Projection)>,
    known: Option<nn::Linear>,
    novel: nn::Linear,
    active: Tensor,
}

/// Name of the mask of the unlabelled head's outputs in use.
pub const ACTIVE_OUTPUTS: &str = "novel.active";

impl JointModel {
    /// The model `config` describes, its variables under `root`; a TorchScript encoder is
    /// loaded and probed (the error says why one cannot serve).
    pub fn new(root: &nn::Path, config: &ModelConfig) -> Result<Self, EncoderError> {
        let p = config.projection_dim;
        let with_projection = |encoder: Encoder, name: &str| {
            let projection = Projection::new(root / name, encoder.dim(), p);
            (encoder, projection)
        };
        let visual = if config.modality.visual() {
            Some(with_projection(Encoder::new(root / "visual", &config.visual_encoder, config, true)?, "proj_v"))
        } else {
            None
        };
        let audio = if config.modality.audio() {
            Some(with_projection(Encoder::new(root / "audio", &config.audio_encoder, config, false)?, "proj_a"))
        } else {
            None
        };
        let dim = visual.as_ref().map_or(0, |v| v.0.dim()) + audio.as_ref().map_or(0, |a| a.0.dim());
        let classes = config.known_classes.len() as i64;
        let outputs = config.novel_outputs();
        let novel = nn::linear(root / "novel", dim, outputs, Default::default());
        let active = (root / "novel").zeros_no_train("active", &[outputs]);
        // An estimate starts from one novel cluster.
        let in_use = match config.novel_clusters {
            NovelClusters::Auto => 1,
            NovelClusters::Fixed(n) => n,
        };
        tch::no_grad(|| {
            let _ = active.narrow(0, 0, in_use).fill_(1.0);
        });
        Ok(Self {
            known: (classes > 0).then(|| nn::linear(root / "known", dim, classes, Default::default())),
            novel,
            active,
            visual,
            audio,
        })
    }

    /// Outputs of the unlabelled head, in use or not.
    pub fn novel_outputs(&self) -> i64 {
        self.active.size()[0]
    }

    /// The unlabelled head's outputs in use, ascending.
    pub fn active_outputs(&self) -> Vec<i64> {
        let mask = Vec::<f32>::try_from(self.active.to(Device::Cpu)).expect("f32 mask");
        mask.iter().enumerate().filter(|(_, &m)| m > 0.5).map(|(i, _)| i as i64).collect()
    }

    /// Puts exactly the outputs `ids` of the unlabelled head in use.
    pub fn set_active_outputs(&self, ids: &[i64]) {
        tch::no_grad(|| {
            let mut active = self.active.shallow_clone();
            let _ = active.fill_(0.0);
            for &id in ids {
                let _ = active.get(id).fill_(1.0);
            }
        });
    }

    /// The visual (else the audio) encoder as a TorchScript module, traced on `example`
    /// `[N, C, H, W]`: it reads single frames in [0, 1] (or log-mel spectrograms) and returns
    /// `z_m` `[N, D]`, what `model.visual_encoder = "torchscript:…"` loads (with mean 0, std 1
    /// and the size traced). Its weights are constants of the graph: it serves frozen. The
    /// model's variables must not require gradients (`VarStore::freeze`).
    pub fn trace_encoder(&self, visual: bool, example: &Tensor) -> Result<tch::CModule, tch::TchError> {
        let part = if visual { &self.visual } else { &self.audio };
        let Some((encoder, _)) = part else {
            let which = if visual { "visual" } else { "audio" };
            return Err(tch::TchError::Kind(format!("the model has no {which} encoder")));
        };
        if matches!(encoder, Encoder::Script(e) if e.stacks_frames()) {
            return Err(tch::TchError::Kind(
                "a TorchScript encoder of stacked frames reads clips, not single frames: export its module instead"
                    .into(),
            ));
        }
        let _guard = tch::no_grad_guard();
        tch::CModule::create_by_tracing("NovelstreamEncoder", "forward", &[example.shallow_clone()], &mut |inputs| {
            vec![encoder.forward_images(&inputs[0])]
        })
    }

    /// Widths of `z_v` and `z_a` in `z` (0 for a modality the model lacks).
    pub fn modality_dims(&self) -> (i64, i64) {
        (self.visual.as_ref().map_or(0, |v| v.0.dim()), self.audio.as_ref().map_or(0, |a| a.0.dim()))
    }

    /// Width of `z`.
    pub fn dim(&self) -> i64 {
        self.visual.as_ref().map_or(0, |v| v.0.dim()) + self.audio.as_ref().map_or(0, |a| a.0.dim())
    }

    pub fn forward_t(&self, input: &Input, train: bool) -> Outputs {
        self.forward_kept(input, train, None)
    }

    /// [`JointModel::forward_t`] with some windows' visual or audio evidence withheld from the
    /// heads: `keep` `[B, 2]` holds 1 where a window's visual (column 0) and audio (column 1)
    /// features count, 0 where they are zeroed (`train.modality_dropout`). Whatever `keep`
    /// says, a modality whose input carries no signal — audio of silence or of no track, a
    /// blank picture — is zeroed too, so such a window is decided by the other modality alone.
    /// A batch without one modality's input (`frames` or `mel` of `None`) is decided by the
    /// other alone, and that encoder does not run (`model.assign_with`). Only a model of both
    /// modalities withholds anything; the contrastive projections always see their modality.
    pub fn forward_kept(&self, input: &Input, train: bool, keep: Option<&Tensor>) -> Outputs {
        let encode = |part: &Option<(Encoder, Projection)>, x: &Option<Tensor>| {
            let ((encoder, projection), x) = (part.as_ref()?, x.as_ref()?);
            let z = encoder.forward_t(x, train);
            let p = projection.forward(&z);
            Some((z, p))
        };
        let visual = encode(&self.visual, &input.frames);
        let audio = encode(&self.audio, &input.mel);
        let z = match (&self.visual, &self.audio) {
            (Some((visual_encoder, _)), Some((audio_encoder, _))) => {
                let n = input.len();
                let absent = |encoder: &Encoder| Tensor::zeros([n, encoder.dim()], (Kind::Float, self.active.device()));
                let present = |x: &Option<Tensor>| {
                    x.as_ref().map_or_else(|| Tensor::zeros([n], (Kind::Float, self.active.device())), carries_signal)
                };
                let mut present = Tensor::stack(&[present(&input.frames), present(&input.mel)], 1);
                if let Some(keep) = keep {
                    present *= keep.to_kind(Kind::Float);
                }
                let z_v = visual.as_ref().map_or_else(|| absent(visual_encoder), |(z, _)| z.shallow_clone());
                let z_a = audio.as_ref().map_or_else(|| absent(audio_encoder), |(z, _)| z.shallow_clone());
                Tensor::cat(&[z_v * present.narrow(1, 0, 1), z_a * present.narrow(1, 1, 1)], 1)
            }
            (Some(_), None) => visual.as_ref().expect("the model reads frames, the batch has none").0.shallow_clone(),
            (None, _) => audio.as_ref().expect("the model reads audio, the batch has none").0.shallow_clone(),
        };
        let novel_ids = self.active_outputs();
        let raw = z.apply(&self.novel);
        // The head's outputs not in use take no window and learn nothing.
        let novel_logits = if novel_ids.len() as i64 == raw.size()[1] {
            raw
        } else {
            raw.index_select(1, &Tensor::from_slice(&novel_ids).to(raw.device()))
        };
        Outputs {
            known_logits: self.known.as_ref().map(|head| z.apply(head)),
            novel_logits,
            novel_ids,
            projection_v: visual.map(|(_, p)| p),
            projection_a: audio.map(|(_, p)| p),
            z,
        }
    }
}

/// 1 for each window of `[B, …]` whose values are not all the same (a picture, a sound), 0 for
/// one that is blank: a black frame, or the log-mel floor of silence and of a missing track.
pub fn carries_signal(x: &Tensor) -> Tensor {
    let flat = x.flatten(1, -1);
    (flat.amax(&[1i64][..], false) - flat.amin(&[1i64][..], false)).gt(1e-4).to_kind(Kind::Float)
}

/// Rows scaled to unit length.
pub fn l2_normalize(x: &Tensor) -> Tensor {
    x / x.norm_scalaropt_dim(2.0, [-1], true).clamp_min(1e-12)
}

/// Stacks windows' frames into the `[B, T, 3, H, W]` float batch the model reads.
pub fn frames_tensor(windows: &[&Window], decode: &DecodeConfig) -> Tensor {
    let (t, h, w) = (decode.frames as i64, decode.height as i64, decode.width as i64);
    let mut bytes = Vec::with_capacity(windows.len() * (t * h * w * 3) as usize);
    for window in windows {
        assert_eq!(window.frames.len(), (t * h * w * 3) as usize, "window frames do not match the decode config");
        bytes.extend_from_slice(&window.frames);
    }
    Tensor::from_slice(&bytes).view([windows.len() as i64, t, h, w, 3]).permute([0, 1, 4, 2, 3]).to_kind(Kind::Float)
        / 255.0
}

/// Log-mel spectrograms of windows' audio, `[B, 1, M, F]`; windows of one decode config all have
/// the same number of samples, so the same `F`. A window quieter than `silence_dbfs` (RMS) gets
/// the spectrogram of digital silence, which the model reads as no audio ([`carries_signal`]).
pub fn mel_tensor(windows: &[&Window], mel: &LogMel, silence_dbfs: f64) -> Tensor {
    let samples = windows.iter().map(|w| w.audio.len()).max().unwrap_or(0);
    let frames = mel.frames_for(samples) as i64;
    let mut values = Vec::with_capacity(windows.len() * mel.bands() * frames as usize);
    for window in windows {
        let mut audio = if rms_dbfs(&window.audio) < silence_dbfs { Vec::new() } else { window.audio.clone() };
        audio.resize(samples, 0.0);
        values.extend(mel.compute(&audio));
    }
    Tensor::from_slice(&values).view([windows.len() as i64, 1, mel.bands() as i64, frames])
}

/// Root-mean-square level of `samples` in dB below full scale (−∞ for none or all zeros).
pub fn rms_dbfs(samples: &[f32]) -> f64 {
    let power = samples.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>() / samples.len().max(1) as f64;
    10.0 * power.log10()
}

/// The model's input for windows, with the modalities `modality` asks for.
pub fn window_input(windows: &[&Window], decode: &DecodeConfig, modality: Modality, mel: &LogMel) -> Input {
    Input {
        frames: modality.visual().then(|| frames_tensor(windows, decode)),
        mel: modality.audio().then(|| mel_tensor(windows, mel, decode.audio_silence_dbfs)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Audio quieter than `decode.audio_silence_dbfs`, all zeros or absent becomes the
    /// spectrogram of silence, which carries no signal; louder audio does. A black picture
    /// carries none either.
    #[test]
    fn quiet_audio_and_blank_pictures_carry_no_signal() {
        let mel = LogMel::new(16000);
        let tone = |amplitude: f32| -> Vec<f32> {
            (0..16000).map(|i| amplitude * (i as f32 * 2.0 * std::f32::consts::PI * 440.0 / 16000.0).sin()).collect()
        };
        let window = |audio: Vec<f32>| Window { index: 0, start_ms: 0, end_ms: 1000, frames: vec![], audio };
        let windows = [window(tone(0.1)), window(tone(1e-4)), window(vec![0.0; 16000]), window(vec![])];
        assert!((rms_dbfs(&tone(0.1)) + 23.0).abs() < 0.1, "{}", rms_dbfs(&tone(0.1)));
        let refs: Vec<&Window> = windows.iter().collect();
        let signal = |silence_dbfs: f64| -> Vec<f32> {
            Vec::try_from(carries_signal(&mel_tensor(&refs, &mel, silence_dbfs))).unwrap()
        };
        assert_eq!(signal(-60.0), [1.0, 0.0, 0.0, 0.0], "a tone at -83 dBFS is silence at -60");
        assert_eq!(signal(-100.0), [1.0, 1.0, 0.0, 0.0]);
        let pictures = Tensor::stack(
            &[
                Tensor::zeros([2, 3, 4, 4], (Kind::Float, Device::Cpu)),
                Tensor::rand([2, 3, 4, 4], (Kind::Float, Device::Cpu)),
            ],
            0,
        );
        assert_eq!(Vec::<f32>::try_from(carries_signal(&pictures)).unwrap(), [0.0, 1.0]);
    }
}
