"""Compare a deployed-model file with the model it was exported from."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ase import Atoms
from torch import nn

from lamforge.deploy.runtime import DeployedModel
from lamforge.export.build import sample_frames
from lamforge.export.program import cast_model
from lamforge.nn.atoms import model_input_from_atoms
from lamforge.nn.forces import evaluate


def compare_with_model(
    model: nn.Module, path: str | Path, frames: Sequence[Atoms] | None = None
) -> dict[str, float]:
    """Largest absolute differences between the file and ``model`` (same head, same precision).

    Args:
        model: the source model (cast to the file's precision if needed).
        path: the deployed-model file.
        frames: structures to compare on; default two small random periodic frames.

    Returns:
        ``energy`` (largest difference of the frame energies relative to max(|E|, 1 eV)) and
        ``forces``,
        ``virial`` (largest absolute differences, eV/Å and eV).
    """
    deployed = DeployedModel(path)
    metadata = deployed.metadata
    model = cast_model(model.cpu(), metadata.precision)
    frames = list(frames) if frames is not None else sample_frames(tuple(model.elements))
    inputs = model_input_from_atoms(
        frames, model.elements, metadata.neighbor_blocks, dtype=model.dtype
    )
    reference = evaluate(model, inputs, metadata.head)
    output = deployed.evaluate(frames)
    scale = reference.energy.detach().abs().clamp(min=1.0)
    energy = (output.energy - reference.energy.detach()).abs() / scale
    return {
        "energy": float(energy.max()),
        "forces": float((output.forces - reference.forces.detach()).abs().max()),
        "virial": float((output.virial - reference.virial.detach()).abs().max()),
    }
