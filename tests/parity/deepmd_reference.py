"""Reference DPA-2 checkpoints made by deepmd-kit's own trainer, for the parity tests.

Each case is a deepmd-kit input (model section as deepmd-kit spells it) trained for a couple of
steps on a few frames of ``../shared/data``, so the checkpoint holds real statistics (davg/dstd
from data), a least-squares energy bias and weights that moved away from their initial values.
The data systems are small copies (a few frames) written into the work directory: deepmd-kit's
statistics and neighbour scans then take seconds, not minutes.

``python tests/parity/deepmd_reference.py SHARED_DATA WORKDIR CASE...`` trains the named cases
(defined in ``deepmd_cases.py``) and stores deepmd-kit's predictions; the pytest fixture in
``conftest.py`` runs it once per session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from deepmd_cases import MPTRJ_FRAME_INDICES, ReferenceCase, reference_cases, training_input

#: Frames copied from each source system (deepmd-kit samples its statistics from these).
FRAMES_PER_SYSTEM = 2

#: Linear compression of the dense water frame (caps the neighbour lists).
DENSE_SCALE = 0.8

#: Threads for the reference trainer; parity needs no speed and the machine is shared.
SINGLE_THREAD_ENVIRONMENT = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "DP_INTRA_OP_PARALLELISM_THREADS": "1",
    "DP_INTER_OP_PARALLELISM_THREADS": "1",
    "CUDA_VISIBLE_DEVICES": "",
}


def write_deepmd_system(
    directory: Path,
    *,
    symbols: list[str],
    coordinates: np.ndarray,
    energies: np.ndarray,
    forces: np.ndarray,
    cells: np.ndarray | None,
) -> None:
    """Write frames of one composition as a DeePMD npy system.

    Args:
        directory: system directory to create.
        symbols: element of each atom, length ``num_atoms``.
        coordinates: positions in Å, shape ``(num_frames, num_atoms, 3)``.
        energies: energies in eV, shape ``(num_frames,)``.
        forces: forces in eV/Å, shape ``(num_frames, num_atoms, 3)``.
        cells: cell vectors as rows in Å, shape ``(num_frames, 3, 3)``; None for molecules.
    """
    elements = sorted(set(symbols))
    set_directory = directory / "set.000"
    set_directory.mkdir(parents=True, exist_ok=True)
    (directory / "type_map.raw").write_text("\n".join(elements) + "\n")
    (directory / "type.raw").write_text("\n".join(str(elements.index(s)) for s in symbols) + "\n")
    num_frames = coordinates.shape[0]
    np.save(set_directory / "coord.npy", coordinates.reshape(num_frames, -1))
    np.save(set_directory / "energy.npy", energies.reshape(num_frames))
    np.save(set_directory / "force.npy", forces.reshape(num_frames, -1))
    if cells is None:
        (directory / "nopbc").touch()
    else:
        np.save(set_directory / "box.npy", cells.reshape(num_frames, 9))


def copy_deepmd_frames(source: Path, destination: Path, num_frames: int) -> None:
    """Copy the first frames of a DeePMD npy system (first set only)."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in ("type.raw", "type_map.raw", "nopbc"):
        if (source / name).exists():
            (destination / name).write_bytes((source / name).read_bytes())
    (destination / "set.000").mkdir(exist_ok=True)
    for array_file in sorted((source / "set.000").glob("*.npy")):
        frames = np.load(array_file)[:num_frames]
        np.save(destination / "set.000" / array_file.name, frames)


def read_mptrj_frames(shared_data: Path) -> list:
    """The MPtrj frames of ``MPTRJ_FRAME_INDICES`` as ASE atoms."""
    from ase.io import read

    path = shared_data / "mptrj" / "mptrj-random-1k.xyz"
    last = max(MPTRJ_FRAME_INDICES)
    frames = read(path, index=f":{last + 1}")
    return [frames[index] for index in MPTRJ_FRAME_INDICES]


def mptrj_type_map(shared_data: Path) -> tuple[str, ...]:
    """Elements of the MPtrj frames in use, sorted by symbol."""
    symbols = set()
    for atoms in read_mptrj_frames(shared_data):
        symbols.update(atoms.get_chemical_symbols())
    return tuple(sorted(symbols))


