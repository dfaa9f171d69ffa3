//! The memory bank: a fixed-size queue of keys from the momentum encoder, with the label of
//! each (−1 for unlabelled windows), supplying contrastive negatives beyond the batch.

use std::collections::HashMap;

use tch::{Device, Kind, Tensor};

use super::checkpoint::RestoreError;

/// Keys `[capacity, P]` and their labels, filled in turn.
#[derive(Debug)]
pub struct MemoryBank {
    keys: Tensor,
    labels: Tensor,
    /// Next row to overwrite.
    cursor: i64,
    /// Rows holding real keys (grows to the capacity, then stays there).
    filled: i64,
}

impl MemoryBank {
    /// An empty bank of `capacity` keys of `dim` columns on `device`.
    pub fn new(capacity: i64, dim: i64, device: Device) -> Self {
        assert!(capacity > 0 && dim > 0, "memory bank must have rows and columns");
        Self {
            keys: Tensor::zeros([capacity, dim], (Kind::Float, device)),
            labels: Tensor::full([capacity], -1, (Kind::Int64, device)),
            cursor: 0,
            filled: 0,
        }
    }

    /// Rows the bank holds when full.
    pub fn capacity(&self) -> i64 {
        self.keys.size()[0]
    }

    /// Rows holding keys.
    pub fn len(&self) -> i64 {
        self.filled
    }

    /// Whether no key has been pushed yet.
    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// Keys and labels of the filled rows.
    pub fn contents(&self) -> (Tensor, Tensor) {
        (self.keys.narrow(0, 0, self.filled), self.labels.narrow(0, 0, self.filled))
    }

    /// The whole state, for checkpoints: keys, labels, and `[cursor, filled]`.
    pub fn state(&self) -> [Tensor; 3] {
        [self.keys.copy(), self.labels.copy(), Tensor::from_slice(&[self.cursor, self.filled])]
    }

    /// Whether the tensors `<prefix>.*` fit this bank (missing ones do: an older format), without
    /// changing anything.
    pub fn check(&self, prefix: &str, tensors: &HashMap<&str, &Tensor>) -> Result<(), RestoreError> {
        let name = |part: &str| format!("{prefix}.{part}");
        let get = |part: &str| tensors.get(name(part).as_str()).copied();
        let (Some(keys), Some(labels), Some(position)) = (get("keys"), get("labels"), get("position")) else {
            return Ok(());
        };
        RestoreError::check_shape(&name("keys"), &self.keys, keys)?;
        RestoreError::check_shape(&name("labels"), &self.labels, labels)?;
        let position = Vec::<i64>::try_from(position)
            .map_err(|source| RestoreError::Unreadable { name: name("position"), source })?;
        let capacity = self.capacity();
        if position.len() != 2 || !(0..capacity).contains(&position[0]) || !(0..=capacity).contains(&position[1]) {
            let problem = format!("{position:?} is no position in a bank of {capacity}");
            return Err(RestoreError::Invalid { name: name("position"), problem });
        }
        Ok(())
    }

    /// Restores [`MemoryBank::state`] from the tensors `<prefix>.keys`, `.labels` and
    /// `.position`; `Ok(false)` when the checkpoint lacks any of them (an older format), an error when they do not
    /// fit this bank.
    pub fn restore(&mut self, prefix: &str, tensors: &HashMap<&str, &Tensor>) -> Result<bool, RestoreError> {
        self.check(prefix, tensors)?;
        let name = |part: &str| format!("{prefix}.{part}");
        let get = |part: &str| tensors.get(name(part).as_str()).copied();
        let (Some(keys), Some(labels), Some(position)) = (get("keys"), get("labels"), get("position")) else {
            return Ok(false);
        };
        RestoreError::check_shape(&name("keys"), &self.keys, keys)?;
        RestoreError::check_shape(&name("labels"), &self.labels, labels)?;
        let position = Vec::<i64>::try_from(position)
            .map_err(|source| RestoreError::Unreadable { name: name("position"), source })?;
        let _guard = tch::no_grad_guard();
        self.keys.copy_(keys);
        self.labels.copy_(labels);
        (self.cursor, self.filled) = (position[0], position[1]);
        Ok(true)
    }

    /// Enqueues `keys` `[B, P]` (detached) with `labels` `[B]`, overwriting the oldest rows.
    pub fn push(&mut self, keys: &Tensor, labels: &Tensor) {
        let _guard = tch::no_grad_guard();
        let capacity = self.capacity();
        let n = keys.size()[0].min(capacity);
        let (keys, labels) = (keys.narrow(0, keys.size()[0] - n, n), labels.narrow(0, labels.size()[0] - n, n));
        let first = n.min(capacity - self.cursor);
        self.keys.narrow(0, self.cursor, first).copy_(&keys.narrow(0, 0, first));
        self.labels.narrow(0, self.cursor, first).copy_(&labels.narrow(0, 0, first));
        if first < n {
            self.keys.narrow(0, 0, n - first).copy_(&keys.narrow(0, first, n - first));
            self.labels.narrow(0, 0, n - first).copy_(&labels.narrow(0, first, n - first));
        }
        self.cursor = (self.cursor + n) % capacity;
        self.filled = (self.filled + n).min(capacity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(values: &[f32]) -> Tensor {
        Tensor::from_slice(values).view([values.len() as i64, 1])
    }

    #[test]
    fn queue_wraps_and_keeps_the_newest() {
        let mut bank = MemoryBank::new(4, 1, Device::Cpu);
        assert!(bank.is_empty());
        bank.push(&rows(&[1.0, 2.0, 3.0]), &Tensor::from_slice(&[0i64, -1, 1]));
        assert_eq!(bank.len(), 3);
        bank.push(&rows(&[4.0, 5.0]), &Tensor::from_slice(&[2i64, 3]));
        assert_eq!(bank.len(), 4);
        let (keys, labels) = bank.contents();
        let keys: Vec<f32> = Vec::try_from(keys.flatten(0, -1)).unwrap();
        let labels: Vec<i64> = Vec::try_from(labels).unwrap();
        // 5 overwrote the oldest row (1).
        assert_eq!(keys, vec![5.0, 2.0, 3.0, 4.0]);
        assert_eq!(labels, vec![3, -1, 1, 2]);
        // A push larger than the bank keeps its newest rows.
        bank.push(&rows(&[6.0, 7.0, 8.0, 9.0, 10.0, 11.0]), &Tensor::from_slice(&[0i64; 6]));
        let (keys, _) = bank.contents();
        let mut keys: Vec<f32> = Vec::try_from(keys.flatten(0, -1)).unwrap();
        keys.sort_by(f32::total_cmp);
        assert_eq!(keys, vec![8.0, 9.0, 10.0, 11.0]);
    }
}
