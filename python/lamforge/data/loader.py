"""``StoreLoader``: seeded, resumable, prefetching batches of a lamforge store.

The Rust core (``lamforge._core.Loader``) reads the store's shards directly, collates each batch
and builds both DPA-2 neighbour lists on its own threads, a few batches ahead; Python only waits
for the next batch (without the GIL) and wraps its arrays as tensors. See ``LoaderConfig`` for
the sampling rules, ``lamforge.data.batch.Batch`` for the layout.

Example::

    config = LoaderConfig(store="data.zarr", datasets=(DatasetSource(name="water"),), seed=0)
    with config.build() as loader:
        for epoch in range(10):
            loader.set_epoch(epoch)
            for batch in loader:
                ...
            checkpoint["loader"] = loader.state_dict()
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import torch

from lamforge import _core
from lamforge.data.batch import Batch
from lamforge.data.format import INDEX_FILE
from lamforge.data.index import read_index

#: Raised when a shard is missing or damaged; names the dataset, array, frame and file.
StoreError = _core.StoreError


@dataclass(frozen=True, kw_only=True)
class NeighborSpec:
    """One dense neighbour list built for every batch.

    Attributes:
        name: Name of the list in ``Batch.neighbors``.
        cutoff: Pairs closer than this, Å.
        max_neighbors: Nearest neighbours kept per atom (the model's ``sel``).
    """

    name: str
    cutoff: float
    max_neighbors: int


#: The two lists of DPA-2 (Zhang et al. 2024): repinit 6 Å / 120 and repformer 4 Å / 48.
DPA2_NEIGHBORS: tuple[NeighborSpec, ...] = (
    NeighborSpec(name="repinit", cutoff=6.0, max_neighbors=120),
    NeighborSpec(name="repformer", cutoff=4.0, max_neighbors=48),
)


@dataclass(frozen=True, kw_only=True)
class DatasetSource:
    """A dataset of the store and how it is sampled.

    Attributes:
        name: Dataset (group) name; its position in ``LoaderConfig.datasets`` is its task id.
        weight: Sampling weight with ``sampling="weighted"`` (ignored otherwise).
        frames: Frame ids to sample; all frames when None.
        split: Sample only the frames whose ``split`` column in the dataset's frame index
            (``lamforge data split``) has this value, e.g. ``"train"``; combined with ``frames``
            when both are given.
    """

    name: str
    weight: float = 1.0
    frames: Sequence[int] | None = None
    split: str | None = None


def _selected_frames(store: Path, source: DatasetSource) -> np.ndarray | None:
    """The frame ids ``source`` selects, or None for all."""
    frames = None if source.frames is None else np.asarray(source.frames, dtype=np.int64)
    if source.split is None:
        return None if frames is None else frames.astype(np.uint32)
    path = Path(store) / source.name / INDEX_FILE
    if not path.is_file():
        raise StoreError(f"dataset '{source.name}': no frame index at {path} to select a split")
    index = read_index(path)
    in_split = index.filter(pl.col("split") == source.split)["frame"].to_numpy()
    if in_split.size == 0:
        raise ValueError(
            f"dataset '{source.name}' has no frame in split {source.split!r} "
            "(assign splits with `lamforge data split`)"
        )
    if frames is not None:
        in_split = np.intersect1d(in_split, frames)
    return in_split.astype(np.uint32)


@dataclass(frozen=True, kw_only=True)
class LoaderConfig:
    """Options of a ``StoreLoader``.

    Sampling (all choices are a function of ``seed`` and the epoch only):

    * ``sampling="epoch"``: every selected frame of every dataset once per epoch.
    * ``sampling="weighted"``: ``batches_per_epoch`` steps per epoch (and rank); each step draws a
      dataset with probability proportional to its weight and takes its next batch; a dataset
      that runs out starts a new shuffled pass (deepmd-kit's multi-task sampling).
    * A batch holds frames of ONE dataset (one task, one fitting head per step, as in deepmd-kit
      multi-task training) unless ``mixed_batches`` is true.
    * Shuffling is shard-aware: blocks of frames stored together are shuffled, then frames pass
      through a buffer of ``shuffle_buffer`` frames, so one decoded chunk serves several frames.
    * Distributed: rank ``rank`` of ``world_size`` takes every ``world_size``-th batch of the same
      global order; the ranks are disjoint and together cover the epoch (the last round is padded
      with the epoch's first batches so that every rank has the same number of steps).

    Attributes:
        store: Store root directory.
        datasets: The datasets to sample.
        batch_size: Frames per batch; or None with ``max_atoms``.
        max_atoms: Atom budget per batch (frames are added while they fit; a larger frame forms
            a batch alone); None to batch by ``batch_size``.
        seed: Seed of every random choice.
        shuffle: False for stored order (datasets one after the other).
        shuffle_buffer: Frames held by the shuffle buffer.
        sampling: ``"epoch"`` or ``"weighted"`` (see above).
        batches_per_epoch: Steps per epoch and rank with ``sampling="weighted"``.
        mixed_batches: Draw the dataset per frame rather than per batch.
        rank: This process's rank.
        world_size: Number of ranks.
        neighbors: Neighbour lists to build; ``()`` for arrays only.
        error_on_dropped: Raise (instead of reporting ``num_dropped``) when a frame has more
            neighbours within a cutoff than its cap.
        num_threads: Threads collating batches (0: all cores).
        prefetch: Batches prepared ahead of the training loop.
        cache_megabytes: Memory budget of decoded inner chunks kept for reuse across batches
            and epochs (CLOCK eviction; 0 keeps none). A dataset's positions, atomic numbers and
            forces take 49 bytes per stored atom decoded, so 256 MB holds about 5 M atoms: later
            epochs of a dataset that fits read from memory. Besides the budget, each collating
            thread keeps one zstd context and one compressed-chunk buffer (about 0.1 MB), and up
            to 256 shard files stay open.
    """

    store: Path | str
    datasets: tuple[DatasetSource, ...]
    batch_size: int | None = 32
    max_atoms: int | None = None
    seed: int = 0
    shuffle: bool = True
    shuffle_buffer: int = 4096
    sampling: Literal["epoch", "weighted"] = "epoch"
    batches_per_epoch: int | None = None
    mixed_batches: bool = False
    rank: int = 0
    world_size: int = 1
    neighbors: tuple[NeighborSpec, ...] = DPA2_NEIGHBORS
    error_on_dropped: bool = False
    num_threads: int = 0
    prefetch: int = 4
    cache_megabytes: int = 256

    def build(self) -> StoreLoader:
        """Opens the store and returns the loader."""
        return StoreLoader(self)

    def fingerprint(self) -> str:
        """Digest of everything that decides the sample order (checked by ``load_state_dict``)."""
        order = asdict(self)
        for key in ("store", "num_threads", "prefetch", "cache_megabytes", "error_on_dropped"):
            order.pop(key)
        order["datasets"] = [
            {**source, "frames": None if source["frames"] is None else list(source["frames"])}
            for source in order["datasets"]
        ]
        text = json.dumps(order, sort_keys=True, default=str)
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


@dataclass(frozen=True, kw_only=True)
class _Worker:
    """Where a loader runs: its PyTorch DataLoader worker, if any."""

    worker_id: int = 0
    num_workers: int = 1


def _native(config: LoaderConfig, worker: _Worker) -> Any:
    """The Rust loader; DataLoader workers act as extra ranks, so they never repeat a batch."""
    if config.sampling not in ("epoch", "weighted"):
        raise ValueError(f"sampling must be 'epoch' or 'weighted', got {config.sampling!r}")
    weighted = config.sampling == "weighted"
    if weighted and config.batches_per_epoch is None:
        raise ValueError("sampling='weighted' needs batches_per_epoch")
    frames = [_selected_frames(Path(config.store), source) for source in config.datasets]
    return _core.Loader(
        store=str(config.store),
        datasets=[source.name for source in config.datasets],
        frames=frames,
        seed=config.seed,
        batch_size=config.batch_size,
        max_atoms=config.max_atoms,
        shuffle=config.shuffle,
        shuffle_buffer=config.shuffle_buffer,
        weights=[source.weight for source in config.datasets] if weighted else None,
        batches_per_epoch=config.batches_per_epoch if weighted else None,
        mixed_batches=config.mixed_batches,
        rank=config.rank * worker.num_workers + worker.worker_id,
        world_size=config.world_size * worker.num_workers,
        cutoffs=[spec.cutoff for spec in config.neighbors],
        max_neighbors=[spec.max_neighbors for spec in config.neighbors],
        error_on_dropped=config.error_on_dropped,
        num_threads=config.num_threads,
        prefetch=config.prefetch,
        cache_bytes=config.cache_megabytes << 20,
    )


def _spec_tuples(config: LoaderConfig) -> tuple[tuple[str, float, int], ...]:
    return tuple((s.name, float(s.cutoff), int(s.max_neighbors)) for s in config.neighbors)


def _current_worker() -> _Worker:
    info = torch.utils.data.get_worker_info()
    if info is None:
        return _Worker()
    return _Worker(worker_id=info.id, num_workers=info.num_workers)


class StoreLoader(torch.utils.data.IterableDataset):
    """Iterates over the batches of the current epoch, then moves to the next epoch.

    Safe to use from PyTorch DataLoader workers (``DataLoader(loader, batch_size=None,
    num_workers=k)``): each worker rebuilds its threads after the fork and takes every k-th batch,
    so the DataLoader yields the same batches as the loader alone (up to the padding of the last
    round). Breaking out of the loop keeps the position: the next iteration continues there.
    Workers are forked from the parent's loader, whose position does not move while they
    work: call ``set_epoch`` before each epoch (as with ``DistributedSampler``).
    ``state_dict`` records the batches consumed in this process; behind DataLoader workers the
    workers consume them, so resume from the loader itself (``num_workers=0``, its own prefetch
    threads already overlap collation with training).

    Args:
        config: The options.

    Raises:
        StoreError: when a dataset is missing or its arrays are damaged.
        ValueError: for inconsistent options.
    """

    def __init__(self, config: LoaderConfig) -> None:
        super().__init__()
        self.config = config
        self._names = tuple(source.name for source in config.datasets)
        self._specs = _spec_tuples(config)
        self._worker = _Worker()
        self._loader = _native(config, self._worker)

    def _native_here(self) -> Any:
        """The Rust loader for this process (rebuilt as a worker's inside DataLoader workers)."""
        worker = _current_worker()
        if (worker.worker_id, worker.num_workers) != (
            self._worker.worker_id,
            self._worker.num_workers,
        ):
            epoch, position = self._loader.epoch, self._loader.position
            self._worker = worker
            self._loader = _native(self.config, worker)
            self._loader.set_position(epoch, position)
        return self._loader

    @property
    def dataset_names(self) -> tuple[str, ...]:
        """Dataset names; ``Batch.dataset_id`` indexes this tuple."""
        return self._names

    @property
    def epoch(self) -> int:
        """The current epoch."""
        return int(self._native_here().epoch)

    def __len__(self) -> int:
        """Batches in the current epoch on this rank."""
        loader = self._native_here()
        return int(loader.len(loader.epoch))

    def set_epoch(self, epoch: int) -> None:
        """Moves to the start of ``epoch`` (each epoch has its own order)."""
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        self._native_here().set_position(epoch, 0)

    def __iter__(self) -> Iterator[Batch]:
        loader = self._native_here()
        while True:
            arrays = loader.next()
            if arrays is None:
                return
            yield self._wrap(arrays)

    def _wrap(self, arrays: dict[str, Any]) -> Batch:
        return Batch.from_arrays(arrays, dataset_names=self._names, neighbor_specs=self._specs)

    def collate(self, frames: Sequence[tuple[int, int]]) -> Batch:
        """Collates the given ``(dataset id, frame id)`` pairs now, outside the sample order."""
        pairs = np.asarray(frames, dtype=np.uint32).reshape(-1, 2)
        return self._wrap(self._native_here().collate(pairs))

    def plan(self, epoch: int) -> list[np.ndarray]:
        """The ``[k, 2]`` (dataset id, frame id) pairs of every batch of ``epoch`` on this rank."""
        return list(self._native_here().plan(epoch))

    def cache_stats(self) -> tuple[int, int, int]:
        """``(hits, misses, bytes held)`` of the decoded-chunk cache."""
        return tuple(self._native_here().cache_stats())

    def state_dict(self) -> dict[str, Any]:
        """Where the loader stands: restore it with ``load_state_dict`` to continue the order."""
        loader = self._native_here()
        return {
            "epoch": int(loader.epoch),
            "position": int(loader.position),
            "fingerprint": self.config.fingerprint(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continues from a ``state_dict``: the next batch is the one that followed it.

        Raises:
            ValueError: if the state was saved by a loader with a different sample order.
        """
        if state.get("fingerprint") != self.config.fingerprint():
            raise ValueError(
                "loader state was saved with different sampling options (seed, datasets, batch "
                "size, sampling, ranks or neighbour specs); it would not continue the same order"
            )
        self._native_here().set_position(int(state["epoch"]), int(state["position"]))

    def __getstate__(self) -> dict[str, Any]:
        # The Rust loader cannot be pickled (DataLoader workers under "spawn"): keep its position.
        loader = self._loader
        return {
            "config": self.config,
            "worker": self._worker,
            "epoch": int(loader.epoch),
            "position": int(loader.position),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__init__()
        self.config = state["config"]
        self._names = tuple(source.name for source in self.config.datasets)
        self._specs = _spec_tuples(self.config)
        self._worker = state["worker"]
        self._loader = _native(self.config, self._worker)
        self._loader.set_position(state["epoch"], state["position"])

    def close(self) -> None:
        """Stops the prefetch thread (iterating again restarts it)."""
        loader = getattr(self, "_loader", None)
        if loader is not None:
            loader.close()

    def __enter__(self) -> StoreLoader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()
