"""Extra distillation loss terms beyond energy and force matching (options, off by default).

Per-atom energies: the teacher's atomic energies e_i are labels a DFT code cannot give; matching
them tells the student how the teacher splits the energy, a much denser signal than one number
per frame:

    L_e = w_e · mean_i (e_i^student - e_i^teacher)²

Hessian-vector products: for random directions v (one Gaussian entry per atom and component), the
product H v = ∂/∂x (∇_x E · v) is second-order information at the cost of one more backward
(double backward through the model; the student's needs a third backward for the weights):

    L_H = w_H · mean_{v, i, c} ((H v)_ic^student - (H v)_ic^teacher)²

Both are computed online from the teacher for each training batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lamforge.distill.students import EnergyModel
from lamforge.nn.inputs import ModelInput


@dataclass(frozen=True, kw_only=True)
class DistillLossConfig:
    """Weights of the extra terms.

    Attributes:
        atomic_energy: Weight of the per-atom energy term (1/eV²); 0 turns it off.
        hessian: Weight of the Hessian-vector product term (Å⁴/eV²); 0 turns it off.
        hessian_directions: Random directions per batch.
        seed: Seed of the directions (the directions of step t depend only on seed and t).
    """

    atomic_energy: float = 0.0
    hessian: float = 0.0
    hessian_directions: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.atomic_energy < 0 or self.hessian < 0 or self.hessian_directions < 1:
            raise ValueError(
                "distill loss: weights must be non-negative and hessian_directions at least 1"
            )

    @property
    def active(self) -> bool:
        """Whether any extra term is on."""
        return self.atomic_energy > 0 or self.hessian > 0


def hessian_vector_product(
    model: EnergyModel,
    inputs: ModelInput,
    directions: torch.Tensor,
    head: str | None = None,
    *,
    create_graph: bool = False,
) -> torch.Tensor:
    """H v of the total energy with respect to positions, by double backward.

    Args:
        model: The model.
        inputs: The batch.
        directions: [num_directions, num_atoms, 3] directions v.
        head: Head to use.
        create_graph: Keep the result differentiable w.r.t. the weights (for training).

    Returns:
        [num_directions, num_atoms, 3], (H v)_ic = Σ_jd ∂²E/∂x_ic∂x_jd v_jd.
    """
    if directions.ndim != 3 or directions.shape[1:] != (inputs.num_atoms, 3):
        raise ValueError(
            f"directions must be [num_directions, {inputs.num_atoms}, 3], got "
            f"{tuple(directions.shape)}"
        )
    with torch.enable_grad():
        positions = inputs.positions.to(model.dtype).detach().requires_grad_(True)
        geometries, _ = model.geometries(inputs, positions)
        energy = model.atomic_energies_from_geometry(geometries, inputs.atom_types, head).sum()
        (gradient,) = torch.autograd.grad(energy, positions, create_graph=True)
        products = []
        for index, direction in enumerate(directions.to(gradient.dtype)):
            (product,) = torch.autograd.grad(
                (gradient * direction).sum(),
                positions,
                create_graph=create_graph,
                retain_graph=create_graph or index < len(directions) - 1,
            )
            products.append(product)
    return torch.stack(products)


def random_directions(
    num_atoms: int, count: int, seed: int, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """[count, num_atoms, 3] standard normal directions from their own generator."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, num_atoms, 3, generator=generator, dtype=dtype)


@dataclass(kw_only=True)
class DistillTerms:
    """Extra loss and its parts' RMSEs (eV per atom, eV/Å²)."""

    total: torch.Tensor
    atomic_energy_rmse: float | None = None
    hessian_rmse: float | None = None


def distillation_terms(
    student: EnergyModel,
    teacher: EnergyModel,
    inputs: ModelInput,
    config: DistillLossConfig,
    *,
    student_head: str | None = None,
    teacher_head: str | None = None,
    step: int = 0,
) -> DistillTerms:
    """The extra terms of ``config`` for one batch, differentiable w.r.t. the student's weights."""
    total = torch.zeros((), dtype=torch.float64)
    terms = DistillTerms(total=total)
    if config.atomic_energy > 0:
        with torch.no_grad():
            target = teacher.atomic_energies(inputs, teacher_head).double()
        predicted = student.atomic_energies(inputs, student_head).double()
        squares = (predicted - target) ** 2
        total = total + config.atomic_energy * squares.mean()
        terms.atomic_energy_rmse = float(squares.detach().mean().sqrt())
    if config.hessian > 0:
        directions = random_directions(
            inputs.num_atoms, config.hessian_directions, config.seed * 1_000_003 + step
        )
        target = hessian_vector_product(teacher, inputs, directions, teacher_head).detach()
        predicted = hessian_vector_product(
            student, inputs, directions, student_head, create_graph=True
        )
        squares = (predicted.double() - target.double()) ** 2
        total = total + config.hessian * squares.mean()
        terms.hessian_rmse = float(squares.detach().mean().sqrt())
    terms.total = total
    return terms
