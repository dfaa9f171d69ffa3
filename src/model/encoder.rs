//! The encoders: a small ResNet over each frame (`f_v`, features averaged over the window's
//! frames) and over the log-mel spectrogram (`f_a`).

use tch::{nn, Tensor};

/// Two 3×3 convolutions with batch norm and a shortcut (a 1×1 convolution when the shape changes).
#[derive(Debug)]
struct BasicBlock {
    conv1: nn::Conv2D,
    norm1: nn::BatchNorm,
    conv2: nn::Conv2D,
    norm2: nn::BatchNorm,
    shortcut: Option<(nn::Conv2D, nn::BatchNorm)>,
}

fn conv(path: nn::Path, input: i64, output: i64, kernel: i64, stride: i64) -> nn::Conv2D {
    let config = nn::ConvConfig { stride, padding: kernel / 2, bias: false, ..Default::default() };
    nn::conv2d(path, input, output, kernel, config)
}

impl BasicBlock {
    fn new(path: &nn::Path, input: i64, output: i64, stride: i64) -> Self {
        let shortcut = (stride != 1 || input != output).then(|| {
            (
                conv(path / "shortcut", input, output, 1, stride),
                nn::batch_norm2d(path / "shortcut_norm", output, Default::default()),
            )
        });
        Self {
            conv1: conv(path / "conv1", input, output, 3, stride),
            norm1: nn::batch_norm2d(path / "norm1", output, Default::default()),
            conv2: conv(path / "conv2", output, output, 3, 1),
            norm2: nn::batch_norm2d(path / "norm2", output, Default::default()),
            shortcut,
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let y = x.apply(&self.conv1).apply_t(&self.norm1, train).relu();
        let y = y.apply(&self.conv2).apply_t(&self.norm2, train);
        let skip = match &self.shortcut {
            Some((conv, norm)) => x.apply(conv).apply_t(norm, train),
            None => x.shallow_clone(),
        };
        (y + skip).relu()
    }
}

/// A stem convolution, then one residual block per entry of `channels`, each halving the
/// resolution, then global average pooling: `[N, C, H, W]` → `[N, D]`.
#[derive(Debug)]
struct ResNet {
    stem: nn::Conv2D,
    stem_norm: nn::BatchNorm,
    blocks: Vec<BasicBlock>,
    dim: i64,
}

impl ResNet {
    fn new(path: &nn::Path, input_channels: i64, channels: &[i64], stem_stride: i64) -> Self {
        let first = channels[0];
        let mut blocks = Vec::with_capacity(channels.len());
        let mut input = first;
        for (i, &output) in channels.iter().enumerate() {
            blocks.push(BasicBlock::new(&(path / format!("block{i}")), input, output, 2));
            input = output;
        }
        Self {
            stem: conv(path / "stem", input_channels, first, 3, stem_stride),
            stem_norm: nn::batch_norm2d(path / "stem_norm", first, Default::default()),
            blocks,
            dim: input,
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut x = x.apply(&self.stem).apply_t(&self.stem_norm, train).relu();
        for block in &self.blocks {
            x = block.forward_t(&x, train);
        }
        x.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
    }
}

/// The visual encoder `f_v`: the ResNet on every frame, features averaged over the window's frames.
#[derive(Debug)]
pub struct VisualEncoder {
    net: ResNet,
}

impl VisualEncoder {
    pub fn new(path: &nn::Path, channels: &[i64]) -> Self {
        Self { net: ResNet::new(path, 3, channels, 1) }
    }

    /// Width of `z_v`.
    pub fn dim(&self) -> i64 {
        self.net.dim
    }

    /// Single images `[N, 3, H, W]` in [0, 1] → `[N, D]`, in evaluation mode: what
    /// `export-encoder` traces (no shape is read, so the traced module takes any batch).
    pub fn forward_images(&self, images: &Tensor) -> Tensor {
        self.net.forward_t(&(images - 0.5), false)
    }

    /// `frames`: `[B, T, 3, H, W]` in [0, 1] → `z_v`: `[B, D]`.
    pub fn forward_t(&self, frames: &Tensor, train: bool) -> Tensor {
        let (b, t) = (frames.size()[0], frames.size()[1]);
        self.net.forward_t(&(frames.flatten(0, 1) - 0.5), train).view([b, t, self.dim()]).mean_dim(
            1,
            false,
            tch::Kind::Float,
        )
    }
}

/// The audio encoder `f_a`: batch norm of the log-mel input (the log energies' scale depends on
/// the source), then the ResNet over the `[mel bands × frames]` image, its stem striding 2 (a
/// second of audio is 64 × 98, six times a 32 × 32 frame).
#[derive(Debug)]
pub struct AudioEncoder {
    input_norm: nn::BatchNorm,
    net: ResNet,
}

impl AudioEncoder {
    pub fn new(path: &nn::Path, channels: &[i64]) -> Self {
        Self {
            input_norm: nn::batch_norm2d(path / "input_norm", 1, Default::default()),
            net: ResNet::new(path, 1, channels, 2),
        }
    }

    /// Width of `z_a`.
    pub fn dim(&self) -> i64 {
        self.net.dim
    }

    /// `mel`: `[B, 1, M, F]` log-mel → `z_a`: `[B, D]`.
    pub fn forward_t(&self, mel: &Tensor, train: bool) -> Tensor {
        self.net.forward_t(&mel.apply_t(&self.input_norm, train), train)
    }
}
