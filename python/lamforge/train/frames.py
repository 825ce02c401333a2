"""Training batches held in memory, from ASE frames or a store dataset (small sets, tests).

Each frame's labels come from its ``SinglePointCalculator`` results: ``energy`` and ``forces``
and, for frames periodic in all three directions, ``stress`` (ASE sign, eV/Å^3), converted to the
virial in eV with deepmd-kit's sign (``virial = -stress * volume``). Missing labels are masked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from ase import Atoms

from lamforge.data.frames import FrameBatch
from lamforge.data.reader import DatasetReader
from lamforge.nn.atoms import model_input_from_arrays
from lamforge.nn.inputs import ModelInput
from lamforge.train.loss import EnergyLabels
from lamforge.train.stream import TrainingBatch

#: Builds the model input of a list of frames: (frames, elements, neighbour specs) -> ModelInput.
InputBuilder = Callable[[Sequence[Atoms], Sequence[str], Sequence[tuple[float, int]]], ModelInput]


def labels_from_atoms(frames: Sequence[Atoms]) -> EnergyLabels:
    """Energy, forces and virial labels (with masks) of ``frames`` as float64 tensors."""
    num_frames = len(frames)
    num_atoms = np.array([len(atoms) for atoms in frames])
    energy = np.zeros(num_frames)
    energy_mask = np.zeros(num_frames, dtype=bool)
    forces = np.zeros((int(num_atoms.sum()), 3))
    forces_mask = np.zeros(int(num_atoms.sum()), dtype=bool)
    virial = np.zeros((num_frames, 3, 3))
    virial_mask = np.zeros(num_frames, dtype=bool)
    offsets = np.concatenate([[0], np.cumsum(num_atoms)])
    for frame, atoms in enumerate(frames):
        results = atoms.calc.results if atoms.calc is not None else {}
        if "energy" in results:
            energy[frame], energy_mask[frame] = results["energy"], True
        if "forces" in results:
            forces[offsets[frame] : offsets[frame + 1]] = results["forces"]
            forces_mask[offsets[frame] : offsets[frame + 1]] = True
        if "stress" in results and atoms.pbc.all():
            stress = np.asarray(results["stress"])
            if stress.shape == (6,):  # Voigt order xx yy zz yz xz xy
                xx, yy, zz, yz, xz, xy = stress
                stress = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
            virial[frame], virial_mask[frame] = -stress * atoms.get_volume(), True
    return EnergyLabels(
        energy=torch.from_numpy(energy),
        energy_mask=torch.from_numpy(energy_mask),
        forces=torch.from_numpy(forces),
        forces_mask=torch.from_numpy(forces_mask),
        num_atoms=torch.from_numpy(num_atoms),
        virial=torch.from_numpy(virial) if virial_mask.any() else None,
        virial_mask=torch.from_numpy(virial_mask) if virial_mask.any() else None,
    )


def batches_from_atoms(
    frames: Sequence[Atoms],
    task: str,
    elements: Sequence[str],
    specs: Sequence[tuple[float, int]],
    build_input: InputBuilder,
    frames_per_batch: int = 1,
) -> list[TrainingBatch]:
    """Cuts ``frames`` into batches of ``frames_per_batch`` consecutive frames of one task."""
    if frames_per_batch < 1:
        raise ValueError(f"frames_per_batch must be at least 1, got {frames_per_batch}")
    batches = []
    for start in range(0, len(frames), frames_per_batch):
        chunk = frames[start : start + frames_per_batch]
        batches.append(
            TrainingBatch(
                task=task,
                inputs=build_input(chunk, elements, specs),
                labels=labels_from_atoms(chunk),
            )
        )
    return batches


def labels_from_frame_batch(frames: FrameBatch) -> EnergyLabels:
    """Labels (with masks) of frames read from a store; NaN labels are masked, never used."""
    num_atoms = np.diff(frames.atom_offsets)
    atom_has_forces = np.repeat(frames.has_forces, num_atoms)
    forces = frames.forces if frames.forces is not None else np.zeros((int(num_atoms.sum()), 3))
    has_virial = frames.virial is not None and bool(frames.has_virial.any())
    return EnergyLabels(
        energy=torch.from_numpy(np.where(frames.has_energy, frames.energy, 0.0)),
        energy_mask=torch.from_numpy(frames.has_energy.astype(bool)),
        forces=torch.from_numpy(np.where(atom_has_forces[:, None], forces, 0.0)),
        forces_mask=torch.from_numpy(atom_has_forces.astype(bool)),
        num_atoms=torch.from_numpy(num_atoms),
        virial=torch.from_numpy(np.where(frames.has_virial[:, None, None], frames.virial, 0.0))
        if has_virial
        else None,
        virial_mask=torch.from_numpy(frames.has_virial.astype(bool)) if has_virial else None,
    )


def batches_from_store(
    reader: DatasetReader,
    task: str,
    elements: Sequence[str],
    specs: Sequence[tuple[float, int]],
    frames_per_batch: int = 1,
    frame_ids: Sequence[int] | None = None,
) -> list[TrainingBatch]:
    """Reads frames of a store dataset into memory as training batches of one task.

    Args:
        reader: The dataset (``Store.reader(name)``).
        task: Task (head) name of the batches.
        elements: The model's element list.
        specs: Neighbour blocks to build.
        frames_per_batch: Frames per batch.
        frame_ids: Frames to read (default: all), in this order.
    """
    if frames_per_batch < 1:
        raise ValueError(f"frames_per_batch must be at least 1, got {frames_per_batch}")
    ids = np.arange(reader.num_frames) if frame_ids is None else np.asarray(frame_ids)
    batches = []
    for start in range(0, len(ids), frames_per_batch):
        frames = reader.read_frames(ids[start : start + frames_per_batch])
        inputs = model_input_from_arrays(
            frames.positions, frames.atomic_numbers, frames.cell, frames.pbc,
            frames.atom_offsets, elements, specs,
        )  # fmt: skip
        batches.append(
            TrainingBatch(task=task, inputs=inputs, labels=labels_from_frame_batch(frames))
        )
    return batches
