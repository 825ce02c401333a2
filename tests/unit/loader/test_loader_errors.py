"""Bad input: damaged or missing shards, overfull neighbour caps, bad options."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from loader_helpers import random_frames, write_store, zarr_frame

from lamforge.data.format import COMPACT_ZSTD_LEVEL, FAST_ZSTD_LEVEL
from lamforge.data.loader import DatasetSource, LoaderConfig, NeighborSpec, StoreError


@pytest.fixture()
def small_store(tmp_path: Path) -> Path:
    return write_store(
        tmp_path / "store.zarr", {"water": random_frames(5, 40, (3, 20), (True,) * 3)}
    )


def loader_for(store: Path, **options):
    options.setdefault("neighbors", ())
    return LoaderConfig(
        store=store, datasets=(DatasetSource(name="water"),), num_threads=1, **options
    ).build()


def shard_files(store: Path, array: str) -> list[Path]:
    return sorted(path for path in (store / "water" / array / "c").rglob("*") if path.is_file())


def test_corrupted_chunk_names_dataset_array_and_frame(small_store):
    shard = shard_files(small_store, "positions")[1]
    data = bytearray(shard.read_bytes())
    # Flip bytes inside the first inner chunk's zstd frame (the index at the end stays intact).
    for offset in range(20, 40):
        data[offset] ^= 0xFF
    shard.write_bytes(bytes(data))
    with (
        loader_for(small_store, shuffle=False, batch_size=40) as loader,
        pytest.raises(StoreError) as error,
    ):
        list(loader)
    message = str(error.value)
    assert "dataset 'water'" in message
    assert "array 'positions'" in message
    assert "frame " in message
    assert str(shard) in message


@pytest.mark.parametrize("zstd_level", [COMPACT_ZSTD_LEVEL, FAST_ZSTD_LEVEL])
def test_a_corrupted_chunk_is_named_and_later_reads_still_decode(tmp_path, zstd_level):
    # Each collating thread reuses one zstd context: a failed decode must neither hide the
    # names in the error nor spoil the next chunks the thread decodes.
    frames = random_frames(5, 40, (3, 20), (True,) * 3)
    store = write_store(tmp_path / "store.zarr", {"water": frames}, zstd_level)
    shard = shard_files(store, "forces")[1]
    data = bytearray(shard.read_bytes())
    for offset in range(20, 40):
        data[offset] ^= 0xFF
    shard.write_bytes(bytes(data))
    config = LoaderConfig(
        store=store,
        datasets=(DatasetSource(name="water"),),
        neighbors=(),
        num_threads=2,
        cache_megabytes=0,
    )
    with config.build() as loader:
        with pytest.raises(StoreError) as error:
            loader.collate([(0, frame) for frame in range(40)])
        message = str(error.value)
        assert "dataset 'water'" in message and "array 'forces'" in message, message
        assert "frame " in message and str(shard) in message, message
        for _ in range(3):
            batch = loader.collate([(0, 0), (0, 1), (0, 3)])
            for position, frame in enumerate((0, 1, 3)):
                expected = zarr_frame(store, "water", frame)
                atoms = batch.frame_slice(position)
                np.testing.assert_array_equal(batch.positions[atoms].numpy(), expected["positions"])
                np.testing.assert_array_equal(batch.forces[atoms].numpy(), expected["forces"])


def test_truncated_shard_index_is_reported(small_store):
    shard = shard_files(small_store, "forces")[0]
    shard.write_bytes(shard.read_bytes()[:-3])
    with (
        loader_for(small_store) as loader,
        pytest.raises(StoreError, match="array 'forces'.*truncated|checksum"),
    ):
        list(loader)


def test_missing_shard_file_is_an_error_for_dense_arrays(small_store):
    shard = shard_files(small_store, "atomic_numbers")[-1]
    shard.unlink()
    with (
        loader_for(small_store, shuffle=False) as loader,
        pytest.raises(
            StoreError,
            match=r"dataset 'water', array 'atomic_numbers', frame \d+: shard file .* is missing",
        ),
    ):
        list(loader)


def test_missing_dataset_and_incomplete_dataset(small_store):
    with pytest.raises(StoreError, match="no dataset 'ice'"):
        LoaderConfig(store=small_store, datasets=(DatasetSource(name="ice"),)).build()
    shutil.rmtree(small_store / "water" / "cell")
    with pytest.raises(StoreError, match="required array 'cell' is missing"):
        loader_for(small_store)


def test_dropped_pairs_are_reported_or_raised(small_store):
    tight = (NeighborSpec(name="tight", cutoff=6.0, max_neighbors=4),)
    with loader_for(small_store, neighbors=tight, batch_size=40, shuffle=False) as loader:
        (batch,) = list(loader)
        dropped = batch.neighbor_list("tight").num_dropped
        assert dropped.shape == (40,)
        assert int(dropped.sum()) > 0
        assert (batch.neighbor_list("tight").index >= 0).sum(dim=1).max() == 4
    with (
        loader_for(small_store, neighbors=tight, error_on_dropped=True) as loader,
        pytest.raises(ValueError, match=r"dataset 'water', frame \d+: \d+ neighbour pairs"),
    ):
        list(loader)


def test_training_stream_warns_once_about_dropped_pairs(small_store):
    import warnings

    from ase.data import chemical_symbols

    from lamforge.train.stream import LoaderStream

    elements = tuple(chemical_symbols[1:])  # the random frames use any element
    tight = (NeighborSpec(name="tight", cutoff=6.0, max_neighbors=4),)
    with loader_for(small_store, neighbors=tight, batch_size=2, shuffle=False) as loader:
        stream = LoaderStream(loader, elements, {"water": "default"})
        with pytest.warns(
            RuntimeWarning,
            match=r"frame 0 of dataset 'water' has \d+ pair\(s\) within 6 Å beyond the tight "
            r"cap max_neighbors=4 \(2 frame\(s\) of this batch",
        ):
            stream.next_batch()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            stream.next_batch()
    roomy = (NeighborSpec(name="roomy", cutoff=3.0, max_neighbors=200),)
    with (
        loader_for(small_store, neighbors=roomy, batch_size=2, shuffle=False) as loader,
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("error")
        LoaderStream(loader, elements, {"water": "default"}).next_batch()


def test_bad_options_are_refused(small_store):
    with pytest.raises(ValueError, match="exactly one of batch_size"):
        loader_for(small_store, batch_size=None)
    with pytest.raises(ValueError, match="rank 2"):
        loader_for(small_store, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batches_per_epoch"):
        loader_for(small_store, sampling="weighted")
    with pytest.raises(ValueError, match="weights"):
        LoaderConfig(
            store=small_store,
            datasets=(DatasetSource(name="water", weight=-1.0),),
            sampling="weighted",
            batches_per_epoch=3,
        ).build()
