//! The trainer's window buffers: fixed storage, the oldest windows overwritten.

use tch::Tensor;

use crate::model::Input;
use crate::rng::SplitMix64;

/// A fixed-capacity buffer that forgets its oldest windows. Its storage is allocated whole at
/// the first window (`capacity` rows of each input part) and rows are overwritten in place, so
/// its memory is fixed from then on, whatever the stream does.
pub struct Ring {
    frames: Option<Tensor>,
    mel: Option<Tensor>,
    labels: Vec<i64>,
    capacity: usize,
    next: usize,
    filled: usize,
}

impl Ring {
    pub fn new(capacity: usize) -> Self {
        Self { frames: None, mel: None, labels: vec![0; capacity], capacity, next: 0, filled: 0 }
    }

    /// Stores one window (`input` holds a batch of one).
    pub fn push(&mut self, input: Input, label: i64) {
        let _guard = tch::no_grad_guard();
        let capacity = self.capacity as i64;
        let parts = [(&mut self.frames, &input.frames), (&mut self.mel, &input.mel)];
        // Windows share the decode config, so every row has the first one's shape.
        let fits = parts.iter().all(|(storage, part)| match (storage, part) {
            (Some(storage), Some(part)) => storage.size()[1..] == part.size()[1..],
            _ => true,
        });
        if !fits {
            tracing::warn!("a window's shape differs from the training buffer's; it is not kept");
            return;
        }
        for (storage, part) in parts {
            let Some(part) = part else { continue };
            let storage = storage.get_or_insert_with(|| {
                let mut shape = part.size();
                shape[0] = capacity;
                Tensor::zeros(shape.as_slice(), (part.kind(), part.device()))
            });
            storage.narrow(0, self.next as i64, 1).copy_(part);
        }
        self.labels[self.next] = label;
        self.next = (self.next + 1) % self.capacity;
        self.filled = (self.filled + 1).min(self.capacity);
    }

    pub fn len(&self) -> usize {
        self.filled
    }

    /// `n` windows drawn uniformly with replacement, stacked into one batch, and their labels.
    pub fn sample(&self, n: usize, rng: &mut SplitMix64) -> (Input, Tensor) {
        let picks: Vec<i64> = (0..n).map(|_| rng.below(self.filled) as i64).collect();
        let index = Tensor::from_slice(&picks);
        let gather = |part: &Option<Tensor>| part.as_ref().map(|t| t.index_select(0, &index.to(t.device())));
        let labels: Vec<i64> = picks.iter().map(|&i| self.labels[i as usize]).collect();
        (Input { frames: gather(&self.frames), mel: gather(&self.mel) }, Tensor::from_slice(&labels))
    }
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind};

    use super::*;

    /// The buffer's storage is allocated once; later windows overwrite the oldest rows.
    #[test]
    fn ring_keeps_the_newest_windows_in_fixed_storage() {
        let window = |v: f32| Input {
            frames: Some(Tensor::full([1, 1, 3, 2, 2], f64::from(v), (Kind::Float, Device::Cpu))),
            mel: Some(Tensor::full([1, 1, 4, 5], f64::from(v), (Kind::Float, Device::Cpu))),
        };
        let mut ring = Ring::new(3);
        ring.push(window(1.0), 1);
        let storage = ring.frames.as_ref().unwrap().data_ptr();
        for v in 2..=5 {
            ring.push(window(v as f32), v);
        }
        assert_eq!(ring.len(), 3);
        assert_eq!(ring.frames.as_ref().unwrap().data_ptr(), storage, "no reallocation");
        assert_eq!(ring.frames.as_ref().unwrap().size(), vec![3, 1, 3, 2, 2]);
        let mut rng = SplitMix64::new(0);
        let (batch, labels) = ring.sample(50, &mut rng);
        assert_eq!(batch.mel.as_ref().unwrap().size(), vec![50, 1, 4, 5]);
        let labels = Vec::<i64>::try_from(&labels).unwrap();
        assert!(labels.iter().all(|l| (3..=5).contains(l)), "windows 1 and 2 were forgotten: {labels:?}");
        let frames = batch.frames.unwrap();
        for (row, label) in labels.iter().enumerate() {
            assert_eq!(
                frames.get(row as i64).mean(Kind::Float).double_value(&[]),
                *label as f64,
                "rows keep their labels"
            );
        }
        ring.push(Input { frames: Some(Tensor::zeros([1, 1, 3, 4, 4], (Kind::Float, Device::Cpu))), mel: None }, 9);
        assert_eq!(ring.len(), 3, "a window of another shape is not kept");
    }
}
