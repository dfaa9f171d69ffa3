//! Augmentations for frames, batched on the model's device: random resized crop and a small
//! affine transform (one sampling grid), brightness and contrast jitter, Gaussian noise. All
//! frames of one window share a transform, so motion within a window is kept.

use std::f64::consts::PI;

use tch::{Kind, Tensor};

use crate::config::AugmentConfig;

/// `frames`: `[B, T, 3, H, W]` floats in [0, 1] → an augmented view of the same shape.
pub fn augment(frames: &Tensor, config: &AugmentConfig) -> Tensor {
    let _guard = tch::no_grad_guard();
    let size = frames.size();
    let (b, t, h, w) = (size[0], size[1], size[3], size[4]);
    let options = (Kind::Float, frames.device());
    let uniform = |low: f64, high: f64| Tensor::rand([b], options) * (high - low) + low;

    // Crop scale s (share of the side), rotation, translation: theta maps output to input
    // coordinates in [-1, 1].
    let scale = uniform(config.min_crop_scale, 1.0);
    let angle = uniform(-config.rotation_degrees, config.rotation_degrees) * (PI / 180.0);
    let max_shift = (1.0 - &scale) + config.translate;
    let tx = (Tensor::rand([b], options) * 2.0 - 1.0) * &max_shift;
    let ty = (Tensor::rand([b], options) * 2.0 - 1.0) * &max_shift;
    let (cos, sin) = (angle.cos() * &scale, angle.sin() * &scale);
    let theta =
        Tensor::stack(&[&cos, &(-&sin), &tx, &sin, &cos, &ty], 1).view([b, 1, 2, 3]).expand([b, t, 2, 3], false);
    let flat = frames.flatten(0, 1);
    let grid = Tensor::affine_grid_generator(&theta.reshape([b * t, 2, 3]), [b * t, 3, h, w], false);
    // Bilinear sampling, zeros outside the frame.
    let warped = flat.grid_sampler_2d(&grid, 0, 0, false).view([b, t, 3, h, w]);

    let brightness = uniform(-config.brightness, config.brightness).view([b, 1, 1, 1, 1]);
    let contrast = uniform(1.0 - config.contrast, 1.0 + config.contrast).view([b, 1, 1, 1, 1]);
    let mean = warped.mean_dim(&[1i64, 2, 3, 4][..], true, Kind::Float);
    let jittered = (&warped - &mean) * contrast + mean + brightness;
    let noisy = &jittered + jittered.randn_like() * config.noise;
    noisy.clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_shape_and_range_and_varies() {
        let _rng = crate::rng_lock();
        tch::manual_seed(0);
        let frames = Tensor::rand([4, 2, 3, 16, 16], (Kind::Float, tch::Device::Cpu));
        let config = AugmentConfig::default();
        let a = augment(&frames, &config);
        let b = augment(&frames, &config);
        assert_eq!(a.size(), frames.size());
        assert!(a.min().double_value(&[]) >= 0.0 && a.max().double_value(&[]) <= 1.0);
        assert!((&a - &b).abs().mean(Kind::Float).double_value(&[]) > 1e-3, "two views differ");
    }

    #[test]
    fn identity_when_every_augmentation_is_off() {
        let _rng = crate::rng_lock();
        let frames = Tensor::rand([3, 1, 3, 8, 8], (Kind::Float, tch::Device::Cpu));
        let off = AugmentConfig {
            min_crop_scale: 1.0,
            rotation_degrees: 0.0,
            translate: 0.0,
            brightness: 0.0,
            contrast: 0.0,
            noise: 0.0,
        };
        let out = augment(&frames, &off);
        let diff = (&out - &frames).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "max difference {diff}");
    }
}
