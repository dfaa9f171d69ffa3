//! `[train.augment]`: the random changes that make two views of one window.

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

/// Augmentations that make the two views of a window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// Random resized crop: smallest side kept, as a share of the frame.
    pub min_crop_scale: f64,
    /// Largest rotation either way, in degrees.
    pub rotation_degrees: f64,
    /// Largest translation, as a share of half the frame.
    pub translate: f64,
    /// Largest brightness shift (frames are in [0, 1]).
    pub brightness: f64,
    /// Largest contrast change, as a factor around 1.
    pub contrast: f64,
    /// Standard deviation of added Gaussian noise.
    pub noise: f64,
    /// Random erasing: a square of up to this share of the frame's side, placed at random, is
    /// set to the window's mean (0: off); teaches features to look past one stroke or blemish.
    pub erase: f64,
    /// Audio: largest shift of the spectrogram in time, in frames (10 ms each), either way.
    pub audio_shift_frames: i64,
    /// Audio: largest gain change either way, in decibels.
    pub audio_gain_db: f64,
    /// Audio: widest band of mel bins and of frames masked out (SpecAugment), 0 for none.
    pub audio_mask: i64,
}

impl AugmentConfig {
    /// Every visual augmentation off: a view is the window itself.
    pub fn visual_off() -> Self {
        Self {
            min_crop_scale: 1.0,
            rotation_degrees: 0.0,
            translate: 0.0,
            brightness: 0.0,
            contrast: 0.0,
            noise: 0.0,
            erase: 0.0,
            ..Self::default()
        }
    }
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            min_crop_scale: 0.75,
            rotation_degrees: 12.0,
            translate: 0.1,
            brightness: 0.1,
            contrast: 0.2,
            noise: 0.03,
            erase: 0.5,
            audio_shift_frames: 10,
            audio_gain_db: 6.0,
            audio_mask: 8,
        }
    }
}

impl AugmentConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.min_crop_scale) || self.min_crop_scale == 0.0 {
            return invalid("train.augment.min_crop_scale", "must be in (0, 1]");
        }
        if !(0.0..1.0).contains(&self.erase) {
            return invalid("train.augment.erase", "must be in [0, 1)");
        }
        Ok(())
    }
}
