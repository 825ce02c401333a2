//! Ordering the neighbours of one centre: by distance, then neighbour index, then image.
//!
//! The exact order is that of the 128-bit keys of [`super::search`]. Sorting 128-bit values is
//! about twice as slow as sorting 64-bit ones, and the sort is a large share of the whole list, so
//! the sort runs on 64-bit proxies: the high bits of the distance with the key's position in the
//! low bits. Truncating a non-negative float's bits keeps their order (ties aside), so the proxy
//! order is the exact order except inside runs of equal truncated distance; those runs (rare:
//! symmetric images, or distances equal to ~1e-11) are then re-sorted by the full keys.

/// Scratch space reused across centres.
#[derive(Debug, Default)]
pub(crate) struct Ordering {
    proxies: Vec<u64>,
    index_bits: u32,
}

impl Ordering {
    /// Orders `keys` so that the first `keep` of them (or all, if fewer) are the smallest, in
    /// order; returns how many are ordered. Read them with [`Self::ranked`].
    pub fn sort(&mut self, keys: &[u128], keep: usize) -> usize {
        let count = keys.len();
        self.index_bits = (usize::BITS - count.leading_zeros()).max(16);
        let index_bits = self.index_bits;
        self.proxies.clear();
        self.proxies
            .extend(keys.iter().enumerate().map(|(position, &key)| {
                let distance_bits = (key >> 64) as u64;
                ((distance_bits >> index_bits) << index_bits) | position as u64
            }));
        let kept = keep.min(count);
        if kept == 0 {
            return 0;
        }
        if kept < count {
            self.proxies.select_nth_unstable(kept);
            self.proxies[..kept].sort_unstable();
        } else {
            self.proxies.sort_unstable();
        }
        self.resolve_ties(keys, kept);
        kept
    }

    /// The `rank`-th smallest key (rank below the count returned by [`Self::sort`]).
    #[inline]
    pub fn ranked<'k>(&self, keys: &'k [u128], rank: usize) -> &'k u128 {
        &keys[(self.proxies[rank] & ((1u64 << self.index_bits) - 1)) as usize]
    }

    /// Re-sorts runs of equal proxy distance in the ordered prefix by the full keys. A run that
    /// reaches the end of the prefix may continue among the unordered rest: the smallest of those
    /// belong in the prefix.
    fn resolve_ties(&mut self, keys: &[u128], kept: usize) {
        let index_bits = self.index_bits;
        let high = |proxy: u64| proxy >> index_bits;
        let full = |proxy: u64| keys[(proxy & ((1u64 << index_bits) - 1)) as usize];
        let mut start = 0;
        while start < kept {
            let level = high(self.proxies[start]);
            let mut end = start + 1;
            while end < kept && high(self.proxies[end]) == level {
                end += 1;
            }
            if end == kept && kept < self.proxies.len() {
                // Move every equal proxy of the unordered rest next to the run.
                let mut boundary = kept;
                for probe in kept..self.proxies.len() {
                    if high(self.proxies[probe]) == level {
                        self.proxies.swap(boundary, probe);
                        boundary += 1;
                    }
                }
                if boundary > kept {
                    self.proxies[start..boundary].sort_unstable_by_key(|&p| full(p));
                    return;
                }
            }
            if end - start > 1 {
                self.proxies[start..end].sort_unstable_by_key(|&p| full(p));
            }
            start = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(distance: f64, neighbor: u32, code: u32) -> u128 {
        ((distance.to_bits() as u128) << 64) | ((neighbor as u128) << 32) | code as u128
    }

    fn check(keys: &[u128], keep: usize) {
        let mut ordering = Ordering::default();
        let kept = ordering.sort(keys, keep);
        let mut expected = keys.to_vec();
        expected.sort_unstable();
        expected.truncate(keep);
        let got: Vec<u128> = (0..kept).map(|r| *ordering.ranked(keys, r)).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn exact_order_with_ties_and_near_ties() {
        let mut state = 12345u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for case in 0..200 {
            let count = 1 + (next() % 300) as usize;
            let keys: Vec<u128> = (0..count)
                .map(|_| {
                    // Few distinct distances, some a few ulps apart: many (near) ties.
                    let base = 1.0 + (next() % 7) as f64 * 0.25;
                    let distance = f64::from_bits(base.to_bits() + next() % 3);
                    key(distance, (next() % 5) as u32, (next() % 4) as u32)
                })
                .collect();
            for keep in [0, 1, count / 3, count / 2, count, count + 5] {
                check(&keys, keep);
            }
            assert!(case < 200);
        }
    }

    #[test]
    fn many_keys_use_more_index_bits() {
        let keys: Vec<u128> = (0..70_000u32)
            .map(|i| key(1.0 + ((i * 7919) % 1000) as f64 * 1e-3, i, 0))
            .collect();
        check(&keys, 500);
        check(&keys, keys.len());
    }
}
