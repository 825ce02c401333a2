"""Trace a model head into a single deployable file (``torch.export`` archive or TorchScript).

Why two tracing steps: ``torch.export`` cannot trace ``torch.autograd.grad`` inside the function
it exports (its non-strict tracer loses track of the symbolic sizes of the backward), but
``make_fx`` can. So :class:`~lamforge.export.program.EnergyProgram` (energy, then forces and
virials by autograd) is first traced by ``make_fx`` with symbolic shapes into a graph of ATen
operations in which the backward is spelt out; that graph has no autograd and no Python control
flow left, and ``torch.export`` exports it with dynamic atoms, frames and neighbour slots. The
export also checks that the graph really is shape-generic (it fails when tracing had specialised
a dimension). The TorchScript variant scripts the same ATen graph.

Weights are baked into the file as constants; the metadata of :mod:`lamforge.deploy.format` is
stored beside the program (an extra file of the archive).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import sympy
import torch
import torch.fx.experimental._config as fx_config
from ase import Atoms
from torch import nn
from torch.fx.experimental.proxy_tensor import make_fx

import lamforge
from lamforge.deploy.format import FORMAT, METADATA_NAME, PROGRAM_KINDS, DeployedMetadata
from lamforge.export.program import EnergyProgram, cast_model
from lamforge.nn.atoms import model_input_from_atoms
from lamforge.nn.checkpoint import atomic_write


def export_model(
    model: nn.Module,
    path: str | Path,
    *,
    head: str | None = None,
    program: str = "export",
    precision: str | None = None,
) -> DeployedMetadata:
    """Write one head of ``model`` as a deployed-model file.

    Args:
        model: a DPA-2 or se_e2_a model (``lamforge.nn.loading.load_model`` reads both).
        path: the file to write (atomically).
        head: the head; required when the model has several.
        program: ``"export"`` (``torch.export`` archive, conventionally ``.pt2``) or
            ``"torchscript"`` (``torch.jit`` module, conventionally ``.pt``).
        precision: ``"float64"`` or ``"float32"``; default the model's own.

    Returns:
        The metadata stored in the file.

    Raises:
        ValueError: unknown program kind or precision, or a bad head (naming the heads).
    """
    if program not in PROGRAM_KINDS:
        raise ValueError(f"program must be one of {PROGRAM_KINDS}, got {program!r}")
    model = cast_model(model.cpu(), precision or model.config.precision)
    try:
        wrapped = EnergyProgram(model, head)
    except KeyError as error:  # KeyError quotes its message; re-raise as a plain ValueError
        raise ValueError(error.args[0]) from None
    graph = trace(wrapped)
    metadata = DeployedMetadata(
        format=FORMAT,
        program=program,
        model_type="se_e2_a" if type(model).__name__ == "SeAModel" else "dpa2",
        elements=tuple(model.elements),
        neighbor_blocks=wrapped.blocks,
        head=wrapped.head_name,
        heads=tuple(model.heads),
        precision=model.config.precision,
        lamforge_version=lamforge.__version__,
        torch_version=torch.__version__,
        config=model.config.to_dict(),
    )
    extra = {METADATA_NAME: metadata.to_json()}
    exported = torch.export.export(
        graph,
        sample_inputs(wrapped),
        dynamic_shapes=_dynamic_shapes(wrapped),
        # The ATen graph slices with bounds like min(4 K, 8 K) that the exporter cannot prove
        # equal to 4 K; as run-time asserts they are checked (and always hold) instead.
        prefer_deferred_runtime_asserts_over_guards=True,
    )
    if program == "export":
        # torch.export.save writes to a file object; build in memory and write atomically.
        buffer = io.BytesIO()
        torch.export.save(exported, buffer, extra_files=extra)
        atomic_write(path, lambda handle: handle.write(buffer.getvalue()))
    else:
        _save_torchscript(graph, path, extra)
    return metadata


def trace(program: EnergyProgram) -> torch.fx.GraphModule:
    """The ATen graph of ``program`` with symbolic sizes (backward included)."""
    # Without duck shaping, two dimensions that happen to have the same size in the sample are
    # not assumed equal forever.
    with fx_config.patch(use_duck_shape=False), torch.no_grad():
        graph = make_fx(program, tracing_mode="symbolic", _allow_non_fake_inputs=True)(
            *sample_inputs(program)
        )
    _check_guards(graph)
    return graph


def _check_guards(graph: torch.fx.GraphModule) -> None:
    """Fail if tracing branched on a size (e.g. ``num_atoms < 96``) rather than only equating.

    ``make_fx`` evaluates such a branch on the sample and records a guard that the graph does not
    enforce; ``torch.export`` re-traces the branch-free graph and would not notice. Equalities
    (all atom dimensions are one size, the xyz dimension is 3) are the only guards expected.
    """
    shape_env = getattr(graph, "shape_env", None)
    for guard in getattr(shape_env, "guards", ()):
        expression = guard.expr
        terms = expression.args if isinstance(expression, sympy.Or) else (expression,)
        if not all(isinstance(term, sympy.Eq) for term in terms):
            raise RuntimeError(
                f"export: tracing specialised on a tensor size ({expression}); the model has a "
                "data-dependent branch that its static_shapes switch does not cover"
            )


def sample_frames(elements: tuple[str, ...]) -> list[Atoms]:
    """Two small random periodic frames (5 and 7 atoms) of the model's elements."""
    rng = np.random.default_rng(0)
    frames = []
    for num_atoms, length in ((5, 3.1), (7, 3.3)):
        cell = np.diag([length, length * 1.1, length * 1.2])
        symbols = [elements[i % len(elements)] for i in range(num_atoms)]
        positions = rng.uniform(0.0, 1.0, (num_atoms, 3)) @ cell
        frames.append(Atoms(symbols, positions=positions, cell=cell, pbc=True))
    return frames


