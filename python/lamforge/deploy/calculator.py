"""``DeployedCalculator``: an ASE calculator over a deployed-model file (no lamforge model code)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from lamforge.deploy.runtime import DeployedModel


class DeployedCalculator(Calculator):
    """ASE calculator of a file written by ``lamforge export``.

    Args:
        model: a :class:`DeployedModel` or the path of a deployed-model file.
        num_threads: threads of the neighbour search (0: all cores); only with a path.

    Results: ``energy`` and ``free_energy`` (eV), ``energies`` (per atom, eV), ``forces`` (eV/Å)
    and, for cells periodic in all three directions, ``stress`` (Voigt, eV/Å^3, ASE's sign:
    ``-virial / volume``), as ``lamforge.calculators.LAMCalculator`` gives for the source model.
    """

    implemented_properties = ("energy", "free_energy", "energies", "forces", "stress")

    def __init__(self, model: DeployedModel | str | Path, num_threads: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(model, DeployedModel):
            model = DeployedModel(model, num_threads)
        self.model = model

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: tuple[str, ...] = ("energy",),
        system_changes: tuple[str, ...] = all_changes,
    ) -> None:
        """Evaluates the program on ``atoms`` and stores the results."""
        super().calculate(atoms, properties, system_changes)
        output = self.model.evaluate(self.atoms)
        energy = float(output.energy[0])
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "energies": output.atomic_energies.numpy().astype(np.float64),
            "forces": output.forces.numpy().astype(np.float64),
        }
        if self.atoms.pbc.all():
            virial = output.virial[0].numpy().astype(np.float64)
            stress = -virial / self.atoms.get_volume()
            self.results["stress"] = stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
