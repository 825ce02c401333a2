//! The streaming loader: sampling, collation and prefetch over a lamforge store.
//!
//! [`Loader`] owns the sample position (epoch, batches consumed) and, per process, an engine:
//! the opened datasets with their caches, a rayon pool of `num_threads` threads and the producer
//! thread. Threads do not survive `fork` (PyTorch DataLoader workers fork), and a lock held by a
//! parent thread at the moment of the fork stays locked forever in the child, so the loader
//! remembers the process id that built its engine; a call from another process leaks the old
//! engine untouched (never dropping it: that would join threads and take locks that only existed
//! in the parent) and builds a new one that continues from the same position.

pub mod collate;
pub mod prefetch;
pub mod rng;
pub mod sampler;

use std::path::PathBuf;
use std::sync::Arc;

use rayon::{ThreadPool, ThreadPoolBuilder};

use crate::error::{CoreError, Result};
use crate::neighbors::DenseSpec;
use crate::store::{CacheStats, Caches, ChunkCache, Dataset, Field};
pub use collate::{Batch, BatchNeighbors, CollateOptions};
use prefetch::{Producer, Work};
pub use sampler::{BatchSize, FrameRef, Population, Sampler, SamplerConfig};

/// One dataset of a loader.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetSelection {
    /// Group name in the store.
    pub name: String,
    /// Frame ids to sample (e.g. a training split); `None` for all.
    pub frames: Option<Vec<u32>>,
}

/// Everything a loader needs; plain data, so a forked process can rebuild from it.
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    /// Store root directory.
    pub store: PathBuf,
    /// Datasets; their position is their dataset (task) id.
    pub datasets: Vec<DatasetSelection>,
    /// Sample order.
    pub sampler: SamplerConfig,
    /// Neighbour lists (empty: arrays only); cap-overflow policy.
    pub specs: Vec<DenseSpec>,
    /// Raise when a cap drops pairs.
    pub error_on_dropped: bool,
    /// Threads that collate (0: all cores).
    pub num_threads: usize,
    /// Batches collated ahead of the consumer.
    pub prefetch: usize,
    /// Memory budget of the decoded-chunk cache, bytes.
    pub cache_bytes: usize,
}

/// Shard files a loader keeps open, over all its datasets: well below the usual limit of 1,024
/// file descriptors, and enough for the few shards per array that a shuffle buffer spans.
const OPEN_SHARDS: usize = 256;

/// The per-process part of a loader.
#[derive(Debug)]
struct Engine {
    process: u32,
    work: Work,
    sampler: Sampler,
    chunks: Arc<ChunkCache>,
    producer: Option<Producer>,
    plan: Option<(u64, Arc<Vec<Vec<FrameRef>>>)>,
}

fn population(dataset: &Dataset, frames: Option<&Vec<u32>>) -> Result<Population> {
    let num_frames = dataset.num_frames();
    let selected = match frames {
        Some(frames) => {
            let mut frames = frames.clone();
            frames.sort_unstable();
            frames.dedup();
            if let Some(&last) = frames.last().filter(|&&last| last as usize >= num_frames) {
                return Err(CoreError::InvalidInput(format!(
                    "dataset '{}' has {num_frames} frames; frame {last} was selected",
                    dataset.name
                )));
            }
            frames
        }
        None => (0..num_frames as u32).collect(),
    };
    let chunk_atoms = dataset.chunk_rows(Field::Positions).unwrap_or(1).max(1) as i64;
    let offsets = &dataset.atom_offsets;
    Ok(Population {
        frames: selected,
        num_atoms: offsets.windows(2).map(|w| (w[1] - w[0]) as u32).collect(),
        block: offsets[..num_frames]
            .iter()
            .map(|&start| (start / chunk_atoms) as u32)
            .collect(),
    })
}

impl Engine {
    fn build(config: &LoaderConfig) -> Result<Self> {
        if config.datasets.is_empty() {
            return Err(CoreError::InvalidInput(
                "the loader needs at least one dataset".into(),
            ));
        }
        if u32::try_from(config.datasets.len()).is_err() {
            return Err(CoreError::InvalidInput("too many datasets".into()));
        }
        let caches = Caches::new(config.cache_bytes, OPEN_SHARDS);
        let chunks = caches.chunks.clone();
        let mut datasets = Vec::with_capacity(config.datasets.len());
        let mut populations = Vec::with_capacity(config.datasets.len());
        for (id, selection) in config.datasets.iter().enumerate() {
            let dataset = Dataset::open(&config.store, &selection.name, id as u32, caches.clone())?;
            if dataset.num_frames() > u32::MAX as usize {
                return Err(CoreError::TooLarge(format!(
                    "dataset '{}' has more than {} frames",
                    dataset.name,
                    u32::MAX
                )));
            }
            populations.push(population(&dataset, selection.frames.as_ref())?);
            datasets.push(dataset);
        }
        let sampler = Sampler::new(config.sampler.clone(), populations)?;
        let threads = crate::parallel::resolve_threads(config.num_threads);
        let pool: ThreadPool = ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|index| format!("lamforge-collate-{index}"))
            .build()
            .map_err(|error| {
                CoreError::InvalidInput(format!("cannot start {threads} threads: {error}"))
            })?;
        Ok(Self {
            process: std::process::id(),
            work: Work {
                datasets: Arc::new(datasets),
                pool: Arc::new(pool),
                options: Arc::new(CollateOptions {
                    specs: config.specs.clone(),
                    max_pairs: crate::neighbors::DEFAULT_MAX_PAIRS,
                    error_on_dropped: config.error_on_dropped,
                }),
            },
            sampler,
            chunks,
            producer: None,
            plan: None,
        })
    }

    fn plan(&mut self, epoch: u64) -> Arc<Vec<Vec<FrameRef>>> {
        match &self.plan {
            Some((cached, plan)) if *cached == epoch => plan.clone(),
            _ => {
                let plan = Arc::new(self.sampler.plan(epoch));
                self.plan = Some((epoch, plan.clone()));
                plan
            }
        }
    }

    fn stop(&mut self) {
        if let Some(producer) = self.producer.take() {
            producer.stop();
        }
    }
}

