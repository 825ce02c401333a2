"""``LAMCalculator``: an ASE calculator over a lamforge model (energy, forces, stress).

Neighbour lists come from the Rust core (``lamforge.neighbors``) in the dense layout the model
reads; periodic images enter only through integer shifts. The stress is ``-virial / volume``
(ASE's sign, eV/Å^3) and is available for frames periodic in all three directions.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from lamforge.calculators.verlet import VerletNeighbors
from lamforge.nn.forces import evaluate
from lamforge.nn.inputs import ModelInput, NeighborList, atom_types_from_numbers
from lamforge.nn.loading import load_model
from lamforge.nn.model import DPA2Model
from lamforge.nn.se_e2_a import SeAModel
from lamforge.nn.se_e2_a_inference import evaluate_tabulated, slot_width


def _full_to_voigt(matrix: np.ndarray) -> np.ndarray:
    return np.array(
        [matrix[0, 0], matrix[1, 1], matrix[2, 2], matrix[1, 2], matrix[0, 2], matrix[0, 1]]
    )


class LAMCalculator(Calculator):
    """ASE calculator of a lamforge model.

    Args:
        model: A model (DPA-2, or an se_e2_a student: anything with the ``DPA2Model``
            interface), or a model file (``lamforge.nn.loading.load_model`` reads it).
        head: Head to use (required when the model has several).
        device: Torch device (default: CUDA when available, else CPU).
        num_threads: Threads of the neighbour search (0: all cores).
        skin: Verlet skin (Å): neighbour lists are searched at cutoff + skin and reused while no
            atom moved more than skin / 2 (same results as searching every step). 0 searches at
            every evaluation.
        compile: For a compressed se_e2_a model (``SeAModel.compress``): run its evaluation
            (``lamforge.nn.se_e2_a_inference``) through ``torch.compile``, which fuses its many
            small element-wise steps (about 1.4x faster on one CPU thread). The first evaluation
            of each structure size and slot width compiles (seconds; on CPU it needs a C++
            compiler). Ignored for other models.

    Results: ``energy`` and ``free_energy`` (eV), ``energies`` (per atom, eV), ``forces`` (eV/Å)
    and, for fully periodic cells, ``stress`` (Voigt, eV/Å^3, ASE sign).
    """

    implemented_properties = ("energy", "free_energy", "energies", "forces", "stress")

    def __init__(
        self,
        model: DPA2Model | torch.nn.Module | str | Path,
        head: str | None = None,
        device: str | torch.device | None = None,
        num_threads: int = 0,
        skin: float = 0.0,
        compile: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if isinstance(model, str | Path):
            model = load_model(model)
        self.model = model.to(self.device).eval()
        self.model.head(head)  # fails early, naming the heads, if the choice is ambiguous
        self.head = head
        # Every block the model reads; blocks with equal specs are built once.
        self.specs = sorted(set(self.model.descriptor.neighbor_specs().values()), reverse=True)
        self.neighbors = VerletNeighbors(self.specs, skin, num_threads)
        # A compressed se_e2_a model has hand-written derivatives (no autograd graph per step).
        self.tabulated = isinstance(model, SeAModel) and model.descriptor.block.table is not None
        self._evaluate_tabulated = (
            torch.compile(evaluate_tabulated, dynamic=False)
            if compile and self.tabulated
            else evaluate_tabulated
        )
        # Per-structure constants, rebuilt only when the atoms change (not at every MD step).
        self._numbers: bytes | None = None
        self._warned_dropped = False
        self._atom_types = self._frame_index = torch.zeros(0, dtype=torch.int64)

    def _inputs(self, atoms: Atoms) -> ModelInput:
        pbc = tuple(bool(p) for p in atoms.pbc)
        cell = atoms.cell.array if any(pbc) else None
        blocks = self.neighbors.blocks(atoms.positions, cell, pbc, atoms.numbers)
        self._warn_dropped(atoms)
        numbers = atoms.numbers.tobytes()
        if numbers != self._numbers:
            types = atom_types_from_numbers(atoms.numbers, self.model.elements)
            self._atom_types = types.to(self.device)
            self._frame_index = torch.zeros(len(atoms), dtype=torch.int64, device=self.device)
            self._numbers = numbers
        dtype, device = self.model.dtype, self.device
        return ModelInput(
            positions=torch.as_tensor(atoms.positions, dtype=dtype, device=device),
            atom_types=self._atom_types,
            cell=torch.as_tensor(
                np.zeros((3, 3)) if cell is None else cell, dtype=dtype, device=device
            )[None],
            frame_index=self._frame_index,
            neighbors=tuple(
                NeighborList(
                    cutoff=cutoff, max_neighbors=cap,
                    index=torch.from_numpy(index).to(device),
                    shifts=torch.from_numpy(shifts).to(device),
                )
                for (cutoff, cap), (index, shifts) in zip(self.specs, blocks, strict=True)
            ),
        )  # fmt: skip

    def _warn_dropped(self, atoms: Atoms) -> None:
        """Warn (once per calculator) when a neighbour cap leaves neighbours out.

        Like deepmd-kit, each block keeps an atom's nearest ``max_neighbors`` neighbours; beyond
        that the energy is not a smooth function of the positions (a neighbour entering the cap
        pushes another out), so MD and relaxations at such densities are unreliable.
        """
        dropped = [
            (cutoff, cap, count)
            for (cutoff, cap), count in zip(self.specs, self.neighbors.num_dropped, strict=True)
            if count
        ]
        if not dropped or self._warned_dropped:
            return
        self._warned_dropped = True
        details = "; ".join(
            f"{count} pair(s) within {cutoff:g} Å beyond max_neighbors={cap}"
            for cutoff, cap, count in dropped
        )
        warnings.warn(
            f"LAMCalculator: {len(atoms)} atoms ({atoms.get_chemical_formula()}): {details}. "
            "Each atom keeps its nearest neighbours only, so the energy is not smooth here; "
            "this structure is denser than the model's neighbour caps allow.",
            RuntimeWarning,
            stacklevel=2,
        )

    def check_state(self, atoms: Atoms, tol: float = 1e-15) -> list[str]:
        """What changed since the last calculation, among what the model reads.

        The model reads positions, atomic numbers, cell and periodicity only. Comparing just those
        (exactly) costs a few microseconds, where ASE's default comparison of every per-atom array
        with a tolerance costs about as much as evaluating a compressed student.
        """
        previous = self.atoms
        if previous is None or len(previous) != len(atoms):
            return super().check_state(atoms, tol)
        pairs = {
            "positions": (previous.positions, atoms.positions),
            "numbers": (previous.numbers, atoms.numbers),
            "cell": (previous.cell.array, atoms.cell.array),
            "pbc": (previous.pbc, atoms.pbc),
        }
        return [name for name, (old, new) in pairs.items() if not np.array_equal(old, new)]

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: tuple[str, ...] = ("energy",),
        system_changes: tuple[str, ...] = all_changes,
    ) -> None:
        """Evaluates the model on ``atoms`` and stores the results."""
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        inputs = self._inputs(atoms)
        periodic = bool(atoms.pbc.all())
        if self.tabulated:
            config = self.model.config
            block = inputs.neighbor_list(config.cutoff, config.max_neighbors)
            output = self._evaluate_tabulated(
                self.model, inputs, self.head, virial=periodic, width=slot_width(block.index)
            )
        else:
            output = evaluate(self.model, inputs, self.head, forces=True, virial=periodic)
        energy = float(output.energy[0].detach())
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "energies": output.atomic_energies.detach().cpu().numpy().astype(np.float64),
            "forces": output.forces.detach().cpu().numpy().astype(np.float64),
        }
        if periodic:
            virial = output.virial[0].detach().cpu().numpy().astype(np.float64)
            self.results["stress"] = _full_to_voigt(-virial / atoms.get_volume())
