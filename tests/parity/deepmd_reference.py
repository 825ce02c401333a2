"""Reference DPA-2 checkpoints made by deepmd-kit's own trainer, for the parity tests.

Each case is a deepmd-kit input (model section as deepmd-kit spells it) trained for a couple of
steps on a few frames of ``../shared/data``, so the checkpoint holds real statistics (davg/dstd
from data), a least-squares energy bias and weights that moved away from their initial values.
The data systems are small copies (a few frames) written into the work directory: deepmd-kit's
statistics and neighbour scans then take seconds, not minutes.

``python tests/parity/deepmd_reference.py WORKDIR CASE...`` trains the named cases; the pytest
fixture in ``conftest.py`` calls this once per session.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Frames copied from each source system (deepmd-kit samples its statistics from these).
FRAMES_PER_SYSTEM = 2

#: MPtrj frames used as separate one-frame systems (small cells: many periodic images).
MPTRJ_FRAME_INDICES = (0, 1, 2, 3, 5, 8)

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


def repinit_section(**overrides: object) -> dict:
    """The repinit block of deepmd-kit's shipped small/medium water examples."""
    section = {
        "tebd_dim": 8,
        "rcut": 6.0,
        "rcut_smth": 0.5,
        "nsel": 120,
        "neuron": [25, 50, 100],
        "axis_neuron": 12,
        "activation_function": "tanh",
        "three_body_sel": 48,
        "three_body_rcut": 4.0,
        "three_body_rcut_smth": 3.5,
        "use_three_body": True,
    }
    section.update(overrides)
    return section


def repformer_section(**overrides: object) -> dict:
    """The repformer block of deepmd-kit's shipped small water example (3 layers)."""
    section = {
        "rcut": 4.0,
        "rcut_smth": 3.5,
        "nsel": 48,
        "nlayers": 3,
        "g1_dim": 128,
        "g2_dim": 32,
        "attn2_hidden": 32,
        "attn2_nhead": 4,
        "attn1_hidden": 128,
        "attn1_nhead": 4,
        "axis_neuron": 4,
        "update_h2": False,
        "update_g1_has_conv": True,
        "update_g1_has_grrg": True,
        "update_g1_has_drrd": True,
        "update_g1_has_attn": False,
        "update_g2_has_g1g1": False,
        "update_g2_has_attn": False,
        "update_style": "res_residual",
        "update_residual": 0.01,
        "update_residual_init": "norm",
        "attn2_has_gate": True,
        "use_sqrt_nnei": True,
        "g1_out_conv": True,
        "g1_out_mlp": True,
    }
    section.update(overrides)
    return section


def descriptor_section(repinit: dict, repformer: dict, **overrides: object) -> dict:
    """A DPA-2 descriptor section in float64 with a fixed seed."""
    section = {
        "type": "dpa2",
        "repinit": repinit,
        "repformer": repformer,
        "precision": "float64",
        "add_tebd_to_repinit_out": False,
        "seed": 1,
    }
    section.update(overrides)
    return section


def fitting_section() -> dict:
    """The energy fitting net of the shipped examples, float64."""
    return {"neuron": [240, 240, 240], "resnet_dt": True, "precision": "float64", "seed": 1}


def paper_era_repformer(num_layers: int) -> dict:
    """The pre-PR-#4089 repformer (spec 2.2): every update term on, res_avg, 1/N normalisation."""
    return repformer_section(
        nsel=40,
        nlayers=num_layers,
        update_g1_has_attn=True,
        update_g2_has_g1g1=True,
        update_g2_has_attn=True,
        update_style="res_avg",
        use_sqrt_nnei=False,
        g1_out_conv=False,
        g1_out_mlp=False,
    )


@dataclass(frozen=True, kw_only=True)
class ReferenceCase:
    """One deepmd-kit model to train.

    Attributes:
        name: directory name of the case; also the key tests use.
        type_map: element symbols of the model, in deepmd-kit's type order.
        descriptor: deepmd-kit descriptor section.
        heads: head name -> names of the prepared data systems it trains on. A single head named
            ``Default`` makes a single-task model; more make a multi-task model with a shared
            descriptor (deepmd-kit's ``shared_dict``).
    """

    name: str
    type_map: tuple[str, ...]
    descriptor: dict
    heads: dict[str, tuple[str, ...]]

    @property
    def is_multi_task(self) -> bool:
        """Whether the checkpoint has several named heads."""
        return list(self.heads) != ["Default"]


