"""``lamforge export``: export time, file size, and the exported program's speed vs the eager model.

    OMP_NUM_THREADS=1 python benches/export.py [--preset small] [--formats export torchscript]

A DPA-2 preset (float64, statistics from the frame, random weights) on water (192 atoms, the
first frame of ``../shared/data/deepmd/water/data_0``), 1 thread. Times are CPU seconds
(``time.process_time``) of the whole process, median of the repeats:

* export: tracing + ``torch.export`` (+ scripting) + writing the file;
* load: reading the file back (``lamforge.deploy``);
* evaluation of energy, forces and virial on prepared inputs (neighbour lists excluded): the
  eager model (``lamforge.nn.evaluate``, with its data-dependent slot trimming), the eager model
  with ``static_shapes`` (the graph that is exported), and the deployed program;
* the same with the neighbour search (``DeployedModel.evaluate`` on the ASE structure).

Also prints the largest differences between deployed and eager results. JSON goes to
``bench-results/export.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from lamforge.deploy import DeployedModel
from lamforge.export import export_model
from lamforge.export.program import EnergyProgram
from lamforge.nn import DPA2Model, evaluate
from lamforge.nn.atoms import model_input_from_atoms
from lamforge.nn.presets import dpa2_medium, dpa2_small
from lamforge.nn.statistics import compute_statistics

ROOT = Path(__file__).resolve().parents[1]
WATER = ROOT.parent / "shared" / "data" / "deepmd" / "water" / "data_0"
PRESETS = {"small": dpa2_small, "medium": dpa2_medium}


def water() -> Atoms:
    """The first frame of the water system (192 atoms)."""
    type_map = (WATER / "type_map.raw").read_text().split()
    types = np.loadtxt(WATER / "type.raw", dtype=int)
    positions = np.load(WATER / "set.000" / "coord.npy")[0].reshape(-1, 3)
    cell = np.load(WATER / "set.000" / "box.npy")[0].reshape(3, 3)
    return Atoms([type_map[t] for t in types], positions=positions, cell=cell, pbc=True)


def timed(step, repeats: int) -> float:
    """Median CPU seconds of ``step`` over ``repeats`` runs after one warm-up run."""
    step()
    seconds = []
    for _ in range(repeats):
        start = time.process_time()
        step()
        seconds.append(time.process_time() - start)
    return statistics.median(seconds)


def run(preset: str, program: str, repeats: int, directory: Path) -> dict:
    atoms = water()
    model = DPA2Model(PRESETS[preset](elements=("O", "H")))
    specs = tuple(sorted(set(model.descriptor.neighbor_specs().values()), reverse=True))
    inputs = model_input_from_atoms([atoms], model.elements, specs)
    compute_statistics(model, [inputs])
    path = directory / f"{preset}-{program}.{'pt2' if program == 'export' else 'pt'}"
    start_cpu, start_wall = time.process_time(), time.perf_counter()
    export_model(model, path, program=program)
    export_cpu, export_wall = time.process_time() - start_cpu, time.perf_counter() - start_wall
    start = time.process_time()
    deployed = DeployedModel(path, num_threads=1)
    load_cpu = time.process_time() - start
    tensors = deployed.inputs([atoms])
    static = EnergyProgram(model)

    def eager():
        return evaluate(model, inputs, forces=True, virial=True)

    reference, output = eager(), deployed(*tensors)
    row = {
        "preset": preset,
        "program": program,
        "atoms": len(atoms),
        "export_cpu_s": export_cpu,
        "export_wall_s": export_wall,
        "file_mb": path.stat().st_size / 1e6,
        "load_cpu_s": load_cpu,
        "eager_s": timed(eager, repeats),
        "eager_static_s": timed(lambda: static(*tensors), repeats),
        "deployed_s": timed(lambda: deployed(*tensors), repeats),
        "deployed_with_neighbors_s": timed(lambda: deployed.evaluate(atoms), repeats),
        "energy_rel_diff": float(
            ((output.energy - reference.energy.detach()) / reference.energy.detach()).abs().max()
        ),
        "forces_abs_diff": float((output.forces - reference.forces.detach()).abs().max()),
        "virial_abs_diff": float((output.virial - reference.virial.detach()).abs().max()),
    }
    row["deployed_vs_eager"] = row["eager_s"] / row["deployed_s"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--formats", nargs="+", default=["export"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        for program in args.formats:
            row = run(args.preset, program, args.repeats, Path(directory))
            print(json.dumps(row, indent=1), flush=True)
            rows.append(row)
    print(
        "| preset | format | export CPU s (wall) | file MB | load CPU s | eager s | "
        "eager static s | deployed s | eager/deployed | deployed + neighbours s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['preset']} | {r['program']} | {r['export_cpu_s']:.1f} ({r['export_wall_s']:.1f})"
            f" | {r['file_mb']:.1f} | {r['load_cpu_s']:.1f} | {r['eager_s']:.3f} | "
            f"{r['eager_static_s']:.3f} | {r['deployed_s']:.3f} | {r['deployed_vs_eager']:.2f}x | "
            f"{r['deployed_with_neighbors_s']:.3f} |"
        )
    output = ROOT / "bench-results" / "export.json"
    output.parent.mkdir(exist_ok=True)
    output.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
