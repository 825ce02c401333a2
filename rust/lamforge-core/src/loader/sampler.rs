//! The sample order: which frames, grouped into which batches, in which order, on which rank.
//!
//! Everything is a pure function of the seed and the epoch, so a resumed run regenerates the
//! epoch's plan and skips the batches it has already consumed.
//!
//! * **Shard-aware shuffle.** A dataset's frames are grouped into blocks: the frames whose atoms
//!   start in one inner chunk of `positions` (the largest array). The block order is shuffled, then
//!   the frames stream through a shuffle buffer of `shuffle_buffer` frames that emits a random
//!   element as each new one arrives. Frames leaving the buffer together come from a few blocks,
//!   so each decompressed chunk serves several frames of nearby batches, while a buffer of a few
//!   blocks' frames already mixes frames from distant parts of the dataset.
//! * **Exhaustive epochs** (no weights): every selected frame of every dataset once per epoch.
//!   Datasets are interleaved at random in proportion to what each has left, so the mix stays
//!   even through the epoch.
//! * **Weighted epochs** (weights given): `batches_per_epoch` steps per rank; each step draws a
//!   dataset with probability proportional to its weight (deepmd-kit's multi-task sampling) and
//!   takes its next batch; a dataset that runs out starts a new, reshuffled pass.
//! * **One dataset per batch** by default, as in deepmd-kit multi-task training where each step
//!   trains one task's head; `mixed_batches` draws the dataset per frame instead.
//! * **Batches** of `Frames(n)` frames, or `Atoms(budget)`: frames are added while the total stays
//!   within the budget (a frame larger than the budget alone forms a batch).
//! * **Ranks**: every rank computes the same global batch list and takes batches
//!   `rank, rank + world_size, ...`: disjoint, and together all of them. When the count does not
//!   divide, the list is padded by repeating its first batches so that every rank gets the same
//!   number of steps (as `torch.utils.data.DistributedSampler` pads).

use super::rng::Rng;
use crate::error::{CoreError, Result};

/// A frame of a loader: `(dataset, frame id in the dataset)`.
pub type FrameRef = (u32, u32);

/// How a batch is filled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BatchSize {
    /// A fixed number of frames (the last batch of an exhaustive pass may have fewer).
    Frames(usize),
    /// As many frames as fit in this many atoms.
    Atoms(usize),
}

/// Sampling options.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerConfig {
    /// Base seed of every random choice.
    pub seed: u64,
    /// Batch filling rule.
    pub batch: BatchSize,
    /// Shuffle (false: frames in stored order, datasets one after the other).
    pub shuffle: bool,
    /// Frames held by the shuffle buffer.
    pub shuffle_buffer: usize,
    /// Sampling weight per dataset; `None` for exhaustive epochs.
    pub weights: Option<Vec<f64>>,
    /// Steps per epoch and rank with weights.
    pub batches_per_epoch: Option<usize>,
    /// Draw the dataset per frame rather than per batch.
    pub mixed_batches: bool,
    /// This process's rank.
    pub rank: usize,
    /// Number of ranks.
    pub world_size: usize,
}

/// The frames one dataset contributes.
#[derive(Debug, Clone, PartialEq)]
pub struct Population {
    /// Selected frame ids, ascending.
    pub frames: Vec<u32>,
    /// Atoms of every frame of the dataset, indexed by frame id.
    pub num_atoms: Vec<u32>,
    /// Locality block of every frame of the dataset, indexed by frame id (non-decreasing).
    pub block: Vec<u32>,
}

/// Domain tags that keep the random streams of different choices apart.
const PASS: u64 = 1;
const INTERLEAVE: u64 = 2;
const DRAW: u64 = 3;

/// Plans the batches of each epoch.
#[derive(Debug, Clone)]
pub struct Sampler {
    config: SamplerConfig,
    populations: Vec<Population>,
}

/// Groups a stream of frames into batches.
#[derive(Debug)]
struct Batcher {
    size: BatchSize,
    current: Vec<FrameRef>,
    atoms: usize,
}

impl Batcher {
    fn new(size: BatchSize) -> Self {
        Self {
            size,
            current: Vec::new(),
            atoms: 0,
        }
    }

