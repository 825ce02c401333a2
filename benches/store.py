"""Store benchmark: import speed against ASE alone, store size, curation commands on all the data.

Usage (from the repository root, ``../shared/data`` present)::

    PYTHONPATH=python python benches/store.py [--data ../shared/data] [--json results.json]

Measured in one run on one machine:

CPU seconds of this process are reported (wall seconds too for the curation commands): the
machine may be shared, and everything here runs on one thread.

* import (frames/s) of each source family into a fresh store, against reading the same files
  with ASE alone (``ase.io.iread`` materialising every ``Atoms``, the floor of any ASE-based
  import). ASE has no DeePMD reader, so DeePMD npy is compared with loading the arrays with NumPy
  and building one ``Atoms`` per frame;
* store size on disk against the raw input files;
* random access: frames/s of ``read_frames`` on random 64-frame batches;
* wall time of every curation command run in-process through ``lamforge.cli.main.main`` on the
  whole data (about 13,000 frames).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import iread

from lamforge.cli.main import main
from lamforge.data.format import DatasetInfo
from lamforge.data.importers import expand_sources
from lamforge.data.ingest import import_sources
from lamforge.data.store import Store

ROOT = Path(__file__).resolve().parents[1]

#: Dataset name -> (family, inputs relative to the data folder).
SOURCES: dict[str, tuple[str, list[str]]] = {
    "mptrj_random": ("extxyz", ["mptrj/mptrj-random-1k.xyz"]),
    "mptrj_stress": ("extxyz", ["mptrj/mptrj-highest-stress-1k.xyz"]),
    "ethanol": ("extxyz", ["molecules/ethanol"]),
    "3bpa": ("extxyz", ["molecules/3bpa"]),
    "oc20": ("traj", ["oc20"]),
    "water": ("deepmd", ["deepmd/water"]),
    "water_virial": ("deepmd", ["deepmd/water_virial"]),
    "nopbc": ("deepmd", ["deepmd/nopbc"]),
}


def _files(data: Path, relative: list[str], family: str) -> list[Path]:
    """The input paths of a dataset: files by suffix for ASE families, systems for DeePMD."""
    paths: list[Path] = []
    for item in relative:
        path = data / item
        if family == "deepmd":
            paths.extend(expand_sources([path]))
        elif path.is_dir():
            suffix = ".traj" if family == "traj" else ".xyz"
            paths.extend(sorted(path.glob(f"*{suffix}")))
        else:
            paths.append(path)
    return paths


def _ase_alone(paths: list[Path], family: str) -> int:
    """Reads the inputs the way a plain ASE (or NumPy, for DeePMD) script would."""
    count = 0
    for path in paths:
        if family == "deepmd":
            numbers = np.loadtxt(path / "type.raw", dtype=int)
            for set_dir in sorted(path.glob("set.*")):
                coord = np.load(set_dir / "coord.npy")
                for row in coord:
                    Atoms(numbers=numbers + 1, positions=row.reshape(-1, 3))
                    count += 1
        else:
            for atoms in iread(path, index=":"):
                atoms.calc.results.get("forces")
                count += 1
    return count


def _size(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        files = path.rglob("*") if path.is_dir() else [path]
        total += sum(file.stat().st_size for file in files if file.is_file())
    return total


def _cli(*argv: str) -> dict[str, float]:
    """Wall and CPU seconds of one ``lamforge data`` command run in this process."""
    start, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = main(["data", *argv])
    seconds = {"wall": time.perf_counter() - start, "cpu": time.process_time() - cpu}
    if code not in (0, 1):  # validate exits 1 when it finds errors, which is a result
        raise RuntimeError(f"lamforge data {' '.join(argv)} failed with exit code {code}")
    return seconds


def bench_imports(data: Path, store: Store) -> list[dict[str, object]]:
    """Imports every dataset and times ASE alone on the same files."""
    rows = []
    for name, (family, relative) in SOURCES.items():
        paths = _files(data, relative, family)
        # CPU time of this process: the machine may be shared, and both sides are one thread.
        start = time.process_time()
        reference_frames = _ase_alone(paths, family)
        reference = time.process_time() - start
        start, wall = time.process_time(), time.perf_counter()
        info = import_sources(store, DatasetInfo(name=name), paths)
        seconds = time.process_time() - start
        wall = time.perf_counter() - wall
        assert info.num_frames == reference_frames, (name, info.num_frames, reference_frames)
        stored = sum(p.stat().st_size for p in (store.path / name).rglob("*") if p.is_file())
        rows.append(
            {
                "dataset": name,
                "family": family,
                "frames": info.num_frames,
                "atoms": info.num_atoms,
                "import_cpu_s": seconds,
                "import_wall_s": wall,
                "import_frames_per_s": info.num_frames / seconds,
                "anchor_cpu_s": reference,
                "anchor_frames_per_s": reference_frames / reference,
                "import_over_anchor_time": seconds / reference,
                "raw_bytes": _size(paths),
                "store_bytes": stored,
                "store_over_raw": stored / _size(paths),
            }
        )
        print(
            f"{name:13s} {family:7s} {info.num_frames:6d} frames  import {seconds:6.2f} s CPU "
            f"({info.num_frames / seconds:6.0f} frames/s)  anchor {reference:6.2f} s CPU  "
            f"ratio {seconds / reference:4.2f}  size {rows[-1]['store_over_raw']:.2f} x raw"
        )
    return rows


def bench_random_access(store: Store, repeats: int = 50) -> dict[str, float]:
    """Frames per CPU second of ``read_frames`` on random 64-frame batches."""
    results = {}
    rng = np.random.default_rng(0)
    for name in ("mptrj_random", "oc20", "water"):
        reader = store.reader(name)
        start = time.process_time()
        for _ in range(repeats):
            reader.read_frames(rng.integers(0, reader.num_frames, 64))
        results[name] = 64 * repeats / (time.process_time() - start)
        print(f"random access {name:13s} {results[name]:8.0f} frames/s (batches of 64)")
    return results


def bench_curation(store: Store, workdir: Path) -> dict[str, dict[str, float]]:
    """Wall time of each curation command on the whole store."""
    path = str(store.path)
    total = sum(store.info(name).num_frames for name in store.datasets())
    num_datasets = len(store.datasets())
    timings = {
        "stats (all datasets, with PNGs)": _cli("stats", path, "--plots", str(workdir / "plots")),
        "stats --json (all datasets)": _cli("stats", path, "--json"),
        "validate (all datasets)": _cli("validate", path, "--json"),
        "split mptrj_random by formula": _cli(
            "split", path, "--dataset", "mptrj_random", "--group-by", "reduced_formula"
        ),
        "filter oc20 max_force < 5": _cli(
            "filter",
            path,
            "--dataset",
            "oc20",
            "--where",
            'pl.col("max_force") < 5',
            "--output",
            "oc20_low_force",
            "--quiet",
        ),
        "merge mptrj_random + mptrj_stress": _cli(
            "merge",
            path,
            "--datasets",
            "mptrj_random",
            "mptrj_stress",
            "--output",
            "mptrj",
            "--quiet",
        ),
        "export mptrj (2000 frames) extxyz": _cli(
            "export",
            path,
            "--dataset",
            "mptrj",
            "--format",
            "extxyz",
            "--output",
            str(workdir / "mptrj.xyz"),
        ),
        "export water deepmd": _cli(
            "export",
            path,
            "--dataset",
            "water",
            "--format",
            "deepmd",
            "--output",
            str(workdir / "water_dp"),
        ),
    }
    print(f"curation on {total} frames in {num_datasets} datasets (commands in this order):")
    for command, seconds in timings.items():
        print(f"  {command:38s} {seconds['wall']:6.2f} s wall {seconds['cpu']:6.2f} s CPU")
    return timings


def run(data: Path) -> dict[str, object]:
    """Runs every part of the benchmark in a temporary folder."""
    workdir = Path(tempfile.mkdtemp(prefix="lamforge-bench-store-"))
    try:
        store = Store.open(workdir / "store.zarr", create=True)
        imports = bench_imports(data, store)
        total_frames = sum(row["frames"] for row in imports)
        total_import = sum(row["import_cpu_s"] for row in imports)
        total_raw = sum(row["raw_bytes"] for row in imports)
        total_store = sum(row["store_bytes"] for row in imports)
        print(
            f"all data: {total_frames} frames imported in {total_import:.1f} s CPU; store "
            f"{total_store / 1e6:.1f} MB vs raw {total_raw / 1e6:.1f} MB "
            f"({total_store / total_raw:.2f} x)"
        )
        return {
            "imports": imports,
            "random_access_frames_per_s": bench_random_access(store),
            "curation_s": bench_curation(store, workdir),
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--json", type=Path, help="also write the results here")
    arguments = parser.parse_args()
    results = run(arguments.data)
    if arguments.json:
        arguments.json.write_text(json.dumps(results, indent=2))
