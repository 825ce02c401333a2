"""A tiny distillation world shared by the distillation tests: EMT alloy frames and a teacher.

The teacher is a tiny DPA-2 fitted for a few steps on EMT-labelled Cu-Au frames; the student
learns that teacher, not EMT.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from lamforge.data.format import DatasetInfo, LevelOfTheory
from lamforge.data.frames import frame_from_atoms
from lamforge.data.store import Store
from lamforge.distill.config import (
    DistillConfig,
    LoopSection,
    SourceSection,
    StudentSection,
    TeacherSection,
)
from lamforge.distill.explore import ExplorationConfig
from lamforge.distill.select import TrustLevels
from lamforge.nn.atoms import model_input_from_atoms
from lamforge.nn.checkpoint import save_checkpoint
from lamforge.nn.model import DPA2Model
from lamforge.testing.tiny_models import tiny_dpa2_config
from lamforge.train.frames import batches_from_atoms
from lamforge.train.initialize import initialize_from_data
from lamforge.train.schedule import LearningRateConfig
from lamforge.train.stream import InMemoryStream
from lamforge.train.trainer import Trainer, TrainerConfig

ELEMENTS = ("Cu", "Au")


def alloy_frames(count: int, seed: int) -> list[Atoms]:
    """Rattled random Cu-Au fcc cells (8 atoms) labelled by EMT."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        atoms = bulk("Cu", "fcc", a=3.75, cubic=True).repeat((2, 1, 1))
        atoms.set_chemical_symbols(np.where(rng.random(len(atoms)) < 0.5, "Au", "Cu").tolist())
        atoms.rattle(stdev=0.1, seed=int(rng.integers(2**31)))
        atoms.calc = EMT()
        labels = {
            "energy": atoms.get_potential_energy(),
            "forces": atoms.get_forces(),
            "stress": atoms.get_stress(),
        }
        atoms.calc = SinglePointCalculator(atoms, **labels)
        frames.append(atoms)
    return frames


def build_world(root: Path, frames: int = 24, teacher_steps: int = 10) -> tuple[Path, Path]:
    """Writes a store with dataset ``alloy`` and a teacher model file; returns (store, teacher)."""
    torch.manual_seed(0)
    alloy = alloy_frames(frames, seed=3)
    store = Store.open(root / "store", create=True)
    info = DatasetInfo(name="alloy", level_of_theory=LevelOfTheory(code="ASE", functional="EMT"))
    with store.writer(info) as writer:
        for index, atoms in enumerate(alloy):
            writer.add(frame_from_atoms(atoms, source="demo", source_index=index))
    teacher = DPA2Model(tiny_dpa2_config(ELEMENTS))
    specs = sorted(set(teacher.descriptor.neighbor_specs().values()), reverse=True)
    batches = batches_from_atoms(
        alloy,
        "default",
        ELEMENTS,
        specs,
        lambda chunk, elements, block: model_input_from_atoms(
            chunk, elements, block, num_threads=1
        ),
        frames_per_batch=4,
    )
    initialize_from_data(teacher, {"default": batches})
    config = TrainerConfig(
        steps=teacher_steps,
        learning_rate=LearningRateConfig(start=3e-3, stop=1e-3, decay_steps=5),
        validate_every=0,
        checkpoint_every=0,
        log_every=5,
    )
    Trainer(
        teacher, config, InMemoryStream({"default": batches}), root / "teacher_run", progress=False
    ).run()
    teacher_path = root / "teacher.pt"
    save_checkpoint(teacher, teacher_path)
    return root / "store", teacher_path


def tiny_config(store: Path, teacher: Path, output: Path, **loop) -> DistillConfig:
    """A loop small enough for the default test suite."""
    return DistillConfig(
        store=store,
        teacher=TeacherSection(model=teacher),
        source=SourceSection(dataset="alloy", initial_frames=6, holdout_frames=4),
        output_dir=output,
        student=StudentSection(
            cutoff=4.0, max_neighbors=40, neurons=(4, 8), axis_neurons=4, fitting_neurons=(8, 8)
        ),
        trainer=TrainerConfig(
            steps=8,
            learning_rate=LearningRateConfig(start=3e-3, stop=1e-3, decay_steps=4),
            validate_every=0,
            checkpoint_every=4,
            log_every=4,
        ),
        exploration=ExplorationConfig(
            temperatures=(300.0, 1200.0), steps=12, sample_every=4, max_starts=2, timestep_fs=2.0
        ),
        trust=TrustLevels(low=0.05, high=5.0, max_candidates=3),
        loop=LoopSection(**{"max_iterations": 2, **loop}),
    )
