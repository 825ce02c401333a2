"""An ASE calculator for any lamforge model (DPA-2 or se_e2_a), for exploration and benchmarks.

``LAMCalculator`` itself accepts a ``DPA2Model`` or a DPA-2 file only (an ``isinstance`` check in
its constructor); everything else it does reads the common model interface, so this subclass only
widens what the constructor accepts.
"""

from __future__ import annotations

from pathlib import Path

import torch
from ase.calculators.calculator import Calculator

from lamforge.calculators.ase import LAMCalculator
from lamforge.distill.students import EnergyModel, load_model


class ModelCalculator(LAMCalculator):
    """:class:`LAMCalculator` over a DPA-2 or se_e2_a model, or any model file ``load_model`` reads.

    Args:
        model: A model or a model file.
        head: Head to use (required when the model has several).
        device: Torch device (default: CPU).
        num_threads: Threads of the neighbour search (0: all cores).
    """

    def __init__(
        self,
        model: EnergyModel | str | Path,
        head: str | None = None,
        device: str | torch.device = "cpu",
        num_threads: int = 0,
        **kwargs,
    ) -> None:
        Calculator.__init__(self, **kwargs)
        self.device = torch.device(device)
        if isinstance(model, str | Path):
            model = load_model(model)
        self.model = model.to(self.device).eval()
        self.model.head(head)  # fails early, naming the heads, if the choice is ambiguous
        self.head = head
        self.num_threads = num_threads
        self.specs = sorted(set(self.model.descriptor.neighbor_specs().values()), reverse=True)
