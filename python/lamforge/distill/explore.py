"""Exploration: MD driven by the student, and the model deviation of every explored frame.

Langevin NVT at several temperatures (optionally NPT with the model's stress, ASE's
``NPTBerendsen``) from starting structures; a frame is recorded every ``sample_every`` steps.
The deviation of a frame (DP-GEN's ``max_devi_f``) is the largest over atoms of the force
difference's norm; against the teacher it is exact (the teacher is the reference), and the spread
of a student ensemble estimates it without the teacher:

    deviation(teacher)  = max_i |F_i^student - F_i^teacher|
    deviation(ensemble) = max_i sqrt(mean_k |F_i^k - mean_k F_i^k|²)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms, units
from ase.constraints import FixCom
from ase.md.langevin import Langevin
from ase.md.nptberendsen import NPTBerendsen
from ase.md.velocitydistribution import Stationary, thermalize_momenta

from lamforge.calculators import LAMCalculator
from lamforge.distill.students import EnergyModel
from lamforge.distill.teacher import predict_frames


@dataclass(frozen=True, kw_only=True)
class ExplorationConfig:
    """MD settings of one exploration round.

    Attributes:
        temperatures: Thermostat temperatures (K); every start runs at every temperature.
        steps: MD steps per run.
        sample_every: Record a frame every this many steps.
        timestep_fs: Time step (fs).
        friction: Langevin friction (1/fs).
        npt: Berendsen NPT at ``pressure_bar`` instead of NVT (needs periodic cells and stress).
        pressure_bar: Target pressure of NPT (bar).
        max_starts: Starting structures per round (drawn from the start dataset).
        ensemble_size: Students trained per round (different seeds, each warm-started from its
            own last weights); with more than one, every explored frame also gets the ensemble
            spread (reported; selection uses the exact deviation from the teacher).
        compressed: Drive the MD of an se_e2_a student with its tabulated form
            (``SeAModel.compress``: the same forces to float rounding, about 2x faster); the
            deviations are still computed with the nets.
    """

    temperatures: tuple[float, ...] = (300.0,)
    steps: int = 100
    sample_every: int = 10
    timestep_fs: float = 0.5
    friction: float = 0.01
    npt: bool = False
    pressure_bar: float = 1.0
    max_starts: int = 4
    ensemble_size: int = 1
    compressed: bool = True

    def __post_init__(self) -> None:
        if not self.temperatures or min(self.temperatures) <= 0:
            raise ValueError(f"exploration temperatures must be positive, got {self.temperatures}")
        if self.steps < 1 or not 1 <= self.sample_every <= self.steps:
            raise ValueError(
                f"exploration needs steps >= 1 and 1 <= sample_every <= steps, got steps "
                f"{self.steps}, sample_every {self.sample_every}"
            )
        if self.timestep_fs <= 0 or self.friction < 0 or self.max_starts < 1:
            raise ValueError("exploration timestep, friction and max_starts must be positive")
        if self.ensemble_size < 1:
            raise ValueError(f"exploration ensemble_size must be >= 1, got {self.ensemble_size}")


def _run_one(
    calculator: LAMCalculator,
    start: Atoms,
    temperature: float,
    config: ExplorationConfig,
    seed: int,
) -> list[Atoms]:
    atoms = Atoms(numbers=start.numbers, positions=start.positions, cell=start.cell, pbc=start.pbc)
    atoms.calc = calculator
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
    Stationary(atoms)
    timestep = config.timestep_fs * units.fs
    if config.npt:
        if not atoms.pbc.all():
            raise ValueError("NPT exploration needs structures periodic in all three directions")
        dynamics = NPTBerendsen(
            atoms,
            timestep,
            temperature_K=temperature,
            pressure_au=config.pressure_bar * units.bar,
            taut=100 * units.fs,
            taup=1000 * units.fs,
            compressibility_au=4.57e-5 / units.bar,
        )
    else:
        dynamics = Langevin(
            atoms,
            timestep,
            temperature_K=temperature,
            friction=config.friction / units.fs,
            fixcm=False,
            rng=rng,
        )
        # Zero total momentum kept by a constraint (ASE's recommended replacement of fixcm).
        atoms.set_constraint(FixCom())
    recorded: list[Atoms] = []
    for _ in range(config.steps // config.sample_every):
        try:
            dynamics.run(config.sample_every)
        except ValueError:
            # The neighbour search refuses non-finite positions: the student blew the run up.
            # Its frames so far are kept (they carry the large deviations that teach the most).
            break
        positions = atoms.get_positions()
        if not np.isfinite(positions).all():
            break
        recorded.append(
            Atoms(numbers=atoms.numbers, positions=positions, cell=atoms.cell, pbc=atoms.pbc)
        )
    return recorded


def explore(
    student: EnergyModel,
    starts: Sequence[Atoms],
    config: ExplorationConfig,
    *,
    head: str | None = None,
    seed: int = 0,
    num_threads: int = 1,
) -> list[Atoms]:
    """MD with the student from every start at every temperature; the recorded frames in order.

    Raises:
        ValueError: no starting structures.
    """
    if not starts:
        raise ValueError("exploration needs at least one starting structure")
    device = next(student.parameters()).device  # the calculator must not move the student
    calculator = LAMCalculator(student, head=head, device=device, num_threads=num_threads)
    frames: list[Atoms] = []
    for start_index, start in enumerate(starts):
        for temperature_index, temperature in enumerate(config.temperatures):
            run_seed = seed * 1_000_003 + start_index * 1009 + temperature_index
            frames += _run_one(calculator, start, temperature, config, run_seed)
    return frames


def force_deviation(predicted: Sequence[Atoms], reference: Sequence[Atoms]) -> np.ndarray:
    """[num_frames] max over atoms of |F_predicted - F_reference| (eV/Å), frames in pairs."""
    if len(predicted) != len(reference):
        raise ValueError(f"{len(predicted)} predicted frames for {len(reference)} references")
    deviations = np.empty(len(predicted))
    for index, (mine, theirs) in enumerate(zip(predicted, reference, strict=True)):
        difference = mine.calc.results["forces"] - theirs.calc.results["forces"]
        deviations[index] = float(np.linalg.norm(difference, axis=1).max())
    return deviations


def ensemble_spread(
    models: Sequence[EnergyModel], frames: Sequence[Atoms], head: str | None = None
) -> np.ndarray:
    """[num_frames] DP-GEN's max_devi_f over a model ensemble (needs at least two models)."""
    if len(models) < 2:
        raise ValueError(f"an ensemble spread needs at least two models, got {len(models)}")
    predictions = [predict_frames(model, frames, head) for model in models]
    spreads = np.empty(len(frames))
    for index in range(len(frames)):
        forces = np.stack([p[index].calc.results["forces"] for p in predictions])
        variance = np.square(forces - forces.mean(axis=0)).sum(axis=-1).mean(axis=0)
        spreads[index] = float(np.sqrt(variance).max())
    return spreads