    /// Adds a frame; returns a batch when one is complete.
    fn push(&mut self, frame: FrameRef, atoms: usize) -> Option<Vec<FrameRef>> {
        match self.size {
            BatchSize::Frames(count) => {
                self.current.push(frame);
                (self.current.len() >= count).then(|| std::mem::take(&mut self.current))
            }
            BatchSize::Atoms(budget) => {
                let full = !self.current.is_empty() && self.atoms + atoms > budget;
                let done = full.then(|| std::mem::take(&mut self.current));
                if full {
                    self.atoms = 0;
                }
                self.current.push(frame);
                self.atoms += atoms;
                done
            }
        }
    }

    fn finish(&mut self) -> Option<Vec<FrameRef>> {
        self.atoms = 0;
        (!self.current.is_empty()).then(|| std::mem::take(&mut self.current))
    }
}

/// A dataset's endless frame stream for weighted epochs: pass after reshuffled pass.
#[derive(Debug)]
struct Cycle {
    dataset: usize,
    pass: u64,
    order: Vec<u32>,
    next: usize,
}

impl Sampler {
    /// Checks the options against the datasets.
    ///
    /// # Errors
    /// [`CoreError::InvalidInput`] naming the option at fault.
    pub fn new(config: SamplerConfig, populations: Vec<Population>) -> Result<Self> {
        let invalid = |message: String| Err(CoreError::InvalidInput(message));
        if config.world_size == 0 || config.rank >= config.world_size {
            return invalid(format!(
                "rank {} is not in 0..world_size ({})",
                config.rank, config.world_size
            ));
        }
        match config.batch {
            BatchSize::Frames(0) => return invalid("batch_size must be at least 1".into()),
            BatchSize::Atoms(0) => return invalid("max_atoms must be at least 1".into()),
            _ => {}
        }
        if populations.iter().all(|p| p.frames.is_empty()) {
            return invalid("the loader has no frames to sample".into());
        }
        if let Some(weights) = &config.weights {
            if weights.len() != populations.len() {
                return invalid(format!(
                    "{} weights for {} datasets",
                    weights.len(),
                    populations.len()
                ));
            }
            if weights.iter().any(|w| !w.is_finite() || *w < 0.0)
                || weights.iter().sum::<f64>() <= 0.0
            {
                return invalid(format!(
                    "weights must be non-negative with a positive sum, got {weights:?}"
                ));
            }
            for (dataset, (weight, population)) in weights.iter().zip(&populations).enumerate() {
                if *weight > 0.0 && population.frames.is_empty() {
                    return invalid(format!(
                        "dataset {dataset} has weight {weight} but no frames"
                    ));
                }
            }
            if config.batches_per_epoch.unwrap_or(0) == 0 {
                return invalid("weighted sampling needs batches_per_epoch of at least 1".into());
            }
        }
        Ok(Self {
            config,
            populations,
        })
    }

    /// The options.
    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// One pass over dataset `dataset`'s frames in shuffled (or stored) order.
    fn pass(&self, dataset: usize, epoch: u64, pass: u64) -> Vec<u32> {
        let population = &self.populations[dataset];
        if !self.config.shuffle {
            return population.frames.clone();
        }
        let mut rng = Rng::new(&[self.config.seed, PASS, epoch, dataset as u64, pass]);
        // Runs of frames sharing a block, in shuffled order.
        let mut runs: Vec<&[u32]> = population
            .frames
            .chunk_by(|a, b| population.block[*a as usize] == population.block[*b as usize])
            .collect();
        rng.shuffle(&mut runs);
        let capacity = self.config.shuffle_buffer.max(1);
        let mut buffer: Vec<u32> = Vec::with_capacity(capacity);
        let mut order = Vec::with_capacity(population.frames.len());
        for &frame in runs.iter().flat_map(|run| run.iter()) {
            if buffer.len() < capacity {
                buffer.push(frame);
            } else {
                let slot = rng.below(capacity);
                order.push(std::mem::replace(&mut buffer[slot], frame));
            }
        }
        rng.shuffle(&mut buffer);
        order.extend(buffer);
        order
    }

    fn atoms(&self, (dataset, frame): FrameRef) -> usize {
        self.populations[dataset as usize].num_atoms[frame as usize] as usize
    }

