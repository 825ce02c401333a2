//! A small seeded generator (SplitMix64) written out here so that sample orders never change
//! with a dependency's version: a resumed training run must see the batches it would have seen.

/// SplitMix64 (Steele, Lea and Flood 2014): 64-bit state, passes BigCrush, trivially seeded.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator for the stream named by `words` (seed, epoch, dataset, pass, ...): each
    /// combination gives an independent-looking stream.
    pub fn new(words: &[u64]) -> Self {
        let mut rng = Self {
            state: 0x9E37_79B9_7F4A_7C15,
        };
        for &word in words {
            rng.state ^= word;
            rng.next_u64();
        }
        rng
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform integer in `0..n` (`n > 0`) by the multiply-shift map; its bias is below 2^-32 for
    /// the sizes used here.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Uniform float in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, values: &mut [T]) {
        for i in (1..values.len()).rev() {
            let j = self.below(i + 1);
            values.swap(i, j);
        }
    }

    /// Index drawn with probability proportional to `weights` (non-negative, positive sum).
    pub fn weighted(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut target = self.unit() * total;
        for (index, &weight) in weights.iter().enumerate() {
            if target < weight {
                return index;
            }
            target -= weight;
        }
        // Rounding left `target` at the very top: the last index with weight.
        weights.iter().rposition(|&w| w > 0.0).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let mut rng = Rng::new(&[1, 2]);
        let first: Vec<u64> = (0..4).map(|_| rng.next_u64()).collect();
        let mut again = Rng::new(&[1, 2]);
        assert!(first.iter().all(|&value| value == again.next_u64()));
        assert_ne!(Rng::new(&[1, 3]).next_u64(), first[0]);
        assert_ne!(Rng::new(&[2, 1]).next_u64(), first[0]);
    }

    #[test]
    fn weighted_choice_follows_the_weights() {
        let mut rng = Rng::new(&[7]);
        let mut counts = [0usize; 3];
        for _ in 0..30_000 {
            counts[rng.weighted(&[1.0, 0.0, 3.0])] += 1;
        }
        assert_eq!(counts[1], 0);
        let share = counts[2] as f64 / 30_000.0;
        assert!((share - 0.75).abs() < 0.02, "{share}");
    }
}
