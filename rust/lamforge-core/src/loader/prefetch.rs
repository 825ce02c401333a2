//! The producer thread: collates the batches of one epoch ahead of the consumer into a bounded
//! queue.
//!
//! One thread walks the plan and collates each batch on the loader's rayon pool (parallel over
//! the batch's frames and, inside large frames, over atoms); it blocks when `capacity` batches are
//! waiting, so memory stays bounded, and stops at the end of the epoch or when asked to.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use rayon::ThreadPool;

use super::collate::{collate, Batch, CollateOptions};
use super::sampler::FrameRef;
use crate::error::{CoreError, Result};
use crate::store::Dataset;

#[derive(Debug, Default)]
struct Queue {
    ready: VecDeque<Result<Batch>>,
    /// The producer has pushed its last batch (end of plan or an error).
    done: bool,
}

#[derive(Debug, Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when a batch is pushed or taken, or on stop.
    changed: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What the producer needs, shared with the loader.
#[derive(Debug, Clone)]
pub struct Work {
    /// The loader's datasets.
    pub datasets: Arc<Vec<Dataset>>,
    /// Threads of the collation.
    pub pool: Arc<ThreadPool>,
    /// Collation options.
    pub options: Arc<CollateOptions>,
}

/// A running producer over `plan[start..]`.
#[derive(Debug)]
pub struct Producer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Producer {
    /// Starts producing batches `plan[start..]`, at most `capacity` ahead of the consumer.
    ///
    /// # Errors
    /// [`CoreError::InvalidInput`] when the thread cannot be started.
    pub fn start(
        work: Work,
        plan: Arc<Vec<Vec<FrameRef>>>,
        start: usize,
        capacity: usize,
    ) -> Result<Self> {
        let shared = Arc::new(Shared::default());
        let producer_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("lamforge-loader".to_string())
            .spawn(move || produce(&producer_shared, &work, &plan, start, capacity.max(1)))
            .map_err(|error| {
                CoreError::InvalidInput(format!("cannot start the loader thread: {error}"))
            })?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// The next batch, waiting for it; `None` once the plan is exhausted.
    pub fn next(&self) -> Option<Result<Batch>> {
        let mut queue = self.shared.lock();
        loop {
            if let Some(batch) = queue.ready.pop_front() {
                self.shared.changed.notify_all();
                return Some(batch);
            }
            if queue.done {
                return None;
            }
            queue = self
                .shared
                .changed
                .wait(queue)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// Stops the thread and waits for it to finish its current batch.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        {
            let _queue = self.shared.lock();
            self.shared.changed.notify_all();
        }
        if let Some(thread) = self.thread.take() {
            // A panic in the producer was already reported as a missing batch; nothing to add.
            let _ = thread.join();
        }
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Marks the queue done when the producer ends, also by a panic, so the consumer never waits for
/// a batch that will not come.
struct Finish<'a>(&'a Shared);

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        self.0.lock().done = true;
        self.0.changed.notify_all();
    }
}

fn produce(shared: &Shared, work: &Work, plan: &[Vec<FrameRef>], start: usize, capacity: usize) {
    let _finish = Finish(shared);
    for frames in plan.iter().skip(start) {
        {
            let mut queue = shared.lock();
            while queue.ready.len() >= capacity && !shared.stop.load(Ordering::Acquire) {
                queue = shared
                    .changed
                    .wait(queue)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
        }
        if shared.stop.load(Ordering::Acquire) {
            break;
        }
        let batch = work
            .pool
            .install(|| collate(&work.datasets, frames, &work.options));
        let failed = batch.is_err();
        let mut queue = shared.lock();
        queue.ready.push_back(batch);
        shared.changed.notify_all();
        if failed {
            break;
        }
    }
}