/// A seeded, resumable, prefetching loader over a lamforge store.
#[derive(Debug)]
pub struct Loader {
    config: LoaderConfig,
    engine: Option<Engine>,
    epoch: u64,
    position: usize,
}

impl Loader {
    /// Opens the datasets and checks the options (no thread starts before the first batch).
    ///
    /// # Errors
    /// [`CoreError::Data`] when a dataset cannot be opened; [`CoreError::InvalidInput`] for bad
    /// options.
    pub fn new(config: LoaderConfig) -> Result<Self> {
        let engine = Engine::build(&config)?;
        Ok(Self {
            config,
            engine: Some(engine),
            epoch: 0,
            position: 0,
        })
    }

    /// The engine of this process, rebuilt after a fork.
    fn engine(&mut self) -> Result<&mut Engine> {
        let process = std::process::id();
        if self
            .engine
            .as_ref()
            .is_some_and(|engine| engine.process != process)
        {
            // Forked: the parent's threads are gone and its locks may be held forever.
            std::mem::forget(self.engine.take());
        }
        if self.engine.is_none() {
            self.engine = Some(Engine::build(&self.config)?);
        }
        Ok(self.engine.as_mut().expect("engine was just built"))
    }

    /// The options.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// Current epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Batches of the current epoch already returned.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Batches in epoch `epoch` for this rank.
    ///
    /// # Errors
    /// As [`Loader::new`], when a forked process must reopen the store.
    pub fn len(&mut self, epoch: u64) -> Result<usize> {
        Ok(self.engine()?.plan(epoch).len())
    }

    /// The frames of every batch of epoch `epoch` for this rank, in order.
    ///
    /// # Errors
    /// As [`Loader::len`].
    pub fn plan(&mut self, epoch: u64) -> Result<Arc<Vec<Vec<FrameRef>>>> {
        Ok(self.engine()?.plan(epoch))
    }

    /// Moves to the start of epoch `epoch` (stops any prefetch of the old position).
    pub fn set_position(&mut self, epoch: u64, position: usize) {
        if let Some(engine) = self
            .engine
            .as_mut()
            .filter(|e| e.process == std::process::id())
        {
            engine.stop();
        }
        self.epoch = epoch;
        self.position = position;
    }

    /// The next batch of the current epoch; `Ok(None)` at its end, after which the loader stands
    /// at the start of the next epoch.
    ///
    /// # Errors
    /// The collation's error for this batch (the position does not advance, so a retry fails the
    /// same way).
    pub fn next_batch(&mut self) -> Result<Option<Batch>> {
        let (epoch, position, prefetch) = (self.epoch, self.position, self.config.prefetch);
        let engine = self.engine()?;
        let plan = engine.plan(epoch);
        if position >= plan.len() {
            engine.stop();
            self.epoch += 1;
            self.position = 0;
            return Ok(None);
        }
        if engine.producer.is_none() {
            engine.producer = Some(Producer::start(
                engine.work.clone(),
                plan,
                position,
                prefetch,
            )?);
        }
        match engine.producer.as_ref().and_then(Producer::next) {
            Some(Ok(batch)) => {
                self.position += 1;
                Ok(Some(batch))
            }
            Some(Err(error)) => {
                engine.stop();
                Err(error)
            }
            None => {
                engine.stop();
                Err(CoreError::InvalidInput(format!(
                    "the loader thread stopped before batch {position} of epoch {epoch}"
                )))
            }
        }
    }

    /// Collates the given frames now, outside the sample order (for evaluation and tests).
    ///
    /// # Errors
    /// As [`collate::collate`]; also frame references out of range.
    pub fn collate(&mut self, frames: &[FrameRef]) -> Result<Batch> {
        let engine = self.engine()?;
        let datasets = &engine.work.datasets;
        for &(dataset, frame) in frames {
            let known = datasets
                .get(dataset as usize)
                .is_some_and(|d| (frame as usize) < d.num_frames());
            if !known {
                return Err(CoreError::InvalidInput(format!(
                    "no frame {frame} in dataset {dataset}"
                )));
            }
        }
        let work = engine.work.clone();
        work.pool
            .install(|| collate::collate(&work.datasets, frames, &work.options))
    }

    /// Hit and miss counts of the decoded-chunk cache.
    pub fn cache_stats(&self) -> CacheStats {
        self.engine
            .as_ref()
            .map(|engine| engine.chunks.stats())
            .unwrap_or_default()
    }

    /// Stops the producer thread (the loader can continue later).
    pub fn close(&mut self) {
        if let Some(engine) = self
            .engine
            .as_mut()
            .filter(|e| e.process == std::process::id())
        {
            engine.stop();
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        if self
            .engine
            .as_ref()
            .is_some_and(|engine| engine.process != std::process::id())
        {
            std::mem::forget(self.engine.take());
        }
    }
}
