//! Winner-Take-All hashing, the method's pairwise pseudo labels (docs/ARCHITECTURE.md): `H` fixed
//! random permutations of the feature dimensions; code `c_h(z)` is the position of the largest of
//! the first `k` permuted entries. Two windows are similar in proportion to the codes they share,
//! and a pair is a positive pseudo label when that share reaches `μ`.
//!
//! Codes depend only on the order of entries, so they are invariant to positive scaling and to
//! adding a constant — the property that makes them robust pseudo labels.

use crate::rng::SplitMix64;
use tch::{Device, Kind, Tensor};

/// The seeded permutations; saved with the model so pseudo labels stay the same after restart.
#[derive(Debug, Clone, PartialEq)]
pub struct WtaHash {
    dim: usize,
    k: usize,
    /// `H` rows of `k` dimension indices: the first `k` entries of each permutation.
    prefixes: Vec<Vec<usize>>,
}

impl WtaHash {
    /// `h` permutations of `dim` dimensions, each keeping its first `k` (2 ≤ k ≤ dim).
    pub fn new(dim: usize, h: usize, k: usize, seed: u64) -> Self {
        assert!(h >= 1, "WTA needs at least one permutation");
        assert!((2..=dim).contains(&k), "WTA window k must be between 2 and the feature width {dim}");
        let mut rng = SplitMix64::new(seed);
        let prefixes = (0..h)
            .map(|_| {
                let mut perm: Vec<usize> = (0..dim).collect();
                for i in (1..dim).rev() {
                    perm.swap(i, rng.below(i + 1));
                }
                perm.truncate(k);
                perm
            })
            .collect();
        Self { dim, k, prefixes }
    }

    /// Rebuilds a hash from saved prefixes.
    pub fn from_prefixes(dim: usize, prefixes: Vec<Vec<usize>>) -> Self {
        let k = prefixes.first().map_or(0, Vec::len);
        assert!(k >= 2 && prefixes.iter().all(|p| p.len() == k && p.iter().all(|&d| d < dim)), "invalid WTA prefixes");
        Self { dim, k, prefixes }
    }

    pub fn prefixes(&self) -> &[Vec<usize>] {
        &self.prefixes
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The `H` codes of one feature vector. Ties go to the earlier permuted position.
    pub fn codes(&self, z: &[f32]) -> Vec<u16> {
        assert_eq!(z.len(), self.dim, "feature width differs from the hash's");
        self.prefixes
            .iter()
            .map(|prefix| {
                let mut best = 0;
                for (j, &d) in prefix.iter().enumerate() {
                    if z[d] > z[prefix[best]] {
                        best = j;
                    }
                }
                best as u16
            })
            .collect()
    }

    /// Share of codes two vectors have in common, `S_ij`.
    pub fn similarity(a: &[u16], b: &[u16]) -> f32 {
        assert_eq!(a.len(), b.len(), "codes of different hashes");
        a.iter().zip(b).filter(|(x, y)| x == y).count() as f32 / a.len() as f32
    }

    /// Codes of a batch `[B, D]` on any device: `[B, H]` (int64).
    pub fn codes_tensor(&self, z: &Tensor) -> Tensor {
        let index: Vec<i64> = self.prefixes.iter().flatten().map(|&d| d as i64).collect();
        let index = Tensor::from_slice(&index).to(z.device());
        let b = z.size()[0];
        z.index_select(1, &index).view([b, self.prefixes.len() as i64, self.k as i64]).argmax(-1, false)
    }

    /// Pairwise similarity `S` `[B, B]` and pseudo labels `ŷ = 1[S ≥ μ]` (float) of a batch of
    /// detached features.
    pub fn pseudo_labels(&self, z: &Tensor, mu: f64) -> (Tensor, Tensor) {
        let codes = self.codes_tensor(&z.detach());
        let same = codes.unsqueeze(1).eq_tensor(&codes.unsqueeze(0));
        let similarity = same.to_kind(Kind::Float).mean_dim(-1, false, Kind::Float);
        let labels = similarity.ge(mu).to_kind(Kind::Float);
        (similarity, labels)
    }
}

/// A `[B, D]` float tensor from rows, on the CPU.
pub fn rows_tensor(rows: &[Vec<f32>]) -> Tensor {
    let d = rows.first().map_or(0, Vec::len) as i64;
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    Tensor::from_slice(&flat).view([rows.len() as i64, d]).to(Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_rows(n: usize, d: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut rng = SplitMix64::new(seed);
        // Multiples of 1/1024 in [-2, 2]: integer shifts of them are exact in f32.
        (0..n).map(|_| (0..d).map(|_| ((rng.next_u64() % 4097) as f32 - 2048.0) / 1024.0).collect()).collect()
    }

    #[test]
    fn worked_by_hand() {
        // Identity-like prefixes make the codes easy to check by eye.
        let hash = WtaHash::from_prefixes(4, vec![vec![0, 1], vec![2, 3], vec![3, 0]]);
        assert_eq!(hash.codes(&[0.1, 0.9, 0.5, 0.2]), vec![1, 0, 0]);
        assert_eq!(hash.codes(&[0.9, 0.1, 0.1, 0.5]), vec![0, 1, 1]);
        assert_eq!(WtaHash::similarity(&[1, 0, 1], &[0, 1, 1]), 1.0 / 3.0);
        // A tie goes to the earlier permuted position.
        assert_eq!(hash.codes(&[0.3, 0.3, 0.0, 0.0]), vec![0, 0, 1]);
    }

    #[test]
    fn permutations_are_seeded_and_distinct() {
        let a = WtaHash::new(32, 8, 4, 7);
        assert_eq!(a, WtaHash::new(32, 8, 4, 7));
        assert_ne!(a, WtaHash::new(32, 8, 4, 8));
        for p in a.prefixes() {
            let mut sorted = p.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), 4, "a prefix repeats a dimension");
        }
    }

