"""Neighbour-list benchmark: lamforge against vesin, matscipy and ASE, in one run.

Systems: water-like boxes (192 to 98,304 atoms), fcc Cu (4 to 32,000 atoms), a 50-atom strongly
triclinic cell and a 100-atom cluster without cell; cutoffs 4 and 6 Angstrom; one thread.

Methods (all produce i, j, S, d and D, the full list with vectors):
  lamforge         lamforge.neighbors.neighbor_list (sorted per centre)
  dpa2             lamforge.neighbors.dense_neighbor_lists with DPA-2's (6.0, 120), (4.0, 48):
                   both dense capped lists from one call (timed once per system)
  vesin            vesin.NeighborList(full_list=True).compute(..., "ijSdD") (copy=True, default)
  vesin-view       the same with copy=False: views into vesin's reused buffers (no allocation;
                   the arrays are overwritten by the next call), the fastest vesin can be
  vesin+numpy      vesin at 6 A, then NumPy sort per centre and cap to the two DPA-2 lists:
                   what users do today to get what `dpa2` returns
  matscipy, ase    their neighbour_list("ijSdD")

Times are medians over repeats of the process CPU time (the machine this was written on is
shared, so wall-clock includes other processes' time slices); `--clock wall` uses wall-clock.
The thread-scaling table always uses wall-clock.

    python benches/neighbors.py            # full run, a few minutes
    python benches/neighbors.py --quick    # small systems only
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

os.environ.setdefault("OMP_NUM_THREADS", "1")

import ase  # noqa: E402
import ase.build  # noqa: E402
import numpy as np  # noqa: E402
import vesin  # noqa: E402
from ase.neighborlist import neighbor_list as ase_neighbor_list  # noqa: E402
from matscipy.neighbours import neighbour_list as matscipy_neighbour_list  # noqa: E402

from lamforge.neighbors import (  # noqa: E402
    DPA2_SPECS,
    batch_dense_neighbor_lists,
    dense_neighbor_lists,
    neighbor_list,
)

CUTOFFS = (4.0, 6.0)
SLOW_ANCHOR_LIMIT = 20_000  # atoms above which ASE and matscipy are skipped (tens of seconds)


@dataclass(frozen=True, kw_only=True)
class System:
    """One benchmark structure."""

    name: str
    positions: np.ndarray
    cell: np.ndarray | None
    pbc: tuple[bool, bool, bool]

    @property
    def num_atoms(self) -> int:
        return len(self.positions)


def water_box(num_molecules: int, seed: int = 0) -> System:
    """Liquid-water density (0.0334 molecules/A^3): O on a jittered lattice, H at 0.96 A."""
    rng = np.random.default_rng(seed)
    per_side = round(num_molecules ** (1 / 3))
    assert per_side**3 == num_molecules
    side = (num_molecules / 0.0334) ** (1 / 3)
    spacing = side / per_side
    grid = np.indices((per_side,) * 3).reshape(3, -1).T
    oxygens = (grid + 0.5) * spacing + rng.uniform(-0.3, 0.3, size=(num_molecules, 3))
    # Two O-H bonds of 0.96 A at 104.5 degrees in a random orientation.
    half = np.deg2rad(104.5) / 2
    local = 0.96 * np.array([[np.sin(half), np.cos(half), 0.0], [-np.sin(half), np.cos(half), 0.0]])
    q, r = np.linalg.qr(rng.normal(size=(num_molecules, 3, 3)))
    rotations = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
    hydrogens = oxygens[:, None, :] + np.einsum("hk,mjk->mhj", local, rotations)
    positions = np.concatenate((oxygens[:, None, :], hydrogens), axis=1).reshape(-1, 3)
    return System(
        name=f"water {3 * num_molecules}",
        positions=positions,
        cell=np.eye(3) * side,
        pbc=(True, True, True),
    )


def copper(repeats: int, seed: int = 0) -> System:
    """fcc Cu (a = 3.61 A), 4 atoms per cubic cell, rattled by 0.02 A."""
    atoms = ase.build.bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeats)
    atoms.rattle(0.02, seed=seed)
    return System(
        name=f"fcc Cu {len(atoms)}",
        positions=atoms.positions.copy(),
        cell=atoms.cell.array.copy(),
        pbc=(True, True, True),
    )


def triclinic(seed: int = 0) -> System:
    """50 atoms in a strongly sheared cell (angles far from 90 degrees), ~0.08 atoms/A^3."""
    rng = np.random.default_rng(seed)
    cell = np.array([[8.0, 0.0, 0.0], [6.5, 4.5, 0.0], [-5.0, 3.0, 4.0]])
    positions = rng.uniform(0, 1, size=(50, 3)) @ cell
    return System(name="triclinic 50", positions=positions, cell=cell, pbc=(True, True, True))


def cluster(seed: int = 0) -> System:
    """100 atoms in a ball, at least 1.8 A apart, no cell."""
    rng = np.random.default_rng(seed)
    points: list[np.ndarray] = []
    while len(points) < 100:
        candidate = rng.uniform(-7, 7, size=3)
        if np.linalg.norm(candidate) < 7 and all(
            np.linalg.norm(candidate - p) > 1.8 for p in points
        ):
            points.append(candidate)
    return System(name="cluster 100", positions=np.array(points), cell=None, pbc=(False,) * 3)


def systems(quick: bool) -> list[System]:
    found = [water_box(64), water_box(512), copper(1), copper(4), triclinic(), cluster()]
    if not quick:
        found += [water_box(4096), water_box(32768), copper(10), copper(20)]
    return sorted(found, key=lambda s: (s.name.split()[0], s.num_atoms))


def measure(function: Callable[[], object], clock: str, budget: float = 1.0) -> float:
    """Median seconds of `function` over repeats (at least 3, about `budget` seconds)."""
    return measure_all({"f": function}, clock, budget)["f"]


def measure_all(
    functions: dict[str, Callable[[], object]], clock: str, budget: float = 2.0
) -> dict[str, float]:
    """Median seconds of each function, timed in interleaved rounds.

    Interleaving gives every method the same process state on average: the cost of fresh output
    memory (page faults) depends on what the allocator kept from earlier calls, which depends on
    what ran before.
    """
    timer = time.process_time if clock == "cpu" else time.perf_counter
    for function in functions.values():
        function()  # warm-up: thread pools, caches, page tables
    times: dict[str, list[float]] = {name: [] for name in functions}
    started = time.perf_counter()
    rounds = 0
    while rounds < 3 or (time.perf_counter() - started < budget and rounds < 25):
        for name, function in functions.items():
            start = timer()
            function()
            times[name].append(timer() - start)
        rounds += 1
    return {name: statistics.median(values) for name, values in times.items()}


def vesin_numpy_dpa2(system: System) -> None:
    """vesin full list at 6 A, then sort per centre and cap to both DPA-2 lists with NumPy."""
    box = np.zeros((3, 3)) if system.cell is None else system.cell
    i, j, shifts, d, vectors = vesin.NeighborList(cutoff=6.0, full_list=True).compute(
        system.positions, box, any(system.pbc), "ijSdD"
    )
    order = np.lexsort((j, d, i))
    i, j, shifts, d = i[order], j[order], shifts[order], d[order]
    for cutoff, max_neighbors in DPA2_SPECS:
        keep = d < cutoff
        ci, cj, cs, cd = i[keep], j[keep], shifts[keep], d[keep]
        starts = np.searchsorted(ci, np.arange(system.num_atoms))
        rank = np.arange(len(ci)) - starts[ci]
        capped = rank < max_neighbors
        index = np.full((system.num_atoms, max_neighbors), -1)
        index[ci[capped], rank[capped]] = cj[capped]
        dense_shifts = np.zeros((system.num_atoms, max_neighbors, 3), dtype=np.int64)
        dense_shifts[ci[capped], rank[capped]] = cs[capped]
        distances = np.full((system.num_atoms, max_neighbors), np.inf)
        distances[ci[capped], rank[capped]] = cd[capped]


def methods(system: System, cutoff: float) -> dict[str, Callable[[], object]]:
    box = np.zeros((3, 3)) if system.cell is None else system.cell
    periodic = any(system.pbc)
    calculator = vesin.NeighborList(cutoff=cutoff, full_list=True)
    atoms = ase.Atoms(positions=system.positions, cell=box, pbc=system.pbc)
    found: dict[str, Callable[[], object]] = {
        "lamforge": lambda: neighbor_list(
            system.positions, system.cell, system.pbc, cutoff=cutoff, num_threads=1
        ),
        "vesin": lambda: calculator.compute(system.positions, box, periodic, "ijSdD"),
        "vesin-view": lambda: calculator.compute(
            system.positions, box, periodic, "ijSdD", copy=False
        ),
    }
    if system.num_atoms <= SLOW_ANCHOR_LIMIT:
        if system.cell is not None:
            found["matscipy"] = lambda: matscipy_neighbour_list(
                "ijSdD", positions=system.positions, cell=box, pbc=system.pbc, cutoff=cutoff
            )
        else:
            # matscipy needs a cell: a box larger than the cluster plus the cutoff.
            found["matscipy"] = lambda: matscipy_neighbour_list(
                "ijSdD",
                positions=system.positions + 50.0,
                cell=np.eye(3) * 100.0,
                pbc=(False,) * 3,
                cutoff=cutoff,
            )
        found["ase"] = lambda: ase_neighbor_list("ijSdD", atoms, cutoff)
    return found


def run_single_thread(all_systems: list[System], clock: str) -> list[dict]:
    rows = []
    for system in all_systems:
        for cutoff in CUTOFFS:
            num_pairs = neighbor_list(
                system.positions, system.cell, system.pbc, cutoff=cutoff
            ).num_pairs
            functions = methods(system, cutoff)
            if cutoff == max(CUTOFFS):
                functions["dpa2"] = lambda s=system: dense_neighbor_lists(
                    s.positions, s.cell, s.pbc, specs=DPA2_SPECS, num_threads=1
                )
                functions["vesin+numpy"] = lambda s=system: vesin_numpy_dpa2(s)
            # The fast methods run interleaved (same allocator and cache state on average); the
            # slow anchors, which churn through far more memory, run in blocks after them.
            fast = {name: f for name, f in functions.items() if name in FAST}
            times = measure_all(fast, clock)
            for name, function in functions.items():
                if name not in FAST:
                    times[name] = measure(function, clock)
            rows.append(
                {
                    "system": system.name,
                    "atoms": system.num_atoms,
                    "cutoff": cutoff,
                    "pairs": num_pairs,
                    "times": times,
                }
            )
            print_row(rows[-1])
    return rows


FAST = ("lamforge", "dpa2", "vesin", "vesin-view")
COLUMNS = ("lamforge", "dpa2", "vesin", "vesin-view", "vesin+numpy", "matscipy", "ase")


def print_header() -> None:
    print(
        "| system | cutoff | pairs | "
        + " | ".join(f"{c} ms" for c in COLUMNS)
        + " | lamforge/vesin | lamforge/vesin-view | dpa2/vesin | lamforge Mpairs/s |"
    )
    print("|---" * (4 + len(COLUMNS) + 3) + "|")


def print_row(row: dict) -> None:
    times = row["times"]

    def cell(name: str) -> str:
        return f"{1e3 * times[name]:.2f}" if name in times else "-"

    def ratio(a: str, b: str) -> str:
        return f"{times[a] / times[b]:.2f}" if a in times and b in times else "-"

    rate = row["pairs"] / times["lamforge"] / 1e6
    print(
        f"| {row['system']} | {row['cutoff']:g} | {row['pairs']:,} | "
        + " | ".join(cell(c) for c in COLUMNS)
        + f" | {ratio('lamforge', 'vesin')} | {ratio('lamforge', 'vesin-view')}"
        + f" | {ratio('dpa2', 'vesin')} | {rate:.1f} |",
        flush=True,
    )


def run_thread_scaling(all_systems: list[System]) -> None:
    print("\nThread scaling (wall-clock medians, ms):\n")
    print(
        "| system | cutoff | lamforge 1 thread | 2 threads | speed-up | dpa2 1 thread | "
        "2 threads | speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for system in all_systems:
        if system.num_atoms < 10_000:
            continue
        cutoff = max(CUTOFFS)
        full, dense = {}, {}
        for threads in (1, 2):
            full[threads] = measure(
                lambda s=system, n=threads, c=cutoff: neighbor_list(
                    s.positions, s.cell, s.pbc, cutoff=c, num_threads=n
                ),
                "wall",
            )
            dense[threads] = measure(
                lambda s=system, n=threads: dense_neighbor_lists(
                    s.positions, s.cell, s.pbc, num_threads=n
                ),
                "wall",
            )
        print(
            f"| {system.name} | {cutoff:g} | {1e3 * full[1]:.1f} | {1e3 * full[2]:.1f} | "
            f"{full[1] / full[2]:.2f} | {1e3 * dense[1]:.1f} | {1e3 * dense[2]:.1f} | "
            f"{dense[1] / dense[2]:.2f} |",
            flush=True,
        )


FRESH_SYSTEMS = {"water 1536": lambda: water_box(512), "water 12288": lambda: water_box(4096)}


def run_one_in_loop(method: str, system_name: str) -> None:
    """Times one method alone in this (fresh) process: 60 calls in a row, prints the median."""
    system = FRESH_SYSTEMS[system_name]()
    function = {
        **methods(system, 6.0),
        "dpa2": lambda: dense_neighbor_lists(
            system.positions, system.cell, system.pbc, num_threads=1
        ),
    }[method]
    times = []
    for _ in range(60):
        start = time.process_time()
        function()
        times.append(time.process_time() - start)
    print(statistics.median(times))


def run_fresh_processes() -> None:
    """Each method in its own process and loop: no other method shapes the allocator state."""
    print("\nEach method alone in a fresh process, 60 calls, cutoff 6 A (CPU medians, ms):\n")
    print("| system | lamforge | dpa2 | vesin | lamforge/vesin | dpa2/vesin |")
    print("|---|---|---|---|---|---|")
    for name in FRESH_SYSTEMS:
        times = {}
        for method in ("lamforge", "dpa2", "vesin"):
            output = subprocess.run(
                [sys.executable, __file__, "--one", method, name],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            times[method] = float(output.strip().splitlines()[-1])
        print(
            f"| {name} | {1e3 * times['lamforge']:.2f} | {1e3 * times['dpa2']:.2f} | "
            f"{1e3 * times['vesin']:.2f} | {times['lamforge'] / times['vesin']:.2f} | "
            f"{times['dpa2'] / times['vesin']:.2f} |",
            flush=True,
        )


def run_batch(clock: str) -> None:
    """A training-like batch: 64 small frames (192-atom water boxes) in one call."""
    frames = [water_box(64, seed=seed) for seed in range(64)]
    flat = np.concatenate([f.positions for f in frames])
    offsets = np.cumsum([0] + [f.num_atoms for f in frames])
    cells = np.stack([f.cell for f in frames])
    pbcs = np.ones((len(frames), 3), dtype=bool)
    calculators = vesin.NeighborList(cutoff=6.0, full_list=True)
    functions = {
        "batch call": lambda: batch_dense_neighbor_lists(
            flat, offsets, cells, pbcs, specs=DPA2_SPECS, num_threads=1
        ),
        "dpa2 per frame": lambda: [
            dense_neighbor_lists(f.positions, f.cell, f.pbc, num_threads=1) for f in frames
        ],
        "vesin per frame (6 A)": lambda: [
            calculators.compute(f.positions, f.cell, True, "ijSdD") for f in frames
        ],
    }
    times = measure_all(functions, clock)
    print("\nBatch of 64 water boxes of 192 atoms, both DPA-2 dense lists, one thread (ms):\n")
    print("| " + " | ".join(times) + " |")
    print("|---" * len(times) + "|")
    print("| " + " | ".join(f"{1e3 * t:.2f}" for t in times.values()) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small systems only")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "SYSTEM"), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.one:
        run_one_in_loop(*arguments.one)
        return
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f}; vesin {vesin.__version__}; "
        f"clock: {arguments.clock} (median)\n"
    )
    all_systems = systems(arguments.quick)
    print_header()
    rows = run_single_thread(all_systems, arguments.clock)
    large = [r for r in rows if r["atoms"] >= 1000]
    worst = max(r["times"]["lamforge"] / r["times"]["vesin"] for r in large) if large else None
    dpa2 = [r["times"]["dpa2"] / r["times"]["vesin"] for r in large if "dpa2" in r["times"]]
    if worst is not None:
        print(
            f"\nsystems >= 1,000 atoms: worst lamforge/vesin {worst:.2f} (target <= 1.0); "
            f"worst dpa2/vesin(6 A) {max(dpa2):.2f} (target <= 1.3)"
        )
    run_batch(arguments.clock)
    if not arguments.quick:
        run_fresh_processes()
    run_thread_scaling(all_systems)


if __name__ == "__main__":
    main()
