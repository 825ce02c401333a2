"""se_e2_a: the DeePMD smooth-edition descriptor with two-body embedding, as a fast student model.

Per centre i with neighbours j in the dense, distance-sorted block (Zhang et al., NeurIPS 2018,
"End-to-end symmetry preserving inter-atomic potential energy model"):

    R_ij  = (sw(r_ij) · [1/r, x/r², y/r², z/r²]) / std[t_i]        [N, 4]   (lamforge.nn.env_mat)
    G_ij  = EmbeddingNet_{t_j}(R_ij[0])                               [N, ng]  (one net per
            neighbour element; per (centre, neighbour) pair with ``type_one_side=False``)
    Mom_i = (1/N) R_i^T G_i                                           [4, ng]
    D_i   = Mom_i^T Mom_i[:, :M]                                      [ng, M]  (M = axis_neurons)

The fitting head is lamforge's shared :class:`~lamforge.nn.fitting.EnergyHead`; the centre's
element reaches it through a learned type embedding concatenated to D_i (deepmd-kit instead keeps
one fitting net per element; one shared head keeps the multi-head training code unchanged).

The environment mean is always zero (deepmd-kit ``set_davg_zero``): in our mixed-element dense
block an empty slot carries the type of its frame's first atom, so only a zero row for empty slots
keeps the energy smooth when a neighbour leaves the cutoff (a non-zero mean would give the empty
slot a row fed through the wrong element's net).

:class:`SeAModel` is an :class:`~lamforge.nn.model.EnergyModel` like ``DPA2Model`` (its
descriptor has ``neighbor_specs()`` and ``statistics_blocks()``), so forces, training, bias
fitting and the ASE calculator work on it unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lamforge.nn.checkpoint import save_model_file
from lamforge.nn.config import Activation, FittingConfig, Precision
from lamforge.nn.env_mat import smooth_switch
from lamforge.nn.fitting import EnergyHead
from lamforge.nn.geometry import BlockGeometry
from lamforge.nn.inputs import ModelInput
from lamforge.nn.layers import EmbeddingNet, TypeEmbedding
from lamforge.nn.model import DTYPES, EnergyModel
from lamforge.nn.repinit import _StatisticsBlock
from lamforge.nn.statistics import environment_statistics
from lamforge.nn.tabulate import EmbeddingTable, TableConfig

FORMAT = "lamforge.se_e2_a/1"
ROLE = "se_e2_a"


@dataclass(kw_only=True, frozen=True)
class SeAConfig:
    """A se_e2_a model (deepmd-kit ``descriptor.type = se_e2_a``, names in the comments).

    Attributes:
        elements: The element list (``type_map``).
        cutoff: Cutoff radius in Å (``rcut``).
        cutoff_smooth: Where the switch starts (``rcut_smth``).
        max_neighbors: Slots of the dense neighbour block (``sum(sel)``).
        neurons: Embedding net widths (``neuron``).
        axis_neurons: Columns M of the second moment factor (``axis_neuron``).
        type_one_side: One embedding net per neighbour element (True) or per (centre,
            neighbour) pair (``type_one_side``).
        type_embedding_dim: Width of the centre-element embedding appended to D_i.
        resnet_dt: Timestep vectors in the embedding net (``resnet_dt``).
        activation: Embedding net activation (``activation_function``).
        env_protection: Added to r in the denominators (``env_protection``).
        heads: Energy heads by name.
        precision: ``float64`` or ``float32``.
        seed: Initialisation seed.
        table: Set by :meth:`SeAModel.compress`: the embedding nets are evaluated through a
            tabulation (:mod:`lamforge.nn.tabulate`) instead of the nets; None for the nets.
    """

    elements: tuple[str, ...]
    cutoff: float = 6.0
    cutoff_smooth: float = 0.5
    max_neighbors: int = 120
    neurons: tuple[int, ...] = (25, 50, 100)
    axis_neurons: int = 16
    type_one_side: bool = True
    type_embedding_dim: int = 8
    resnet_dt: bool = False
    activation: Activation = "tanh"
    env_protection: float = 0.0
    heads: dict[str, FittingConfig] = field(
        default_factory=lambda: {"default": FittingConfig(neurons=(240, 240, 240))}
    )
    precision: Precision = "float64"
    seed: int = 1
    table: TableConfig | None = None

    def __post_init__(self) -> None:
        if not self.elements or len(set(self.elements)) != len(self.elements):
            raise ValueError(
                f"se_e2_a config: elements must be distinct and non-empty, got {self.elements}"
            )
        if not 0 <= self.cutoff_smooth < self.cutoff:
            raise ValueError(
                f"se_e2_a config: need 0 <= cutoff_smooth < cutoff, got {self.cutoff_smooth}, "
                f"{self.cutoff}"
            )
        if self.max_neighbors < 1 or not self.neurons:
            raise ValueError("se_e2_a config: max_neighbors and neurons must be positive")
        if not 1 <= self.axis_neurons <= self.neurons[-1]:
            raise ValueError(
                f"se_e2_a config: axis_neurons {self.axis_neurons} must be in 1..{self.neurons[-1]}"
            )
        if not self.heads:
            raise ValueError("se_e2_a config: at least one head is required")
        if self.precision not in DTYPES:
            raise ValueError(f"se_e2_a config: precision must be one of {sorted(DTYPES)}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible nested dict (tuples become lists)."""
        data = dataclasses.asdict(self)
        return _plain(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SeAConfig:
        """Inverse of :meth:`to_dict`; unknown keys are errors naming them."""
        data = dict(data)
        heads = {
            str(name): _build(FittingConfig, head, f"se_e2_a heads.{name}")
            for name, head in data.pop("heads", {"default": {}}).items()
        }
        table = data.pop("table", None)
        if table is not None:
            table = _build(TableConfig, table, "se_e2_a table")
        return _build(cls, {**data, "heads": heads, "table": table}, "se_e2_a config")


def _build(kind: type, values: dict[str, Any], section: str) -> Any:
    known = {item.name for item in dataclasses.fields(kind)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{section}: unknown key(s) {unknown}; known keys are {sorted(known)}")
    return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


class SeABlock(_StatisticsBlock):
    """The two-body embedding block. Parameters: ``embeddings.{k}`` (one net per element/pair)."""

    def __init__(
        self, config: SeAConfig, *, dtype: torch.dtype, generator: torch.Generator | None
    ) -> None:
        num_elements = len(config.elements)
        super().__init__(
            cutoff=config.cutoff,
            cutoff_smooth=config.cutoff_smooth,
            max_neighbors=config.max_neighbors,
            num_elements=num_elements,
            protection=config.env_protection,
            dtype=dtype,
        )
        self.num_elements = num_elements
        self.type_one_side = config.type_one_side
        self.axis_neurons = config.axis_neurons
        num_nets = num_elements if config.type_one_side else num_elements * num_elements
        self.embeddings = nn.ModuleList(
            EmbeddingNet(
                1,
                config.neurons,
                activation=config.activation,
                resnet_dt=config.resnet_dt,
                dtype=dtype,
                generator=generator,
            )
            for _ in range(num_nets)
        )
        self.num_out = config.neurons[-1] * config.axis_neurons
        self.table = (
            None
            if config.table is None
            else EmbeddingTable(
                config.table, num_nets=num_nets, num_out=config.neurons[-1], dtype=dtype
            )
        )
        # Export mode (``lamforge.export``): every net runs on every slot instead of gathering
        # each net's real slots (data-dependent shapes); the same numbers.
        self.static_shapes = False

    def forward(self, geometry: BlockGeometry, atom_types: torch.Tensor) -> torch.Tensor:
        """D_i flattened ng-major, [num_atoms, neurons[-1] * axis_neurons]."""
        env, _ = self.normalised_environment(geometry, atom_types)
        num_atoms, num_slots, _ = env.shape
        net_index = geometry.neighbor_types
        if not self.type_one_side:
            net_index = atom_types.unsqueeze(1) * self.num_elements + net_index
        if self.table is not None:
            moment = self.table.moments(env, net_index, num_slots)
            descriptor = torch.matmul(moment.transpose(1, 2), moment[:, :, : self.axis_neurons])
            return descriptor.reshape(num_atoms, -1)
        # Only real slots go through a net (empty rows of R are zero, so their G is irrelevant);
        # each slot goes through exactly one net, gathered and scattered back by index.
        radial = env[..., :1].reshape(-1, 1)
        flat_index = net_index.reshape(-1)
        real = geometry.mask.reshape(-1)
        if self.static_shapes:
            pair = self._pair_static(radial, flat_index, real)
        else:
            pair = self._pair_gathered(radial, flat_index, real, env)
        pair = pair.reshape(num_atoms, num_slots, -1)
        moment = torch.matmul(env.transpose(1, 2), pair) / num_slots  # [num_atoms, 4, ng]
        descriptor = torch.matmul(moment.transpose(1, 2), moment[:, :, : self.axis_neurons])
        return descriptor.reshape(num_atoms, -1)

    def _pair_static(
        self, radial: torch.Tensor, flat_index: torch.Tensor, real: torch.Tensor
    ) -> torch.Tensor:
        """G of every slot, each net run on all slots and selected (no data-dependent shapes)."""
        pair = None
        for net_id, net in enumerate(self.embeddings):
            selected = (real & (flat_index == net_id)).unsqueeze(-1)
            values = torch.where(selected, net(radial), 0.0)
            pair = values if pair is None else pair + values
        assert pair is not None
        return pair

    def _pair_gathered(
        self, radial: torch.Tensor, flat_index: torch.Tensor, real: torch.Tensor, env: torch.Tensor
    ) -> torch.Tensor:
        """G of every slot, each net run only on its own real slots."""
        pair = None
        for net_id, net in enumerate(self.embeddings):
            rows = torch.nonzero(real & (flat_index == net_id)).squeeze(1)
            if rows.numel() == 0:
                continue
            values = net(radial[rows])
            if pair is None:
                pair = values.new_zeros(radial.shape[0], values.shape[-1])
            pair = pair.index_copy(0, rows, values)
        if pair is None:  # no real neighbour anywhere: every moment is zero
            ng = self.embeddings[0].num_out
            pair = env.new_zeros(radial.shape[0], ng) + 0.0 * radial
        return pair


class SeADescriptor(nn.Module):
    """se_e2_a descriptor plus the centre-element embedding: [D_i ; T(t_i)]."""

    def __init__(
        self, config: SeAConfig, *, dtype: torch.dtype, generator: torch.Generator | None
    ) -> None:
        super().__init__()
        self.config = config
        self.block = SeABlock(config, dtype=dtype, generator=generator)
        self.type_embedding = TypeEmbedding(
            len(config.elements), config.type_embedding_dim, dtype=dtype, generator=generator
        )
        self.num_out = self.block.num_out + config.type_embedding_dim

    def neighbor_specs(self) -> dict[str, tuple[float, int]]:
        """The one neighbour block read: role -> (cutoff, max_neighbors)."""
        return {ROLE: (self.config.cutoff, self.config.max_neighbors)}

    def statistics_blocks(self) -> dict[str, _StatisticsBlock]:
        """Blocks with environment statistics, by role."""
        return {ROLE: self.block}

    def forward(
        self, geometries: dict[str, BlockGeometry], atom_types: torch.Tensor
    ) -> torch.Tensor:
        """[num_atoms, num_out] descriptor of every atom."""
        return torch.cat(
            [self.block(geometries[ROLE], atom_types), self.type_embedding(atom_types)], -1
        )


class SeAModel(EnergyModel):
    """se_e2_a descriptor plus named energy heads (the energy path of :class:`EnergyModel`).

    Attributes:
        config: the :class:`SeAConfig`.
        descriptor: :class:`SeADescriptor`.
        heads: ``nn.ModuleDict`` of :class:`EnergyHead`.
    """

    def __init__(self, config: SeAConfig) -> None:
        super().__init__()
        self.config = config
        self.dtype = DTYPES[config.precision]
        generator = torch.Generator().manual_seed(config.seed)
        self.descriptor = SeADescriptor(config, dtype=self.dtype, generator=generator)
        self.heads = nn.ModuleDict(
            {
                name: EnergyHead(
                    head,
                    num_in=self.descriptor.num_out,
                    num_elements=len(config.elements),
                    dtype=self.dtype,
                    generator=generator,
                )
                for name, head in config.heads.items()
            }
        )

    def compress(self, step: float = 0.05, min_distance: float = 0.5) -> SeAModel:
        """A copy whose embedding nets are tabulated (deepmd-kit ``dp compress``).

        The copy evaluates G(s) from piecewise quintic polynomials fitted to the nets' values
        and first two derivatives on knots spaced ``step`` apart in s (:mod:`lamforge.nn.tabulate`);
        energies and forces agree with this model to ~1e-9 relative in float64 at the default
        step. The per-pair cost no longer depends on the embedding widths. Call it after
        training (and after the environment statistics are set): the copy's table is a buffer,
        fixed; training it changes only the fitting net and the type embedding.

        Args:
            step: Knot spacing in the normalised radial input s (of order 1).
            min_distance: The table covers pairs down to this distance (Å); closer pairs
                continue its last polynomial piece.

        Returns:
            The compressed model (saved and loaded like any se_e2_a model).
        """
        block = self.descriptor.block
        distance = torch.tensor(float(min_distance), dtype=torch.float64)
        switch = smooth_switch(distance, self.config.cutoff_smooth, self.config.cutoff)
        radial = switch / (distance + self.config.env_protection)
        upper = float(radial / block.std[:, 0].double().min())
        table = TableConfig(step=step, upper=upper, min_distance=min_distance)
        model = SeAModel(dataclasses.replace(self.config, table=table))
        missing, unexpected = model.load_state_dict(self.state_dict(), strict=False)
        assert missing == ["descriptor.block.table.weight"] and not unexpected, (
            missing,
            unexpected,
        )
        assert model.descriptor.block.table is not None
        model.descriptor.block.table.fill(model.descriptor.block.embeddings)
        return model.to(next(self.parameters()).device).train(self.training)


@torch.no_grad()
def compute_se_a_statistics(model: SeAModel, batches: Iterable[ModelInput]) -> None:
    """Store the environment std of ``model`` from a sample of inputs (mean kept at zero)."""
    statistics = environment_statistics(model, batches)  # type: ignore[arg-type]
    mean, std = statistics[ROLE].mean_std(set_mean_zero=True)
    model.descriptor.block.mean.copy_(torch.from_numpy(mean))
    model.descriptor.block.std.copy_(torch.from_numpy(std))


def save_se_a(model: SeAModel, path: str | Path) -> None:
    """Write config, weights, statistics and biases of ``model`` (plain data only, atomically)."""
    save_model_file(model, FORMAT, path)


def load_se_a(path: str | Path, map_location: str | torch.device = "cpu") -> SeAModel:
    """Read a model written by :func:`save_se_a` (``weights_only``: loading runs no code).

    Raises:
        ValueError: the file is not a se_e2_a checkpoint or its state does not fit its config.
    """
    path = Path(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise ValueError(f"{path}: not a loadable lamforge checkpoint ({error})") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path}: expected checkpoint format {FORMAT!r}, found {found!r}")
    model = SeAModel(SeAConfig.from_dict(payload["config"]))
    missing, unexpected = model.load_state_dict(payload["state"], strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path}: state does not match its config (missing {missing}, unexpected {unexpected})"
        )
    return model.to(map_location)