    /// Picks datasets at random in proportion to what each has left; `sizes[d]` items each.
    fn interleave(&self, epoch: u64, sizes: &[usize]) -> Vec<usize> {
        let mut left: Vec<f64> = sizes.iter().map(|&size| size as f64).collect();
        let total: usize = sizes.iter().sum();
        let mut rng = Rng::new(&[self.config.seed, INTERLEAVE, epoch]);
        let mut picks = Vec::with_capacity(total);
        for _ in 0..total {
            let dataset = if self.config.shuffle {
                rng.weighted(&left)
            } else {
                left.iter().position(|&l| l > 0.0).unwrap_or(0)
            };
            left[dataset] -= 1.0;
            picks.push(dataset);
        }
        picks
    }

    fn exhaustive(&self, epoch: u64) -> Vec<Vec<FrameRef>> {
        let streams: Vec<Vec<FrameRef>> = (0..self.populations.len())
            .map(|d| {
                let pass = self.pass(d, epoch, 0);
                pass.into_iter().map(|frame| (d as u32, frame)).collect()
            })
            .collect();
        if self.config.mixed_batches {
            let sizes: Vec<usize> = streams.iter().map(Vec::len).collect();
            let mut cursors = vec![0usize; streams.len()];
            let mut batcher = Batcher::new(self.config.batch);
            let mut batches = Vec::new();
            for dataset in self.interleave(epoch, &sizes) {
                let frame = streams[dataset][cursors[dataset]];
                cursors[dataset] += 1;
                batches.extend(batcher.push(frame, self.atoms(frame)));
            }
            batches.extend(batcher.finish());
            return batches;
        }
        let per_dataset: Vec<Vec<Vec<FrameRef>>> = streams
            .into_iter()
            .map(|stream| {
                let mut batcher = Batcher::new(self.config.batch);
                let mut batches: Vec<Vec<FrameRef>> = Vec::new();
                for frame in stream {
                    batches.extend(batcher.push(frame, self.atoms(frame)));
                }
                batches.extend(batcher.finish());
                batches
            })
            .collect();
        let sizes: Vec<usize> = per_dataset.iter().map(Vec::len).collect();
        let mut iterators: Vec<_> = per_dataset.into_iter().map(Vec::into_iter).collect();
        self.interleave(epoch, &sizes)
            .into_iter()
            .filter_map(|dataset| iterators[dataset].next())
            .collect()
    }

    fn cycle_next(&self, cycle: &mut Cycle, epoch: u64) -> FrameRef {
        if cycle.next == cycle.order.len() {
            cycle.pass += 1;
            cycle.order = self.pass(cycle.dataset, epoch, cycle.pass);
            cycle.next = 0;
        }
        cycle.next += 1;
        (cycle.dataset as u32, cycle.order[cycle.next - 1])
    }

    fn weighted(&self, epoch: u64, weights: &[f64], total: usize) -> Vec<Vec<FrameRef>> {
        let mut cycles: Vec<Cycle> = (0..self.populations.len())
            .map(|dataset| Cycle {
                dataset,
                pass: 0,
                order: if weights[dataset] > 0.0 {
                    self.pass(dataset, epoch, 0)
                } else {
                    Vec::new()
                },
                next: 0,
            })
            .collect();
        let mut rng = Rng::new(&[self.config.seed, DRAW, epoch]);
        let mut batches = Vec::with_capacity(total);
        if self.config.mixed_batches {
            let mut batcher = Batcher::new(self.config.batch);
            while batches.len() < total {
                let frame = self.cycle_next(&mut cycles[rng.weighted(weights)], epoch);
                batches.extend(batcher.push(frame, self.atoms(frame)));
            }
            return batches;
        }
        let mut batchers: Vec<Batcher> = (0..cycles.len())
            .map(|_| Batcher::new(self.config.batch))
            .collect();
        while batches.len() < total {
            let dataset = rng.weighted(weights);
            loop {
                let frame = self.cycle_next(&mut cycles[dataset], epoch);
                if let Some(batch) = batchers[dataset].push(frame, self.atoms(frame)) {
                    batches.push(batch);
                    break;
                }
            }
        }
        batches
    }

