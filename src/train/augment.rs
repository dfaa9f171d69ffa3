//! Augmentations for frames, batched on the model's device: random resized crop and a small
//! affine transform (one sampling grid), brightness and contrast jitter, Gaussian noise, random
//! erasing. All frames of one window share a transform, so motion within a window is kept.

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
    let noisy = (&jittered + jittered.randn_like() * config.noise).clamp(0.0, 1.0);
    if config.erase <= 0.0 {
        return noisy;
    }
    // One square per window, of side up to `erase` of the frame's, filled with the window's mean.
    let side = uniform(0.0, config.erase).view([b, 1, 1, 1, 1]);
    let square = |len: i64, dim: usize| {
        let extent = &side * (len as f64);
        let start = Tensor::rand([b, 1, 1, 1, 1], options) * (-&extent + len as f64);
        let mut shape = [1i64; 5];
        shape[dim] = len;
        let position = Tensor::arange(len, options).view(shape) + 0.5;
        position.ge_tensor(&start).logical_and(&position.lt_tensor(&(&start + extent)))
    };
    let erased = square(h, 3).logical_and(&square(w, 4));
    let mean = noisy.mean_dim(&[1i64, 2, 3, 4][..], true, Kind::Float);
    noisy.where_self(&erased.logical_not(), &mean)
}

/// A second view of log-mel spectrograms `[B, 1, M, F]`: a random shift in time (wrapping
/// around), a random gain (a constant in the log domain), and one band of mel bins and one of
/// frames masked to each spectrogram's mean (SpecAugment).
pub fn augment_mel(mel: &Tensor, config: &AugmentConfig) -> Tensor {
    let _guard = tch::no_grad_guard();
    let size = mel.size();
    let (b, m, f) = (size[0], size[2], size[3]);
    let device = mel.device();
    let options = (Kind::Float, device);
    let shift = config.audio_shift_frames.min(f - 1);
    let shifted = if shift > 0 {
        // Per-sample roll: gather frame (j − s) mod F.
        let s = Tensor::randint_low(-shift, shift + 1, [b, 1, 1, 1], (Kind::Int64, device));
        let index = (Tensor::arange(f, (Kind::Int64, device)).view([1, 1, 1, f]) - s).remainder(f);
        mel.gather(3, &index.expand([b, 1, m, f], false), false)
    } else {
        mel.shallow_clone()
    };
    // Power gain g dB is ln(10^(g/10)) in the natural-log domain.
    let gain_db = (Tensor::rand([b, 1, 1, 1], options) * 2.0 - 1.0) * config.audio_gain_db;
    let gained = shifted + gain_db * (10f64.ln() / 10.0);
    if config.audio_mask <= 0 {
        return gained;
    }
    let mean = gained.mean_dim(&[1i64, 2, 3][..], true, Kind::Float);
    let band = |extent: i64, len: i64| {
        let width = Tensor::randint_low(0, config.audio_mask.min(len) + 1, [b, 1, 1, 1], (Kind::Int64, device));
        let start = (Tensor::rand([b, 1, 1, 1], options) * (len as f64)).to_kind(Kind::Int64);
        let position = Tensor::arange(len, (Kind::Int64, device));
        let shape: [i64; 4] = if extent == 2 { [1, 1, len, 1] } else { [1, 1, 1, len] };
        let position = position.view(shape);
        position.ge_tensor(&start).logical_and(&position.lt_tensor(&(&start + width)))
    };
    let masked = band(2, m).logical_or(&band(3, f));
    gained.where_self(&masked.logical_not(), &mean)
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
    fn mel_views_keep_shape_differ_and_are_identity_when_off() {
        let _rng = crate::rng_lock();
        tch::manual_seed(1);
        let mel = Tensor::randn([4, 1, 16, 30], (Kind::Float, tch::Device::Cpu));
        let config = AugmentConfig::default();
        let a = augment_mel(&mel, &config);
        assert_eq!(a.size(), mel.size());
        assert!((&a - &augment_mel(&mel, &config)).abs().mean(Kind::Float).double_value(&[]) > 1e-2);
        let off = AugmentConfig { audio_shift_frames: 0, audio_gain_db: 0.0, audio_mask: 0, ..config };
        assert!((augment_mel(&mel, &off) - &mel).abs().max().double_value(&[]) < 1e-6);
        // A shift alone only moves frames: each spectrogram keeps its values.
        let shift = AugmentConfig { audio_gain_db: 0.0, audio_mask: 0, ..AugmentConfig::default() };
        let moved = augment_mel(&mel, &shift);
        let total = |t: &Tensor| t.sum_dim_intlist(&[1i64, 2, 3][..], false, Kind::Float);
        assert!((total(&moved) - total(&mel)).abs().max().double_value(&[]) < 1e-3);
    }

    #[test]
    fn erasing_fills_one_square_per_window_with_its_mean() {
        let _rng = crate::rng_lock();
        tch::manual_seed(2);
        // Pixels of 0 and 1 only, so no pixel equals its window's mean by chance.
        let frames = Tensor::rand([8, 2, 3, 20, 20], (Kind::Float, tch::Device::Cpu)).round();
        let config = AugmentConfig { erase: 0.5, ..AugmentConfig::visual_off() };
        let out = augment(&frames, &config);
        let changed = (&out - &frames).abs().gt(1e-4);
        for i in 0..8 {
            let window = changed.get(i);
            // The same pixels change in every frame and channel, and they form a square.
            assert!(window.eq_tensor(&window.get(0).get(0).expand([2, 3, 20, 20], false)).all().int64_value(&[]) == 1);
            let plane = window.get(0).get(0);
            let (rows, cols) = (plane.any_dim(1, false), plane.any_dim(0, false));
            let area = plane.sum(Kind::Int64).int64_value(&[]);
            assert_eq!(area, rows.sum(Kind::Int64).int64_value(&[]) * cols.sum(Kind::Int64).int64_value(&[]));
            assert!(area <= 100, "at most half the side: {area} pixels");
            let mean = frames.get(i).mean(Kind::Float);
            let filled = out.get(i).masked_select(&window);
            assert!((filled - mean).abs().max().double_value(&[]) < 1e-4);
        }
        assert!(changed.any().int64_value(&[]) == 1, "some window lost a square");
    }

    #[test]
    fn identity_when_every_augmentation_is_off() {
        let _rng = crate::rng_lock();
        let frames = Tensor::rand([3, 1, 3, 8, 8], (Kind::Float, tch::Device::Cpu));
        let off = AugmentConfig::visual_off();
        let out = augment(&frames, &off);
        let diff = (&out - &frames).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "max difference {diff}");
    }
}