def prepare_systems(shared_data: Path, data_directory: Path) -> dict[str, Path]:
    """Write the small training systems; returns their directories by name."""
    systems = {"water_0": data_directory / "water_0"}
    copy_deepmd_frames(
        shared_data / "deepmd" / "water" / "data_0", systems["water_0"], FRAMES_PER_SYSTEM
    )
    for molecule in ("C1H4O2", "C3H3O4"):
        systems[f"nopbc_{molecule}"] = data_directory / f"nopbc_{molecule}"
        copy_deepmd_frames(
            shared_data / "deepmd" / "nopbc" / molecule,
            systems[f"nopbc_{molecule}"],
            FRAMES_PER_SYSTEM,
        )
    for index, atoms in zip(MPTRJ_FRAME_INDICES, read_mptrj_frames(shared_data), strict=True):
        systems[f"mptrj_{index}"] = data_directory / f"mptrj_{index}"
        write_deepmd_system(
            systems[f"mptrj_{index}"],
            symbols=atoms.get_chemical_symbols(),
            coordinates=atoms.get_positions()[None],
            energies=np.array([atoms.get_potential_energy()]),
            forces=atoms.get_forces(apply_constraint=False)[None],
            cells=np.asarray(atoms.get_cell())[None],
        )
    return systems