WATER = ("water_0",)
MOLECULES = ("nopbc_C1H4O2", "nopbc_C3H3O4")
MPTRJ = tuple(f"mptrj_{index}" for index in MPTRJ_FRAME_INDICES)


def reference_cases(mptrj_type_map: tuple[str, ...]) -> dict[str, ReferenceCase]:
    """Every case the parity tests know, by name."""
    small = descriptor_section(repinit_section(), repformer_section())
    cases = [
        ReferenceCase(
            name="small", type_map=("O", "H"), descriptor=small, heads={"Default": WATER}
        ),
        ReferenceCase(
            name="medium",
            type_map=("H", "C", "O"),
            descriptor=descriptor_section(
                repinit_section(), repformer_section(nlayers=6, update_g2_has_attn=True)
            ),
            heads={"Default": WATER + MOLECULES},
        ),
        ReferenceCase(
            name="paper",
            type_map=("O", "H"),
            descriptor=descriptor_section(
                repinit_section(rcut=9.0, rcut_smth=8.0, use_three_body=False),
                paper_era_repformer(num_layers=2),
            ),
            heads={"Default": WATER},
        ),
        ReferenceCase(
            name="paper12",
            type_map=("O", "H"),
            descriptor=descriptor_section(
                repinit_section(rcut=9.0, rcut_smth=8.0, use_three_body=False),
                paper_era_repformer(num_layers=12),
            ),
            heads={"Default": WATER},
        ),
        ReferenceCase(
            # Options the shipped configs leave at their defaults.
            name="options",
            type_map=("H", "C", "O"),
            descriptor=descriptor_section(
                repinit_section(tebd_input_mode="strip", three_body_neuron=[4, 8]),
                repformer_section(
                    nlayers=2,
                    update_h2=True,
                    update_g2_has_attn=True,
                    update_g1_has_attn=True,
                    update_style="res_incr",
                    g1_out_conv=False,
                ),
                add_tebd_to_repinit_out=True,
                concat_output_tebd=False,
            ),
            heads={"Default": WATER + MOLECULES},
        ),
        ReferenceCase(
            name="mptrj",
            type_map=mptrj_type_map,
            descriptor=small,
            heads={"Default": MPTRJ},
        ),
        ReferenceCase(
            name="multitask",
            type_map=("H", "C", "O"),
            descriptor=small,
            heads={"water": WATER, "molecules": MOLECULES},
        ),
    ]
    return {case.name: case for case in cases}


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


def training_input(case: ReferenceCase, systems: dict[str, Path]) -> dict:
    """The deepmd-kit input file of a case: two steps, statistics from one batch per system."""
    training = {
        "numb_steps": 2,
        "gradient_max_norm": 5.0,
        "seed": 10,
        "disp_file": "lcurve.out",
        "disp_freq": 2,
        "save_freq": 2,
    }
    learning_rate = {"type": "exp", "decay_steps": 1, "start_lr": 1e-3, "stop_lr": 1e-4}
    loss = {"type": "ener", "start_pref_e": 0.02, "limit_pref_e": 1}
    loss.update({"start_pref_f": 1000, "limit_pref_f": 1})

    def data_section(names: tuple[str, ...]) -> dict:
        paths = [str(systems[name]) for name in names]
        # No validation data: deepmd-kit would evaluate it at every display step.
        return {"training_data": {"systems": paths, "batch_size": 1}}

    if not case.is_multi_task:
        model = {
            "type_map": list(case.type_map),
            "descriptor": copy.deepcopy(case.descriptor),
            "fitting_net": fitting_section(),
            "data_stat_nbatch": 1,
        }
        training.update(data_section(case.heads["Default"]))
        return {"model": model, "learning_rate": learning_rate, "loss": loss, "training": training}
    model = {
        "shared_dict": {
            "shared_type_map": list(case.type_map),
            "shared_descriptor": copy.deepcopy(case.descriptor),
        },
        "model_dict": {
            head: {
                "type_map": "shared_type_map",
                "descriptor": "shared_descriptor",
                "fitting_net": fitting_section(),
                "data_stat_nbatch": 1,
            }
            for head in case.heads
        },
    }
    training["model_prob"] = dict.fromkeys(case.heads, 1.0)
    training["data_dict"] = {head: data_section(names) for head, names in case.heads.items()}
    return {
        "model": model,
        "learning_rate": learning_rate,
        "loss_dict": {head: dict(loss) for head in case.heads},
        "training": training,
    }


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
