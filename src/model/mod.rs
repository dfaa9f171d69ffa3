//! The joint model of DESIGN.md §2, in tch: a visual encoder `f_v` giving `z`, a labelled head
//! `η_l` over the known classes and an unlabelled head `φ` over the novel clusters.

mod device;
mod encoder;

pub use device::select_device;
pub use encoder::VisualEncoder;

use tch::{nn, Kind, Tensor};

use crate::config::{DecodeConfig, ModelConfig};
use crate::decode::Window;

/// What one forward pass gives for a batch of windows.
#[derive(Debug)]
pub struct Outputs {
    /// The global representation `z`, `[B, D]`.
    pub z: Tensor,
    /// The contrastive projection `ẑ_v = l2norm(MLP_v(z))`, `[B, P]`.
    pub projection: Tensor,
    /// Logits of the labelled head, `[B, C_l]` (`None` with no known classes).
    pub known_logits: Option<Tensor>,
    /// Logits of the unlabelled head, `[B, C_u]`.
    pub novel_logits: Tensor,
}

/// Encoder plus heads. Checkpoint keys are the `nn::Path` names: `visual.*`, `proj_v.*`,
/// `known.*`, `novel.*`.
#[derive(Debug)]
pub struct JointModel {
    visual: VisualEncoder,
    projection: (nn::Linear, nn::Linear),
    known: Option<nn::Linear>,
    novel: nn::Linear,
}

impl JointModel {
    pub fn new(root: &nn::Path, config: &ModelConfig) -> Self {
        let visual = VisualEncoder::new(&(root / "visual"), &config.channels);
        let dim = visual.dim();
        let classes = config.known_classes.len() as i64;
        let proj = root / "proj_v";
        Self {
            projection: (
                nn::linear(&proj / "hidden", dim, dim, Default::default()),
                nn::linear(&proj / "out", dim, config.projection_dim, Default::default()),
            ),
            known: (classes > 0).then(|| nn::linear(root / "known", dim, classes, Default::default())),
            novel: nn::linear(root / "novel", dim, config.novel_clusters, Default::default()),
            visual,
        }
    }

    /// `frames`: `[B, T, 3, H, W]` floats in [0, 1].
    pub fn forward_t(&self, frames: &Tensor, train: bool) -> Outputs {
        let z = self.visual.forward_t(frames, train);
        let projection = z.apply(&self.projection.0).relu().apply(&self.projection.1);
        Outputs {
            projection: l2_normalize(&projection),
            known_logits: self.known.as_ref().map(|head| z.apply(head)),
            novel_logits: z.apply(&self.novel),
            z,
        }
    }
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
