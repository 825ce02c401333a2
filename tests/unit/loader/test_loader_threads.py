"""Threads: clean shutdown, fork safety (os.fork and DataLoader workers)."""

from __future__ import annotations

import os
import pickle
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from loader_helpers import random_frames, write_store

from lamforge.data.loader import DatasetSource, LoaderConfig, NeighborSpec


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("threads") / "store.zarr"
    return write_store(path, {"bulk": random_frames(8, 48, (2, 16), (True,) * 3)})


# Python 3.12+ warns about fork() in a multi-threaded process: forking one is what is tested.
FORK_WARNING = "ignore:This process .* is multi-threaded:DeprecationWarning"


def config(store: Path, **options) -> LoaderConfig:
    options.setdefault("num_threads", 2)
    return LoaderConfig(
        store=store, datasets=(DatasetSource(name="bulk"),), batch_size=4, seed=3, **options
    )


def thread_names() -> list[str]:
    names = []
    for task in Path("/proc/self/task").iterdir():
        try:
            names.append((task / "comm").read_text().strip())
        except OSError:
            continue
    return names


def frames_of(batch) -> list[int]:
    return batch.frame_id.tolist()


def test_close_stops_the_prefetch_thread(store):
    loader = config(store, prefetch=2).build()
    iterator = iter(loader)
    next(iterator)
    assert "lamforge-loader" in thread_names()
    loader.close()
    assert "lamforge-loader" not in thread_names()
    # Iterating again continues after the batch already returned.
    with config(store).build() as reference:
        expected = [frames_of(b) for b in reference]
    assert [frames_of(b) for b in loader] == expected[1:]
    loader.close()
    with config(store).build() as managed:
        next(iter(managed))
    assert "lamforge-loader" not in thread_names()


@pytest.mark.filterwarnings(FORK_WARNING)
def test_forked_child_rebuilds_its_threads_and_continues(store):
    with config(store).build() as reference:
        expected = [frames_of(b) for b in reference]
    loader = config(store, prefetch=3).build()
    iterator = iter(loader)
    first = frames_of(next(iterator))  # the parent's prefetch thread now runs
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        status = 1
        try:
            rest = [frames_of(b) for b in loader]
            status = 0 if rest == expected[1:] else 2
        finally:
            os.write(write, bytes([status]))
            os._exit(status)
    os.close(write)
    status = os.read(read, 1)
    os.close(read)
    _, code = os.waitpid(child, 0)
    assert status == bytes([0]) and os.waitstatus_to_exitcode(code) == 0
    assert first == expected[0]
    assert [frames_of(b) for b in iterator] == expected[1:]
    loader.close()


@pytest.mark.filterwarnings(FORK_WARNING)
def test_dataloader_workers_share_the_epoch_without_repeats(store):
    with config(store).build() as reference:
        expected = sorted(tuple(frames_of(b)) for b in reference)
    loader = config(store, num_threads=1)
    with loader.build() as dataset:
        next(iter(dataset))  # threads running in the parent before the workers fork
        dataset.set_epoch(0)
        batches = list(
            torch.utils.data.DataLoader(
                dataset, batch_size=None, num_workers=2, multiprocessing_context="fork"
            )
        )
    assert sorted(tuple(frames_of(b)) for b in batches) == expected


def test_collation_runs_without_the_gil(store):
    """Another Python thread runs while Rust collates; it could not if the GIL were held.

    The switch interval is raised above the length of one collation, so that a call holding the
    GIL could not be interrupted by the counting thread at all.
    """
    ticks = [0]
    stop = threading.Event()

    def count() -> None:
        while not stop.is_set():
            ticks[0] += 1

    wide = (NeighborSpec(name="wide", cutoff=7.0, max_neighbors=200),)
    pairs = [(0, frame) for frame in range(48)]
    interval = sys.getswitchinterval()
    with config(store, neighbors=wide, num_threads=1).build() as loader:
        start = time.perf_counter()
        loader.collate(pairs)
        assert time.perf_counter() - start < 0.5, "one collation must be shorter than the interval"
        counter = threading.Thread(target=count)
        sys.setswitchinterval(0.5)
        counter.start()
        during = []
        try:
            for _ in range(3):
                before = ticks[0]
                loader.collate(pairs)
                during.append(ticks[0] - before)
        finally:
            stop.set()
            counter.join()
            sys.setswitchinterval(interval)
    assert sum(during) > 1000, during


def test_pickled_loader_continues_from_the_same_position(store):
    """DataLoader workers started with "spawn" receive the loader pickled."""
    with config(store).build() as reference:
        expected = [frames_of(b) for b in reference]
    with config(store).build() as loader:
        iterator = iter(loader)
        next(iterator)
        next(iterator)
        with pickle.loads(pickle.dumps(loader)) as copy:
            assert [frames_of(b) for b in copy] == expected[2:]
