"""Sample order: seeds, epochs, ranks, resume, mixing, atom budgets."""

from __future__ import annotations

from collections import Counter, OrderedDict

import numpy as np
import polars as pl
import pytest
import zarr
from loader_helpers import random_frames, write_store

from lamforge.data.loader import DatasetSource, LoaderConfig
from lamforge.data.store import Store

NAMES = ("bulk", "slab", "molecules")


def config(store, **options) -> LoaderConfig:
    options.setdefault("datasets", tuple(DatasetSource(name=name) for name in NAMES))
    options.setdefault("neighbors", ())
    options.setdefault("batch_size", 5)
    return LoaderConfig(store=store, num_threads=1, shuffle_buffer=16, **options)


def frames_of(batch) -> list[tuple[int, int]]:
    return list(zip(batch.dataset_id.tolist(), batch.frame_id.tolist(), strict=True))


def epoch_frames(loader) -> list[list[tuple[int, int]]]:
    return [frames_of(batch) for batch in loader]


def total_frames(store) -> int:
    return sum(len(frames) for frames in store.frames.values())


def test_same_seed_same_batches_other_seed_other_order(loader_store):
    with (
        config(loader_store.path, seed=4).build() as first,
        config(loader_store.path, seed=4).build() as second,
        config(loader_store.path, seed=5).build() as other,
    ):
        batches = epoch_frames(first)
        assert batches == epoch_frames(second)
        assert batches != epoch_frames(other)
        # The loader moved on to epoch 1, which is ordered differently.
        assert first.epoch == 1
        assert epoch_frames(first) != batches
        first.set_epoch(0)
        assert epoch_frames(first) == batches


def test_epoch_covers_every_frame_once_and_batches_hold_one_dataset(loader_store):
    with config(loader_store.path, seed=1).build() as loader:
        assert len(loader) == len(loader.plan(0))
        batches = epoch_frames(loader)
    frames = [frame for batch in batches for frame in batch]
    assert len(frames) == total_frames(loader_store)
    assert len(set(frames)) == len(frames)
    assert all(len({d for d, _ in batch}) == 1 for batch in batches)
    assert all(len(batch) <= 5 for batch in batches)


def test_mixed_batches_draw_datasets_per_frame(loader_store):
    with config(loader_store.path, seed=2, mixed_batches=True).build() as loader:
        batches = epoch_frames(loader)
    frames = [frame for batch in batches for frame in batch]
    assert sorted(frames) == sorted(set(frames)) and len(frames) == total_frames(loader_store)
    assert any(len({d for d, _ in batch}) > 1 for batch in batches)


def test_unshuffled_order_is_the_stored_order(loader_store):
    with config(loader_store.path, shuffle=False).build() as loader:
        frames = [frame for batch in epoch_frames(loader) for frame in batch]
    expected = [
        (d, f) for d, name in enumerate(NAMES) for f in range(len(loader_store.frames[name]))
    ]
    assert frames == expected


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_are_disjoint_and_together_cover_the_epoch(loader_store, world_size):
    per_rank = []
    for rank in range(world_size):
        with config(loader_store.path, seed=7, rank=rank, world_size=world_size).build() as loader:
            per_rank.append(epoch_frames(loader))
    lengths = {len(batches) for batches in per_rank}
    assert len(lengths) == 1, "every rank takes the same number of steps"
    with config(loader_store.path, seed=7).build() as single:
        global_batches = epoch_frames(single)
    # Rank r holds global batches r, r + W, ...; the last round is padded with the first batches.
    for rank, batches in enumerate(per_rank):
        for step, batch in enumerate(batches):
            assert batch == global_batches[(rank + step * world_size) % len(global_batches)]
    unpadded = [b for rank in range(world_size) for b in per_rank[rank]][: len(global_batches)]
    owned = [
        f
        for rank, batches in enumerate(per_rank)
        for s, b in enumerate(batches)
        if rank + s * world_size < len(global_batches)
        for f in b
    ]
    assert len(owned) == len(set(owned)) == total_frames(loader_store)
    assert len(unpadded) == len(global_batches)


def test_state_dict_resumes_the_same_order(loader_store):
    options = {"seed": 11}
    with config(loader_store.path, **options).build() as reference:
        expected = epoch_frames(reference) + epoch_frames(reference)
    consumed = 0
    with config(loader_store.path, **options).build() as loader:
        for consumed, _ in enumerate(loader, start=1):
            if consumed == 6:
                break
        state = loader.state_dict()
    assert state["epoch"] == 0 and state["position"] == 6
    with config(loader_store.path, **options).build() as resumed:
        resumed.load_state_dict(state)
        rest = epoch_frames(resumed) + epoch_frames(resumed)
    assert rest == expected[consumed:]
    with (
        config(loader_store.path, seed=12).build() as other,
        pytest.raises(ValueError, match="different sampling"),
    ):
        other.load_state_dict(state)


