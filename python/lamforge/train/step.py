"""The gradients of one training step, back-propagated one run of whole frames at a time.

Training on forces keeps a double-backward graph of every pair and triplet tensor until
``backward`` runs; for a batch of many frames that graph is the step's peak memory. The loss is a
sum over frames and atoms whose normalisations (labelled frames and atoms of the batch) are known
before any prediction, so it splits exactly into per-chunk shares (``lamforge.train.loss``)::

    L = Σ_c L_c,    ∇_θ L = Σ_c ∇_θ L_c

Each chunk runs forward, forces, its share of the loss and ``backward``; the weight gradients
accumulate in ``.grad`` and the chunk's graph is freed before the next chunk starts. Under
``DistributedDataParallel`` every chunk but the last runs inside ``no_sync()``, so gradients are
all-reduced once per step, after the last chunk has added its share (deepmd-kit, by contrast,
calls backward once per frame because its batches hold one frame size).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from lamforge.nn.forces import DEFAULT_MAX_ATOMS_PER_CHUNK, evaluate, frame_chunks
from lamforge.nn.inputs import ModelInput
from lamforge.train.loss import EnergyLoss, EnergyPrediction, LabelCounts, LossValue
from lamforge.train.stream import TrainingBatch

#: Default chunk of :func:`backward_in_chunks`: the forward pass's own chunk
#: (``lamforge.nn.forces``), so chunking the backward adds no per-operation overhead.
DEFAULT_TRAINING_CHUNK_ATOMS = DEFAULT_MAX_ATOMS_PER_CHUNK


class EnergyForceModule(nn.Module):
    """Wraps a model so that one ``forward`` gives energy, forces and virial (what DDP needs)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, inputs: ModelInput, head: str, virial: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Energy [num_frames], forces [num_atoms, 3] and virial [num_frames, 3, 3] or None.

        Forces (and virial) stay differentiable w.r.t. the weights in training mode. A plain tuple,
        so that DistributedDataParallel finds every output tensor.
        """
        output = evaluate(
            self.model, inputs, head, forces=True, virial=virial, create_graph=self.training
        )
        return output.energy, output.forces, output.virial


def backward_in_chunks(
    module: nn.Module,
    batch: TrainingBatch,
    loss_fn: EnergyLoss,
    lr_factor: float,
    *,
    virial: bool,
    max_atoms_per_chunk: int | None = DEFAULT_TRAINING_CHUNK_ATOMS,
) -> LossValue:
    """Accumulate the weight gradients of ``batch``'s loss into ``.grad``, chunk by chunk.

    Args:
        module: An :class:`EnergyForceModule`, possibly wrapped in ``DistributedDataParallel``.
        batch: The batch of one task (its ``task`` names the head).
        loss_fn: The task's loss.
        lr_factor: Current learning rate over the start learning rate (loss prefactors).
        virial: Predict the virial (when the loss uses virial labels).
        max_atoms_per_chunk: Runs of whole frames of at most this many atoms (a larger frame runs
            alone); None: the whole batch in one backward.

    Returns:
        The loss of the whole batch (detached) and its RMSEs, as one backward would report them.
    """
    inputs, labels = batch.inputs, batch.labels
    weights = [parameter for parameter in module.parameters() if parameter.requires_grad]
    chunks = frame_chunks(inputs, max_atoms_per_chunk)
    if len(chunks) == 1:
        prediction = _predict(module, inputs, batch.task, virial)
        loss = loss_fn(prediction, labels, lr_factor)
        _backward(loss.total, prediction, weights)
        loss.total = loss.total.detach()
        return loss
    counts = LabelCounts.of(labels)
    parts: list[EnergyPrediction] = []
    no_sync = getattr(module, "no_sync", contextlib.nullcontext)
    for number, (start, stop) in enumerate(chunks):
        is_last = number == len(chunks) - 1
        with contextlib.nullcontext() if is_last else no_sync():
            prediction = _predict(module, inputs.frames(start, stop), batch.task, virial)
            share = loss_fn(prediction, labels.frames(start, stop), lr_factor, counts)
            _backward(share.total, prediction, weights)
        parts.append(
            EnergyPrediction(
                energy=prediction.energy.detach(),
                forces=prediction.forces.detach(),
                virial=None if prediction.virial is None else prediction.virial.detach(),
            )
        )
    whole = EnergyPrediction(
        energy=torch.cat([part.energy for part in parts]),
        forces=torch.cat([part.forces for part in parts]),
        virial=None if parts[0].virial is None else torch.cat([part.virial for part in parts]),
    )
    return loss_fn(whole, labels, lr_factor)


def _predict(module: nn.Module, inputs: ModelInput, task: str, virial: bool) -> EnergyPrediction:
    energy, forces, predicted_virial = module(inputs, task, virial)
    return EnergyPrediction(energy=energy, forces=forces, virial=predicted_virial)


def _backward(
    total: torch.Tensor, prediction: EnergyPrediction, weights: list[torch.Tensor]
) -> None:
    """``total.backward()`` into the weights' ``.grad`` only, also for a chunk without any label.

    Only the weights: the edge vectors are leaves that require grad too (for the forces), and a
    plain ``backward()`` would also carry the loss's gradient back to them through the geometry
    and the force path, work nobody reads (7 % of a small water192 training step). Every DDP rank
    must take part in the all-reduce of its last chunk, labelled or not (a zero backward).
    """
    if not total.requires_grad:
        total = total + 0.0 * prediction.energy.sum()
    if weights:
        total.backward(inputs=weights)
    else:
        total.backward()
