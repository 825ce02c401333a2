//! Explicit, fork-safe rayon thread pools.
//!
//! Every parallel computation runs inside a local pool of the requested size, never rayon's
//! global pool. Pools are cached per thread count and per process: a process forked from one that
//! built pools (PyTorch DataLoader workers) has no threads behind them, so after a fork the cache
//! is dropped and rebuilt, and if the cache's lock was held at the moment of the fork a one-off
//! pool is used instead of waiting on it forever.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, TryLockError};

use rayon::prelude::*;
use rayon::{ThreadPool, ThreadPoolBuilder};

use crate::error::{CoreError, Result};

/// Pools by thread count, valid in the process whose id is in `OWNER`.
static POOLS: Mutex<Option<HashMap<usize, Arc<ThreadPool>>>> = Mutex::new(None);

/// Id of the process that filled `POOLS` (0 before the first use).
static OWNER: AtomicU32 = AtomicU32::new(0);

/// Number of threads `0` stands for: all available cores.
pub fn resolve_threads(num_threads: usize) -> usize {
    if num_threads > 0 {
        num_threads
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

fn build(num_threads: usize) -> Result<Arc<ThreadPool>> {
    ThreadPoolBuilder::new()
        .num_threads(num_threads)
        .thread_name(|index| format!("lamforge-{index}"))
        .build()
        .map(Arc::new)
        .map_err(|error| {
            CoreError::InvalidInput(format!("cannot start {num_threads} threads: {error}"))
        })
}

fn pool(num_threads: usize) -> Result<Arc<ThreadPool>> {
    let process = std::process::id();
    let owner = OWNER.load(Ordering::Acquire);
    let mut guard = if owner == 0 || owner == process {
        // Any holder of the lock is a live thread of this process: waiting is safe.
        POOLS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    } else {
        // Forked child: a lock held at the moment of the fork is never released.
        match POOLS.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return build(num_threads),
        }
    };
    if owner != process {
        // The parent's pools have no threads in this process. Leak rather than drop them: their
        // shutdown would signal threads and locks that only existed in the parent.
        std::mem::forget(guard.take());
        OWNER.store(process, Ordering::Release);
    }
    let pools = guard.get_or_insert_with(HashMap::new);
    if let Some(pool) = pools.get(&num_threads) {
        return Ok(pool.clone());
    }
    let pool = build(num_threads)?;
    pools.insert(num_threads, pool.clone());
    Ok(pool)
}

thread_local! {
    /// Set while [`install`] runs one-thread work on the calling thread.
    static SEQUENTIAL: Cell<bool> = const { Cell::new(false) };
}

/// Runs `work` with `num_threads` threads (`0`: all cores): the parallel helpers of this module
/// inside it use a pool of that size. One thread runs on the calling thread itself, which saves
/// the hand-off to a pool thread (tens of microseconds, more than a small system's whole search).
///
/// # Errors
/// [`CoreError::InvalidInput`] when the threads cannot be started.
pub fn install<T: Send>(num_threads: usize, work: impl FnOnce() -> T + Send) -> Result<T> {
    let num_threads = resolve_threads(num_threads);
    if num_threads == 1 {
        /// Restores the flag even if `work` panics.
        struct Restore(bool);
        impl Drop for Restore {
            fn drop(&mut self) {
                SEQUENTIAL.with(|flag| flag.set(self.0));
            }
        }
        let _restore = Restore(SEQUENTIAL.with(|flag| flag.replace(true)));
        return Ok(work());
    }
    let pool = pool(num_threads)?;
    Ok(pool.install(work))
}

/// Threads available to the current computation (1 inside one-thread [`install`]).
pub fn current_threads() -> usize {
    if SEQUENTIAL.with(Cell::get) {
        1
    } else {
        rayon::current_num_threads()
    }
}

/// `0..count` cut into consecutive ranges for the current pool: one range on one thread, else
/// about four per thread (some slack for uneven work).
pub fn ranges(count: usize) -> Vec<std::ops::Range<usize>> {
    let threads = current_threads().max(1);
    let pieces = if threads == 1 { 1 } else { 4 * threads };
    let size = count.div_ceil(pieces).max(1);
    (0..count)
        .step_by(size)
        .map(|start| start..(start + size).min(count))
        .collect()
}

/// `items.map(work).collect()`, in parallel on the current pool unless running on one thread.
pub fn map<I, T, F>(items: Vec<I>, work: F) -> Vec<T>
where
    I: Send,
    T: Send,
    F: Fn(I) -> T + Sync + Send,
{
    if current_threads() == 1 {
        items.into_iter().map(work).collect()
    } else {
        items.into_par_iter().map(work).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_have_the_requested_size() {
        assert_eq!(install(2, rayon::current_num_threads).unwrap(), 2);
        assert_eq!(install(1, current_threads).unwrap(), 1);
        assert_eq!(install(2, current_threads).unwrap(), 2);
        let squares = install(2, || map((0..100).collect(), |x: i32| x * x)).unwrap();
        assert_eq!(squares[99], 99 * 99);
        assert_eq!(
            install(0, rayon::current_num_threads).unwrap(),
            resolve_threads(0)
        );
    }
}
