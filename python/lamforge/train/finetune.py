"""Fine-tuning: a downstream model from a pre-trained one (DPA-2 paper, deepmd-kit ``--finetune``).

The descriptor (type embedding, repinit, repformers and their environment statistics) always comes
from the pre-trained model. The downstream head either starts from a chosen pre-training head
(``from_head``: the one whose data resemble the downstream set) or is fresh (``from_head=None``,
deepmd-kit's ``RANDOM``). Its per-element energy bias is then re-fitted on the downstream data:
``change`` (default with an inherited head) fits a shift on the residual of the inherited head,
``set`` (default for a fresh head) fits it from scratch. With ``freeze_descriptor`` only the head
trains. Evaluating right after :func:`finetune_model` without training is the paper's zero-shot
test (``lamforge test --zero-shot``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch

from lamforge.nn.config import FittingConfig
from lamforge.nn.inputs import ModelInput
from lamforge.nn.model import DPA2Model
from lamforge.nn.statistics import fit_energy_bias


@dataclass(frozen=True, kw_only=True)
class FinetuneConfig:
    """How to derive the downstream model.

    Attributes:
        head: Name of the downstream head (the downstream task).
        from_head: Pre-trained head to start from; None for a freshly initialised head.
        bias_mode: ``change`` or ``set``; None picks ``change`` with ``from_head`` else ``set``.
        freeze_descriptor: Train only the head.
        fitting: Fitting net of a fresh head (default: that of the first pre-trained head).
        seed: Seed of a fresh head's initialisation.
    """

    head: str = "downstream"
    from_head: str | None = None
    bias_mode: Literal["change", "set"] | None = None
    freeze_descriptor: bool = False
    fitting: FittingConfig | None = None
    seed: int = 0


def finetune_model(
    pretrained: DPA2Model,
    config: FinetuneConfig,
    sample: Iterable[tuple[ModelInput, torch.Tensor]],
) -> DPA2Model:
    """Builds the downstream model and re-fits its energy bias.

    Args:
        pretrained: The pre-trained model (not modified).
        config: Head choice, bias mode and freezing.
        sample: (inputs, frame energies in eV) of the downstream training data, for the bias.

    Returns:
        A one-head model named ``config.head``.

    Raises:
        KeyError: ``from_head`` is not a head of the pre-trained model.
    """
    if config.from_head is not None and config.from_head not in pretrained.heads:
        raise KeyError(
            f"pre-trained model has no head {config.from_head!r}; its heads are "
            f"{list(pretrained.heads)}"
        )
    source = pretrained.config.heads[config.from_head or next(iter(pretrained.config.heads))]
    fitting = source if config.from_head is not None else (config.fitting or source)
    model_config = dataclasses.replace(
        pretrained.config, heads={config.head: fitting}, seed=config.seed
    )
    model = DPA2Model(model_config)
    model.descriptor.load_state_dict(pretrained.descriptor.state_dict())
    if config.from_head is not None:
        model.heads[config.head].load_state_dict(pretrained.heads[config.from_head].state_dict())
    mode = config.bias_mode or ("change" if config.from_head is not None else "set")
    fit_energy_bias(model, sample, config.head, mode=mode)
    if config.freeze_descriptor:
        model.descriptor.requires_grad_(False)
    return model
