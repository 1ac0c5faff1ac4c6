//! Seeded synthetic embeddings for benchmarks and tests: unit vectors drawn
//! around random cluster centres, like the embeddings of photos of a number
//! of classes (uniform random vectors would have no neighbours to find).

use rayon::prelude::*;

use cbr_core::rng::SplitMix64;

/// A clustered set of unit vectors.
#[derive(Clone, Copy, Debug)]
pub struct Clusters {
    pub dim: usize,
    pub clusters: usize,
    /// Noise norm relative to the centre's: two members of one cluster have
    /// cosine ≈ 1 / (1 + spread²).
    pub spread: f32,
    pub seed: u64,
}

/// The generator of item `i` of one kind of draw (centres, members, clusters) for `seed`.
fn stream(seed: u64, kind: u64, i: u64) -> SplitMix64 {
    let mut s = SplitMix64(seed ^ kind.wrapping_mul(0xd6e8_feb8_6659_fd93));
    s.0 ^= s.next_u64().wrapping_add(i.wrapping_mul(0x2545_f491_4f6c_dd1d));
    SplitMix64(s.next_u64())
}

impl Clusters {
    /// The cluster of vector `i` of a set (spread evenly over clusters).
    pub fn cluster_of(&self, i: usize) -> u32 {
        (stream(self.seed, 3, i as u64).next_u64() % self.clusters as u64) as u32
    }

    /// Unit centre of cluster `c`.
    fn centre(&self, c: u32) -> Vec<f32> {
        let mut v = vec![0f32; self.dim];
        stream(self.seed, 1, c as u64).fill_normal(&mut v);
        cbr_core::head::l2_normalize(&mut v);
        v
    }

    /// `n` unit vectors (row-major, `n` x `dim`) and their clusters. `set`
    /// picks an independent draw (e.g. 0 = index rows, 1 = queries).
    pub fn sample(&self, n: usize, set: u64) -> (Vec<f32>, Vec<u32>) {
        let centres: Vec<Vec<f32>> =
            (0..self.clusters as u32).into_par_iter().map(|c| self.centre(c)).collect();
        let labels: Vec<u32> = (0..n)
            .map(|i| Clusters { seed: self.seed ^ set.wrapping_mul(0x9e37), ..*self }.cluster_of(i))
            .collect();
        let mut rows = vec![0f32; n * self.dim];
        let scale = self.spread / (self.dim as f32).sqrt();
        rows.par_chunks_mut(self.dim).enumerate().for_each(|(i, row)| {
            stream(self.seed, 2 + (set << 8), i as u64).fill_normal(row);
            for (x, c) in row.iter_mut().zip(&centres[labels[i] as usize]) {
                *x = c + scale * *x;
            }
            cbr_core::head::l2_normalize(row);
        });
        (rows, labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_seeded_unit_vectors_clustered_as_promised() {
        let g = Clusters { dim: 64, clusters: 4, spread: 1.0, seed: 7 };
        let (a, la) = g.sample(200, 0);
        let (b, lb) = g.sample(200, 0);
        assert_eq!(a, b);
        assert_eq!(la, lb);
        let (c, _) = g.sample(200, 1);
        assert_ne!(a, c);
        for r in a.chunks_exact(64) {
            let n: f32 = r.iter().map(|x| x * x).sum();
            assert!((n - 1.0).abs() < 1e-4);
        }
        // Same-cluster cosine ≈ 0.5, other-cluster ≈ 0.
        let (mut same, mut ns, mut other, mut no) = (0f32, 0, 0f32, 0);
        for i in 0..50 {
            for j in i + 1..50 {
                let d = cbr_core::kernels::dot(&a[i * 64..(i + 1) * 64], &a[j * 64..(j + 1) * 64]);
                if la[i] == la[j] {
                    same += d;
                    ns += 1;
                } else {
                    other += d;
                    no += 1;
                }
            }
        }
        let (same, other) = (same / ns as f32, other / no as f32);
        assert!((same - 0.5).abs() < 0.15 && other.abs() < 0.15, "same {same}, other {other}");
    }
}
