"""Training batches held in memory, from ASE frames (small sets, tests, distillation).

Each frame's labels come from its ``SinglePointCalculator`` results: ``energy`` and ``forces``
and, for frames periodic in all three directions, ``stress`` (ASE sign, eV/Å^3), converted to the
virial in eV with deepmd-kit's sign (``virial = -stress * volume``). Missing labels are masked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from ase import Atoms

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