def sample_inputs(program: EnergyProgram) -> tuple[torch.Tensor, ...]:
    """Inputs of :func:`sample_frames`: every size distinct and > 1.

    Sizes of 0 and 1 would be specialised by the tracer; distinct sizes keep it from assuming
    that two dimensions are always equal. The slot counts are one below the caps (any width up
    to the cap takes the same graph).
    """
    model = program.model
    frames = sample_frames(model.elements)
    inputs = model_input_from_atoms(frames, model.elements, program.blocks, dtype=model.dtype)
    tensors = [inputs.positions, inputs.atom_types, inputs.cell, inputs.frame_index]
    for block in inputs.neighbors:
        width = max(block.max_neighbors - 1, 2)
        tensors += [block.index[:, :width].contiguous(), block.shifts[:, :width].contiguous()]
    return tuple(tensors)


def _dynamic_shapes(program: EnergyProgram) -> tuple[dict[int, torch.export.Dim], ...]:
    atoms = torch.export.Dim("num_atoms", min=1)
    frames = torch.export.Dim("num_frames", min=1)
    shapes: list[dict[int, torch.export.Dim]] = [{0: atoms}, {0: atoms}, {0: frames}, {0: atoms}]
    for block, (_, cap) in enumerate(program.blocks):
        slots = torch.export.Dim(f"num_slots_{block}", min=1, max=cap)
        shapes += [{0: atoms, 1: slots}, {0: atoms, 1: slots}]
    return tuple(shapes)


def _save_torchscript(graph: torch.fx.GraphModule, path: str | Path, extra: dict[str, str]):
    """Script the ATen graph and write it (atomically) with the extra files."""
    # TorchScript resolves ATen op packets (``aten.add``), not overloads (``aten.add.Tensor``).
    for node in graph.graph.nodes:
        if isinstance(node.target, torch._ops.OpOverload):
            node.target = node.target.overloadpacket
    graph.recompile()
    with warnings.catch_warnings():
        # TorchScript is deprecated upstream (torch 2.10+) but is what libtorch C++ still loads.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch.jit")
        warnings.filterwarnings("ignore", message="The TorchScript type system")
        scripted = torch.jit.script(graph)
        atomic_write(path, lambda handle: torch.jit.save(scripted, handle, _extra_files=extra))