def test_weighted_sampling_follows_the_weights(loader_store):
    datasets = (
        DatasetSource(name="bulk", weight=1.0),
        DatasetSource(name="slab", weight=0.0),
        DatasetSource(name="molecules", weight=3.0),
    )
    with config(
        loader_store.path, datasets=datasets, sampling="weighted", batches_per_epoch=800, seed=3
    ).build() as loader:
        plan = loader.plan(0)
        assert len(loader) == 800
    counts = Counter(int(batch[0, 0]) for batch in plan)
    assert counts[1] == 0
    share = counts[2] / 800
    # Binomial(800, 0.75): standard deviation 0.015.
    assert abs(share - 0.75) < 0.06, counts
    # A weighted epoch is longer than the data: datasets start new passes, every frame is used.
    bulk_frames = Counter(int(f) for batch in plan if batch[0, 0] == 0 for f in batch[:, 1])
    assert set(bulk_frames) == set(range(len(loader_store.frames["bulk"])))


def test_atom_budget_batches(loader_store):
    with config(loader_store.path, batch_size=None, max_atoms=60, seed=5).build() as loader:
        batches = list(loader)
    atoms_per_frame = {
        (d, f): frame.num_atoms
        for d, name in enumerate(NAMES)
        for f, frame in enumerate(loader_store.frames[name])
    }
    assert sum(batch.num_frames for batch in batches) == total_frames(loader_store)
    for batch in batches:
        assert batch.num_atoms == sum(atoms_per_frame[f] for f in frames_of(batch))
        assert batch.num_atoms <= 60 or batch.num_frames == 1


def test_frame_selection_samples_only_those_frames(loader_store):
    chosen = [3, 1, 4, 15, 9, 26]
    datasets = (DatasetSource(name="bulk", frames=chosen),)
    with config(loader_store.path, datasets=datasets).build() as loader:
        frames = [f for batch in epoch_frames(loader) for _, f in batch]
    assert sorted(frames) == sorted(chosen)
    with pytest.raises(ValueError, match="frame 999"):
        config(loader_store.path, datasets=(DatasetSource(name="bulk", frames=[999]),)).build()


def chunk_loads(frames, chunk_of, capacity: int) -> int:
    """Chunk decodes an LRU cache of ``capacity`` chunks needs to serve ``frames`` in order."""
    cache: OrderedDict[int, None] = OrderedDict()
    loads = 0
    for frame in frames:
        chunk = int(chunk_of[frame])
        if chunk in cache:
            cache.move_to_end(chunk)
            continue
        loads += 1
        cache[chunk] = None
        if len(cache) > capacity:
            cache.popitem(last=False)
    return loads


def test_shuffle_keeps_chunk_locality(loader_store):
    """Each decoded chunk of ``positions`` serves its frames before it leaves a small cache."""
    group = zarr.open_group(loader_store.path / "bulk", mode="r")
    chunk_atoms = group["positions"].metadata.codecs[0].chunk_shape[0]
    chunk_of = group["atom_offsets"][:-1] // chunk_atoms
    num_chunks = len(set(chunk_of.tolist()))
    datasets = (DatasetSource(name="bulk"),)
    with config(loader_store.path, datasets=datasets, seed=9).build() as loader:
        frames = [int(f) for batch in loader.plan(0) for f in batch[:, 1]]
    assert frames != sorted(frames), "still shuffled"
    # The shuffle buffer (16 frames) spans about 4 chunks of ~4.5 frames; with 6 cached chunks
    # most chunks are decoded once (a few frames linger in the buffer and cost a second decode).
    ours = chunk_loads(frames, chunk_of, capacity=6)
    assert ours <= 2 * num_chunks
    rng = np.random.default_rng(0)
    uniform = [chunk_loads(rng.permutation(frames), chunk_of, capacity=6) for _ in range(100)]
    assert ours < min(uniform)


def test_split_selects_the_frames_of_the_frame_index_split(tmp_path):
    path = write_store(tmp_path / "store.zarr", {"bulk": random_frames(4, 30, (2, 6), (True,) * 3)})
    store = Store.open(path)
    index = store.index("bulk")
    splits = ["train" if frame % 3 else "valid" for frame in range(30)]
    store.write_index("bulk", index.with_columns(pl.Series("split", splits)))
    datasets = (DatasetSource(name="bulk", split="valid"),)
    with config(path, datasets=datasets).build() as loader:
        frames = sorted(f for batch in epoch_frames(loader) for _, f in batch)
    assert frames == list(range(0, 30, 3))
    with pytest.raises(ValueError, match="no frame in split 'test'"):
        config(path, datasets=(DatasetSource(name="bulk", split="test"),)).build()
