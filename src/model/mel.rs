//! Log-mel spectrograms of a window's audio, the audio encoder's input: 64 mel bands of 25 ms
//! Hann-windowed frames every 10 ms (HTK mel scale, triangular filters, power spectrum, natural
//! log with a small floor), computed in Rust with an FFT.

use std::sync::Arc;

use rustfft::{num_complex::Complex, Fft, FftPlanner};

/// Added to every band's energy before the log, so silence gives a finite floor (`ln 1e-6`).
pub const LOG_FLOOR: f32 = 1e-6;

/// A log-mel transform for one sample rate; cheap to share across threads.
pub struct LogMel {
    window: Vec<f32>,
    hop: usize,
    n_fft: usize,
    /// Per band, the FFT bins it covers and their weights.
    filters: Vec<Vec<(usize, f32)>>,
    fft: Arc<dyn Fft<f32>>,
}

impl std::fmt::Debug for LogMel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogMel").field("bands", &self.filters.len()).field("hop", &self.hop).finish()
    }
}

fn hz_to_mel(hz: f64) -> f64 {
    2595.0 * (1.0 + hz / 700.0).log10()
}

fn mel_to_hz(mel: f64) -> f64 {
    700.0 * (10f64.powf(mel / 2595.0) - 1.0)
}

impl LogMel {
    /// The product's transform: 64 bands, 25 ms frames, 10 ms hop, FFT of the next power of two.
    pub fn new(sample_rate: u32) -> Self {
        Self::with(sample_rate, 64, 0.025, 0.010)
    }

    pub fn with(sample_rate: u32, bands: usize, frame_seconds: f64, hop_seconds: f64) -> Self {
        let rate = f64::from(sample_rate);
        let length = ((rate * frame_seconds).round() as usize).max(2);
        let hop = ((rate * hop_seconds).round() as usize).max(1);
        let n_fft = length.next_power_of_two();
        // Periodic Hann window.
        let window = (0..length)
            .map(|i| (0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / length as f64).cos()) as f32)
            .collect();
        // Band edges equally spaced in mel from 0 Hz to Nyquist; weights on each bin's frequency.
        let (low, high) = (hz_to_mel(0.0), hz_to_mel(rate / 2.0));
        let edges: Vec<f64> =
            (0..bands + 2).map(|i| mel_to_hz(low + (high - low) * i as f64 / (bands + 1) as f64)).collect();
        let bins = n_fft / 2 + 1;
        let filters = (0..bands)
            .map(|b| {
                let (left, centre, right) = (edges[b], edges[b + 1], edges[b + 2]);
                (0..bins)
                    .filter_map(|k| {
                        let f = k as f64 * rate / n_fft as f64;
                        let w = if f > left && f <= centre {
                            (f - left) / (centre - left)
                        } else if f > centre && f < right {
                            (right - f) / (right - centre)
                        } else {
                            0.0
                        };
                        (w > 0.0).then_some((k, w as f32))
                    })
                    .collect()
            })
            .collect();
        Self { window, hop, n_fft, filters, fft: FftPlanner::new().plan_fft_forward(n_fft) }
    }

    pub fn bands(&self) -> usize {
        self.filters.len()
    }

    /// Frames of `samples` long: one per hop while a whole frame fits (at least one, zero-padded).
    pub fn frames_for(&self, samples: usize) -> usize {
        if samples <= self.window.len() {
            1
        } else {
            (samples - self.window.len()) / self.hop + 1
        }
    }

    /// The spectrogram, band-major: `bands × frames` values (`out[band * frames + frame]`).
    pub fn compute(&self, samples: &[f32]) -> Vec<f32> {
        let frames = self.frames_for(samples.len());
        let bands = self.bands();
        let mut out = vec![0f32; bands * frames];
        let mut buffer = vec![Complex::new(0f32, 0f32); self.n_fft];
        let mut scratch = vec![Complex::new(0f32, 0f32); self.fft.get_inplace_scratch_len()];
        let mut power = vec![0f32; self.n_fft / 2 + 1];
        for frame in 0..frames {
            let start = frame * self.hop;
            for (i, slot) in buffer.iter_mut().enumerate() {
                let sample = if i < self.window.len() { samples.get(start + i).copied().unwrap_or(0.0) } else { 0.0 };
                let w = self.window.get(i).copied().unwrap_or(0.0);
                *slot = Complex::new(sample * w, 0.0);
            }
            self.fft.process_with_scratch(&mut buffer, &mut scratch);
            for (p, c) in power.iter_mut().zip(&buffer) {
                *p = c.norm_sqr();
            }
            for (band, filter) in self.filters.iter().enumerate() {
                let energy: f32 = filter.iter().map(|&(k, w)| power[k] * w).sum();
                out[band * frames + frame] = (energy + LOG_FLOOR).ln();
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(hz: f64, amplitude: f32, seconds: f64) -> Vec<f32> {
        let n = (16000.0 * seconds) as usize;
        (0..n).map(|i| amplitude * (2.0 * std::f64::consts::PI * hz * i as f64 / 16000.0).sin() as f32).collect()
    }

    #[test]
    fn one_second_at_16_khz_is_64_bands_by_98_frames() {
        let mel = LogMel::new(16000);
        assert_eq!(mel.bands(), 64);
        assert_eq!(mel.frames_for(16000), 98);
        assert_eq!(mel.compute(&sine(440.0, 0.5, 1.0)).len(), 64 * 98);
        assert_eq!(mel.frames_for(100), 1, "short audio is zero-padded to one frame");
    }

    #[test]
    fn silence_is_the_floor() {
        let mel = LogMel::new(16000);
        assert!(mel.compute(&vec![0.0; 4000]).iter().all(|&v| (v - LOG_FLOOR.ln()).abs() < 1e-6));
    }

    /// A pure tone's energy peaks in the band whose centre is nearest the tone, for low and high
    /// tones alike.
    #[test]
    fn a_tone_peaks_in_its_own_band() {
        let mel = LogMel::new(16000);
        let centres: Vec<f64> = (1..=64)
            .map(|i| mel_to_hz(hz_to_mel(0.0) + (hz_to_mel(8000.0) - hz_to_mel(0.0)) * i as f64 / 65.0))
            .collect();
        for hz in [300.0, 1000.0, 3000.0, 6000.0] {
            let spec = mel.compute(&sine(hz, 0.5, 0.5));
            let frames = mel.frames_for(8000);
            let band_energy = |b: usize| spec[b * frames + frames / 2];
            let loudest = (0..64).max_by(|&a, &b| band_energy(a).total_cmp(&band_energy(b))).unwrap();
            let nearest = (0..64).min_by(|&a, &b| (centres[a] - hz).abs().total_cmp(&(centres[b] - hz).abs())).unwrap();
            assert!(loudest.abs_diff(nearest) <= 1, "{hz} Hz: loudest band {loudest}, nearest centre {nearest}");
        }
    }

    /// Doubling the amplitude multiplies power by 4: every loud band rises by ln 4.
    #[test]
    fn gain_shifts_the_log_by_a_constant() {
        let mel = LogMel::new(16000);
        let quiet = mel.compute(&sine(1000.0, 0.25, 0.5));
        let loud = mel.compute(&sine(1000.0, 0.5, 0.5));
        let max = quiet.iter().cloned().fold(f32::MIN, f32::max);
        for (q, l) in quiet.iter().zip(&loud) {
            if *q > max - 5.0 {
                assert!((l - q - 4f32.ln()).abs() < 1e-3, "{q} → {l}");
            }
        }
    }
}
