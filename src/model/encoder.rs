//! The visual encoder `f_v`: a small convolutional network applied to every frame, its features
//! averaged over the window's frames.

use tch::{nn, nn::ModuleT, Tensor};

/// Convolution stages, each halving the resolution, then global average pooling.
#[derive(Debug)]
pub struct VisualEncoder {
    stages: Vec<(nn::Conv2D, nn::BatchNorm)>,
    dim: i64,
}

impl VisualEncoder {
    pub fn new(path: &nn::Path, channels: &[i64]) -> Self {
        let mut stages = Vec::with_capacity(channels.len());
        let mut input = 3;
        for (i, &output) in channels.iter().enumerate() {
            let stage = path / format!("stage{i}");
            let conv = nn::conv2d(
                &stage / "conv",
                input,
                output,
                3,
                nn::ConvConfig { stride: 2, padding: 1, bias: false, ..Default::default() },
            );
            let norm = nn::batch_norm2d(&stage / "norm", output, Default::default());
            stages.push((conv, norm));
            input = output;
        }
        Self { stages, dim: input }
    }

    /// Width of `z`.
    pub fn dim(&self) -> i64 {
        self.dim
    }

    /// `frames`: `[B, T, 3, H, W]` → `z`: `[B, D]`.
    pub fn forward_t(&self, frames: &Tensor, train: bool) -> Tensor {
        let (b, t) = (frames.size()[0], frames.size()[1]);
        let mut x = frames.flatten(0, 1) - 0.5;
        for (conv, norm) in &self.stages {
            x = x.apply(conv).apply_t(norm, train).relu();
        }
        x.adaptive_avg_pool2d([1, 1]).view([b, t, self.dim]).mean_dim(1, false, tch::Kind::Float)
    }
}

impl ModuleT for VisualEncoder {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        VisualEncoder::forward_t(self, xs, train)
    }
}