    #[test]
    fn invariant_to_positive_scaling_and_shifts() {
        let hash = WtaHash::new(16, 32, 5, 1);
        for (i, row) in random_rows(200, 16, 3).iter().enumerate() {
            let codes = hash.codes(row);
            let scale = [0.5f32, 2.0, 8.0, 1024.0][i % 4];
            let shift = (i as f32) * 3.0 - 300.0;
            let scaled: Vec<f32> = row.iter().map(|x| x * scale).collect();
            let shifted: Vec<f32> = row.iter().map(|x| x + shift).collect();
            assert_eq!(hash.codes(&scaled), codes, "scaling by {scale}");
            assert_eq!(hash.codes(&shifted), codes, "shifting by {shift}");
        }
    }

    #[test]
    fn identical_vectors_always_similarity_one() {
        let hash = WtaHash::new(16, 20, 4, 2);
        let rows = random_rows(50, 16, 9);
        let z = rows_tensor(&rows);
        let z2 = Tensor::cat(&[&z, &z], 0);
        let (s, labels) = hash.pseudo_labels(&z2, 0.9);
        let s: Vec<f32> = Vec::try_from(s.flatten(0, -1)).unwrap();
        let n = 100;
        for i in 0..n {
            assert_eq!(s[i * n + i], 1.0);
            let twin = (i + 50) % n;
            assert_eq!(s[i * n + twin], 1.0, "a copy of a vector is fully similar");
        }
        let labels: Vec<f32> = Vec::try_from(labels.flatten(0, -1)).unwrap();
        assert!(labels.iter().all(|&l| l == 0.0 || l == 1.0));
    }

    #[test]
    fn tensor_codes_match_scalar_codes() {
        let hash = WtaHash::new(24, 16, 6, 5);
        let rows = random_rows(64, 24, 11);
        let codes = hash.codes_tensor(&rows_tensor(&rows));
        let codes: Vec<i64> = Vec::try_from(codes.flatten(0, -1)).unwrap();
        for (i, row) in rows.iter().enumerate() {
            let expected: Vec<i64> = hash.codes(row).into_iter().map(i64::from).collect();
            assert_eq!(&codes[i * 16..(i + 1) * 16], &expected[..]);
        }
        // Pseudo labels follow S >= mu exactly.
        let (s, y) = hash.pseudo_labels(&rows_tensor(&rows), 0.5);
        let s: Vec<f32> = Vec::try_from(s.flatten(0, -1)).unwrap();
        let y: Vec<f32> = Vec::try_from(y.flatten(0, -1)).unwrap();
        for (si, yi) in s.iter().zip(&y) {
            assert_eq!(*yi, if *si >= 0.5 { 1.0 } else { 0.0 });
        }
    }
}
