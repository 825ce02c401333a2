//! A thread-safe cache with a cost budget and CLOCK eviction.
//!
//! The loader keeps decoded inner chunks (cost: their bytes, budget: the chunk cache's memory)
//! and open shard files (cost: 1, budget: a file-descriptor limit) in two of these. Values are
//! `Arc`s, so an entry evicted while a reader still uses it stays alive until that reader is done.
//!
//! CLOCK (second chance) approximates least-recently-used eviction with O(1) work per lookup: a
//! hit only sets the entry's reference bit, where an exact LRU list reorders on every hit. Every
//! frame of a batch looks up about ten chunks, most of them hits, so that bookkeeping is paid
//! ten times per frame (about a third of the collating thread's time in a cold read of a
//! fast-level store went to the earlier `BTreeMap` LRU and its SipHash).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, Mutex};

/// Hasher of small integer keys (Fx-style multiply and rotate): the keys are chunk and shard
/// numbers of our own store, never attacker-chosen, so SipHash's protection buys nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct IntegerHasher(u64);

impl Hasher for IntegerHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u8(&mut self, value: u8) {
        self.write_u64(u64::from(value));
    }

    fn write_u32(&mut self, value: u32) {
        self.write_u64(u64::from(value));
    }

    fn write_usize(&mut self, value: usize) {
        self.write_u64(value as u64);
    }

    fn write_u64(&mut self, value: u64) {
        const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        self.0 = (self.0.rotate_left(5) ^ value).wrapping_mul(SEED);
    }
}

#[derive(Debug)]
struct Slot<K, V> {
    key: K,
    value: Arc<V>,
    cost: usize,
    /// Set by a hit; the clock hand clears it once before evicting the entry.
    referenced: bool,
}

#[derive(Debug)]
struct State<K, V> {
    /// Slot of each key.
    index: HashMap<K, usize, BuildHasherDefault<IntegerHasher>>,
    slots: Vec<Slot<K, V>>,
    /// Next slot the clock hand examines.
    hand: usize,
    cost: usize,
    hits: u64,
    misses: u64,
}

impl<K: Eq + Hash + Clone, V> State<K, V> {
    /// Removes the entry of slot `slot`; the last slot moves into its place.
    fn remove(&mut self, slot: usize) {
        let removed = self.slots.swap_remove(slot);
        self.index.remove(&removed.key);
        self.cost -= removed.cost;
        if let Some(moved) = self.slots.get(slot) {
            self.index.insert(moved.key.clone(), slot);
        }
    }

    /// Evicts entries until `cost` more fits in `budget`.
    fn make_room(&mut self, cost: usize, budget: usize) {
        while self.cost + cost > budget && !self.slots.is_empty() {
            if self.hand >= self.slots.len() {
                self.hand = 0;
            }
            let slot = &mut self.slots[self.hand];
            if slot.referenced {
                slot.referenced = false;
                self.hand += 1;
            } else {
                // The hand stays: the slot now holds the entry moved from the end.
                self.remove(self.hand);
            }
        }
    }
}

/// Cache bounded by the sum of its entries' costs, evicting with CLOCK.
#[derive(Debug)]
pub struct ClockCache<K, V> {
    budget: usize,
    state: Mutex<State<K, V>>,
}

/// Counters of a cache, for benchmarks and tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that had to load the value.
    pub misses: u64,
    /// Sum of the costs of the entries held now.
    pub cost: usize,
}

