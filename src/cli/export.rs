//! `novelstream export-encoder`: a trained encoder as a TorchScript module, to start another
//! deployment from (`model.visual_encoder = "torchscript:PATH"`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use novelstream::model::LogMel;
use novelstream::train::{checkpoint, fingerprint::fingerprint, Learner};
use tch::{Device, Kind, Tensor};

use super::load_config;

/// Which encoder to export.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Part {
    Visual,
    Audio,
}

/// Arguments of `export-encoder`.
#[derive(Args)]
pub struct ExportArgs {
    /// A checkpoint of the daemon (`checkpoint.path`) or of `eval --save-checkpoint`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// The TorchScript file to write.
    #[arg(long)]
    out: PathBuf,
    /// The configuration the checkpoint was trained under (its fingerprint is checked).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The encoder to export.
    #[arg(long, value_enum, default_value = "visual")]
    encoder: Part,
}

pub fn handle(args: ExportArgs) -> anyhow::Result<()> {
    let config = load_config(args.config.as_deref())?;
    let (model, decode) = (&config.model, &config.decode);
    let visual = matches!(args.encoder, Part::Visual);
    let part = if visual { "visual" } else { "audio" };
    if !(if visual { model.modality.visual() } else { model.modality.audio() }) {
        anyhow::bail!("model.modality = {:?} has no {part} encoder to export", model.modality);
    }
    let mut learner = Learner::new(model, &config.train, Device::Cpu)?;
    let meta = checkpoint::resume(&args.checkpoint, &mut learner, &fingerprint(model, &config.train, decode))?
        .with_context(|| format!("{}: no usable checkpoint", args.checkpoint.display()))?;
    let example = if visual {
        Tensor::rand([2, 3, i64::from(decode.height), i64::from(decode.width)], (Kind::Float, Device::Cpu))
    } else {
        let mel = LogMel::new(decode.sample_rate);
        let frames = mel.frames_for(decode.window_samples());
        Tensor::randn([2, 1, mel.bands() as i64, frames as i64], (Kind::Float, Device::Cpu))
    };
    let module = learner.trace_encoder(visual, &example).context("tracing the encoder")?;
    module.save(&args.out).with_context(|| format!("writing {}", args.out.display()))?;
    let (size, out) = (example.size(), args.out.display());
    println!(
        "wrote {out} (the {part} encoder of step {}, version {}): it reads [N, {}, {}, {}]; use it with \
         model.{part}_encoder = \"torchscript:{out}\", model.{part}_input.size = [{}, {}], mean 0, std 1 \
         (encoder_training \"frozen\": its weights are constants of the traced graph)",
        meta.step, meta.version, size[1], size[2], size[3], size[2], size[3],
    );
    Ok(())
}
