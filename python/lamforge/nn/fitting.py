"""Energy fitting head: E_i = FittingNet(descriptor_i) + energy_bias[t_i] (spec §1.9).

One fitting net is shared by all elements (element information enters through the descriptor).
``energy_bias`` is deepmd-kit's ``out_bias`` (set by least squares from data, see
``lamforge.nn.statistics``); it is kept and added in float64 so that a float32 model does not lose
digits on the large per-element constants.
"""

from __future__ import annotations

import torch
from torch import nn

from lamforge.nn.config import FittingConfig
from lamforge.nn.layers import FittingNet


class EnergyHead(nn.Module):
    """One named energy head.

    Attributes:
        fitting_net: descriptor -> atomic energy, [num_in] -> [1].
        energy_bias: buffer [num_elements] float64, the per-element energy shift (eV).
    """

    def __init__(
        self,
        config: FittingConfig,
        *,
        num_in: int,
        num_elements: int,
        dtype: torch.dtype,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.fitting_net = FittingNet(
            num_in,
            1,
            config.neurons,
            activation=config.activation,
            resnet_dt=config.resnet_dt,
            dtype=dtype,
            generator=generator,
        )
        self.register_buffer("energy_bias", torch.zeros(num_elements, dtype=torch.float64))

    def forward(
        self,
        descriptor: torch.Tensor,
        atom_types: torch.Tensor,
        vacuum_descriptor: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Atomic energies.

        Args:
            descriptor: [num_atoms, num_in].
            atom_types: [num_atoms].
            vacuum_descriptor: [num_elements, num_in] descriptor of an isolated atom of each
                element; required when ``config.zero_isolated_atoms``.

        Returns:
            [num_atoms] float64.
        """
        fitted = self.fitting_net(descriptor).squeeze(-1)
        if self.config.zero_isolated_atoms:
            if vacuum_descriptor is None:
                raise ValueError("EnergyHead with zero_isolated_atoms needs vacuum_descriptor")
            fitted = fitted - self.fitting_net(vacuum_descriptor).squeeze(-1)[atom_types]
        return fitted.to(torch.float64) + self.energy_bias[atom_types]