impl<K: Eq + Hash + Clone, V> ClockCache<K, V> {
    /// An empty cache holding at most `budget` in total cost (0 keeps nothing).
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            state: Mutex::new(State {
                index: HashMap::default(),
                slots: Vec::new(),
                hand: 0,
                cost: 0,
                hits: 0,
                misses: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<K, V>> {
        // A panic while holding the lock leaves consistent data (every update is completed
        // before the next can panic), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The value of `key`, loading it with `load` (outside the lock) on a miss. Two threads that
    /// miss the same key at once both load it; the second insert wins, which is harmless.
    ///
    /// # Errors
    /// Whatever `load` returns.
    pub fn get_or_load<E>(
        &self,
        key: &K,
        load: impl FnOnce() -> Result<(V, usize), E>,
    ) -> Result<Arc<V>, E> {
        {
            let mut state = self.lock();
            if let Some(&slot) = state.index.get(key) {
                let slot = &mut state.slots[slot];
                slot.referenced = true;
                let value = slot.value.clone();
                state.hits += 1;
                return Ok(value);
            }
            state.misses += 1;
        }
        let (value, cost) = load()?;
        let value = Arc::new(value);
        if cost <= self.budget {
            let mut state = self.lock();
            if let Some(&slot) = state.index.get(key) {
                // Loaded meanwhile by another thread: replace it.
                state.remove(slot);
            }
            state.make_room(cost, self.budget);
            let slot = state.slots.len();
            state.slots.push(Slot {
                key: key.clone(),
                value: value.clone(),
                cost,
                referenced: false,
            });
            state.index.insert(key.clone(), slot);
            state.cost += cost;
        }
        Ok(value)
    }

    /// Hit and miss counts and the cost held.
    pub fn stats(&self) -> CacheStats {
        let state = self.lock();
        CacheStats {
            hits: state.hits,
            misses: state.misses,
            cost: state.cost,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(value: u32, cost: usize) -> impl FnOnce() -> Result<(u32, usize), ()> {
        move || Ok((value, cost))
    }

    #[test]
    fn a_hit_gives_a_second_chance_and_the_budget_holds() {
        let cache: ClockCache<u32, u32> = ClockCache::new(3);
        cache.get_or_load(&1, load(10, 1)).unwrap();
        cache.get_or_load(&2, load(20, 1)).unwrap();
        cache.get_or_load(&3, load(30, 1)).unwrap();
        // Touch 1, so 2 is the first entry without a second chance when 4 arrives.
        assert_eq!(*cache.get_or_load(&1, load(99, 1)).unwrap(), 10);
        cache.get_or_load(&4, load(40, 1)).unwrap();
        assert_eq!(*cache.get_or_load(&2, load(21, 1)).unwrap(), 21);
        assert_eq!(*cache.get_or_load(&1, load(98, 1)).unwrap(), 10);
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.cost), (2, 5, 3));
    }

    #[test]
    fn costs_are_evicted_until_the_new_entry_fits() {
        let cache: ClockCache<u32, u32> = ClockCache::new(10);
        for key in 0..5 {
            cache.get_or_load(&key, load(key, 2)).unwrap();
        }
        assert_eq!(cache.stats().cost, 10);
        // 7 more needs 7 free: at least four of the five entries go.
        cache.get_or_load(&9, load(9, 7)).unwrap();
        let stats = cache.stats();
        assert!(stats.cost <= 10 && stats.cost >= 7, "{stats:?}");
        assert_eq!(*cache.get_or_load(&9, load(0, 7)).unwrap(), 9);
        // Every remaining entry still maps to its own value.
        for key in 0..5 {
            assert_eq!(*cache.get_or_load(&key, load(key, 2)).unwrap(), key);
            assert!(cache.stats().cost <= 10);
        }
    }

    #[test]
    fn too_costly_values_are_returned_but_not_kept() {
        let cache: ClockCache<u32, u32> = ClockCache::new(2);
        assert_eq!(*cache.get_or_load(&1, load(7, 5)).unwrap(), 7);
        assert_eq!(cache.stats().cost, 0);
        assert!(cache
            .get_or_load(&2, || Err::<(u32, usize), _>("bad"))
            .is_err());
        let empty: ClockCache<u32, u32> = ClockCache::new(0);
        assert_eq!(*empty.get_or_load(&1, load(3, 1)).unwrap(), 3);
        assert_eq!(*empty.get_or_load(&1, load(4, 1)).unwrap(), 4);
    }

    #[test]
    fn many_threads_always_read_the_value_of_their_key() {
        let cache: ClockCache<u64, u64> = ClockCache::new(64);
        std::thread::scope(|scope| {
            for thread in 0..4u64 {
                let cache = &cache;
                scope.spawn(move || {
                    let mut key = thread;
                    for _ in 0..20_000 {
                        key = key.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1) % 200;
                        let value = cache
                            .get_or_load(&key, || Ok::<_, ()>((key * 3, 1 + (key % 4) as usize)))
                            .unwrap();
                        assert_eq!(*value, key * 3);
                    }
                });
            }
        });
        let stats = cache.stats();
        assert!(stats.cost <= 64);
        assert_eq!(stats.hits + stats.misses, 80_000);
    }
}
