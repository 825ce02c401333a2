//! Explicit, fork-safe rayon thread pools.
//!
//! Every parallel computation runs inside a local pool of the requested size, never rayon's
//! global pool. Pools are cached per thread count and per process: a process forked from one that
//! built pools (PyTorch DataLoader workers) has no threads behind them, so after a fork the cache
//! is dropped and rebuilt, and if the cache's lock was held at the moment of the fork a one-off
//! pool is used instead of waiting on it forever.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, TryLockError};

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

/// Runs `work` on a pool of `num_threads` threads (`0`: all cores); rayon calls inside it use
/// that pool.
///
/// # Errors
/// [`CoreError::InvalidInput`] when the threads cannot be started.
pub fn install<T: Send>(num_threads: usize, work: impl FnOnce() -> T + Send) -> Result<T> {
    let pool = pool(resolve_threads(num_threads))?;
    Ok(pool.install(work))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_have_the_requested_size() {
        assert_eq!(install(2, rayon::current_num_threads).unwrap(), 2);
        assert_eq!(install(1, rayon::current_num_threads).unwrap(), 1);
        assert_eq!(
            install(0, rayon::current_num_threads).unwrap(),
            resolve_threads(0)
        );
    }
}