def train_case(
    case: ReferenceCase, systems: dict[str, Path], case_directory: Path, *, in_process: bool
) -> Path:
    """Run deepmd-kit's ``dp --pt train`` for a case; returns the checkpoint path."""
    case_directory.mkdir(parents=True, exist_ok=True)
    checkpoint = case_directory / "model.ckpt-2.pt"
    if checkpoint.is_file():
        return checkpoint
    (case_directory / "input.json").write_text(json.dumps(training_input(case, systems), indent=1))
    log = case_directory / "train.log"
    if in_process:
        # One interpreter for every case saves deepmd-kit's import (seconds) per training.
        from deepmd.pt.entrypoints.main import main as deepmd_main

        previous = Path.cwd()
        os.chdir(case_directory)
        try:
            deepmd_main(["train", "input.json", "--skip-neighbor-stat", "-l", str(log)])
        finally:
            os.chdir(previous)
    else:
        environment = {**os.environ, **SINGLE_THREAD_ENVIRONMENT}
        command = ["dp", "--pt", "train", "input.json", "--skip-neighbor-stat"]
        result = subprocess.run(
            command,
            cwd=case_directory,
            env=environment,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        log.write_text(result.stdout + result.stderr)
    if not checkpoint.is_file():
        raise RuntimeError(f"deepmd-kit training of case {case.name!r} failed; log: {log}")
    return checkpoint


@dataclass(frozen=True, kw_only=True)
class Frame:
    """One evaluation frame.

    Attributes:
        symbols: element of each atom, length ``num_atoms``.
        positions: Cartesian positions in Å, shape ``(num_atoms, 3)``.
        cell: cell vectors as rows in Å, shape ``(3, 3)``; None for a molecule.
    """

    symbols: tuple[str, ...]
    positions: np.ndarray
    cell: np.ndarray | None


def _deepmd_frames(system: Path, indices: tuple[int, ...]) -> list[Frame]:
    type_map = (system / "type_map.raw").read_text().split()
    types = np.loadtxt(system / "type.raw", dtype=int, ndmin=1)
    symbols = tuple(type_map[t] for t in types)
    coordinates = np.load(system / "set.000" / "coord.npy")
    periodic = not (system / "nopbc").exists()
    cells = np.load(system / "set.000" / "box.npy") if periodic else None
    return [
        Frame(
            symbols=symbols,
            positions=coordinates[i].reshape(-1, 3),
            cell=cells[i].reshape(3, 3) if cells is not None else None,
        )
        for i in indices
    ]


def evaluation_frames(shared_data: Path, name: str) -> list[Frame]:
    """Frames the parity tests evaluate, by set name (see :data:`EVALUATION_SETS`).

    Water and molecule frames are ones the reference models did not train on (another water
    system, another molecule); MPtrj frames are the training cells (their elements fix the model).
    """
    deepmd = shared_data / "deepmd"
    if name == "water":
        return _deepmd_frames(deepmd / "water" / "data_3", (0, 7))
    if name == "water_dense":
        # Compressed to 0.8x the box: ~170 atoms within 6 Å and ~55 within 4 Å, more than the
        # 120 / 48 neighbour caps, so both codes must keep the same nearest neighbours.
        (frame,) = _deepmd_frames(deepmd / "water" / "data_3", (3,))
        return [
            Frame(
                symbols=frame.symbols,
                positions=DENSE_SCALE * frame.positions,
                cell=DENSE_SCALE * frame.cell,
            )
        ]
    if name == "molecules":
        return _deepmd_frames(deepmd / "nopbc" / "C4H3O1", (0, 3)) + _deepmd_frames(
            deepmd / "nopbc" / "C1H4O2", (100,)
        )
    if name == "mptrj":
        return [
            Frame(
                symbols=tuple(atoms.get_chemical_symbols()),
                positions=atoms.get_positions(),
                cell=np.asarray(atoms.get_cell()),
            )
            for atoms in read_mptrj_frames(shared_data)
        ]
    raise ValueError(f"unknown evaluation set {name!r}")


#: Evaluation sets, by name.
EVALUATION_SETS = ("water", "water_dense", "molecules", "mptrj")


def evaluation_sets(type_map: tuple[str, ...], shared_data: Path) -> list[str]:
    """Evaluation sets whose elements all belong to a type map."""
    names = []
    for name in EVALUATION_SETS:
        elements = {s for frame in evaluation_frames(shared_data, name) for s in frame.symbols}
        if elements <= set(type_map):
            names.append(name)
    return names


def reference_path(case_directory: Path, head: str, set_name: str) -> Path:
    """Where deepmd-kit's predictions of one head on one evaluation set are stored."""
    return case_directory / f"reference-{head}-{set_name}.npz"


def evaluate_case(case: ReferenceCase, checkpoint: Path, shared_data: Path) -> None:
    """Store deepmd-kit's own predictions (``DeepPot`` on the checkpoint) for every head/set.

    Each ``.npz`` holds, per frame ``i``: ``energy_i`` (eV), ``forces_i`` (num_atoms x 3, eV/Å),
    ``virial_i`` (3 x 3, eV) and ``atom_energy_i`` (num_atoms, eV).
    """
    from deepmd.infer import DeepPot

    for head in case.heads:
        model = DeepPot(str(checkpoint), head=None if head == "Default" else head)
        type_map = model.get_type_map()
        for set_name in evaluation_sets(case.type_map, shared_data):
            arrays = {}
            for i, frame in enumerate(evaluation_frames(shared_data, set_name)):
                types = np.array([type_map.index(s) for s in frame.symbols])
                cell = None if frame.cell is None else frame.cell.reshape(1, 9)
                energy, forces, virial, atom_energy, _ = model.eval(
                    frame.positions.reshape(1, -1), cell, types, atomic=True
                )
                arrays[f"energy_{i}"] = np.asarray(energy).reshape(())
                arrays[f"forces_{i}"] = forces.reshape(-1, 3)
                arrays[f"virial_{i}"] = virial.reshape(3, 3)
                arrays[f"atom_energy_{i}"] = atom_energy.reshape(-1)
            np.savez(reference_path(checkpoint.parent, head, set_name), **arrays)


def build_reference(shared_data: Path, workdir: Path, names: list[str]) -> dict[str, Path]:
    """Prepare the data, train the named cases and store deepmd-kit's predictions.

    Returns:
        Checkpoint path by case name; the predictions lie beside each checkpoint.
    """
    systems = prepare_systems(shared_data, workdir / "data")
    cases = reference_cases(mptrj_type_map(shared_data))
    checkpoints = {}
    for name in names:
        checkpoints[name] = train_case(cases[name], systems, workdir / name, in_process=True)
        evaluate_case(cases[name], checkpoints[name], shared_data)
    return checkpoints


def main() -> None:
    """Command line: ``SHARED_DATA WORKDIR CASE...``."""
    for name, value in SINGLE_THREAD_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    shared_data, workdir, *names = sys.argv[1:]
    for name, checkpoint in build_reference(Path(shared_data), Path(workdir), names).items():
        print(name, checkpoint)


if __name__ == "__main__":
    main()
