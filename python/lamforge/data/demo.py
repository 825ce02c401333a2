"""Deterministic demo data: small DFT-like datasets computed with ASE's EMT potential.

The quickstart and the tests need labelled data without downloading anything. EMT (effective medium
theory) is a real many-body potential for fcc metals that evaluates in microseconds, so it gives
physically consistent energies, forces and stresses at no cost.

To imitate what makes multi-dataset pre-training hard, every task adds its own constant energy per
element (``DemoTask.energy_offsets``) to the EMT energy, the way two DFT codes or functionals
disagree
on absolute energies. A single shared energy head would be wrong for all but one task; one head per
task with its own per-element bias (the DPA-2 recipe) is right. The offsets change no force and no
stress, exactly like a change of pseudopotential reference.

Tasks (``demo_tasks``):

* ``bulk``: fcc and bcc crystals of seven EMT metals, strained and rattled; periodic, with stress.
* ``surfaces``: fcc(111) and fcc(100) slabs with vacuum; periodic in x and y only.
* ``clusters``: icosahedral and octahedral nanoparticles without a cell.
* ``alloy`` (downstream, held out of pre-training): random Cu-Au fcc alloys, periodic, with stress.

Units: eV, Å, eV/Å and eV/Å^3 (stress with ASE's sign convention: positive under tension).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk, fcc100, fcc111
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.cluster import Icosahedron, Octahedron
from ase.data import atomic_numbers, reference_states
from tqdm.auto import tqdm

#: Metals that ASE's EMT parametrises and that the pre-training tasks use.
PRETRAIN_METALS: tuple[str, ...] = ("Al", "Ni", "Cu", "Pd", "Ag", "Pt", "Au")

#: Binary of the held-out downstream task.
ALLOY_ELEMENTS: tuple[str, str] = ("Cu", "Au")


@dataclass(frozen=True, kw_only=True)
class DemoConfig:
    """Size and seed of the generated demo data.

    Attributes:
        frames_per_task: Number of frames generated for each task.
        seed: Seed of every random choice; the same seed gives bit-identical data.
        offset_scale: Per-element energy offsets are drawn uniformly from
            ``[-offset_scale, offset_scale]`` eV per atom for each task.
    """

    frames_per_task: int = 96
    seed: int = 0
    offset_scale: float = 3.0

    def __post_init__(self) -> None:
        if self.frames_per_task < 1:
            raise ValueError(f"frames_per_task must be at least 1, got {self.frames_per_task}")
        if self.offset_scale < 0:
            raise ValueError(f"offset_scale must be non-negative, got {self.offset_scale}")


@dataclass(frozen=True, kw_only=True)
class DemoTask:
    """One generated dataset.

    Attributes:
        name: Task name (``bulk``, ``surfaces``, ``clusters``, ``alloy``).
        description: One line on what the frames are.
        downstream: True for the task held out of pre-training.
        energy_offsets: eV per atom added to the EMT energy, by element symbol.
        frames: Labelled structures; each carries a ``SinglePointCalculator`` with ``energy`` and
            ``forces`` (and ``stress`` when the frame is periodic in all three directions).
    """

    name: str
    description: str
    downstream: bool
    energy_offsets: dict[str, float]
    frames: list[Atoms] = field(repr=False)

    @property
    def level_of_theory(self) -> str:
        """Provenance string recorded with the data."""
        return f"ASE EMT + per-element energy offsets of demo task '{self.name}'"


def _strain(rng: np.random.Generator, atoms: Atoms, magnitude: float) -> None:
    """Applies a random symmetric strain of at most ``magnitude`` to the cell and the atoms."""
    strain = rng.uniform(-magnitude, magnitude, size=(3, 3))
    strain = 0.5 * (strain + strain.T)
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)


def _lattice_constant(symbol: str) -> float:
    return float(reference_states[atomic_numbers[symbol]]["a"])


def _bulk_frame(rng: np.random.Generator) -> Atoms:
    symbol = PRETRAIN_METALS[rng.integers(len(PRETRAIN_METALS))]
    if rng.random() < 0.6:
        atoms = bulk(symbol, "fcc", a=_lattice_constant(symbol), cubic=True)
        atoms = atoms.repeat((1, 1, int(rng.integers(1, 3))))
    else:
        # bcc with the fcc atomic volume: a_bcc^3 / 2 = a_fcc^3 / 4.
        a_bcc = _lattice_constant(symbol) / 2 ** (1 / 3)
        atoms = bulk(symbol, "bcc", a=a_bcc, cubic=True).repeat((2, 2, int(rng.integers(1, 3))))
    _strain(rng, atoms, 0.04)
    atoms.rattle(stdev=0.08, seed=int(rng.integers(2**31)))
    return atoms


def _surface_frame(rng: np.random.Generator) -> Atoms:
    symbol = PRETRAIN_METALS[rng.integers(len(PRETRAIN_METALS))]
    builder = fcc111 if rng.random() < 0.5 else fcc100
    layers = int(rng.integers(2, 4))
    atoms = builder(symbol, size=(2, 2, layers), a=_lattice_constant(symbol), vacuum=5.0)
    atoms.info.pop("adsorbate_info", None)  # ASE's builder metadata, not a label
    atoms.rattle(stdev=0.1, seed=int(rng.integers(2**31)))
    return atoms


def _cluster_frame(rng: np.random.Generator) -> Atoms:
    symbol = PRETRAIN_METALS[rng.integers(len(PRETRAIN_METALS))]
    scale = rng.uniform(0.96, 1.04)
    if rng.random() < 0.5:
        atoms = Icosahedron(symbol, noshells=2, latticeconstant=_lattice_constant(symbol) * scale)
    else:
        atoms = Octahedron(symbol, length=3, latticeconstant=_lattice_constant(symbol) * scale)
    atoms = Atoms(atoms.get_chemical_symbols(), positions=atoms.positions, pbc=False)
    atoms.rattle(stdev=0.1, seed=int(rng.integers(2**31)))
    return atoms


def _alloy_frame(rng: np.random.Generator) -> Atoms:
    first, second = ALLOY_ELEMENTS
    fraction = rng.uniform(0.2, 0.8)
    # Vegard's law for the lattice constant of the random alloy.
    a = (1 - fraction) * _lattice_constant(first) + fraction * _lattice_constant(second)
    atoms = bulk(first, "fcc", a=a, cubic=True).repeat((2, 1, int(rng.integers(1, 3))))
    symbols = np.where(rng.random(len(atoms)) < fraction, second, first)
    atoms.set_chemical_symbols(symbols.tolist())
    _strain(rng, atoms, 0.03)
    atoms.rattle(stdev=0.08, seed=int(rng.integers(2**31)))
    return atoms


@dataclass(frozen=True)
class _TaskRecipe:
    name: str
    description: str
    downstream: bool
    build: Callable[[np.random.Generator], Atoms]
    elements: tuple[str, ...]


_RECIPES: tuple[_TaskRecipe, ...] = (
    _TaskRecipe("bulk", "strained, rattled fcc/bcc crystals", False, _bulk_frame, PRETRAIN_METALS),
    _TaskRecipe(
        "surfaces", "fcc(111)/(100) slabs with vacuum", False, _surface_frame, PRETRAIN_METALS
    ),
    _TaskRecipe("clusters", "nanoparticles without a cell", False, _cluster_frame, PRETRAIN_METALS),
    _TaskRecipe(
        "alloy", "random Cu-Au fcc alloys (downstream)", True, _alloy_frame, ALLOY_ELEMENTS
    ),
)

#: Names of the demo tasks, pre-training tasks first and the downstream task last.
TASK_NAMES: tuple[str, ...] = tuple(recipe.name for recipe in _RECIPES)


def label(atoms: Atoms, energy_offsets: dict[str, float]) -> Atoms:
    """Labels one structure with EMT plus the per-element offsets.

    Args:
        atoms: Structure to label; not modified.
        energy_offsets: eV per atom, by element symbol; every element of ``atoms`` must appear.

    Returns:
        A copy carrying a ``SinglePointCalculator`` with energy, forces and, when periodic in all
        three directions, stress.
    """
    labelled = atoms.copy()
    labelled.calc = EMT()
    energy = labelled.get_potential_energy()
    forces = labelled.get_forces()
    stress = labelled.get_stress(voigt=False) if labelled.pbc.all() else None
    energy += sum(energy_offsets[symbol] for symbol in labelled.get_chemical_symbols())
    labelled.calc = SinglePointCalculator(labelled, energy=energy, forces=forces, stress=stress)
    return labelled


def _iter_frames(
    recipe: _TaskRecipe, offsets: dict[str, float], config: DemoConfig, rng: np.random.Generator
) -> Iterator[Atoms]:
    for _ in range(config.frames_per_task):
        yield label(recipe.build(rng), offsets)


def demo_tasks(config: DemoConfig | None = None, *, progress: bool = False) -> list[DemoTask]:
    """Generates every demo task.

    Args:
        config: Sizes and seed; the defaults when omitted.
        progress: Show a progress bar per task.

    Returns:
        The tasks in ``TASK_NAMES`` order. The same config always gives identical frames.
    """
    config = config or DemoConfig()
    tasks = []
    for index, recipe in enumerate(_RECIPES):
        # One independent stream per task, so changing one recipe leaves the others unchanged.
        rng = np.random.default_rng([config.seed, index])
        offsets = {
            symbol: float(rng.uniform(-config.offset_scale, config.offset_scale))
            for symbol in recipe.elements
        }
        frames = list(
            tqdm(
                _iter_frames(recipe, offsets, config, rng),
                total=config.frames_per_task,
                desc=f"demo data: {recipe.name}",
                unit="frame",
                disable=not progress,
            )
        )
        tasks.append(
            DemoTask(
                name=recipe.name,
                description=recipe.description,
                downstream=recipe.downstream,
                energy_offsets=offsets,
                frames=frames,
            )
        )
    return tasks


def write_extxyz(task: DemoTask, path: Path) -> Path:
    """Writes a task's frames to an extended-XYZ file atomically (temporary file, then rename).

    Returns:
        The written path.
    """
    from ase.io import write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.partial")
    write(temporary, task.frames, format="extxyz")
    os.replace(temporary, path)
    return path
