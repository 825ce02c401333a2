//! A thread-safe least-recently-used cache with a cost budget.
//!
//! The loader keeps decoded inner chunks (cost: their bytes, budget: the chunk cache's memory)
//! and open shard files (cost: 1, budget: a file-descriptor limit) in two of these. Values are
//! `Arc`s, so an entry evicted while a reader still uses it stays alive until that reader is done.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::{Arc, Mutex};

#[derive(Debug)]
struct Entry<V> {
    value: Arc<V>,
    cost: usize,
    tick: u64,
}

#[derive(Debug)]
struct State<K, V> {
    entries: HashMap<K, Entry<V>>,
    /// Keys by last use, oldest first.
    order: BTreeMap<u64, K>,
    cost: usize,
    tick: u64,
    hits: u64,
    misses: u64,
}

/// LRU cache bounded by the sum of its entries' costs.
#[derive(Debug)]
pub struct Lru<K, V> {
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

impl<K: Eq + Hash + Clone, V> Lru<K, V> {
    /// An empty cache holding at most `budget` in total cost (0 keeps nothing).
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            state: Mutex::new(State {
                entries: HashMap::new(),
                order: BTreeMap::new(),
                cost: 0,
                tick: 0,
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
            state.tick += 1;
            let tick = state.tick;
            if let Some(entry) = state.entries.get_mut(key) {
                let previous = std::mem::replace(&mut entry.tick, tick);
                let value = entry.value.clone();
                state.order.remove(&previous);
                state.order.insert(tick, key.clone());
                state.hits += 1;
                return Ok(value);
            }
            state.misses += 1;
        }
        let (value, cost) = load()?;
        let value = Arc::new(value);
        if cost <= self.budget {
            let mut state = self.lock();
            state.tick += 1;
            let tick = state.tick;
            if let Some(old) = state.entries.insert(
                key.clone(),
                Entry {
                    value: value.clone(),
                    cost,
                    tick,
                },
            ) {
                state.order.remove(&old.tick);
                state.cost -= old.cost;
            }
            state.order.insert(tick, key.clone());
            state.cost += cost;
            while state.cost > self.budget {
                let Some((_, oldest)) = state.order.pop_first() else {
                    break;
                };
                if let Some(evicted) = state.entries.remove(&oldest) {
                    state.cost -= evicted.cost;
                }
            }
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

    #[test]
    fn evicts_the_least_recently_used_within_budget() {
        let cache: Lru<u32, u32> = Lru::new(3);
        let load = |value: u32| move || Ok::<_, ()>((value, 1));
        cache.get_or_load(&1, load(10)).unwrap();
        cache.get_or_load(&2, load(20)).unwrap();
        cache.get_or_load(&3, load(30)).unwrap();
        // Touch 1, so 2 is now the oldest and goes when 4 arrives.
        assert_eq!(*cache.get_or_load(&1, load(99)).unwrap(), 10);
        cache.get_or_load(&4, load(40)).unwrap();
        assert_eq!(*cache.get_or_load(&2, load(21)).unwrap(), 21);
        let stats = cache.stats();
        assert_eq!(stats.hits, 1);
        assert_eq!(stats.misses, 5);
        assert_eq!(stats.cost, 3);
    }

    #[test]
    fn too_costly_values_are_returned_but_not_kept() {
        let cache: Lru<u32, u32> = Lru::new(2);
        assert_eq!(*cache.get_or_load(&1, || Ok::<_, ()>((7, 5))).unwrap(), 7);
        assert_eq!(cache.stats().cost, 0);
        assert!(cache
            .get_or_load(&2, || Err::<(u32, usize), _>("bad"))
            .is_err());
    }
}
