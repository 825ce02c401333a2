"""Loader benchmark: random 32-frame batches from a lamforge store, against the anchors.

Usage (from the repository root, ``../shared/data`` present)::

    PYTHONPATH=python python benches/loader.py [--threads 2] [--batches 40] [--json out.json]

Datasets: MPtrj (``mptrj-random-1k.xyz``, 1,000 bulk frames of 2-192 atoms), water (the DeePMD
``deepmd/water`` systems, 400 frames of 192 atoms) and a synthetic set of 20,000 periodic frames of
8 to 256 atoms at liquid density, all imported into one store (built once in ``--workdir``) with
the default layout; ``synthetic-fast`` holds the same synthetic frames written with
``zstd_level=FAST_ZSTD_LEVEL`` (a hot training store). Each dataset's layout (inner chunk atoms,
zstd level, bytes on disk) is printed with its rows.

Measured in one run, frames per second of wall time and CPU microseconds per frame (process CPU
time, all threads), each the best of ``--repeats`` runs (each with a fresh loader, so a cold chunk
cache) because the machine may be shared:

* ``npy mmap`` (ceiling): the same arrays as memory-mapped ``.npy`` files, each frame sliced out
  with NumPy and concatenated, no decompression;
* ``zarr-python``: ``lamforge.data.reader.DatasetReader.read_frames`` (zarr-python 3 reading the
  store, one orthogonal selection per array and batch);
* ``lamforge arrays, uniform``: the Rust loader collating uniformly random frames
  (``StoreLoader.collate``, synchronous, no prefetch), with the default 256 MB chunk cache and
  with a 1 MB one (every batch decodes its chunks again). "Cold" is a fresh loader (empty chunk
  cache; the files are in the page cache, as for npy); "warm" is the same batches after the
  loader has read every frame once (steady state of later epochs when the decoded dataset fits
  the cache);
* ``lamforge arrays, loader order``: iterating the loader over one epoch (shard-aware shuffle,
  prefetch);
* ``lamforge full``: the same with both DPA-2 neighbour lists (6 Å / 120 and 4 Å / 48);
* ``deepmd-kit`` (water only): ``DpLoaderSet`` batches of 32 frames (arrays only), then with the
  neighbour lists of both cutoffs from ``extend_input_and_build_neighbor_list``, as its DPA-2
  descriptor builds them for every batch.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import zarr

from lamforge.data.format import COMPACT_ZSTD_LEVEL, FAST_ZSTD_LEVEL, DatasetInfo
from lamforge.data.frames import Frame
from lamforge.data.ingest import import_sources
from lamforge.data.loader import DPA2_NEIGHBORS, DatasetSource, LoaderConfig
from lamforge.data.store import Store

ROOT = Path(__file__).resolve().parents[1]
BATCH = 32
ARRAYS = ("positions", "atomic_numbers", "forces", "cell", "pbc", "energy", "has_energy")


def synthetic_frames(num_frames: int, seed: int):
    """Periodic cubic frames of 8-256 atoms at 0.1 atoms/Å^3 (liquid water's atom density)."""
    rng = np.random.default_rng(seed)
    elements = np.array([1, 6, 7, 8, 29])
    for index in range(num_frames):
        num_atoms = int(rng.integers(8, 257))
        side = (num_atoms / 0.1) ** (1 / 3)
        yield Frame(
            positions=rng.uniform(0, side, (num_atoms, 3)),
            atomic_numbers=rng.choice(elements, num_atoms),
            cell=np.eye(3) * side,
            pbc=np.ones(3, dtype=bool),
            energy=float(rng.normal(-4.0 * num_atoms, 1.0)),
            forces=rng.normal(size=(num_atoms, 3)),
            source="synthetic",
            source_index=index,
        )


def build_store(workdir: Path, data: Path, synthetic: int) -> Store:
    store = Store.open(workdir / "store.zarr", create=True)
    sources = {
        "mptrj": [data / "mptrj" / "mptrj-random-1k.xyz"],
        "water": [data / "deepmd" / "water"],
    }
    for name, paths in sources.items():
        if name not in store:
            print(f"importing {name} ...", flush=True)
            import_sources(store, DatasetInfo(name=name), paths)
    for name, level in (("synthetic", COMPACT_ZSTD_LEVEL), ("synthetic-fast", FAST_ZSTD_LEVEL)):
        if name not in store:
            print(f"writing {synthetic} synthetic frames into {name} ...", flush=True)
            info = DatasetInfo(name=name, source=("synthetic",))
            options = {} if level is None else {"zstd_level": level}
            with store.writer(info, **options) as writer:
                for frame in synthetic_frames(synthetic, seed=0):
                    writer.add(frame)
    return store


def layout(store: Store, name: str) -> str:
    """Inner chunk size and zstd level of the per-atom arrays, and the dataset's bytes on disk."""
    metadata = json.loads((store.path / name / "positions" / "zarr.json").read_text())
    sharding = metadata["codecs"][0]["configuration"]
    level = sharding["codecs"][1]["configuration"]["level"]
    size = sum(path.stat().st_size for path in (store.path / name).rglob("*") if path.is_file())
    return f"{sharding['chunk_shape'][0]}-atom chunks, zstd {level}, {size / 1e6:.1f} MB"


def export_npy(store: Store, name: str, folder: Path) -> dict[str, np.ndarray]:
    """The dataset's arrays as .npy files, opened memory-mapped."""
    folder.mkdir(parents=True, exist_ok=True)
    group = zarr.open_group(store.path / name, mode="r")
    for array in (*ARRAYS, "atom_offsets"):
        path = folder / f"{array}.npy"
        if not path.is_file():
            np.save(path, group[array][:])
    return {
        array: np.load(folder / f"{array}.npy", mmap_mode="r")
        for array in (*ARRAYS, "atom_offsets")
    }


def random_batches(num_frames: int, count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.choice(num_frames, BATCH, replace=False) for _ in range(count)]


class Rate(NamedTuple):
    """Frames per second of wall time, and CPU microseconds per frame of the whole process (all
    its threads): on a shared machine the CPU time is the steadier of the two."""

    frames_per_second: float
    cpu_us_per_frame: float


class Clock:
    """Wall and process CPU time since construction."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def rate(self, frames: int) -> Rate:
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        return Rate(frames / wall, cpu / frames * 1e6)


def rate(run: Callable[[np.ndarray], object], batches: list[np.ndarray]) -> Rate:
    """Speed of ``run`` over ``batches`` (after one untimed warm-up batch)."""
    run(batches[0])
    clock = Clock()
    for batch in batches[1:]:
        run(batch)
    return clock.rate(BATCH * (len(batches) - 1))


def npy_batch(arrays: dict[str, np.ndarray]) -> Callable[[np.ndarray], object]:
    offsets = np.asarray(arrays["atom_offsets"])

    def run(frames: np.ndarray) -> object:
        atoms = [slice(int(offsets[f]), int(offsets[f + 1])) for f in frames]
        out = {
            name: np.concatenate([arrays[name][a] for a in atoms])
            for name in ("positions", "atomic_numbers", "forces")
        }
        for name in ("cell", "pbc", "energy", "has_energy"):
            out[name] = arrays[name][np.sort(frames)]
        return out

    return run


def loader_order_rate(config: LoaderConfig, count: int) -> Rate:
    with config.build() as loader:
        iterator = iter(loader)
        next(iterator)
        clock = Clock()
        frames = 0
        for _, batch in zip(range(count - 1), iterator, strict=False):
            frames += batch.num_frames
        return clock.rate(frames)


def deepmd_rates(data: Path, count: int, seed: int) -> tuple[float, float]:
    from deepmd.pt.utils.dataloader import DpLoaderSet
    from deepmd.pt.utils.nlist import extend_input_and_build_neighbor_list
    from deepmd.utils.data import DataRequirementItem

    systems = sorted(str(p) for p in (data / "deepmd" / "water").glob("data_*"))
    loaders = DpLoaderSet(systems, BATCH, ["O", "H"], seed=seed)
    loaders.add_data_requirement(
        [
            DataRequirementItem("energy", 1, atomic=False, must=False, high_prec=True),
            DataRequirementItem("force", 3, atomic=True, must=False, high_prec=False),
        ]
    )

    def arrays(step: int) -> dict:
        return loaders[step % len(loaders)]

    def full(step: int) -> None:
        batch = arrays(step)
        for spec in DPA2_NEIGHBORS:
            extend_input_and_build_neighbor_list(
                batch["coord"],
                batch["atype"],
                spec.cutoff,
                [spec.max_neighbors],
                mixed_types=True,
                box=batch["box"],
            )

    results = []
    for run, steps in ((arrays, count), (full, max(3, count // 8))):
        run(0)
        frames = 0
        start = time.perf_counter()
        for step in range(1, steps):
            run(step)
            frames += BATCH
        results.append(frames / (time.perf_counter() - start))
    return results[0], results[1]


def best(repeats: int, measure: Callable[[], Rate]) -> Rate:
    """The best of ``repeats`` fresh measurements (highest rate, least CPU time, each on its
    own): the machine is shared, so the fastest run is the one least disturbed by other jobs."""
    rates = [measure() for _ in range(repeats)]
    return Rate(max(r.frames_per_second for r in rates), min(r.cpu_us_per_frame for r in rates))


def uniform_rate(config: LoaderConfig, batches: list[np.ndarray], warm: int = 0) -> Rate:
    """Uniformly random frames collated on demand by a fresh loader: with a cold chunk cache, or
    after reading the first ``warm`` frames once (untimed)."""
    with config.build() as loader:
        for start in range(0, warm, 256):
            loader.collate([(0, f) for f in range(start, min(start + 256, warm))])
        return rate(lambda frames: loader.collate([(0, int(f)) for f in frames]), batches)


def benchmark(store: Store, name: str, args: argparse.Namespace) -> list[dict]:
    group = zarr.open_group(store.path / name, mode="r")
    num_frames = group["atom_offsets"].shape[0] - 1
    batches = random_batches(num_frames, args.batches, args.seed)
    repeats = args.repeats
    rows = []

    stored = layout(store, name)
    print(f"{name}: {num_frames} frames; {stored}", flush=True)

    def add(method: str, speed: Rate) -> None:
        rows.append({"dataset": name, "layout": stored, "method": method, **speed._asdict()})
        print(
            f"  {name:14s} {method:46s} {speed.frames_per_second:12,.0f} frames/s "
            f"{speed.cpu_us_per_frame:8.1f} CPU us/frame",
            flush=True,
        )

    arrays = export_npy(store, name, args.workdir / "npy" / name)
    add("npy mmap (ceiling)", best(repeats, lambda: rate(npy_batch(arrays), batches)))
    reader = store.reader(name)
    zarr_batches = batches[: args.zarr_batches]
    add("zarr-python", best(repeats, lambda: rate(reader.read_frames, zarr_batches)))
    base = LoaderConfig(
        store=store.path,
        datasets=(DatasetSource(name=name),),
        batch_size=BATCH,
        seed=args.seed,
        num_threads=args.threads,
        neighbors=(),
    )
    small_cache = replace(base, cache_megabytes=1)
    add("lamforge arrays, uniform, cold", best(repeats, lambda: uniform_rate(base, batches)))
    add(
        "lamforge arrays, uniform, warm (after 1 pass)",
        best(repeats, lambda: uniform_rate(base, batches, warm=num_frames)),
    )
    add(
        "lamforge arrays, uniform, 1 MB cache",
        best(repeats, lambda: uniform_rate(small_cache, batches)),
    )
    # The loader's own order amortises each decoded chunk over the frames near it: measured over
    # a whole epoch (up to --order-batches) from a cold cache.
    epoch = min(args.order_batches, -(-num_frames // BATCH))
    add(
        "lamforge arrays, loader order (1 epoch)",
        best(repeats, lambda: loader_order_rate(base, epoch)),
    )
    full = replace(base, neighbors=DPA2_NEIGHBORS)
    full_batches = batches[: args.full_batches]
    add("lamforge full, uniform", best(repeats, lambda: uniform_rate(full, full_batches)))
    add(
        "lamforge full, loader order",
        best(repeats, lambda: loader_order_rate(full, args.full_batches)),
    )
    if name == "water":
        rates = [deepmd_rates(args.data, args.batches, args.seed) for _ in range(repeats)]
        add("deepmd-kit DpLoaderSet, arrays", Rate(max(r[0] for r in rates), float("nan")))
        add(
            "deepmd-kit DpLoaderSet + neighbour lists",
            Rate(max(r[1] for r in rates), float("nan")),
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "lamforge-bench-loader"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--batches", type=int, default=40, help="random batches per arrays-only method"
    )
    parser.add_argument("--order-batches", type=int, default=1000)
    parser.add_argument("--zarr-batches", type=int, default=6)
    parser.add_argument("--full-batches", type=int, default=12)
    parser.add_argument("--synthetic-frames", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=["mptrj", "water", "synthetic", "synthetic-fast"],
        help="which to measure",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    store = build_store(args.workdir, args.data, args.synthetic_frames)
    rows = []
    for name in args.datasets:
        rows.extend(benchmark(store, name, args))
    print(
        "\n| dataset (layout) | method | frames/s | vs zarr-python | vs npy mmap | CPU µs/frame |"
        "\n|---|---|---:|---:|---:|---:|"
    )
    for row in rows:
        same = {r["method"]: r["frames_per_second"] for r in rows if r["dataset"] == row["dataset"]}
        value = row["frames_per_second"]
        print(
            f"| {row['dataset']} ({row['layout']}) | {row['method']} | {value:,.0f} | "
            f"{value / same['zarr-python']:,.1f}x | {value / same['npy mmap (ceiling)']:.0%} | "
            f"{row['cpu_us_per_frame']:.1f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
