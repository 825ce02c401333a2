"""Teacher labelling: batched energy, forces, virial and per-atom energies from any model.

The teacher is a lamforge model file (DPA-2 or se_e2_a) or a deepmd-kit checkpoint (through
``lamforge.interop.deepmd``). Labelled frames go to a NEW store dataset whose level of theory
names the teacher: its file, SHA-256 and head, so a student's training data always says which
model made its labels.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from lamforge.data.format import DatasetInfo, LevelOfTheory
from lamforge.data.frames import frame_from_atoms, frame_to_atoms
from lamforge.data.store import Store
from lamforge.distill.students import EnergyModel
from lamforge.nn.atoms import model_input_from_atoms
from lamforge.nn.forces import evaluate
from lamforge.nn.loading import load_model


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(kw_only=True, frozen=True)
class Teacher:
    """A labelling model with its provenance.

    Attributes:
        model: The model (evaluation mode).
        head: Its head used for labels (None: the only head).
        checkpoint: The model file.
        sha256: SHA-256 of the model file.
    """

    model: EnergyModel
    head: str | None
    checkpoint: Path
    sha256: str

    @classmethod
    def load(cls, path: str | Path, head: str | None = None) -> Teacher:
        """Loads a model file; fails early, naming the heads, if ``head`` is ambiguous."""
        model = load_model(path).eval()
        model.head(head)
        return cls(model=model, head=head, checkpoint=Path(path), sha256=file_sha256(path))

    def level_of_theory(self) -> LevelOfTheory:
        """Provenance recorded with every dataset this teacher labels."""
        return LevelOfTheory(
            code="lamforge teacher model",
            functional=f"teacher model {self.checkpoint.name} sha256:{self.sha256}",
            basis=f"head {self.head or next(iter(self.model.heads))}",
        )


def _chunks(frames: Sequence[Atoms], max_atoms: int) -> list[list[int]]:
    """Consecutive frame indices grouped so that each group holds at most ``max_atoms`` atoms."""
    groups: list[list[int]] = [[]]
    atoms_in_group = 0
    for index, atoms in enumerate(frames):
        if groups[-1] and atoms_in_group + len(atoms) > max_atoms:
            groups.append([])
            atoms_in_group = 0
        groups[-1].append(index)
        atoms_in_group += len(atoms)
    return [group for group in groups if group]


def predict_frames(
    model: EnergyModel,
    frames: Sequence[Atoms],
    head: str | None = None,
    *,
    max_atoms: int = 4096,
    num_threads: int = 0,
) -> list[Atoms]:
    """Copies of ``frames`` carrying ``model``'s predictions as ``SinglePointCalculator`` results.

    Results: ``energy`` (eV), ``energies`` (per atom, eV), ``forces`` (eV/Å) and, for frames
    periodic in all three directions, ``stress`` (ASE sign, from the virial). Frames are evaluated
    in batches of at most ``max_atoms`` atoms.
    """
    if max_atoms < 1:
        raise ValueError(f"max_atoms must be positive, got {max_atoms}")
    specs = sorted(set(model.descriptor.neighbor_specs().values()), reverse=True)
    labelled: list[Atoms] = []
    for group in _chunks(frames, max_atoms):
        chunk = [frames[i] for i in group]
        inputs = model_input_from_atoms(chunk, model.elements, specs, model.dtype, num_threads)
        output = evaluate(model, inputs, head, forces=True, virial=True)
        assert output.forces is not None and output.virial is not None
        energies = output.energy.detach().double().numpy()
        forces = output.forces.detach().double().numpy()
        atomic = output.atomic_energies.detach().double().numpy()
        virial = output.virial.detach().double().numpy()
        start = 0
        for position, atoms in enumerate(chunk):
            stop = start + len(atoms)
            copy = Atoms(
                numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc
            )
            results = {
                "energy": float(energies[position]),
                "free_energy": float(energies[position]),
                "energies": atomic[start:stop].copy(),
                "forces": forces[start:stop].copy(),
            }
            if atoms.pbc.all():
                stress = -virial[position] / atoms.get_volume()
                results["stress"] = stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
            copy.calc = SinglePointCalculator(copy, **results)
            labelled.append(copy)
            start = stop
    return labelled


def frames_from_store(
    store: Store, dataset: str, frame_ids: Sequence[int] | None = None
) -> list[Atoms]:
    """Frames of a store dataset as ASE structures with their stored labels."""
    if dataset not in store:
        raise ValueError(f"dataset {dataset!r} is not in the store {store.path}")
    reader = store.reader(dataset)
    ids = np.arange(reader.num_frames) if frame_ids is None else np.asarray(frame_ids)
    if len(ids) == 0:
        return []
    return [frame_to_atoms(frame) for frame in reader.read_frames(ids).frames()]


def write_labelled_dataset(
    store: Store,
    name: str,
    frames: Sequence[Atoms],
    teacher: Teacher,
    *,
    source: str,
    description: str = "",
    overwrite: bool = False,
) -> DatasetInfo:
    """Writes teacher-labelled frames as the new dataset ``name`` (provenance: the teacher).

    Args:
        store: The store.
        name: New dataset name.
        frames: Frames with the teacher's results (from :func:`predict_frames`).
        teacher: The teacher that labelled them.
        source: Where the structures came from (a dataset, an exploration run).
        description: One line on the frames.
        overwrite: Replace an existing dataset of that name (a redone loop iteration).

    Raises:
        ValueError: no frames (an empty dataset says nothing and cannot be trained on).
    """
    if not frames:
        raise ValueError(f"dataset {name!r}: no frames to write")
    info = DatasetInfo(
        name=name,
        level_of_theory=teacher.level_of_theory(),
        source=(source,),
        description=description or f"frames of {source} labelled by {teacher.checkpoint.name}",
    )
    with store.writer(info, overwrite=overwrite) as writer:
        for index, atoms in enumerate(frames):
            writer.add(frame_from_atoms(atoms, source=source, source_index=index))
    return store.info(name)