    /// This rank's batches of epoch `epoch`, in order.
    pub fn plan(&self, epoch: u64) -> Vec<Vec<FrameRef>> {
        let world = self.config.world_size;
        let mut global = match (&self.config.weights, self.config.batches_per_epoch) {
            (Some(weights), Some(steps)) => self.weighted(epoch, weights, steps * world),
            _ => self.exhaustive(epoch),
        };
        let length = global.len();
        let padded = length.div_ceil(world) * world;
        for index in length..padded {
            let repeat = global[index % length].clone();
            global.push(repeat);
        }
        global
            .into_iter()
            .skip(self.config.rank)
            .step_by(world)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn population(num_frames: u32, frames_per_block: u32) -> Population {
        Population {
            frames: (0..num_frames).collect(),
            num_atoms: (0..num_frames).map(|f| 1 + f % 7).collect(),
            block: (0..num_frames).map(|f| f / frames_per_block).collect(),
        }
    }

    fn config() -> SamplerConfig {
        SamplerConfig {
            seed: 3,
            batch: BatchSize::Frames(4),
            shuffle: true,
            shuffle_buffer: 16,
            weights: None,
            batches_per_epoch: None,
            mixed_batches: false,
            rank: 0,
            world_size: 1,
        }
    }

    #[test]
    fn exhaustive_epoch_covers_every_frame_once_in_single_dataset_batches() {
        let sampler = Sampler::new(config(), vec![population(50, 8), population(31, 5)]).unwrap();
        let plan = sampler.plan(0);
        let frames: Vec<FrameRef> = plan.iter().flatten().copied().collect();
        assert_eq!(frames.len(), 81);
        assert_eq!(frames.iter().collect::<HashSet<_>>().len(), 81);
        assert!(plan
            .iter()
            .all(|batch| batch.iter().all(|f| f.0 == batch[0].0)));
        assert_ne!(plan, sampler.plan(1), "epochs reshuffle");
        assert_eq!(plan, sampler.plan(0), "plans are reproducible");
    }

    #[test]
    fn ranks_are_disjoint_and_cover_the_epoch() {
        let mut seen = Vec::new();
        for rank in 0..3 {
            let sampler = Sampler::new(
                SamplerConfig {
                    rank,
                    world_size: 3,
                    ..config()
                },
                vec![population(48, 8)],
            )
            .unwrap();
            let plan = sampler.plan(2);
            assert_eq!(plan.len(), 4);
            seen.extend(plan.into_iter().flatten());
        }
        assert_eq!(seen.len(), 48);
        assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 48);
    }

    #[test]
    fn padding_repeats_the_first_batches_in_order() {
        let plans: Vec<Vec<Vec<FrameRef>>> = (0..3)
            .map(|rank| {
                let config = SamplerConfig {
                    rank,
                    world_size: 3,
                    ..config()
                };
                Sampler::new(config, vec![population(28, 8)])
                    .unwrap()
                    .plan(0)
            })
            .collect();
        let global = Sampler::new(config(), vec![population(28, 8)])
            .unwrap()
            .plan(0);
        assert_eq!(global.len(), 7);
        // Global batches 7 and 8 (ranks 1 and 2, step 2) repeat global batches 0 and 1.
        assert_eq!(plans[1][2], global[0]);
        assert_eq!(plans[2][2], global[1]);
    }

    #[test]
    fn atom_budget_is_respected() {
        let sampler = Sampler::new(
            SamplerConfig {
                batch: BatchSize::Atoms(10),
                ..config()
            },
            vec![population(40, 8)],
        )
        .unwrap();
        for batch in sampler.plan(0) {
            let atoms: u32 = batch.iter().map(|&(_, f)| 1 + f % 7).sum();
            assert!(atoms <= 10);
        }
    }

    #[test]
    fn weighted_epochs_follow_the_weights() {
        let weights = Some(vec![1.0, 3.0]);
        let sampler = Sampler::new(
            SamplerConfig {
                weights,
                batches_per_epoch: Some(2000),
                ..config()
            },
            vec![population(20, 4), population(30, 4)],
        )
        .unwrap();
        let plan = sampler.plan(0);
        assert_eq!(plan.len(), 2000);
        let share = plan.iter().filter(|b| b[0].0 == 1).count() as f64 / 2000.0;
        assert!((share - 0.75).abs() < 0.03, "{share}");
    }

    #[test]
    fn bad_options_are_refused() {
        assert!(Sampler::new(
            SamplerConfig {
                rank: 2,
                world_size: 2,
                ..config()
            },
            vec![population(4, 2)]
        )
        .is_err());
        assert!(Sampler::new(
            SamplerConfig {
                weights: Some(vec![1.0]),
                ..config()
            },
            vec![population(4, 2)]
        )
        .is_err());
        assert!(Sampler::new(
            config(),
            vec![Population {
                frames: vec![],
                num_atoms: vec![],
                block: vec![]
            }]
        )
        .is_err());
    }
}
